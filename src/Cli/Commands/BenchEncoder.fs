/// `magnet bench encoder`: speed of one Whisper encoder forward over a 30 s window.
module MagnetWhisper.Cli.Commands.BenchEncoder

open System
open System.Diagnostics
open System.IO
open Argu
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Cli

type BenchEncoderArgs =
    | Model of dir: string
    | Config of size: string
    | Device of name: string
    | Dtype of name: string
    | Repeats of count: int
    | Warmup of count: int
    | Batch of size: int
    | Threads of count: int
    | Predictors of layers: string
    | Ratios of ratios: string
    | Pytorch
    | Quiet
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Model _ -> "Hugging Face Whisper checkpoint folder (config.json + model.safetensors), or a MagnetWhisper folder (its Whisper weights)."
            | Config _ -> "without --model: random weights of a released size: tiny, base, small, medium or large."
            | Device _ -> "auto, cpu, cuda or cuda:N (default auto)."
            | Dtype _ -> "float32, float16 or bfloat16 (default float32)."
            | Repeats _ -> "timed forwards (default 10)."
            | Warmup _ -> "untimed forwards first (default 2)."
            | Batch _ -> "30 s windows per forward (default 1)."
            | Threads _ -> "libtorch intra-op threads (default: libtorch's choice)."
            | Predictors _ -> "MagnetWhisper: encoder layers that get a BP1, e.g. 3 or 2,6 (default 1 when --ratios is given)."
            | Ratios _ -> "MagnetWhisper: compression ratios per predictor (default 2,4,8 when --predictors is given); prints time vs FLOP reduction."
            | Pytorch -> "also time plain PyTorch's encoder (tools/pytorch/whisper_reference.py under /usr/bin/python3; CPU float32) with the same threads and print the ratio."
            | Quiet -> "no progress lines on stderr."

/// What one encoder benchmark measured.
type EncoderBenchResult =
    { Description: string
      Device: string
      DType: string
      Threads: int
      Batch: int
      Repeats: int
      /// Median wall time of one forward (seconds).
      MedianSeconds: float
      MinSeconds: float
      MaxSeconds: float
      /// Median wall time per 30 s window (seconds).
      SecondsPerWindow: float
      /// Processing time / audio time (below 1 is faster than real time).
      RealTimeFactor: float
      /// EncoderFlops.perWindow (GFLOP) per window.
      GflopPerWindow: float
      /// Achieved GFLOP/s at the median.
      GflopPerSecond: float }

/// Times encoder forwards of random log-mel windows under inference mode: warmup untimed, then repeats timed.
let measure (model: WhisperModel) (description: string) (batch: int) (warmup: int) (repeats: int) : EncoderBenchResult =
    if batch < 1 then invalidArg "batch" "batch must be at least 1"
    if repeats < 1 then invalidArg "repeats" "repeats must be at least 1"
    let config = model.Config
    let device = model.Device
    use _ = torch.inference_mode()
    use mel = torch.randn([| int64 batch; int64 config.NumMelBins; int64 config.InputFrames |], dtype = model.DType, device = device)
    let sync () = if device.``type`` = DeviceType.CUDA then torch.cuda.synchronize device
    let once () =
        sync ()
        let sw = Stopwatch.StartNew()
        (use _ = model.Encode mel
         sync ())
        sw.Elapsed.TotalSeconds
    for _ in 1 .. warmup do once () |> ignore
    let times = Array.init repeats (fun _ -> once ())
    let med = MagnetWhisper.Core.Statistics.median times
    let perWindow = med / float batch
    let windowSeconds = float config.InputFrames * 0.01
    let gflop = EncoderFlops.perWindow config / 1e9
    { Description = description
      Device = string device
      DType = string model.DType
      Threads = torch.get_num_threads ()
      Batch = batch
      Repeats = repeats
      MedianSeconds = med
      MinSeconds = Array.min times
      MaxSeconds = Array.max times
      SecondsPerWindow = perWindow
      RealTimeFactor = perWindow / windowSeconds
      GflopPerWindow = gflop
      GflopPerSecond = gflop / perWindow }

/// Times PyTorch's encoder on the same weights with the same threads (the model is saved to a temporary folder
/// unless `folder` already is a float32-loadable Hugging Face checkpoint); prints the medians and ours / PyTorch.
let private comparePyTorch (model: WhisperModel) (folder: string option) (r: EncoderBenchResult) (warmup: int) (repeats: int) (quiet: bool) : int =
    if model.Device.``type`` <> DeviceType.CPU || model.DType <> torch.float32 then
        invalidArg "pytorch" "--pytorch compares CPU float32 encoders: use --device cpu and --dtype float32"
    if not (PyTorchReference.available ()) then
        eprintfn "pytorch      %s cannot import torch: install Debian's PyTorch with `apt-get install python3-torch` to compare" PyTorchReference.python
        1
    else
    let script = PyTorchReference.script "whisper_reference.py"
    let temp = Path.Combine(Path.GetTempPath(), $"magnet-bench-pytorch-{Guid.NewGuid():N}")
    try
        let dir =
            match folder with
            | Some d -> d
            | None ->
                Output.progress quiet $"saving the weights to {temp} for PyTorch"
                model.Save(temp, { SaveOptions.Default with DType = Some torch.float32 })
                temp
        Output.progress quiet $"timing PyTorch's encoder ({script})"
        let code, out, err =
            PyTorchReference.run [ script; dir; "--bench"; "--threads"; string r.Threads; "--warmup"; string warmup
                                   "--repeats"; string repeats; "--batch"; string r.Batch ]
        if code <> 0 then failwith $"whisper_reference.py --bench exited with {code}: {err.Trim()}"
        // "pytorch <version> encoder median_ms <ms> min_ms <ms> max_ms <ms> threads <n> batch <b>"
        let fields = out.Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries)
        let field (name: string) =
            match Array.tryFindIndex ((=) name) fields with
            | Some i when i + 1 < fields.Length -> fields.[i + 1]
            | _ -> failwith $"unexpected output from whisper_reference.py --bench: {out.Trim()}"
        let medianMs = float (field "median_ms")
        printfn "pytorch      %s, %s threads: median %.3g ms (min %s ms, max %s ms)" (field "pytorch") (field "threads") medianMs (field "min_ms") (field "max_ms")
        printfn "ratio        ours / PyTorch = %.3f (median per forward, batch %d)" (r.MedianSeconds * 1000.0 / medianMs) r.Batch
        0
    finally
        if Directory.Exists temp then (try Directory.Delete(temp, true) with _ -> ())

/// Runs the command: prints the figures on stdout, progress on stderr.
let run (args: ParseResults<BenchEncoderArgs>) : int =
    let quiet = args.Contains Quiet
    let device = Device.parse (args.GetResult(Device, defaultValue = "auto"))
    let dtype = Output.parseDtype (args.GetResult(Dtype, defaultValue = "float32"))
    args.TryGetResult Threads |> Option.iter (fun n ->
        if n < 1 then invalidArg "threads" "threads must be at least 1"
        torch.set_num_threads n)
    let model, description, hfFolder =
        match args.TryGetResult Model, args.TryGetResult Config with
        | Some _, Some _ -> invalidArg "model" "give either --model DIR or --config SIZE, not both"
        | Some dir, None when MagnetWhisper.Core.Magnet.MagnetFormat.isMagnetFolder dir ->
            // The Whisper part of a MagnetWhisper folder: its tensors under the Hugging Face names.
            Output.progress quiet $"loading the Whisper weights of {dir}"
            let w = WhisperModel.create (Checkpoint.ReadConfig dir)
            use weights = CheckpointWeights.Open dir
            w.LoadWeights(weights, { Strict = false }) |> ignore
            w.``to``(device, dtype) |> ignore
            w.eval()
            w, dir, None
        | Some dir, None ->
            Output.progress quiet $"loading {dir}"
            WhisperModel.fromPretrained dir device dtype, dir, Some dir
        | None, Some size ->
            let config = WhisperConfig.preset size
            Output.progress quiet $"building a random whisper-{size}"
            let m = WhisperModel.create config
            m.``to``(device, dtype) |> ignore
            m.eval()
            m, $"whisper-{size} (random weights)", None
        | None, None -> invalidArg "model" "give --model DIR (a Hugging Face Whisper folder) or --config tiny|base|small|medium|large"
    use model = model
    if args.Contains Pytorch && (args.Contains Predictors || args.Contains Ratios) then
        invalidArg "pytorch" "--pytorch times the plain Whisper encoder: drop --predictors/--ratios"
    if args.Contains Predictors || args.Contains Ratios then
        BenchEncoderMagnet.report model description (args.TryGetResult Predictors) (args.TryGetResult Ratios)
            (args.GetResult(Batch, defaultValue = 1)) (args.GetResult(Warmup, defaultValue = 1)) (args.GetResult(Repeats, defaultValue = 5)) quiet
    else
        let c = model.Config
        Output.progress quiet $"timing {args.GetResult(Repeats, defaultValue = 10)} forwards after {args.GetResult(Warmup, defaultValue = 2)} warm-ups"
        let r = measure model description (args.GetResult(Batch, defaultValue = 1)) (args.GetResult(Warmup, defaultValue = 2)) (args.GetResult(Repeats, defaultValue = 10))
        printfn "encoder      %s: d_model %d, %d layers, %d heads, ffn %d, %d mel bins" r.Description c.DModel c.EncoderLayers c.EncoderAttentionHeads c.EncoderFfnDim c.NumMelBins
        printfn "runtime      %s %s, %d threads, batch %d, %d repeats, inference mode" r.Device r.DType r.Threads r.Batch r.Repeats
        printfn "forward      median %s (min %s, max %s)" (Output.ms r.MedianSeconds) (Output.ms r.MinSeconds) (Output.ms r.MaxSeconds)
        printfn "per 30 s     %s, real-time factor %.4f (%.0f× real time)" (Output.ms r.SecondsPerWindow) r.RealTimeFactor (1.0 / r.RealTimeFactor)
        printfn "throughput   %.1f GFLOP per 30 s (convs + projections + attention + FFN), %.1f GFLOP/s" r.GflopPerWindow r.GflopPerSecond
        let ceiling = Output.matmulRate model.Device model.DType 2048L 5
        printfn "ceiling      2048³ matmul in this run: %.1f GFLOP/s; the encoder reaches %.0f%% of it" ceiling (100.0 * r.GflopPerSecond / ceiling)
        if args.Contains Pytorch then
            comparePyTorch model hfFolder r (args.GetResult(Warmup, defaultValue = 2)) (args.GetResult(Repeats, defaultValue = 10)) quiet
        else 0
