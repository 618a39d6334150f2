/// `magnet bench ...`: speed measurements (never timed tests).
module MagnetWhisper.Cli.Commands.Bench

open System
open System.Diagnostics
open Argu
open TorchSharp
open MagnetWhisper.Core.Segments
open MagnetWhisper.Cli

type private Tensor = torch.Tensor

type DownsampleBenchArgs =
    | Device of name: string
    | Batch of int
    | Length of int
    | Dim of int
    | Rate of float
    | Repeats of int
    | Dtype of string
    | Threads of int
    | Quiet
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Device _ -> "auto (default), cpu, cuda or cuda:N."
            | Batch _ -> "batch size B (default 8)."
            | Length _ -> "sequence length L (default 1500)."
            | Dim _ -> "model width D (default 768)."
            | Rate _ -> "boundary rate, so S ≈ rate·L (default 0.25)."
            | Repeats _ -> "timed forward+backward passes per implementation, after one warm-up (default 7)."
            | Dtype _ -> "hidden dtype: float32 (default), float16, bfloat16 or float64."
            | Threads _ -> "libtorch CPU threads (default: libtorch's choice)."
            | Quiet -> "no progress lines on stderr."

type BenchArgs =
    | [<CliPrefix(CliPrefix.None)>] Downsample of ParseResults<DownsampleBenchArgs>
    | [<CliPrefix(CliPrefix.None)>] Encoder of ParseResults<BenchEncoder.BenchEncoderArgs>
    | [<CliPrefix(CliPrefix.None)>] Transcribe of ParseResults<BenchTranscribe.BenchTranscribeArgs>
    | [<CliPrefix(CliPrefix.None)>] Data of ParseResults<BenchData.BenchDataArgs>
    | [<CliPrefix(CliPrefix.None)>] Train of ParseResults<BenchTrain.BenchTrainArgs>
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Downsample _ -> "segment-mean pooling: index_add + closed-form gradient vs finite-difference variant vs dense."
            | Encoder _ -> "Whisper encoder forward per 30 s window: median time, real-time factor, GFLOP/s; with --predictors, MagnetWhisper's speed-up per compression ratio."
            | Transcribe _ -> "transcription of a clip: median time, real-time factor, memory over repeated runs."
            | Data _ -> "batch loader: utterances/s with 1..N workers next to an encoder's consumption rate."
            | Train _ -> "one training update (forward, backward, AdamW): median time, samples/s, ratio to PyTorch; --memory: RSS and live tensors over 1000 updates."

/// One forward + backward pass of pool in a fresh dispose scope (memory stays flat); returns seconds.
let private timeOnce (device: torch.Device) (pool: Tensor -> Tensor -> Tensor) (boundaries: Tensor) (hidden: Tensor) (upstream: Tensor) =
    let sync () = if device.``type`` = DeviceType.CUDA then torch.cuda.synchronize device
    use _ = torch.NewDisposeScope()
    let b = boundaries.detach().requires_grad_(true)
    let x = hidden.detach().requires_grad_(true)
    sync ()
    let watch = Stopwatch.StartNew()
    let y = pool b x
    (y.to_type(torch.float32) * upstream).sum().backward()
    sync ()
    watch.Elapsed.TotalSeconds

let private runDownsample (args: ParseResults<DownsampleBenchArgs>) =
    let device = MagnetWhisper.Core.Device.parse (args.GetResult(Device, defaultValue = "auto"))
    let batch = int64 (args.GetResult(Batch, defaultValue = 8))
    let length = int64 (args.GetResult(Length, defaultValue = 1500))
    let dim = int64 (args.GetResult(Dim, defaultValue = 768))
    let rate = args.GetResult(Rate, defaultValue = 0.25)
    let repeats = args.GetResult(Repeats, defaultValue = 7)
    let dtype = Output.parseDtype (args.GetResult(Dtype, defaultValue = "float32"))
    let quiet = args.Contains Quiet
    args.TryGetResult Threads |> Option.iter (fun n ->
        if n < 1 then invalidArg "threads" $"threads must be positive, but is {n}"
        torch.set_num_threads n)
    if batch < 1L || length < 1L || dim < 1L || repeats < 1 then
        invalidArg "batch" "batch, length, dim and repeats must be positive"
    if rate <= 0.0 || rate > 1.0 then invalidArg "rate" $"rate must be in (0, 1], but is {rate}"
    use _ = torch.NewDisposeScope()
    torch.manual_seed 0L |> ignore
    let hidden = torch.randn(batch, length, dim, device = device).to_type(dtype)
    // Bernoulli boundaries plus the forced last boundary that every predictor adds.
    let drawn = torch.rand(batch, length, device = device).lt(rate.ToScalar()).to_type(torch.float32)
    let boundaries = drawn.index_fill(1L, torch.tensor([| length - 1L |], device = device), (1.0).ToScalar())
    let s = Downsample.segmentCount boundaries
    let upstream = torch.randn(batch, s, dim, device = device)
    let options = Downsample.defaultOptions
    // Parity of the measured implementations (float32 sums: differences at rounding level).
    let parity =
        use _ = torch.NewDisposeScope()
        let run pool =
            let b = boundaries.detach().requires_grad_(true)
            let x = hidden.detach().requires_grad_(true)
            let y: Tensor = pool b x
            (y.to_type(torch.float32) * upstream).sum().backward()
            y, b.grad
        let y1, g1 = run (fun b x -> Downsample.downsample options b x None)
        let y2, g2 = run (fun b x -> Downsample.denseReference options b x None)
        let diff (a: Tensor) (b: Tensor) = (a.to_type(torch.float64) - b.to_type(torch.float64)).abs().max().item<float>()
        diff y1 y2, diff g1 g2
    let implementations =
        [ "index_add + closed form", (fun b x -> Downsample.downsample options b x None)
          "finite difference (SPEC §2.2)", (fun b x -> Downsample.finiteDifference options 1.0 b x)
          "dense (B, L, S) weights", (fun b x -> Downsample.denseReference options b x None) ]
    // Round-robin (one pass of each implementation per round) so that load from other processes hits all alike.
    for name, pool in implementations do
        Output.progress quiet $"warming up {name} ..."
        timeOnce device pool boundaries hidden upstream |> ignore
    let rounds =
        Array.init repeats (fun r ->
            Output.progress quiet $"round {r + 1}/{repeats}"
            implementations |> List.map (fun (_, pool) -> timeOnce device pool boundaries hidden upstream) |> Array.ofList)
    let results = implementations |> List.mapi (fun i (name, _) -> name, rounds |> Array.map (fun times -> times.[i]))
    printfn "downsample forward+backward: B=%d L=%d D=%d S=%d dtype=%O device=%O threads=%d repeats=%d (median of round-robin passes after 1 warm-up)"
        batch length dim s dtype device (torch.get_num_threads ()) repeats
    printfn "%-32s %12s %12s" "implementation" "median" "min"
    for name, times in results do
        printfn "%-32s %12s %12s" name (Output.ms (MagnetWhisper.Core.Statistics.median times)) (Output.ms (Array.min times))
    let medianOf name = results |> List.find (fst >> (=) name) |> snd |> MagnetWhisper.Core.Statistics.median
    let dense = medianOf "dense (B, L, S) weights"
    printfn "speed-up vs dense: index_add %.1fx, finite difference %.1fx"
        (dense / medianOf "index_add + closed form") (dense / medianOf "finite difference (SPEC §2.2)")
    // Each round times the implementations back to back, so a per-round ratio cancels most load from other processes.
    let perRound i = rounds |> Array.map (fun times -> times.[2] / times.[i]) |> MagnetWhisper.Core.Statistics.median
    printfn "per-round speed-up vs dense (median): index_add %.1fx, finite difference %.1fx" (perRound 0) (perRound 1)
    let dy, dg = parity
    printfn "parity vs dense: max |Δ output| = %s, max |Δ boundary gradient| = %s" (dy.ToString("0.0e0")) (dg.ToString("0.0e0"))
    0

/// Runs `magnet bench <subcommand>`.
let run (args: ParseResults<BenchArgs>) : int =
    match args.TryGetSubCommand() with
    | Some(Downsample a) -> runDownsample a
    | Some(Encoder a) -> BenchEncoder.run a
    | Some(Transcribe a) -> BenchTranscribe.run a
    | Some(Data a) -> BenchData.run a
    | Some(Train a) -> BenchTrain.run a
    | None ->
        Output.error "bench needs a subcommand: downsample, encoder, transcribe, data or train"
        eprintfn "%s" (args.Parser.PrintUsage())
        2
