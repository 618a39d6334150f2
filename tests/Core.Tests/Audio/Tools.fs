/// Helpers for the audio tests: external reference tools (flac, sox, ffmpeg), temporary files, raw PCM, signals.
module MagnetWhisper.Tests.Audio.Tools

open System
open System.Diagnostics
open System.IO
open Expecto

/// The repository's tests/data directory (found upwards from the test assembly).
let private dataDir =
    lazy
    let rec up (d: DirectoryInfo) =
        if isNull d then failwith "tests/data not found above the test assembly"
        elif Directory.Exists(Path.Combine(d.FullName, "tests", "data")) then Path.Combine(d.FullName, "tests", "data")
        else up d.Parent
    up (DirectoryInfo AppContext.BaseDirectory)

/// A fixture in tests/data.
let data (name: string) = Path.Combine(dataDir.Value, name)

/// The full path of an executable on PATH.
let which (name: string) : string option =
    (Environment.GetEnvironmentVariable "PATH" |> Option.ofObj |> Option.defaultValue "").Split(Path.PathSeparator)
    |> Seq.filter (String.IsNullOrWhiteSpace >> not)
    |> Seq.map (fun d -> Path.Combine(d, name))
    |> Seq.tryFind File.Exists

/// The path of a tool, or skips the current test naming what to install.
let requireTool (name: string) : string =
    match which name with
    | Some p -> p
    | None -> skiptest $"the '{name}' command is not installed (apt-get install {name}); this reference test needs it"

/// Runs a command; fails the test with its stderr when it exits non-zero. Returns stdout bytes.
let run (exe: string) (args: string list) : byte[] =
    let psi = ProcessStartInfo(exe)
    for a in args do
        psi.ArgumentList.Add a
    psi.RedirectStandardOutput <- true
    psi.RedirectStandardError <- true
    psi.UseShellExecute <- false
    use p = Process.Start psi
    let err = p.StandardError.ReadToEndAsync()
    use out = new MemoryStream()
    p.StandardOutput.BaseStream.CopyTo out
    p.WaitForExit()
    if p.ExitCode <> 0 then
        failtestf "%s %s exited with %d: %s" (Path.GetFileName exe) (String.Join(" ", args)) p.ExitCode err.Result
    out.ToArray()

/// A temporary directory deleted on Dispose.
type TempDir() =
    let dir = Directory.CreateTempSubdirectory("magnet-audio-tests-")
    /// A path inside the directory.
    member _.File(name: string) = Path.Combine(dir.FullName, name)
    interface IDisposable with
        member _.Dispose() = try dir.Delete true with _ -> ()

/// Interleaves channels × samples into one array.
let interleave (channels: int64[][]) : int64[] =
    let n = channels.[0].Length
    Array.init (n * channels.Length) (fun i -> channels.[i % channels.Length].[i / channels.Length])

/// Writes interleaved signed integers as little-endian raw PCM of the given byte width (8-bit as signed).
let writeRawInts (path: string) (width: int) (interleaved: int64[]) =
    let bytes = Array.zeroCreate<byte> (interleaved.Length * width)
    interleaved |> Array.iteri (fun i v -> for k in 0 .. width - 1 do bytes.[i * width + k] <- byte (v >>> (8 * k)))
    File.WriteAllBytes(path, bytes)

/// Reads little-endian signed raw PCM of the given byte width, sign-extended.
let readRawInts (width: int) (bytes: byte[]) : int64[] =
    Array.init (bytes.Length / width) (fun i ->
        let mutable v = 0L
        for k in 0 .. width - 1 do
            v <- v ||| (int64 bytes.[i * width + k] <<< (8 * k))
        (v <<< (64 - 8 * width)) >>> (64 - 8 * width))

/// Splits interleaved samples into channels.
let deinterleave (channels: int) (interleaved: 'a[]) : 'a[][] =
    Array.init channels (fun c -> Array.init (interleaved.Length / channels) (fun i -> interleaved.[i * channels + c]))

/// Little-endian float32 raw file.
let writeRawFloat32 (path: string) (samples: float32[]) =
    let bytes = Array.zeroCreate<byte> (samples.Length * 4)
    Buffer.BlockCopy(samples, 0, bytes, 0, bytes.Length)
    File.WriteAllBytes(path, bytes)

/// Reads little-endian float32 raw bytes.
let readRawFloat32 (bytes: byte[]) : float32[] =
    let a = Array.zeroCreate<float32> (bytes.Length / 4)
    Buffer.BlockCopy(bytes, 0, a, 0, a.Length * 4)
    a

/// Clamps to the signed range of `bits`.
let clampBits (bits: int) (v: float) : int64 =
    let hi = float ((1L <<< (bits - 1)) - 1L)
    int64 (Math.Round(max (-hi - 1.0) (min hi v)))

/// Amplitude and phase-free fit of a sinusoid of frequency f (Hz) to x (sampled at rate) over [start, stop):
/// least squares on cos/sin, returns the amplitude.
let toneAmplitude (rate: float) (f: float) (x: float32[]) (start: int) (stop: int) : float =
    let mutable cc, ss, cs, xc, xs = 0.0, 0.0, 0.0, 0.0, 0.0
    for i in start .. stop - 1 do
        let w = 2.0 * Math.PI * f * float i / rate
        let c, s = cos w, sin w
        cc <- cc + c * c
        ss <- ss + s * s
        cs <- cs + c * s
        xc <- xc + float x.[i] * c
        xs <- xs + float x.[i] * s
    let det = cc * ss - cs * cs
    let a = (xc * ss - xs * cs) / det
    let b = (xs * cc - xc * cs) / det
    sqrt (a * a + b * b)

/// Root mean square of x over [start, stop).
let rms (x: float32[]) (start: int) (stop: int) =
    let mutable s = 0.0
    for i in start .. stop - 1 do
        s <- s + float x.[i] * float x.[i]
    sqrt (s / float (stop - start))

/// Asserts that an action raises an exception of type 'e whose message contains every fragment; returns it.
let raisesWith<'e when 'e :> exn> (fragments: string list) (action: unit -> unit) : 'e =
    let caught =
        try
            action ()
            None
        with e -> Some e
    match caught with
    | None -> failtestf "expected %s, but nothing was raised" typeof<'e>.Name
    | Some(:? 'e as e) ->
        for f in fragments do
            Expect.stringContains e.Message f $"the {typeof<'e>.Name} message"
        e
    | Some e -> failtestf "expected %s, got %s: %s" typeof<'e>.Name (e.GetType().Name) e.Message
