/// Training progress on stderr (issue 9 §2): when stderr is a terminal, one bar line redrawn in place (step, ETA,
/// loss, compression, samples/s); otherwise a plain line every log step, so logs stay readable.
module MagnetWhisper.Cli.TrainProgress

open System
open System.Diagnostics
open MagnetWhisper.Core.Training

/// "loss 3.214, compression 31.2%, 12.5 samples/s" (compression only with predictors).
let private figures (p: SupervisedProgress) =
    let compression = if Double.IsNaN p.Compression then "" else $", compression {100.0 * p.Compression:F1}%%"
    $"loss {p.Loss:F4}{compression}, {p.SamplesPerSecond:F1} samples/s"

/// The bar line, at most `width` characters: "step 120/1000  12% |██▍       | loss 3.2140, … 0:42 elapsed, ETA 5:01".
let barLine (p: SupervisedProgress) (width: int) : string =
    let fraction = if p.MaxSteps > 0 then float p.Step / float p.MaxSteps else 0.0
    let eta = match p.RemainingSeconds with Some r -> Progress.clock r | None -> "?"
    let line =
        $"step {p.Step}/{p.MaxSteps} {int (fraction * 100.0),3}%% |{Progress.bar fraction}| {figures p}, {Progress.clock p.ElapsedSeconds} elapsed, ETA {eta}"
    if line.Length <= width then line else line.Substring(0, max 0 width)

/// The plain line: "step 120/1000 (12%): loss 3.2140, compression 31.2%, 12.5 samples/s, 0:42 elapsed, ETA 5:01".
let plainLine (p: SupervisedProgress) : string =
    let percent = if p.MaxSteps > 0 then 100 * p.Step / p.MaxSteps else 0
    let eta = match p.RemainingSeconds with Some r -> Progress.clock r | None -> "?"
    $"step {p.Step}/{p.MaxSteps} ({percent}%%): {figures p}, {Progress.clock p.ElapsedSeconds} elapsed, ETA {eta}"

/// Shows steps as they end; `live`: stderr is a terminal; plain lines every `every` steps (and the first and last).
/// Thread-safe (notes come from signal handlers).
[<Sealed>]
type Reporter(live: bool, every: int) =
    let gate = obj ()
    let mutable shown = false
    let redraw = Stopwatch.StartNew()
    let width () =
        try
            let w = Console.WindowWidth
            if w > 10 then w - 1 else 79
        with _ -> 79
    let clear () =
        if shown then
            eprintf "\r\x1b[K"
            shown <- false
    let mutable last: SupervisedProgress option = None

    /// A step ended.
    member _.Step(p: SupervisedProgress) =
        lock gate (fun () ->
            last <- Some p
            if live then
                // At most ten redraws a second, and always the last step.
                if redraw.ElapsedMilliseconds >= 100L || p.Step >= p.MaxSteps || not shown then
                    eprintf "\r%s\x1b[K" (barLine p (width ()))
                    shown <- true
                    redraw.Restart()
            elif p.Step % max 1 every = 0 || p.Step = p.FirstStep + 1 || p.Step >= p.MaxSteps then
                eprintfn "%s" (plainLine p))

    /// A line on stderr above the bar.
    member _.Note(text: string) =
        lock gate (fun () ->
            clear ()
            eprintfn "%s" text
            match last with
            | Some p when live ->
                eprintf "\r%s\x1b[K" (barLine p (width ()))
                shown <- true
            | _ -> ())

    /// The bar is finished: the cursor moves to a new line so what follows starts clean.
    member _.Done() =
        lock gate (fun () ->
            if shown then
                eprintfn ""
                shown <- false)

    interface IDisposable with
        member this.Dispose() = this.Done()
