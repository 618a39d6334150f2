/// Transcription progress on stderr: each segment as it is decoded (openai/whisper's `--verbose` lines) and, when
/// stderr is a terminal, a progress bar with elapsed time and ETA redrawn twice a second (so a long window still
/// shows life and its ETA grows); plain lines per window otherwise.
module MagnetWhisper.Cli.Progress

open System
open System.Diagnostics
open System.IO
open System.Threading
open MagnetWhisper.Core.Decoding

/// "[00:01.000 --> 00:04.500] text": whisper's verbose line (timestamps mm:ss.mmm, hours only when needed).
let segmentLine (s: Segment) : string =
    let ts = Writers.formatTimestamp false "."
    $"[{ts s.Start} --> {ts s.End}] {s.Text.Trim()}"

/// A wall-clock duration as m:ss, or h:mm:ss from an hour on (whole seconds, rounded down).
let clock (seconds: float) : string =
    let total = int64 (max 0.0 seconds)
    let h, m, s = total / 3600L, (total / 60L) % 60L, total % 60L
    if h > 0L then $"{h}:{m:D2}:{s:D2}" else $"{m}:{s:D2}"

/// Seconds left at the rate so far (audio seconds per wall-clock second): remaining · elapsed / done; None before
/// any audio is done.
let eta (doneSeconds: float) (duration: float) (elapsed: float) : float option =
    if doneSeconds <= 0.0 then None else Some(max 0.0 (duration - doneSeconds) * elapsed / doneSeconds)

/// A 20-cell bar of a fraction in [0, 1], eight steps per cell: "███▋                ".
let bar (fraction: float) : string =
    let cells = 20
    let eighths = int (Math.Floor(min 1.0 (max 0.0 fraction) * float (cells * 8)))
    let partial = [| ""; "▏"; "▎"; "▍"; "▌"; "▋"; "▊"; "▉" |].[eighths % 8]
    let full = String('█', eighths / 8)
    (full + partial).PadRight cells

/// The bar line, at most `width` characters: "jfk.flac  37% |███▋      | 11.0/30.0 s, 0:07 elapsed, ETA 0:12".
let barLine (name: string) (doneSeconds: float) (duration: float) (elapsed: float) (remaining: float option) (width: int) : string =
    let fraction = if duration > 0.0 then min 1.0 (max 0.0 (doneSeconds / duration)) else 0.0
    let bar = bar fraction
    let etaText = match remaining with Some r -> clock r | None -> "?"
    let line = $"{name} {int (fraction * 100.0),3}%% |{bar}| {doneSeconds:F1}/{duration:F1} s, {clock elapsed} elapsed, ETA {etaText}"
    if line.Length <= width then line else line.Substring(0, max 0 width)

/// The plain progress line of a window: "jfk.flac: 11.0/30.0 s (37%), 0:07 elapsed, ETA 0:12".
let plainLine (name: string) (doneSeconds: float) (duration: float) (elapsed: float) (remaining: float option) : string =
    let percent = if duration > 0.0 then int (100.0 * min 1.0 (doneSeconds / duration)) else 0
    let etaText = match remaining with Some r -> clock r | None -> "?"
    $"{name}: {doneSeconds:F1}/{duration:F1} s ({percent}%%), {clock elapsed} elapsed, ETA {etaText}"

type private FileState =
    { Name: string
      Started: float
      mutable Done: float
      mutable Duration: float }

/// Writes progress and segment lines to stderr (and, through Out, results to stdout without tearing the bar).
/// `live`: stderr is a terminal (bar redrawn in place); `quiet`: no progress at all (results still go out);
/// `prefixNames`: segment lines start with the file name (several files). Thread-safe; dispose to stop the timer.
[<Sealed>]
type Reporter(live: bool, quiet: bool, prefixNames: bool) =
    let gate = obj ()
    let clockWatch = Stopwatch.StartNew()
    let now () = clockWatch.Elapsed.TotalSeconds
    let mutable current: FileState option = None
    let mutable shown = false
    let width () =
        try
            let w = Console.WindowWidth
            if w > 10 then w - 1 else 79
        with _ -> 79
    let clearBar () =
        if shown then
            eprintf "\r\x1b[K"
            shown <- false
    let drawBar () =
        match current with
        | Some f when live && not quiet ->
            // tqdm's estimate: the rate so far, so a slow window makes the ETA grow rather than sit at 0:00.
            let elapsed = now () - f.Started
            eprintf "\r%s\x1b[K" (barLine f.Name f.Done f.Duration elapsed (eta f.Done f.Duration elapsed) (width ()))
            shown <- true
        | _ -> ()
    let timer =
        if live && not quiet then
            new Timer((fun _ -> lock gate drawBar), null, TimeSpan.FromSeconds 0.5, TimeSpan.FromSeconds 0.5)
        else null

    /// A file (or batch, named after its first file) starts: the bar shows its elapsed time before any window ends.
    member _.Begin(path: string) =
        lock gate (fun () ->
            current <- Some { Name = Path.GetFileName path; Started = now (); Done = 0.0; Duration = 0.0 }
            drawBar ())

    /// A window is about to be decoded: the bar learns the file's length and where the window starts.
    member _.WindowStart(p: FileProgress) =
        if not quiet then
            lock gate (fun () ->
                let name = Path.GetFileName p.Path
                match current with
                | Some f when f.Name = name ->
                    f.Done <- p.Done
                    f.Duration <- p.Duration
                | Some f -> current <- Some { f with Name = name; Done = p.Done; Duration = p.Duration }
                | None -> current <- Some { Name = name; Started = now (); Done = p.Done; Duration = p.Duration }
                if live then
                    clearBar ()
                    drawBar ())

    /// A window ended: its segments are printed, then the bar (or a plain line) shows the file's position.
    member _.Window(p: FileProgress) =
        if not quiet then
            lock gate (fun () ->
                let name = Path.GetFileName p.Path
                let t = now ()
                let f =
                    match current with
                    | Some f when f.Name = name -> f
                    | Some f -> { f with Name = name }
                    | None -> { Name = name; Started = t; Done = 0.0; Duration = 0.0 }
                f.Done <- p.Done
                f.Duration <- p.Duration
                current <- Some f
                clearBar ()
                for s in p.Segments do
                    if s.Text.Trim() <> "" then
                        eprintfn "%s%s" (if prefixNames then name + ": " else "") (segmentLine s)
                if live then drawBar ()
                else
                    let elapsed = t - f.Started
                    eprintfn "%s" (plainLine name f.Done f.Duration elapsed (eta f.Done f.Duration elapsed)))

    /// A line on stderr above the bar (unless quiet).
    member _.Note(text: string) =
        if not quiet then
            lock gate (fun () ->
                clearBar ()
                eprintfn "%s" text
                drawBar ())

    /// An error line on stderr above the bar (even when quiet).
    member _.Error(text: string) =
        lock gate (fun () ->
            clearBar ()
            Output.error text
            drawBar ())

    /// A result line on stdout; the bar is cleared first so the two streams do not interleave on a terminal.
    member _.Out(text: string) =
        lock gate (fun () ->
            clearBar ()
            stdout.WriteLine text
            stdout.Flush()
            drawBar ())

    /// No file in progress: the bar is removed.
    member _.Idle() =
        lock gate (fun () ->
            current <- None
            clearBar ())

    interface IDisposable with
        member this.Dispose() =
            if not (isNull timer) then timer.Dispose()
            this.Idle()
