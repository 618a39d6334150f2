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

/// What callers of Supervised.run observe (`RunEvents`), with the supervised progress.
type SupervisedEvents = RunEvents<SupervisedProgress>

/// The supervised trainer.
[<RequireQualifiedAccess>]
module Supervised =
    /// The generator of SpecAugment's masks, as named in trainer.json (present when `spec_augment` is on).
    [<Literal>]
    let SpecAugmentGenerator = "spec_augment"

    /// Each predictor's target kind: the configuration's, or phonemes for a predictor that reads targets.
    let private targetKinds (config: TrainConfig) (model: MagnetWhisperModel) : TargetKind list =
        match config.Targets with
        | [] -> [ for s in model.Options.Predictors |> List.sortBy _.Layer -> if s.Targets = NoTargets then NoTarget else Phonemes ]
        | names -> names |> List.map Targets.parse

    /// Row ranges of the micro-batches of a batch of `rows` utterances (as even as possible).
    let microBatchRows (rows: int) (parts: int) : (int64 * int64) list =
        let parts = max 1 (min parts rows)
        [ for i in 0 .. parts - 1 do
              let lo = i * rows / parts
              let hi = (i + 1) * rows / parts
              int64 lo, int64 (hi - lo) ]

    /// Runs (or resumes) a run in runDir. A new run needs a runDir without a config.json (the configuration is
    /// written there); `resume` continues from the newest checkpoint with the run's own config.json. Progress is
    /// reported after every step; logs, evaluations and checkpoints as they happen (`SupervisedEvents.ProgressOnly f`
    /// observes the progress only).
    let run (config: TrainConfig) (runDir: string) (resume: bool) (options: SupervisedOptions) (events: SupervisedEvents) (ct: CancellationToken) : SupervisedResult =
        let format: TrainingRun.ConfigFormat<TrainConfig> =
            { Read = TrainConfig.read; Validate = TrainConfig.validate; Save = TrainConfig.save; Common = id }
        let config, start = TrainingRun.openRun format config runDir resume
        let device = options.Device
        torch.manual_seed config.Seed |> ignore
        use model = TrainingRun.loadModel config start device
        model.train()
        let curves = TrainConfig.predictorCurves config [ for s in model.Options.Predictors -> s.Layer ]
        if config.CtcWeight > 0.0 && model.CtcHead.IsNone then model.AttachCtcHead CtcAlphabet.classes
        TrainedParts.apply config.TrainedParts model |> ignore
        use optimizer = Optimizer.forMagnet (TrainingRun.optimizerSettings config) model
        use sampling = Boundaries.generator (config.Seed + 1L) device
        use specAugment = SpecAugment.generator (config.Seed + 2L)
        let generators =
            [ TrainingRun.SamplingGenerator, sampling ] @ (if config.SpecAugment.IsSome then [ SpecAugmentGenerator, specAugment ] else [])
        use session =
            new TrainingRun.Session<SupervisedProgress>(runDir, config, "train_config", TrainConfig.toJson config, start, model, optimizer, generators, options, events)
        let ctcTargets = dict [ for u in session.Train.Utterances -> u.Id, CtcAlphabet.encode u.Transcript ]
        let collate = CollateOptions.ForMagnet(model, config.Language, Transcribe, targetKinds config model)
        let batching =
            { Seed = config.Seed; Shuffle = true; Size = Utterances config.BatchSize; BucketWindow = Some(50 * config.BatchSize) }
        let loader =
            BatchLoader(collate, batching, { Workers = config.Workers; Ahead = 4 * config.BatchSize; Ffmpeg = options.Ffmpeg; Device = device }, session.Train.Utterances)
        let schedule = LearningRate.validate (LearningRateSchedule.WithWarmupRatio(config.MaxSteps, config.WarmupRatio, config.Decay))
        // eval/loss: the training loss on the dev data in evaluation mode (thresholded boundaries, no dropout), token-mean
        // cross-entropy plus utterance-mean boundary loss at the step's schedules; eval/asr_loss: the cross-entropy alone.
        session.DevLoss <-
            Some(fun corpus ->
                let schedules = PredictorCurves.schedules curves (Curve.progress session.Step config.MaxSteps)
                let loaderOptions = { Workers = config.Workers; Ahead = 2 * config.EvalBatchSize; Ffmpeg = options.Ffmpeg; Device = device }
                let losses = DevLoss.measure model collate loaderOptions config.BatchSize schedules corpus.Utterances
                [ MetricKeys.EvalLoss, losses.CrossEntropy + losses.BoundaryLoss; MetricKeys.EvalAsrLoss, losses.CrossEntropy ])
        let clock = Stopwatch.StartNew()
        for loaded in session.Batches loader do
            let step = session.Step
            use batch = loaded.Batch
            use mel = match config.SpecAugment with Some sa -> SpecAugment.apply sa specAugment batch.Mel batch.FrameMask | None -> batch.Mel.alias()
            let watch = Stopwatch.StartNew()
            let p = Curve.progress step config.MaxSteps
            let schedules = PredictorCurves.schedules curves p
            let kept = ResizeArray<float>()
            // The first predictor's spacing CV and adjacent-boundary share of the step's last micro-batch (SPEC §8:
            // what whisper.py logged as boundary_cv and boundary_adjacent_pct, the latter in percent).
            let mutable spacing = None
            let observe (r: ForwardResult) =
                for _, k in r.Encoder.Compression do kept.Add k
                match r.Encoder.Layers |> List.sortBy _.Index |> List.tryHead with
                | Some l -> spacing <- Some(TrainingStep.value l.Output.MeanSpacingCv, 100.0 * TrainingStep.value l.Output.AdjacencyOverall)
                | None -> ()
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
            session.Advance loaded.Next
            let step = session.Step
            let seconds = watch.Elapsed.TotalSeconds
            let compression = if kept.Count = 0 then nan else Seq.average kept
            let samplesPerSecond = float batch.Ids.Length / max 1e-9 seconds
            if session.IsLogStep then
                let first = model.Options.Predictors |> List.sortBy _.Layer |> List.tryHead
                let scheduleValues =
                    match first with
                    | Some s ->
                        let sc = schedules.[s.Layer]
                        [ MetricKeys.TrainBoundaryTemperature, sc.Temperature; MetricKeys.TrainBoundaryTargetProgress, sc.TargetProgress ]
                    | None -> []
                let values =
                         [ MetricKeys.TrainLoss, report.Loss
                           MetricKeys.TrainAsrLoss, report.CrossEntropy
                           MetricKeys.TrainBoundaryLoss, report.BoundaryLoss
                           MetricKeys.TrainCompressionRatio, compression
                           MetricKeys.TrainLearningRate, config.LearningRate * multiplier
                           MetricKeys.TrainGradNorm, report.GradientNorm
                           MetricKeys.TrainEpoch, TrainingRun.epochOf loader loaded
                           "train/samples_per_second", samplesPerSecond
                           "train/skipped_update", (if report.Skipped.IsSome then 1.0 else 0.0) ]
                         @ (if config.CtcWeight > 0.0 then [ "train/ctc_loss", report.CtcLoss ] else [])
                         @ (match spacing with
                            | Some(cv, adjacent) -> [ MetricKeys.TrainBoundaryCv, cv; MetricKeys.TrainBoundaryAdjacentPct, adjacent ]
                            | None -> [])
                         @ scheduleValues
                session.Log values
            events.Progress
                { Step = step; FirstStep = session.FirstStep; MaxSteps = config.MaxSteps; Loss = report.Loss; Compression = compression
                  SamplesPerSecond = samplesPerSecond; ElapsedSeconds = clock.Elapsed.TotalSeconds }
            session.EndStep(report.Skipped, ct)
        session.Finish()
