/// `magnet bench transcribe`: time and memory of N consecutive transcriptions of one clip.
module MagnetWhisper.Cli.Commands.BenchTranscribe

open System
open System.Diagnostics
open System.IO
open Argu
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Decoding
open MagnetWhisper.Cli

type BenchTranscribeArgs =
    | Model of dir: string
    | Config of size: string
    | Audio of path: string
    | Repeats of count: int
    | Warmup of count: int
    | Device of name: string
    | Threads of count: int
    | Beam_Size of count: int
    | Sample_Len of count: int
    | Quiet
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Model _ -> "Hugging Face Whisper checkpoint folder (config.json + model.safetensors)."
            | Config _ -> "without --model: random weights of a released size: tiny (default) or base (small, medium, large also work)."
            | Audio _ -> "the clip (default: tests/data/jfk.flac when found, else 11 s of synthetic audio)."
            | Repeats _ -> "timed consecutive transcriptions (default 100)."
            | Warmup _ -> "untimed transcriptions first (default 1)."
            | Device _ -> "auto (default), cpu, cuda or cuda:N."
            | Threads _ -> "libtorch CPU threads (default: libtorch's choice)."
            | Beam_Size _ -> "beam search with this many beams (default: greedy)."
            | Sample_Len _ -> "most tokens per window (default 224)."
            | Quiet -> "no per-run lines on stderr."

/// One transcription's measurements.
type RunSample =
    { Seconds: float
      /// Tokens in the transcript's segments.
      Tokens: int
      /// Process resident set size after the run (bytes).
      Rss: int64
      /// Live TorchSharp tensors after the run.
      LiveTensors: int64 }

/// tests/data/jfk.flac above the current directory or the executable, if any.
let private findJfk () =
    let rec up (d: DirectoryInfo) =
        if isNull d then None
        else
            let candidate = Path.Combine(d.FullName, "tests", "data", "jfk.flac")
            if File.Exists candidate then Some candidate else up d.Parent
    up (DirectoryInfo Environment.CurrentDirectory) |> Option.orElse (up (DirectoryInfo AppContext.BaseDirectory))

/// 11 s of a vowel-like harmonic tone with a slow pitch glide and seeded noise (16 kHz).
let synthetic () =
    let rng = Random 11
    Array.init (11 * 16000) (fun i ->
        let t = float i / 16000.0
        let f0 = 120.0 + 30.0 * sin (2.0 * Math.PI * 0.3 * t)
        let voice = [ 1 .. 8 ] |> List.sumBy (fun h -> sin (2.0 * Math.PI * f0 * float h * t) / float h)
        float32 (0.1 * voice * (0.6 + 0.4 * sin (2.0 * Math.PI * 2.0 * t)) + 0.01 * (rng.NextDouble() - 0.5)))

let private rss () =
    use p = Process.GetCurrentProcess()
    p.Refresh()
    p.WorkingSet64

/// Transcribes samples N times in a row with the options, measuring each run.
let measure (transcriber: Transcriber) (options: TranscribeOptions) (samples: float32[]) (warmup: int) (repeats: int) (report: int -> RunSample -> unit) : RunSample[] =
    let once () =
        let watch = Stopwatch.StartNew()
        let t = transcriber.Transcribe(samples, options)
        let seconds = watch.Elapsed.TotalSeconds
        { Seconds = seconds
          Tokens = t.Segments |> List.sumBy (fun s -> s.Tokens.Length)
          Rss = rss ()
          LiveTensors = torch.Tensor.TotalCount }
    for _ in 1 .. warmup do once () |> ignore
    Array.init repeats (fun i ->
        let s = once ()
        report (i + 1) s
        s)

/// Runs the command: prints the figures on stdout, progress on stderr.
let run (args: ParseResults<BenchTranscribeArgs>) : int =
    let device = Device.parse (args.GetResult(Device, defaultValue = "auto"))
    args.TryGetResult Threads |> Option.iter (fun n ->
        if n < 1 then invalidArg "threads" "--threads must be at least 1"
        torch.set_num_threads n)
    let repeats = args.GetResult(Repeats, defaultValue = 100)
    let warmup = args.GetResult(Warmup, defaultValue = 1)
    if repeats < 1 || warmup < 0 then invalidArg "repeats" "--repeats must be at least 1 and --warmup at least 0"
    let quiet = args.Contains Quiet
    let model, description =
        match args.TryGetResult Model, args.TryGetResult Config with
        | Some _, Some _ -> invalidArg "model" "give either --model DIR or --config SIZE, not both"
        | Some dir, None ->
            Output.progress quiet $"loading {dir}"
            WhisperModel.FromPretrained(dir, device, torch.float32), dir
        | None, size ->
            let size = defaultArg size "tiny"
            Output.progress quiet $"building a random whisper-{size}"
            torch.manual_seed 0L |> ignore
            let m = WhisperModel.create (WhisperConfig.preset size)
            m.``to``(device) |> ignore
            m.eval()
            m, $"whisper-{size} (random weights)"
    use model = model
    let samples, clip =
        match args.TryGetResult Audio with
        | Some path -> MagnetWhisper.Core.Audio.Audio.load path, path
        | None ->
            match findJfk () with
            | Some path -> MagnetWhisper.Core.Audio.Audio.load path, path
            | None -> synthetic (), "synthetic 11 s tone"
    let audioSeconds = float samples.Length / 16000.0
    let options =
        { TranscribeOptions.defaults with
            Temperatures = [ 0.0 ]
            Decoding =
                { DecodingOptions.defaults with
                    Language = Some "en"
                    BeamSize = args.TryGetResult Beam_Size
                    SampleLen = args.TryGetResult Sample_Len } }
    let transcriber = Transcriber(model)
    let c = (model :> ISpeechModel).Config
    // tokens the decoder samples in the first window (a random model runs to the sample length)
    let decoded =
        use _ = torch.NewDisposeScope()
        let mel = (LongForm.logMel c.NumMelBins (model :> ISpeechModel).Device samples).narrow(1L, 0L, int64 c.InputFrames).unsqueeze(0L)
        (transcriber.Decode(mel, { options.Decoding with Temperature = 0.0 })).[0].Tokens.Length
    let sampleLen = options.Decoding.SampleLen |> Option.defaultValue (c.MaxTargetPositions / 2)
    Output.progress quiet $"{warmup} warm-up + {repeats} timed transcriptions of {clip} ({audioSeconds:F2} s)"
    let report i (s: RunSample) =
        if not quiet then
            eprintfn "run %3d: %s, %d tokens, RSS %.1f MiB, %d live tensors" i (Output.ms s.Seconds) s.Tokens (float s.Rss / 1048576.0) s.LiveTensors
    let samplesRun = measure transcriber options samples warmup repeats report
    let times = samplesRun |> Array.map _.Seconds
    let med = MagnetWhisper.Core.Statistics.median times
    let mib (b: int64) = float b / 1048576.0
    let first, last = samplesRun.[0], samplesRun.[samplesRun.Length - 1]
    let rssValues = samplesRun |> Array.map _.Rss
    let tensors = samplesRun |> Array.map _.LiveTensors
    let tokens = samplesRun |> Array.map _.Tokens
    printfn "model        %s: d_model %d, %d+%d layers, vocab %d, %s, %d threads" description c.DModel c.EncoderLayers c.DecoderLayers c.VocabSize (string device) (torch.get_num_threads ())
    printfn "clip         %s, %.2f s; greedy%s, temperature 0 only (no fallback), language en"
        clip audioSeconds (match options.Decoding.BeamSize with Some b -> $" → beam {b}" | None -> "")
    printfn "time         median %s per transcription (min %s, max %s) over %d runs after %d warm-up"
        (Output.ms med) (Output.ms (Array.min times)) (Output.ms (Array.max times)) repeats warmup
    printfn "real time    factor %.3f (%.1f× real time)" (med / audioSeconds) (audioSeconds / med)
    printfn "tokens       %d decoded in the first window (sample length %d); %d per transcription in segments (min %d, max %d)"
        decoded sampleLen (int (MagnetWhisper.Core.Statistics.median (Array.map float tokens))) (Array.min tokens) (Array.max tokens)
    printfn "memory RSS   after run 1 %.1f MiB, after run %d %.1f MiB (min %.1f, max %.1f; growth %+.1f MiB)"
        (mib first.Rss) repeats (mib last.Rss) (mib (Array.min rssValues)) (mib (Array.max rssValues)) (mib (last.Rss - first.Rss))
    printfn "live tensors after run 1 %d, after run %d %d (min %d, max %d)" first.LiveTensors repeats last.LiveTensors (Array.min tensors) (Array.max tensors)
    printfn "flat         %s" (if Array.min tensors = Array.max tensors then "yes: the live tensor count never changed" else "NO: the live tensor count changed")
    0
