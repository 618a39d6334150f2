/// Where trainers and evaluation send their per-step scalars: a `metrics.jsonl` file (one JSON object per step) and
/// TensorBoard event files, under the names the original logged to W&B (SPEC §8, §9), so `tensorboard --logdir` and
/// W&B's TensorBoard sync read a run as they read the original's.
namespace MagnetWhisper.Core.Training

open System
open System.Buffers
open System.Collections.Generic
open System.IO
open System.Text
open System.Text.Json
open TorchSharp
open MagnetWhisper.Core

/// The metric names of the original's W&B runs (SPEC §8.1, §8.2, §9.1), in one place. Names marked "HF" are those the
/// Hugging Face Trainer's W&B callback logged for it (its `loss`, `learning_rate`, … under `train/` and `eval/`).
[<RequireQualifiedAccess>]
module MetricKeys =
    /// HF: the training loss (token-mean cross-entropy + boundary losses) averaged over the logging interval.
    [<Literal>]
    let TrainLoss = "train/loss"
    /// HF / GRPO: the learning rate.
    [<Literal>]
    let TrainLearningRate = "train/learning_rate"
    /// HF / GRPO: the gradient norm before clipping.
    [<Literal>]
    let TrainGradNorm = "train/grad_norm"
    /// HF / GRPO: the fractional epoch.
    [<Literal>]
    let TrainEpoch = "train/epoch"
    /// Kept positions / valid positions over the logging interval (CompressionRatioCallback, GRPO).
    [<Literal>]
    let TrainCompressionRatio = "train/compression_ratio"
    /// Mean boundary loss over the logging interval.
    [<Literal>]
    let TrainBoundaryLoss = "train/boundary_loss"
    /// The Gumbel-sigmoid temperature τ.
    [<Literal>]
    let TrainBoundaryTemperature = "train/boundary_temperature"
    /// The target progress ρ.
    [<Literal>]
    let TrainBoundaryTargetProgress = "train/boundary_target_progress"
    /// Spacing coefficient of variation of the last forward.
    [<Literal>]
    let TrainBoundaryCv = "train/boundary_cv"
    /// Fraction of adjacent boundaries of the last forward.
    [<Literal>]
    let TrainBoundaryAdjacentPct = "train/boundary_adjacent_pct"
    /// The scheduled prior of the first predictor (when it has one).
    [<Literal>]
    let TrainScheduledPrior = "train/scheduled_prior"
    /// The boundary-loss weight of the first predictor (when it has one).
    [<Literal>]
    let TrainBoundaryLossWeight = "train/boundary_loss_weight"
    /// GRPO: mean reward of the batch.
    [<Literal>]
    let TrainGrpoRewardMean = "train/grpo_reward_mean"
    /// GRPO: standard deviation of the rewards of the batch.
    [<Literal>]
    let TrainGrpoRewardStd = "train/grpo_reward_std"
    /// GRPO: total loss minus boundary loss.
    [<Literal>]
    let TrainAsrLoss = "train/asr_loss"
    /// GRPO: ASR loss + boundary loss.
    [<Literal>]
    let TrainTotalLoss = "train/total_loss"
    /// GRPO: −mean(A · log π).
    [<Literal>]
    let TrainPolicyLoss = "train/policy_loss"
    /// HF: the evaluation loss.
    [<Literal>]
    let EvalLoss = "eval/loss"
    /// The token-mean cross-entropy of a periodic evaluation (eval/loss without the boundary loss).
    [<Literal>]
    let EvalAsrLoss = "eval/asr_loss"
    /// Word error rate × 100 of a periodic evaluation.
    [<Literal>]
    let EvalWer = "eval/wer"
    /// Utterances of a periodic evaluation (GRPO).
    [<Literal>]
    let EvalNumSamples = "eval/num_samples"
    /// Kept fraction of a periodic evaluation.
    [<Literal>]
    let EvalCompressionRatio = "eval/compression_ratio"
    /// Spacing coefficient of variation of a periodic evaluation.
    [<Literal>]
    let EvalBoundaryCv = "eval/boundary_cv"
    /// Fraction of adjacent boundaries of a periodic evaluation.
    [<Literal>]
    let EvalBoundaryAdjacentPct = "eval/boundary_adjacent_pct"
    /// whisper.py's final test WER × 100.
    [<Literal>]
    let EvaluationWer = "evaluation/wer"
    /// whisper.py's final test kept fraction.
    [<Literal>]
    let EvaluationCompressionRatio = "evaluation/compression_ratio"
    /// GRPO's final test WER × 100 (best checkpoint).
    [<Literal>]
    let FinalTestWer = "final/test_wer"
    /// GRPO's final test utterances.
    [<Literal>]
    let FinalTestSamples = "final/test_samples"

    /// Corpus CER (normalised) of an evaluation, in percent; this project's, beside the original's evaluation/wer.
    [<Literal>]
    let EvaluationCer = "evaluation/cer"

    /// Corpus WER without the normaliser, in percent (the original's training-time metric); this project's.
    [<Literal>]
    let EvaluationRawWer = "evaluation/raw_wer"

    /// Corpus WER (normalised) in percent, as the original logged every WER, of the run's final model on `test_data`; this project's.
    [<Literal>]
    let TestWer = "test/wer"

    /// Corpus CER (normalised) in percent on `test_data`; this project's.
    [<Literal>]
    let TestCer = "test/cer"

    /// Corpus WER without the normaliser, in percent, on `test_data`; this project's.
    [<Literal>]
    let TestRawWer = "test/raw_wer"

    /// Utterances of `test_data` evaluated; this project's.
    [<Literal>]
    let TestNumSamples = "test/num_samples"

    /// Mean kept fraction over the predictors on `test_data`; this project's.
    [<Literal>]
    let TestCompressionRatio = "test/compression_ratio"

    /// Every name above.
    let all: string list =
        [ TrainLoss; TrainLearningRate; TrainGradNorm; TrainEpoch; TrainCompressionRatio; TrainBoundaryLoss
          TrainBoundaryTemperature; TrainBoundaryTargetProgress; TrainBoundaryCv; TrainBoundaryAdjacentPct
          TrainScheduledPrior; TrainBoundaryLossWeight; TrainGrpoRewardMean; TrainGrpoRewardStd; TrainAsrLoss
          TrainTotalLoss; TrainPolicyLoss; EvalLoss; EvalAsrLoss; EvalWer; EvalNumSamples; EvalCompressionRatio; EvalBoundaryCv
          EvalBoundaryAdjacentPct; EvaluationWer; EvaluationCompressionRatio; EvaluationCer; EvaluationRawWer; FinalTestWer; FinalTestSamples
          TestWer; TestCer; TestRawWer; TestNumSamples; TestCompressionRatio ]

/// A destination of per-step scalar metrics. `Log` records the values of one step (name → value, in the order
/// given); `Flush` makes what was logged durable; `Dispose` flushes and closes.
type IMetricsSink =
    inherit IDisposable
    /// Records the values of a step (step ≥ 0; names unique within the call).
    abstract Log: step: int64 * values: (string * float) seq -> unit
    /// Makes everything logged so far durable.
    abstract Flush: unit -> unit

/// Checks shared by the sinks.
module internal MetricChecks =
    /// The values as a list, failing on a negative step, an empty or repeated name.
    let values (step: int64) (values: (string * float) seq) : (string * float) list =
        if step < 0L then invalidArg "step" $"the step must be 0 or more, but is {step}"
        let values = List.ofSeq values
        let seen = HashSet<string>()
        for name, _ in values do
            if String.IsNullOrWhiteSpace name then invalidArg "values" "a metric name is empty"
            if name = "step" then invalidArg "values" "'step' is the step's own key, not a metric name"
            if not (seen.Add name) then invalidArg "values" $"the metric '{name}' is given twice for step {step}"
        values

/// One line of a metrics.jsonl file.
type MetricsLine =
    { /// The step.
      Step: int64
      /// name → value in file order; a JSON null (written for NaN and ±∞) reads as NaN.
      Values: (string * float) list }

/// Reading and writing the lines of metrics.jsonl: `{"step": N, "name": value, …}`, step first, one object a line.
[<RequireQualifiedAccess>]
module MetricsJsonl =
    /// The UTF-8 bytes of one line, newline included. JSON has no NaN or infinity: those values are written as null.
    let lineBytes (step: int64) (values: (string * float) list) : byte[] =
        let buffer = ArrayBufferWriter<byte>()
        do
            use w = new Utf8JsonWriter(buffer)
            w.WriteStartObject()
            w.WriteNumber("step", step)
            for name, v in values do
                if Double.IsFinite v then w.WriteNumber(name, v) else w.WriteNull name
            w.WriteEndObject()
        Array.append (buffer.WrittenSpan.ToArray()) [| byte '\n' |]

    /// Parses one line; `where` names it in errors ("metrics.jsonl line 3").
    let parseLine (where: string) (line: string) : MetricsLine =
        let fail (why: string) = raise (InvalidDataException $"{where}: {why}")
        let doc =
            try JsonDocument.Parse line
            with :? JsonException as e -> fail $"not a JSON object ({e.Message})"
        use doc = doc
        if doc.RootElement.ValueKind <> JsonValueKind.Object then fail "not a JSON object"
        let mutable step = None
        let values = ResizeArray<string * float>()
        for p in doc.RootElement.EnumerateObject() do
            match p.Name, p.Value.ValueKind with
            | "step", JsonValueKind.Number -> step <- Some(p.Value.GetInt64())
            | "step", _ -> fail "\"step\" is not an integer"
            | name, JsonValueKind.Number -> values.Add(name, p.Value.GetDouble())
            | name, JsonValueKind.Null -> values.Add(name, Double.NaN)
            | name, kind -> fail $"the value of \"{name}\" is {kind}, not a number"
        match step with
        | Some s -> { Step = s; Values = List.ofSeq values }
        | None -> fail "no \"step\""

    /// The complete lines of a file (a last line without its newline, torn by a crash, is left out).
    let completeLines (path: string) : string list =
        let text = File.ReadAllText(path, Encoding.UTF8)
        let complete = match text.LastIndexOf '\n' with -1 -> "" | i -> text.Substring(0, i + 1)
        complete.Split('\n', StringSplitOptions.None) |> Array.filter (fun l -> l.Trim() <> "") |> List.ofArray

    /// Every complete line of a metrics.jsonl file.
    let read (path: string) : MetricsLine list =
        let name = Path.GetFileName path
        completeLines path |> List.mapi (fun i l -> parseLine $"{name} line {i + 1}" l)

/// metrics.jsonl: append-only, one object a line, each line handed to the operating system as it is logged (a crash
/// loses at most the line being written). Opening an existing file appends to it, after dropping a torn last line;
/// with a resume step, the lines of later steps (written after the checkpoint being resumed) are dropped first. That
/// rewrite goes through AtomicWrite; appends cannot (a line at a time is the point of the format).
type JsonlMetricsSink private (path: string, stream: FileStream) =
    let mutable disposed = false

    /// Opens (or creates) the file at path, keeping the complete lines whose step is at most resumeStep (all of
    /// them when None).
    static member Open(path: string, resumeStep: int64 option) : JsonlMetricsSink =
        let full = Path.GetFullPath path
        if Directory.Exists full then raise (IOException $"metrics file {path} is a folder")
        if File.Exists full then
            let lines = MetricsJsonl.completeLines full
            let kept =
                match resumeStep with
                | None -> lines
                | Some last ->
                    let name = Path.GetFileName full
                    lines |> List.indexed |> List.filter (fun (i, l) -> (MetricsJsonl.parseLine $"{name} line {i + 1}" l).Step <= last) |> List.map snd
            let onDisk = File.ReadAllBytes full
            let wanted = Encoding.UTF8.GetBytes(String.Join("", kept |> List.map (fun l -> l + "\n")))
            if onDisk <> wanted then AtomicWrite.file full (fun s -> s.Write(wanted, 0, wanted.Length))
        else Directory.CreateDirectory(Path.GetDirectoryName full) |> ignore
        new JsonlMetricsSink(full, new FileStream(full, FileMode.Append, FileAccess.Write, FileShare.Read))

    /// Opens (or creates) the file at path and appends to it.
    static member Open(path: string) : JsonlMetricsSink = JsonlMetricsSink.Open(path, None)

    /// The full path of the file.
    member _.Path = path

    interface IMetricsSink with
        member _.Log(step, values) =
            if disposed then raise (ObjectDisposedException "JsonlMetricsSink")
            let bytes = MetricsJsonl.lineBytes step (MetricChecks.values step values)
            stream.Write(bytes, 0, bytes.Length)
            stream.Flush()

        member _.Flush() = if not disposed then stream.Flush(true)

    interface IDisposable with
        member _.Dispose() =
            if not disposed then
                disposed <- true
                stream.Flush(true)
                stream.Dispose()

/// Appends an event to a TensorBoard event file with TFRecord framing (length, masked CRC-32C of the length, the
/// serialised event, its masked CRC-32C), for the one event SummaryWriter cannot write: the resume marker.
module internal EventFile =
    let private masked (crc: uint32) = ((crc >>> 15) ||| (crc <<< 17)) + 0xa282ead8u

    let private crc (bytes: byte[]) = BitConverter.GetBytes(masked (TorchSharp.Utils.CRC32C.``process`` bytes))

    /// Appends one event and flushes it to disk.
    let append (path: string) (event: Tensorboard.Event) =
        let data = Google.Protobuf.MessageExtensions.ToByteArray event
        let length = Array.zeroCreate<byte> 8
        Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(Span length, uint64 data.LongLength)
        use fs = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite)
        for part in [ length; crc length; data; crc data ] do
            fs.Write(part, 0, part.Length)
        fs.Flush(true)

/// TensorBoard event files through TorchSharp's `SummaryWriter`: one scalar event per value, tagged with the metric's
/// name, at the step, wall time in whole Unix seconds (what the writer stores). Each event is written and flushed as
/// it is logged (by the writer itself). A new sink starts a new event file in the folder (TensorBoard reads every file
/// of a run folder); with a resume step r it first writes a SessionLog START event at step r + 1, PyTorch's
/// `purge_step`, so TensorBoard drops the events of later steps that the interrupted run had written.
type TensorBoardMetricsSink(logDir: string, resumeStep: int64 option) =
    do if File.Exists logDir then raise (IOException $"TensorBoard folder {logDir} is a file")
    let eventFiles () =
        if Directory.Exists logDir then set (Directory.GetFiles(logDir, "events.out.tfevents.*")) else Set.empty
    let before = eventFiles ()
    let writer = torch.utils.tensorboard.SummaryWriter(logDir)
    let mutable disposed = false

    do
        match resumeStep with
        | None -> ()
        | Some r ->
            match Set.toList (eventFiles () - before) with
            | [ file ] ->
                let start = Tensorboard.SessionLog(Status = Tensorboard.SessionLog.Types.SessionStatus.Start)
                let wall = float (DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()) / 1000.0
                EventFile.append file (Tensorboard.Event(Step = r + 1L, WallTime = wall, SessionLog = start))
            | files -> invalidOp $"cannot find the event file the TensorBoard writer created in {logDir} ({files.Length} new files)"

    /// A sink without a resume step.
    new(logDir: string) = new TensorBoardMetricsSink(logDir, None)

    /// The run folder.
    member _.LogDir = writer.LogDir

    interface IMetricsSink with
        member _.Log(step, values) =
            if disposed then raise (ObjectDisposedException "TensorBoardMetricsSink")
            let values = MetricChecks.values step values
            if step > int64 Int32.MaxValue then invalidArg "step" $"TensorBoard steps are 32-bit, but the step is {step}"
            let wall = DateTimeOffset.UtcNow.ToUnixTimeSeconds()
            for name, v in values do
                writer.add_scalar(name, float32 v, int step, wall)

        member _.Flush() = ()

    interface IDisposable with
        member _.Dispose() = disposed <- true

/// Sends every call to each of several sinks, in order.
type FanOutMetricsSink(sinks: IMetricsSink list) =
    /// The sinks.
    member _.Sinks = sinks

    interface IMetricsSink with
        member _.Log(step, values) =
            let values = List.ofSeq values
            for s in sinks do
                s.Log(step, values)

        member _.Flush() =
            for s in sinks do
                s.Flush()

    interface IDisposable with
        /// Disposes every sink, even when one fails (the first failure is raised afterwards).
        member _.Dispose() =
            let failures =
                [ for s in sinks do
                      match (try s.Dispose(); None with e -> Some e) with
                      | Some e -> e
                      | None -> () ]
            match failures with
            | [] -> ()
            | _ -> raise (AggregateException("a metrics sink failed to close", failures))

/// Building the usual sinks.
[<RequireQualifiedAccess>]
module MetricsSinks =
    /// metrics.jsonl and TensorBoard event files in a run folder (`DIR/metrics.jsonl`, events in `DIR`); with a
    /// resume step, the JSONL lines of later steps are dropped.
    let runFolder (dir: string) (resumeStep: int64 option) : IMetricsSink =
        Directory.CreateDirectory dir |> ignore
        let jsonl = JsonlMetricsSink.Open(Path.Combine(dir, "metrics.jsonl"), resumeStep)
        let tensorBoard =
            try new TensorBoardMetricsSink(dir, resumeStep)
            with _ ->
                (jsonl :> IDisposable).Dispose()
                reraise ()
        new FanOutMetricsSink([ jsonl :> IMetricsSink; tensorBoard :> IMetricsSink ]) :> IMetricsSink
