namespace MagnetWhisper.Core.Training

// The supervised training loop (issue 9 §3): batches from Batching (seed, epoch) through BatchLoader, the predictors'
// curves and the learning rate at progress step / max_steps, one TrainingStep per batch, metrics every log step, dev
// evaluation (WER, CER, compression) with best/ kept by dev WER and optional early stopping, checkpoints every N
// (the newest K kept), final/ at the end. A run resumes from its newest checkpoint bit-identically on CPU; a
// cancellation or StopAtStep ends it after the current step with a checkpoint.

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open System.Threading
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Data
open MagnetWhisper.Core.Evaluation
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Segments
open MagnetWhisper.Core.Text
open MagnetWhisper.Core.Whisper

/// How a run is carried out (not part of its configuration: a resumed run may change them).
type SupervisedOptions =
    { /// Where the model and batches live.
      Device: torch.Device
      /// End the run after this step with a checkpoint, exactly as an interruption would.
      StopAtStep: int option
      /// ffmpeg for formats other than WAV and FLAC.
      Ffmpeg: string option }

/// What the progress callback sees after each step.
type SupervisedProgress =
    { /// Updates applied in total.
      Step: int
      /// The step this session started from (0, or the resumed checkpoint's).
      FirstStep: int
      MaxSteps: int
      Loss: float
      /// Kept positions / valid positions of the step (NaN without predictors).
      Compression: float
      SamplesPerSecond: float
      ElapsedSeconds: float }

    /// Seconds left at the rate of the steps run in this session.
    member p.RemainingSeconds =
        let ran = p.Step - p.FirstStep
        if ran <= 0 then None else Some(float (p.MaxSteps - p.Step) * p.ElapsedSeconds / float ran)

/// A metrics line as the trainer logged it (every log_every steps and at the last step).
type SupervisedLog =
    { Step: int
      /// The line's keys (MetricKeys' train/… names) and values, in the order written.
      Values: (string * float) list }

/// A dev evaluation (every eval_every steps and at the end, when the run has dev data).
type SupervisedEvaluation =
    { Step: int
      /// Word error rate after normalisation (fraction).
      Wer: float
      /// Character error rate (fraction).
      Cer: float
      /// Mean kept fraction over the predictors (NaN without predictors).
      Compression: float
      /// This evaluation is the run's best so far (best/ was just written).
      IsBest: bool }

/// A checkpoint folder the trainer has just written (complete: it can be resumed from).
type SupervisedCheckpoint =
    { Step: int
      Folder: string }

/// What callers of Supervised.run observe; every callback runs on the training thread between steps.
type SupervisedEvents =
    { /// After every step.
      Progress: SupervisedProgress -> unit
      /// After a metrics line was written.
      Logged: SupervisedLog -> unit
      /// After a dev evaluation.
      Evaluated: SupervisedEvaluation -> unit
      /// After a checkpoint was written.
      CheckpointWritten: SupervisedCheckpoint -> unit }

    /// Observes nothing.
    static member None: SupervisedEvents = { Progress = ignore; Logged = ignore; Evaluated = ignore; CheckpointWritten = ignore }

    /// Observes the progress after every step only.
    static member ProgressOnly(progress: SupervisedProgress -> unit) : SupervisedEvents = { SupervisedEvents.None with Progress = progress }

/// How a run ended.
type SupervisedOutcome =
    /// max_steps reached: final/ written.
    | Completed
    /// Cancelled, or StopAtStep reached: a checkpoint holds the state to resume.
    | Interrupted
    /// Early stopping: the dev WER did not improve for `early_stopping_patience` evaluations.
    | StoppedEarly

/// The end of a run.
type SupervisedResult =
    { Outcome: SupervisedOutcome
      /// Updates applied in total.
      Step: int
      /// The newest checkpoint folder.
      Checkpoint: string option
      /// The best dev WER (fraction) and its step.
      Best: (float * int) option }

/// The supervised trainer.
[<RequireQualifiedAccess>]
module Supervised =
    /// The resolved configuration of a run folder.
    [<Literal>]
    let ConfigFile = "config.json"

    /// The folder of the checkpoints.
    [<Literal>]
    let CheckpointsFolder = "checkpoints"

    /// The generator of boundary sampling, as named in trainer.json.
    [<Literal>]
    let SamplingGenerator = "boundary_sampling"

    /// The generator of SpecAugment's masks, as named in trainer.json (present when `spec_augment` is on).
    [<Literal>]
    let SpecAugmentGenerator = "spec_augment"

    /// `checkpoints/step-00000042`: zero-padded so names sort by step.
    let checkpointName (step: int) = $"step-%08d{step}"

    /// The checkpoint folders of a run, oldest first (only complete ones: each has trainer.json).
    let checkpoints (runDir: string) : string list =
        let dir = Path.Combine(runDir, CheckpointsFolder)
        if not (Directory.Exists dir) then []
        else
            Directory.GetDirectories(dir, "step-*")
            |> Array.filter (fun d -> File.Exists(Path.Combine(d, TrainingCheckpoint.TrainerFile)))
            |> Array.sort
            |> List.ofArray

    /// A BatchPosition as trainer.json's data_position: epoch · 2³² + batch.
    let encodePosition (p: BatchPosition) : int64 = (int64 p.Epoch <<< 32) ||| int64 p.Batch

    /// The BatchPosition of a data_position.
    let decodePosition (v: int64) : BatchPosition = { Epoch = int (v >>> 32); Batch = int (v &&& 0xFFFFFFFFL) }

    /// What the trainer keeps beside the configuration in trainer.json: the best dev WER and the evaluations since.
    type private Standing =
        { Best: (float * int) option
          SinceBest: int }

    let private standingJson (config: TrainConfig) (s: Standing) : string =
        Json.write (fun w ->
            w.WritePropertyName "train_config"
            w.WriteRawValue(TrainConfig.toJson config)
            match s.Best with
            | Some(wer, step) ->
                w.WriteNumber("best_wer", wer)
                w.WriteNumber("best_step", step)
            | None -> ()
            w.WriteNumber("evaluations_since_best", s.SinceBest))

    let private standingOf (path: string) (json: string) : Standing =
        use doc = Json.parseDocument path json
        let root = doc.RootElement
        let best =
            match Json.tryProp root "best_wer", Json.tryProp root "best_step" with
            | Some w, Some s -> Some(Json.asFloat path "best_wer" w, Json.asInt path "best_step" s)
            | _ -> None
        { Best = best
          SinceBest = Json.tryProp root "evaluations_since_best" |> Option.map (Json.asInt path "evaluations_since_best") |> Option.defaultValue 0 }

    /// Each predictor's target kind: the configuration's, or phonemes for a predictor that reads targets.
    let private targetKinds (config: TrainConfig) (model: MagnetWhisperModel) : TargetKind list =
        match config.Targets with
        | [] -> [ for s in model.Options.Predictors |> List.sortBy _.Layer -> if s.Targets = NoTargets then NoTarget else Phonemes ]
        | names -> names |> List.map Targets.parse

    let private optimizerSettings (config: TrainConfig) : OptimizerSettings =
        let settings =
            match config.PredictorLearningRate with
            | Some p -> OptimizerSettings.PredictorsAndRest(p, config.LearningRate)
            | None -> OptimizerSettings.Default config.LearningRate
        { settings with WeightDecay = config.WeightDecay }

    /// Row ranges of the micro-batches of a batch of `rows` utterances (as even as possible).
    let microBatchRows (rows: int) (parts: int) : (int64 * int64) list =
        let parts = max 1 (min parts rows)
        [ for i in 0 .. parts - 1 do
              let lo = i * rows / parts
              let hi = (i + 1) * rows / parts
              int64 lo, int64 (hi - lo) ]

    let private readCorpus (config: TrainConfig) (workers: int) (ffmpeg: string option) (key: string) (splits: string list) (path: string) : Corpus =
        let corpus =
            try Corpora.read { CorpusOptions.Default with MaxDuration = config.MaxDuration; Splits = splits } path
            with :? InvalidDataException as e -> raise (InvalidDataException $"key '{key}' ({path}): {e.Message}")
        let measured = BatchLoader.measure workers ffmpeg CancellationToken.None corpus
        if measured.Utterances.Length = 0 then raise (InvalidDataException $"key '{key}' ({path}): the corpus holds no usable utterance")
        measured

    /// Runs (or resumes) a run in runDir. A new run needs a runDir without a config.json (the configuration is
    /// written there); `resume` continues from the newest checkpoint with the run's own config.json. Progress is
    /// reported after every step; logs, evaluations and checkpoints as they happen (`SupervisedEvents.ProgressOnly f`
    /// observes the progress only).
    let run (config: TrainConfig) (runDir: string) (resume: bool) (options: SupervisedOptions) (events: SupervisedEvents) (ct: CancellationToken) : SupervisedResult =
        let configPath = Path.Combine(runDir, ConfigFile)
        let config, start =
            if resume then
                if not (File.Exists configPath) then raise (FileNotFoundException($"{runDir} is not a training run: it has no {ConfigFile}", configPath))
                let newest = checkpoints runDir |> List.tryLast
                match newest with
                | None -> raise (FileNotFoundException($"{runDir} has no checkpoint to resume from (in {CheckpointsFolder}/)", Path.Combine(runDir, CheckpointsFolder)))
                | Some c -> TrainConfig.read configPath |> TrainConfig.validate, Some c
            else
                let config = TrainConfig.validate config
                if File.Exists configPath then
                    raise (IOException $"{runDir} already holds a run ({ConfigFile}); resume it or choose another folder")
                // Resolved before anything is written, so a bad starting point leaves no run folder behind.
                StartingPoint.ofConfig config |> ignore
                Directory.CreateDirectory runDir |> ignore
                TrainConfig.save configPath config
                config, None
        let device = options.Device
        torch.manual_seed config.Seed |> ignore
        use model =
            match start with
            | Some c -> TrainingCheckpoint.loadModel c device torch.float32
            | None -> StartingPoint.load (StartingPoint.ofConfig config) device torch.float32
        model.train()
        if config.CtcWeight > 0.0 && model.CtcHead.IsNone then model.AttachCtcHead CtcAlphabet.classes
        TrainedParts.apply config.TrainedParts model |> ignore
        use optimizer = Optimizer.forMagnet (optimizerSettings config) model
        use sampling = Boundaries.generator (config.Seed + 1L) device
        use specAugment = SpecAugment.generator (config.Seed + 2L)
        let generators = [ SamplingGenerator, sampling ] @ (if config.SpecAugment.IsSome then [ SpecAugmentGenerator, specAugment ] else [])
        let mutable step = 0
        let mutable position = BatchPosition.Start
        let mutable standing = { Best = None; SinceBest = 0 }
        match start with
        | Some c ->
            let saved = TrainingCheckpoint.restore c optimizer generators
            step <- saved.Step
            position <- decodePosition saved.DataPosition
            standing <- standingOf (Path.Combine(c, TrainingCheckpoint.TrainerFile)) saved.Config
        | None -> ()
        let firstStep = step
        let train = readCorpus config config.Workers options.Ffmpeg "data" config.DataSplits config.Data
        let ctcTargets = dict [ for u in train.Utterances -> u.Id, CtcAlphabet.encode u.Transcript ]
        let dev = config.DevData |> Option.map (readCorpus config config.Workers options.Ffmpeg "dev_data" config.DevSplits)
        let collate = CollateOptions.ForMagnet(model, config.Language, Transcribe, targetKinds config model)
        let batching =
            { Seed = config.Seed; Shuffle = true; Size = Utterances config.BatchSize; BucketWindow = Some(50 * config.BatchSize) }
        let loader =
            BatchLoader(collate, batching, { Workers = config.Workers; Ahead = 4 * config.BatchSize; Ffmpeg = options.Ffmpeg; Device = device }, train.Utterances)
        let schedule = LearningRate.validate (LearningRateSchedule.WithWarmupRatio(config.MaxSteps, config.WarmupRatio, config.Decay))
        let curves =
            Map [ for s in model.Options.Predictors ->
                      s.Layer, PredictorCurves.validate s.Layer { PredictorCurves.WhisperPy with Temperature = Linear(config.TemperatureStart, config.TemperatureEnd) } ]
        use sink = MetricsSinks.runFolder runDir (if resume then Some(int64 step) else None)
        let evaluation =
            { EvaluationOptions.Default with BatchSize = config.EvalBatchSize; Workers = config.Workers; Language = config.Language; Ffmpeg = options.Ffmpeg }
        let mutable lastCheckpoint = start
        let checkpoint () =
            let dir = Path.Combine(runDir, CheckpointsFolder, checkpointName step)
            TrainingCheckpoint.save dir model optimizer
                { Step = step; DataPosition = encodePosition position; Random = RandomState.capture generators
                  Config = standingJson config standing }
            lastCheckpoint <- Some dir
            // Keep the newest K (the one just written is the newest).
            let all = checkpoints runDir
            for old in all |> List.take (max 0 (all.Length - config.KeepCheckpoints)) do
                Directory.Delete(old, true)
            events.CheckpointWritten { Step = step; Folder = dir }
        let evaluate () =
            match dev with
            | None -> ()
            | Some corpus ->
                model.eval()
                let result = Evaluator.evaluate model evaluation corpus ignore CancellationToken.None
                model.train()
                let wer = result.Score.Words.Rate
                let kept = result.Predictors |> List.map _.KeptFraction
                let compression = if kept.IsEmpty then nan else List.average kept
                sink.Log(int64 step,
                         [ MetricKeys.EvalWer, wer
                           MetricKeys.EvaluationCer, result.Score.Characters.Rate
                           MetricKeys.EvaluationRawWer, result.Score.RawWords.Rate
                           MetricKeys.EvalNumSamples, float result.Utterances.Length
                           MetricKeys.EvalCompressionRatio, compression ])
                let isBest =
                    match standing.Best with
                    | Some(best, _) when not (wer < best) ->
                        standing <- { standing with SinceBest = standing.SinceBest + 1 }
                        false
                    | _ ->
                        MagnetFormat.save (Path.Combine(runDir, "best")) model
                        standing <- { Best = Some(wer, step); SinceBest = 0 }
                        true
                events.Evaluated { Step = step; Wer = wer; Cer = result.Score.Characters.Rate; Compression = compression; IsBest = isBest }
        let clock = Stopwatch.StartNew()
        let mutable outcome = None
        let mutable nonFinite = 0
        if step >= config.MaxSteps then outcome <- Some Completed
        // The loader's epochs: enough for max_steps batches of a corpus whose every epoch has at least one batch.
        let batches = loader.Batches(position, position.Epoch + config.MaxSteps, CancellationToken.None)
        use e = batches.GetEnumerator()
        while outcome.IsNone do
            if not (e.MoveNext()) then
                raise (InvalidDataException $"key 'data' ({config.Data}): the training data ran out at step {step}: every utterance of the later epochs was left out")
            let loaded = e.Current
            use batch = loaded.Batch
            use mel = match config.SpecAugment with Some sa -> SpecAugment.apply sa specAugment batch.Mel batch.FrameMask | None -> batch.Mel.alias()
            let watch = Stopwatch.StartNew()
            let p = Curve.progress step config.MaxSteps
            let schedules = PredictorCurves.schedules curves p
            let kept = ResizeArray<float>()
            let observe (r: ForwardResult) = for _, k in r.Encoder.Compression do kept.Add k
            let rows = microBatchRows batch.Ids.Length config.MicroBatches
            let slice (lo, n) (t: torch.Tensor) = t.narrow(0L, lo, n)
            let counts (lo, n) = TrainingStep.countsOf (slice (lo, n) batch.Labels)
            let loss (lo, n) =
                let input =
                    { ForwardInput.Training(slice (lo, n) mel, Some(slice (lo, n) batch.FrameMask), slice (lo, n) batch.Labels,
                                            batch.TargetMatrix |> Option.map (fun t -> t.narrow(1L, lo, n)), sampling) with
                        DecoderInputs = Some(slice (lo, n) batch.DecoderInputs)
                        TokenMask = Some(slice (lo, n) batch.TokenMask)
                        Schedules = schedules }
                if config.CtcWeight > 0.0 then
                    LossSums.magnetCtc observe model input config.CtcWeight [| for i in lo .. lo + n - 1L -> ctcTargets.[batch.Ids.[int i]] |]
                else LossSums.magnetObserved observe model input
            let multiplier = LearningRate.multiplier schedule step
            let report = TrainingStep.run optimizer { MaxGradientNorm = config.MaxGradientNorm } multiplier rows counts loss
            step <- step + 1
            position <- loaded.Next
            nonFinite <- NonFiniteStreak.next nonFinite report.Skipped
            let seconds = watch.Elapsed.TotalSeconds
            let compression = if kept.Count = 0 then nan else Seq.average kept
            let samplesPerSecond = float batch.Ids.Length / max 1e-9 seconds
            if step % config.LogEvery = 0 || step = config.MaxSteps then
                let first = model.Options.Predictors |> List.sortBy _.Layer |> List.tryHead
                let scheduleValues =
                    match first with
                    | Some s ->
                        let sc = schedules.[s.Layer]
                        [ MetricKeys.TrainBoundaryTemperature, sc.Temperature; MetricKeys.TrainBoundaryTargetProgress, sc.TargetProgress ]
                    | None -> []
                let epoch = float loaded.Position.Epoch + float (loaded.Position.Batch + 1) / float (loader.BatchesIn loaded.Position.Epoch)
                let values =
                         [ MetricKeys.TrainLoss, report.Loss
                           MetricKeys.TrainAsrLoss, report.CrossEntropy
                           MetricKeys.TrainBoundaryLoss, report.BoundaryLoss
                           MetricKeys.TrainCompressionRatio, compression
                           MetricKeys.TrainLearningRate, config.LearningRate * multiplier
                           MetricKeys.TrainGradNorm, report.GradientNorm
                           MetricKeys.TrainEpoch, epoch
                           "train/samples_per_second", samplesPerSecond
                           "train/skipped_update", (if report.Skipped.IsSome then 1.0 else 0.0) ]
                         @ (if config.CtcWeight > 0.0 then [ "train/ctc_loss", report.CtcLoss ] else [])
                         @ scheduleValues
                sink.Log(int64 step, values)
                events.Logged { Step = step; Values = values }
            events.Progress
                { Step = step; FirstStep = firstStep; MaxSteps = config.MaxSteps; Loss = report.Loss; Compression = compression
                  SamplesPerSecond = samplesPerSecond; ElapsedSeconds = clock.Elapsed.TotalSeconds }
            if NonFiniteStreak.exceeds config.MaxNonFiniteSteps nonFinite then
                // No checkpoint of this state: the newest one stays the last good one.
                sink.Flush()
                let message = NonFiniteStreak.message step nonFinite config.MaxNonFiniteSteps report.Skipped.Value lastCheckpoint
                raise (NonFiniteTrainingException(message, step, lastCheckpoint))
            let finished = step >= config.MaxSteps
            if dev.IsSome && ((config.EvalEvery > 0 && step % config.EvalEvery = 0) || finished) then
                evaluate ()
                if config.EarlyStoppingPatience > 0 && standing.SinceBest >= config.EarlyStoppingPatience then
                    outcome <- Some StoppedEarly
            let stopHere = ct.IsCancellationRequested || options.StopAtStep = Some step
            if finished then outcome <- Some Completed
            elif stopHere then outcome <- Some Interrupted
            if outcome.IsSome || (config.CheckpointEvery > 0 && step % config.CheckpointEvery = 0) then
                checkpoint ()
        sink.Flush()
        let outcome = outcome.Value
        if outcome <> Interrupted then
            MagnetFormat.save (Path.Combine(runDir, "final")) model
        { Outcome = outcome; Step = step; Checkpoint = lastCheckpoint; Best = standing.Best }
