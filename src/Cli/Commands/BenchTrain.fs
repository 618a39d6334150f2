/// `magnet bench train`: the time of one supervised update (forward, backward, clipping, AdamW step) of a randomly
/// initialised MagnetWhisper on a fixed random batch, optionally next to the same update in plain PyTorch
/// (tools/pytorch/train_reference.py, same saved model, inputs and threads); and the memory check of issue 9 §3
/// (`--memory`): RSS and live tensors after a tenth of the steps and at the end of a long run must agree within 5 %.
module MagnetWhisper.Cli.Commands.BenchTrain

open System
open System.Diagnostics
open System.IO
open Argu
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Segments
open MagnetWhisper.Core.Training
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Cli

type BenchTrainArgs =
    | Config of size: string
    | [<AltCommandLine("-p")>] Predictor of spec: string
    | Pytorch
    | Batch of size: int
    | Seconds of seconds: float
    | Tokens of count: int
    | Threads of count: int
    | Repeats of count: int
    | Warmup of count: int
    | Phases
    | Memory
    | Steps of count: int
    | Quiet
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Config _ -> "model size: tiny (default), base, small, or mini (d_model 64, 2+2 layers; the --memory default)."
            | Predictor _ -> "LAYER:TYPE[:PRIOR[:POOLING]] as for convert, repeatable (default: no predictor)."
            | Pytorch -> "also time the same update in plain PyTorch (tools/pytorch/train_reference.py under /usr/bin/python3) and print the ratio."
            | Batch _ -> "utterances per batch (default 4; 2 with --memory)."
            | Seconds _ -> "valid audio seconds of each utterance in its 30 s window (default 10; 5 with --memory)."
            | Tokens _ -> "label tokens per utterance (default 32; 16 with --memory)."
            | Threads _ -> "libtorch intra-op threads, for both (default: libtorch's choice)."
            | Repeats _ -> "timed updates (default 5)."
            | Warmup _ -> "untimed updates first (default 1)."
            | Phases -> "also time forward+backward, clipping and the AdamW step apart (over --repeats more updates)."
            | Memory -> "the memory check: 1000 updates (or --steps) of the mini configuration with a BP1 before layer 1; RSS and live tensors after a tenth of them and at the end."
            | Steps _ -> "updates of the memory check (implies --memory; at least 10)."
            | Quiet -> "no progress lines on stderr."

/// A model size: a released preset or "mini" (the memory check's).
let configOf (size: string) : WhisperConfig =
    match size.Trim().ToLowerInvariant() with
    | "mini" ->
        { WhisperConfig.preset "tiny" with
            DModel = 64
            EncoderLayers = 2
            DecoderLayers = 2
            EncoderAttentionHeads = 2
            DecoderAttentionHeads = 2
            EncoderFfnDim = 256
            DecoderFfnDim = 256 }
    | "tiny" | "base" | "small" as s -> WhisperConfig.preset s
    | other -> invalidArg "--config" $"--config '{other}': use tiny, base, small or mini"

/// The fixed batch of a benchmark, made from a seeded generator.
type TrainBatch =
    { Mel: torch.Tensor
      FrameMask: torch.Tensor
      Tokens: torch.Tensor
      Labels: torch.Tensor
      /// (rows, B) target counts, one row per count-trained predictor; None without such a predictor.
      Targets: torch.Tensor option }

    member b.Size = int b.Mel.shape.[0]

    interface IDisposable with
        member b.Dispose() =
            for t in [ b.Mel; b.FrameMask; b.Tokens; b.Labels ] @ Option.toList b.Targets do
                t.Dispose()

/// Random log-mel windows with `seconds` of valid audio each, random tokens (labels = tokens shifted left, last
/// label ignored), and a target of one boundary per 12 valid encoder positions for each count-trained predictor.
let makeBatch (config: WhisperConfig) (options: MagnetOptions) (batch: int) (seconds: float) (tokens: int) : TrainBatch =
    let frames = int64 config.InputFrames
    let valid = min frames (int64 (Math.Round(seconds * 100.0)))
    let g = new torch.Generator(7UL)
    let mel = torch.randn([| int64 batch; int64 config.NumMelBins; frames |], generator = g)
    let mask = torch.arange(frames).lt(valid.ToScalar()).to_type(torch.float32).unsqueeze(0).expand(int64 batch, frames).contiguous()
    let ids = torch.randint(0L, int64 (min config.VocabSize 50000), [| int64 batch; int64 tokens + 1L |], generator = g)
    let inputs = ids.narrow(1L, 0L, int64 tokens).contiguous()
    let labels = ids.narrow(1L, 1L, int64 tokens).contiguous()
    use last = torch.tensor([| int64 tokens - 1L |])
    labels.index_fill_(1L, last, (-100L).ToScalar()) |> ignore
    let rows = options.Predictors |> List.filter (fun s -> s.Targets <> NoTargets) |> List.length
    let targets =
        if rows = 0 then None
        else Some(torch.full([| int64 rows; int64 batch |], (float (valid / 2L) / 12.0).ToScalar(), dtype = torch.float32))
    ids.Dispose()
    g.Dispose()
    { Mel = mel; FrameMask = mask; Tokens = inputs; Labels = labels; Targets = targets }

/// The loss sums of the model on the batch (sampled boundaries).
let private lossOf (model: MagnetWhisperModel) (sampling: torch.Generator) (b: TrainBatch) () : LossSums =
    let input = { ForwardInput.Training(b.Mel, Some b.FrameMask, b.Labels, b.Targets, sampling) with DecoderInputs = Some b.Tokens }
    LossSums.magnet model input

/// whisper.py's clipping.
let private clipNorm = 2.0

/// One update of the model on the batch (whisper.py's clipping at 2.0, a constant learning rate); its report.
let update (model: MagnetWhisperModel) (optimizer: TrainingOptimizer) (sampling: torch.Generator) (b: TrainBatch) : StepReport =
    TrainingStep.run optimizer { MaxGradientNorm = Some clipNorm } 1.0 [ () ] (fun () -> TrainingStep.countsOf b.Labels) (lossOf model sampling b)

/// The pieces of TrainingStep.run timed apart: (forward + backward, clipping, AdamW step) in seconds.
let phases (model: MagnetWhisperModel) (optimizer: TrainingOptimizer) (sampling: torch.Generator) (b: TrainBatch) : float * float * float =
    let parameters = optimizer.Parameters |> List.map snd
    TrainingStep.clearGradients parameters
    let watch = Stopwatch.StartNew()
    TrainingStep.accumulate [ () ] (fun () -> TrainingStep.countsOf b.Labels) (lossOf model sampling b) |> ignore
    let forwardBackward = watch.Elapsed.TotalSeconds
    TrainingStep.clip (Some clipNorm) parameters |> ignore
    let clipped = watch.Elapsed.TotalSeconds
    optimizer.SetLearningRate 1.0
    optimizer.AdamW.step() |> ignore
    let stepped = watch.Elapsed.TotalSeconds
    TrainingStep.clearGradients parameters
    forwardBackward, clipped - forwardBackward, stepped - clipped

let private rss () =
    use p = Process.GetCurrentProcess()
    p.Refresh()
    p.WorkingSet64

/// glibc's malloc_trim: returns the free memory of the heap to the system.
[<System.Runtime.InteropServices.DllImport("libc", EntryPoint = "malloc_trim")>]
extern int mallocTrim(unativeint pad)

/// RSS and live TorchSharp tensors, after a full collection (only memory still referenced counts) and, on Linux,
/// malloc_trim: glibc keeps freed blocks of the varying tensor sizes (the boundary count changes every update) and
/// RSS would swing by tens of MiB with what the allocator holds rather than with what the process uses.
let private memoryNow () =
    GC.Collect()
    GC.WaitForPendingFinalizers()
    GC.Collect()
    if OperatingSystem.IsLinux() then (try mallocTrim 0un |> ignore with _ -> ())
    rss (), torch.Tensor.TotalCount

/// The folder PyTorch reads: the model (our format) and the batch as .npy files.
[<RequireQualifiedAccess>]
module PyTorchInputs =
    /// Saves the model and the batch to a temporary folder; None (with the reason on stderr) when /usr/bin/python3
    /// cannot import torch.
    let save (model: MagnetWhisperModel) (b: TrainBatch) (quiet: bool) : string option =
        if not (PyTorchReference.available ()) then
            eprintfn "pytorch      %s cannot import torch: install Debian's PyTorch with `apt-get install python3-torch` to compare" PyTorchReference.python
            None
        else
        let temp = Path.Combine(Path.GetTempPath(), $"magnet-bench-train-{Guid.NewGuid():N}")
        let inputs = Path.Combine(temp, "inputs")
        Directory.CreateDirectory inputs |> ignore
        Output.progress quiet $"saving the model and the batch to {temp} for PyTorch"
        MagnetFormat.save (Path.Combine(temp, "model")) model
        Npy.write (Path.Combine(inputs, "mel.npy")) b.Mel
        Npy.write (Path.Combine(inputs, "mask.npy")) b.FrameMask
        Npy.write (Path.Combine(inputs, "tokens.npy")) b.Tokens
        Npy.write (Path.Combine(inputs, "labels.npy")) b.Labels
        b.Targets |> Option.iter (Npy.write (Path.Combine(inputs, "targets.npy")))
        Some temp

    /// Removes the folder.
    let delete (temp: string) = if Directory.Exists temp then (try Directory.Delete(temp, true) with _ -> ())

/// Times PyTorch's update on the saved weights and inputs; returns its median in ms and the cross-entropy of its
/// first update.
let private timePyTorch (saved: string) (batch: int) (warmup: int) (repeats: int) (quiet: bool) : float * float =
    let reference = PyTorchReference.script "train_reference.py"
    Output.progress quiet $"timing PyTorch's update ({reference})"
    let code, out, err =
        PyTorchReference.run [ reference; Path.Combine(saved, "model"); "--inputs"; Path.Combine(saved, "inputs"); "--bench"
                               "--threads"; string (torch.get_num_threads ()); "--warmup"; string warmup; "--repeats"; string repeats ]
    if code <> 0 then failwith $"train_reference.py --bench exited with {code}: {err.Trim()}"
    // "pytorch <version> train median_ms <ms> min_ms <ms> max_ms <ms> threads <n> batch <b> first_ce <ce>"
    let fields = out.Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries)
    let field (name: string) =
        match Array.tryFindIndex ((=) name) fields with
        | Some i when i + 1 < fields.Length -> fields.[i + 1]
        | _ -> failwith $"unexpected output from train_reference.py --bench: {out.Trim()}"
    let number (name: string) = Double.Parse(field name, Globalization.CultureInfo.InvariantCulture)
    let medianMs = number "median_ms"
    printfn "pytorch      %s, %s threads: median %s (min %s, max %s), %.3g samples/s"
        (field "pytorch") (field "threads") (Output.ms (medianMs / 1000.0)) (Output.ms (number "min_ms" / 1000.0))
        (Output.ms (number "max_ms" / 1000.0)) (float batch * 1000.0 / medianMs)
    medianMs, number "first_ce"

let private describe (config: WhisperConfig) (options: MagnetOptions) (size: string) =
    let predictors =
        match options.Predictors with
        | [] -> "no predictor"
        | slots -> String.Join(", ", slots |> List.map (fun s -> $"{s.Predictor.Kind} before layer {s.Layer} ({s.Predictor.Pooling})"))
    $"{size}: d_model {config.DModel}, {config.EncoderLayers}+{config.DecoderLayers} layers, vocabulary {config.VocabSize}; {predictors}"

/// The timing benchmark: warmup, then repeats timed updates; optionally PyTorch's.
let private runTiming (args: ParseResults<BenchTrainArgs>) quiet =
    let size = args.GetResult(Config, defaultValue = "tiny")
    let config = configOf size
    let slots = args.GetResults Predictor |> List.map (fun s -> Args.value "--predictor" (fun () -> Convert.parsePredictor s))
    let options = slots |> List.fold (fun (o: MagnetOptions) s -> o.WithSlot s) MagnetOptions.Default
    let batch = args.GetResult(Batch, defaultValue = 4)
    let seconds = args.GetResult(Seconds, defaultValue = 10.0)
    let tokens = args.GetResult(Tokens, defaultValue = 32)
    let repeats = args.GetResult(Repeats, defaultValue = 5)
    let warmup = args.GetResult(Warmup, defaultValue = 1)
    Args.require "--batch" (batch >= 1) $"must be at least 1, got {batch}"
    Args.require "--seconds" (seconds > 0.0 && seconds <= 30.0) $"must be in (0, 30], got {seconds}"
    Args.require "--tokens" (tokens >= 2 && tokens <= config.MaxTargetPositions) $"must be between 2 and {config.MaxTargetPositions}, got {tokens}"
    Args.require "--repeats" (repeats >= 1) $"must be at least 1, got {repeats}"
    Args.require "--warmup" (warmup >= 0) $"must be 0 or more, got {warmup}"
    Output.progress quiet $"building a random {size} model"
    torch.manual_seed 0L |> ignore
    use model = Args.value "--predictor" (fun () -> new MagnetWhisperModel(config, options))
    model.train()
    use batchData = makeBatch config options batch seconds tokens
    use optimizer = Optimizer.forMagnet (OptimizerSettings.Default 1e-5) model
    use sampling = Boundaries.generator 1L torch.CPU
    // PyTorch starts from the weights before any update: save them first.
    let pytorch = if args.Contains Pytorch then Some(PyTorchInputs.save model batchData quiet) else None
    Output.progress quiet $"timing {repeats} updates after {warmup} warm-up"
    let mutable firstCe = nan
    let timed () =
        let watch = Stopwatch.StartNew()
        let report = update model optimizer sampling batchData
        if Double.IsNaN firstCe then firstCe <- report.CrossEntropy
        watch.Elapsed.TotalSeconds
    for _ in 1 .. warmup do timed () |> ignore
    let times = Array.init repeats (fun _ -> timed ())
    let med = MagnetWhisper.Core.Statistics.median times
    printfn "model        %s" (describe config options size)
    printfn "batch        %d utterances, %.3g s valid audio each, %d label tokens; %d threads, float32 CPU, AdamW, clip 2.0" batch seconds tokens (torch.get_num_threads ())
    printfn "ours         median %s (min %s, max %s) over %d updates, %.3g samples/s" (Output.ms med) (Output.ms (Array.min times)) (Output.ms (Array.max times)) repeats (float batch / med)
    if args.Contains Phases then
        let parts = Array.init repeats (fun _ -> phases model optimizer sampling batchData)
        let medianOf f = parts |> Array.map f |> MagnetWhisper.Core.Statistics.median
        printfn "phases       forward+backward %s, clipping %s, AdamW step %s (medians of %d more updates)"
            (Output.ms (medianOf (fun (a, _, _) -> a))) (Output.ms (medianOf (fun (_, c, _) -> c))) (Output.ms (medianOf (fun (_, _, o) -> o))) repeats
    match pytorch with
    | None -> 0
    | Some None -> 1
    | Some(Some saved) ->
        try
            let pytorchMs, pytorchCe = timePyTorch saved batch warmup repeats quiet
            // The same weights and inputs give the same cross-entropy (the boundaries, when any, are sampled apart).
            printfn "check        first update's cross-entropy: ours %.6f, PyTorch %.6f" firstCe pytorchCe
            printfn "ratio ours / PyTorch = %.3f (median per update, batch %d)" (med * 1000.0 / pytorchMs) batch
            0
        finally
            PyTorchInputs.delete saved

/// The memory check: updates of the mini model (or --config), RSS and live tensors after a tenth and at the end.
let private runMemory (args: ParseResults<BenchTrainArgs>) quiet =
    let size = args.GetResult(Config, defaultValue = "mini")
    let config = configOf size
    let steps = args.GetResult(Steps, defaultValue = 1000)
    Args.require "--steps" (steps >= 10) $"must be at least 10, got {steps}"
    Args.require "--pytorch" (not (args.Contains Pytorch)) "times single updates: drop --memory/--steps to compare with PyTorch"
    let slots =
        match args.GetResults Predictor with
        | [] -> [ PredictorSlot.Create(min 1 (config.EncoderLayers - 1), Bp1, 0.08) ]
        | specs -> specs |> List.map (fun s -> Args.value "--predictor" (fun () -> Convert.parsePredictor s))
    let options = slots |> List.fold (fun (o: MagnetOptions) s -> o.WithSlot s) MagnetOptions.Default
    let batch = args.GetResult(Batch, defaultValue = 2)
    let seconds = args.GetResult(Seconds, defaultValue = 5.0)
    let tokens = args.GetResult(Tokens, defaultValue = 16)
    Args.require "--batch" (batch >= 1) $"must be at least 1, got {batch}"
    Args.require "--seconds" (seconds > 0.0 && seconds <= 30.0) $"must be in (0, 30], got {seconds}"
    Args.require "--tokens" (tokens >= 2 && tokens <= config.MaxTargetPositions) $"must be between 2 and {config.MaxTargetPositions}, got {tokens}"
    torch.manual_seed 0L |> ignore
    use model = Args.value "--predictor" (fun () -> new MagnetWhisperModel(config, options))
    model.train()
    use batchData = makeBatch config options batch seconds tokens
    use optimizer = Optimizer.forMagnet (OptimizerSettings.Default 1e-5) model
    use sampling = Boundaries.generator 1L torch.CPU
    let early = steps / 10
    let times = ResizeArray<float>()
    let mutable atEarly = (0L, 0L)
    let mutable skipped = 0
    for step in 1 .. steps do
        let watch = Stopwatch.StartNew()
        let report = update model optimizer sampling batchData
        times.Add watch.Elapsed.TotalSeconds
        if report.Skipped.IsSome then skipped <- skipped + 1
        if step = early then atEarly <- memoryNow ()
        if step % (max 1 (steps / 10)) = 0 && not quiet then
            let bytes, tensors = memoryNow ()
            Output.progress quiet $"step {step}/{steps}: loss {report.Loss:F4}, {Output.ms watch.Elapsed.TotalSeconds}, RSS {float bytes / 1048576.0:F1} MiB, {tensors} live tensors"
    let atEnd = memoryNow ()
    let mib (b: int64) = float b / 1048576.0
    let change (a: int64) (b: int64) = 100.0 * float (b - a) / float (max 1L a)
    let rssEarly, tensorsEarly = atEarly
    let rssEnd, tensorsEnd = atEnd
    let rssChange = change rssEarly rssEnd
    let tensorChange = change tensorsEarly tensorsEnd
    let all = times.ToArray()
    let med = MagnetWhisper.Core.Statistics.median all
    printfn "model        %s" (describe config options size)
    printfn "batch        %d utterances, %.3g s valid audio each, %d label tokens; %d threads, float32 CPU, AdamW, clip 2.0" batch seconds tokens (torch.get_num_threads ())
    printfn "updates      %d (%d skipped), median %s (min %s, max %s), %.3g samples/s" steps skipped (Output.ms med) (Output.ms (Array.min all)) (Output.ms (Array.max all)) (float batch / med)
    printfn "RSS          (after GC and malloc_trim) step %d %.1f MiB, step %d %.1f MiB: %+.2f%%" early (mib rssEarly) steps (mib rssEnd) rssChange
    printfn "live tensors step %d %d, step %d %d: %+.2f%%" early tensorsEarly steps tensorsEnd tensorChange
    let flat = abs rssChange <= 5.0 && abs tensorChange <= 5.0
    printfn "flat         %s" (if flat then "yes: RSS and live tensors agree within 5 %" else "NO: RSS or live tensors changed by more than 5 %")
    if flat then 0 else 1

/// Runs `magnet bench train`.
let run (args: ParseResults<BenchTrainArgs>) : int =
    let quiet = args.Contains Quiet
    args.TryGetResult Threads |> Option.iter (fun n ->
        Args.require "--threads" (n >= 1) $"must be at least 1, got {n}"
        torch.set_num_threads n)
    if args.Contains Memory || args.Contains Steps then runMemory args quiet else runTiming args quiet
