namespace MagnetWhisper.Core.Training

// The GRPO training loop (issue 10): the supervised run's conventions (run folder with config.json, metrics.jsonl and
// TensorBoard, checkpoints/step-N through TrainingCheckpoint keeping the newest K, best/ by dev WER, final/, resume
// bit-identical on CPU, cancellation and StopAtStep) around GrpoStep: each batch of B audios is tiled K times,
// sampled once in RL mode (rewards from the sampled boundaries), then μ PPO epochs replay the recorded actions.
// The model runs in evaluation mode (no dropout), so the replay of an unchanged policy equals the sampling pass and
// the first epoch's ratio is exactly 1.

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

/// GRPO's metric keys beyond the original's (`MetricKeys`).
[<RequireQualifiedAccess>]
module GrpoMetricKeys =
    /// Fraction of the batch's groups whose rewards had zero spread (zero advantage).
    [<Literal>]
    let ZeroSpreadFraction = "train/grpo_zero_spread_fraction"

    /// Fraction of samples whose PPO ratio was clipped (mean over the inner epochs).
    [<Literal>]
    let ClipFraction = "train/grpo_clip_fraction"

    /// k3 estimate of KL(π_old ‖ π) on the recorded actions (mean over the inner epochs).
    [<Literal>]
    let ApproxKl = "train/grpo_approx_kl"

    /// k3 estimate of KL(π ‖ π_ref) to the starting policy (0 unless kl_coef > 0).
    [<Literal>]
    let KlToReference = "train/grpo_kl_to_reference"

    /// Mean binary entropy of p per valid frame, summed over predictors.
    [<Literal>]
    let Entropy = "train/grpo_entropy"

    /// Mean over the samples of each sample's final segments / valid encoder positions.
    [<Literal>]
    let KeptFraction = "train/grpo_kept_fraction"

    /// Prefix of each predictor's kept fraction over the rollout (`train/grpo_kept_fraction/layer_N`).
    [<Literal>]
    let KeptFractionLayerPrefix = "train/grpo_kept_fraction/layer_"

    /// Inner epochs whose step was applied.
    [<Literal>]
    let EpochsApplied = "train/grpo_epochs_applied"

/// What the progress callback sees after each GRPO step.
type GrpoProgress =
    { Step: int
      FirstStep: int
      MaxSteps: int
      RewardMean: float
      /// Mean kept fraction of the rollout's samples.
      KeptFraction: float
      ElapsedSeconds: float }

/// The GRPO trainer.
[<RequireQualifiedAccess>]
module Grpo =
    /// What the trainer keeps beside the configuration in trainer.json: the best dev WER and its step.
    let private standingJson (config: GrpoConfig) (best: (float * int) option) : string =
        Json.write (fun w ->
            w.WritePropertyName "grpo_config"
            w.WriteRawValue(GrpoConfig.toJson config)
            match best with
            | Some(wer, step) ->
                w.WriteNumber("best_wer", wer)
                w.WriteNumber("best_step", step)
            | None -> ())

    let private bestOf (path: string) (json: string) : (float * int) option =
        use doc = Json.parseDocument path json
        let root = doc.RootElement
        match Json.tryProp root "best_wer", Json.tryProp root "best_step" with
        | Some w, Some s -> Some(Json.asFloat path "best_wer" w, Json.asInt path "best_step" s)
        | _ -> None

    let private optimizerSettings (config: TrainConfig) : OptimizerSettings =
        let settings =
            match config.PredictorLearningRate with
            | Some p -> OptimizerSettings.PredictorsAndRest(p, config.LearningRate)
            | None -> OptimizerSettings.Default config.LearningRate
        { settings with WeightDecay = config.WeightDecay }

    let private readCorpus (config: TrainConfig) (ffmpeg: string option) (key: string) (path: string) : Corpus =
        let corpus =
            try Corpora.read { CorpusOptions.Default with MaxDuration = config.MaxDuration } path
            with :? InvalidDataException as e -> raise (InvalidDataException $"key '{key}' ({path}): {e.Message}")
        let measured = BatchLoader.measure config.Workers ffmpeg CancellationToken.None corpus
        if measured.Utterances.Length = 0 then raise (InvalidDataException $"key '{key}' ({path}): the corpus holds no usable utterance")
        measured

    /// The log-probability of recorded actions under a fixed reference model (no gradients).
    let private referenceLogProb (reference: MagnetWhisperModel) (input: EncoderInput) (actions: Map<int, torch.Tensor>) : torch.Tensor =
        use _ = torch.no_grad ()
        use scope = torch.NewDisposeScope()
        use enc = reference.Encode { input with Rl = true; Replay = actions; Mode = PredictorMode.Threshold; TargetMatrix = None }
        match enc.LogProb with
        | Some l -> l.detach().clone().MoveToOuterDisposeScope()
        | None -> invalidOp "the reference model returned no log-probability"

    /// Runs (or resumes) a GRPO run in runDir, as `Supervised.run` does a supervised one: a new run needs a runDir
    /// without config.json; `resume` continues from the newest checkpoint with the run's own config.json.
    let run (config: GrpoConfig) (runDir: string) (resume: bool) (options: SupervisedOptions) (progress: GrpoProgress -> unit) (ct: CancellationToken) : SupervisedResult =
        let configPath = Path.Combine(runDir, Supervised.ConfigFile)
        let config, start =
            if resume then
                if not (File.Exists configPath) then raise (FileNotFoundException($"{runDir} is not a training run: it has no {Supervised.ConfigFile}", configPath))
                match Supervised.checkpoints runDir |> List.tryLast with
                | None -> raise (FileNotFoundException($"{runDir} has no checkpoint to resume from (in {Supervised.CheckpointsFolder}/)", Path.Combine(runDir, Supervised.CheckpointsFolder)))
                | Some c -> GrpoConfig.read configPath |> GrpoConfig.validate, Some c
            else
                let config = GrpoConfig.validate config
                if File.Exists configPath then
                    raise (IOException $"{runDir} already holds a run ({Supervised.ConfigFile}); resume it or choose another folder")
                if not (Directory.Exists config.Common.Model) then
                    raise (DirectoryNotFoundException $"key 'model': {config.Common.Model} is not a folder")
                Directory.CreateDirectory runDir |> ignore
                GrpoConfig.save configPath config
                config, None
        let common = config.Common
        let settings = config.Settings.Validate()
        let k = settings.GroupSize
        let device = options.Device
        torch.manual_seed common.Seed |> ignore
        use model =
            match start with
            | Some c -> TrainingCheckpoint.loadModel c device torch.float32
            | None -> MagnetFormat.load common.Model device torch.float32
        if model.Options.Predictors.IsEmpty then
            raise (InvalidDataException $"key 'model': {common.Model} has no boundary predictor, so there is no policy to train")
        // Evaluation mode throughout: no dropout, so sampling and replay see one policy.
        model.eval()
        TrainedParts.apply common.TrainedParts model |> ignore
        // The KL penalty's reference: the run's starting policy (the model folder, also after a resume).
        let reference =
            if settings.Objective.KlCoefficient > 0.0 then
                let r = MagnetFormat.load common.Model device torch.float32
                r.eval()
                r.SetTrainable [] |> ignore
                Some r
            else None
        use _ = { new IDisposable with member _.Dispose() = reference |> Option.iter (fun r -> r.Dispose()) }
        use optimizer = Optimizer.forMagnet (optimizerSettings common) model
        use sampling = Boundaries.generator (common.Seed + 1L) device
        let generators = [ Supervised.SamplingGenerator, sampling ]
        let mutable step = 0
        let mutable position = BatchPosition.Start
        let mutable best = None
        match start with
        | Some c ->
            let saved = TrainingCheckpoint.restore c optimizer generators
            step <- saved.Step
            position <- Supervised.decodePosition saved.DataPosition
            best <- bestOf (Path.Combine(c, TrainingCheckpoint.TrainerFile)) saved.Config
        | None -> ()
        let firstStep = step
        let train = readCorpus common options.Ffmpeg "data" common.Data
        let dev = common.DevData |> Option.map (readCorpus common options.Ffmpeg "dev_data")
        // RL reads no targets.
        let collate = CollateOptions.ForMagnet(model, common.Language, Transcribe, [ for _ in model.Options.Predictors -> NoTarget ])
        let batching =
            { Seed = common.Seed; Shuffle = true; Size = Utterances common.BatchSize; BucketWindow = Some(50 * common.BatchSize) }
        let loader =
            BatchLoader(collate, batching, { Workers = common.Workers; Ahead = 4 * common.BatchSize; Ffmpeg = options.Ffmpeg; Device = device }, train.Utterances)
        // The policy is the predictors: their peak rate is the one logged.
        let policyLearningRate = defaultArg common.PredictorLearningRate common.LearningRate
        let schedule = LearningRate.validate (LearningRateSchedule.WithWarmupRatio(common.MaxSteps, common.WarmupRatio, common.Decay))
        use sink = MetricsSinks.runFolder runDir (if resume then Some(int64 step) else None)
        let evaluation =
            { EvaluationOptions.Default with BatchSize = common.EvalBatchSize; Workers = common.Workers; Language = common.Language; Ffmpeg = options.Ffmpeg }
        let mutable lastCheckpoint = start
        let checkpoint () =
            let dir = Path.Combine(runDir, Supervised.CheckpointsFolder, Supervised.checkpointName step)
            TrainingCheckpoint.save dir model optimizer
                { Step = step; DataPosition = Supervised.encodePosition position; Random = RandomState.capture generators
                  Config = standingJson config best }
            lastCheckpoint <- Some dir
            let all = Supervised.checkpoints runDir
            for old in all |> List.take (max 0 (all.Length - common.KeepCheckpoints)) do
                Directory.Delete(old, true)
        let evaluate () =
            match dev with
            | None -> ()
            | Some corpus ->
                let result = Evaluator.evaluate model evaluation corpus ignore CancellationToken.None
                model.eval()
                let wer = result.Score.Words.Rate
                let kept = result.Predictors |> List.map _.KeptFraction
                sink.Log(int64 step,
                         [ MetricKeys.EvalWer, wer
                           MetricKeys.EvaluationCer, result.Score.Characters.Rate
                           MetricKeys.EvaluationRawWer, result.Score.RawWords.Rate
                           MetricKeys.EvalNumSamples, float result.Utterances.Length
                           MetricKeys.EvalCompressionRatio, (if kept.IsEmpty then nan else List.average kept) ])
                match best with
                | Some(b, _) when not (wer < b) -> ()
                | _ ->
                    MagnetFormat.save (Path.Combine(runDir, "best")) model
                    best <- Some(wer, step)
        let clock = Stopwatch.StartNew()
        let mutable outcome = None
        if step >= common.MaxSteps then outcome <- Some Completed
        let batches = loader.Batches(position, position.Epoch + common.MaxSteps, CancellationToken.None)
        use e = batches.GetEnumerator()
        while outcome.IsNone do
            if not (e.MoveNext()) then
                raise (InvalidDataException $"key 'data' ({common.Data}): the training data ran out at step {step}: every utterance of the later epochs was left out")
            let loaded = e.Current
            use batch = loaded.Batch
            let multiplier = LearningRate.multiplier schedule step
            let report, rolloutStats =
                use _ = torch.NewDisposeScope()
                let tile = GrpoBatch.tile k
                let mel, frameMask = tile batch.Mel, tile batch.FrameMask
                let tiled =
                    { ForwardInput.Training(mel, Some frameMask, tile batch.Labels, None, sampling) with
                        DecoderInputs = Some(tile batch.DecoderInputs)
                        TokenMask = Some(tile batch.TokenMask) }
                let encoderInput = tiled.EncoderInput
                let referenceOf = reference |> Option.map (fun r -> referenceLogProb r encoderInput)
                use rollout = GrpoStep.sample model settings tiled referenceOf
                let report = GrpoStep.update optimizer settings multiplier rollout (GrpoStep.replayEncoder model encoderInput)
                let mean (t: torch.Tensor) = TrainingStep.value (t.to_type(torch.float64).mean())
                report, (mean rollout.CrossEntropy, mean rollout.BoundaryLoss, mean rollout.KeptFraction, rollout.LayerKeptFractions)
            step <- step + 1
            position <- loaded.Next
            let ce, boundary, kept, layers = rolloutStats
            if step % common.LogEvery = 0 || step = common.MaxSteps then
                let epoch = float loaded.Position.Epoch + float (loaded.Position.Batch + 1) / float (loader.BatchesIn loaded.Position.Epoch)
                sink.Log(int64 step,
                         [ MetricKeys.TrainGrpoRewardMean, report.RewardMean
                           MetricKeys.TrainGrpoRewardStd, report.RewardStd
                           MetricKeys.TrainAsrLoss, ce
                           MetricKeys.TrainBoundaryLoss, boundary
                           MetricKeys.TrainTotalLoss, ce + settings.BoundaryLossWeight * boundary
                           MetricKeys.TrainCompressionRatio, (layers |> List.averageBy snd)
                           MetricKeys.TrainPolicyLoss, report.PolicyLoss
                           MetricKeys.TrainGradNorm, report.GradientNorm
                           MetricKeys.TrainLearningRate, policyLearningRate * multiplier
                           MetricKeys.TrainEpoch, epoch
                           GrpoMetricKeys.ZeroSpreadFraction, report.ZeroSpreadFraction
                           GrpoMetricKeys.ClipFraction, report.ClipFraction
                           GrpoMetricKeys.ApproxKl, report.ApproxKl
                           GrpoMetricKeys.KlToReference, report.KlToReference
                           GrpoMetricKeys.Entropy, report.Entropy
                           GrpoMetricKeys.KeptFraction, kept
                           GrpoMetricKeys.EpochsApplied, float report.EpochsApplied
                           "train/skipped_update", (if report.Skipped.IsSome then 1.0 else 0.0) ]
                         @ [ for layer, f in layers -> $"{GrpoMetricKeys.KeptFractionLayerPrefix}{layer}", f ])
            progress
                { Step = step; FirstStep = firstStep; MaxSteps = common.MaxSteps; RewardMean = report.RewardMean; KeptFraction = kept
                  ElapsedSeconds = clock.Elapsed.TotalSeconds }
            let finished = step >= common.MaxSteps
            if dev.IsSome && ((common.EvalEvery > 0 && step % common.EvalEvery = 0) || finished) then evaluate ()
            let stopHere = ct.IsCancellationRequested || options.StopAtStep = Some step
            if finished then outcome <- Some Completed
            elif stopHere then outcome <- Some Interrupted
            if outcome.IsSome || (common.CheckpointEvery > 0 && step % common.CheckpointEvery = 0) then
                checkpoint ()
        sink.Flush()
        let outcome = outcome.Value
        if outcome <> Interrupted then
            MagnetFormat.save (Path.Combine(runDir, "final")) model
        { Outcome = outcome; Step = step; Checkpoint = lastCheckpoint; Best = best }
