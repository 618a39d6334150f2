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

    /// Mean over the samples of each sample's WER in percent (logged when `wer_reward_weight` > 0).
    [<Literal>]
    let Wer = "train/grpo_wer"

/// What the progress callback sees after each GRPO step.
type GrpoProgress =
    { Step: int
      FirstStep: int
      MaxSteps: int
      RewardMean: float
      /// Mean kept fraction of the rollout's samples.
      KeptFraction: float
      ElapsedSeconds: float }

/// What callers of Grpo.run observe (`RunEvents`), with the GRPO progress.
type GrpoEvents = RunEvents<GrpoProgress>

/// The GRPO trainer.
[<RequireQualifiedAccess>]
module Grpo =
    /// The log-probability of recorded actions under a fixed reference model (no gradients).
    let private referenceLogProb (reference: MagnetWhisperModel) (input: EncoderInput) (actions: Map<int, torch.Tensor>) : torch.Tensor =
        use _ = torch.no_grad ()
        use scope = torch.NewDisposeScope()
        use enc = reference.Encode { input with Rl = true; Replay = actions; Mode = PredictorMode.Threshold; TargetMatrix = None }
        match enc.LogProb with
        | Some l -> l.detach().clone().MoveToOuterDisposeScope()
        | None -> invalidOp "the reference model returned no log-probability"

    /// Runs (or resumes) a GRPO run in runDir, as `Supervised.run` does a supervised one (TrainingRun): a new run
    /// needs a runDir without config.json; `resume` continues from the newest checkpoint with the run's own
    /// config.json. Progress is reported after every step; logs, evaluations and checkpoints as they happen.
    let run (config: GrpoConfig) (runDir: string) (resume: bool) (options: SupervisedOptions) (events: GrpoEvents) (ct: CancellationToken) : SupervisedResult =
        let format: TrainingRun.ConfigFormat<GrpoConfig> =
            { Read = GrpoConfig.read; Validate = GrpoConfig.validate; Save = GrpoConfig.save; Common = _.Common }
        let config, start = TrainingRun.openRun format config runDir resume
        let common = config.Common
        let settings = config.Settings.Validate()
        let k = settings.GroupSize
        let device = options.Device
        torch.manual_seed common.Seed |> ignore
        use model = TrainingRun.loadModel common start device
        if model.Options.Predictors.IsEmpty then
            raise (InvalidDataException $"key 'model': {common.Model} has no boundary predictor, so there is no policy to train")
        // Evaluation mode throughout: no dropout, so sampling and replay see one policy.
        model.eval()
        TrainedParts.apply common.TrainedParts model |> ignore
        // The KL penalty's reference: the run's starting policy (the starting point, also after a resume; a fresh
        // model is drawn again from the seed).
        let reference =
            if settings.Objective.KlCoefficient > 0.0 then
                if common.FromScratch.IsSome then torch.manual_seed common.Seed |> ignore
                let r = TrainingRun.loadModel common None device
                r.eval()
                r.SetTrainable [] |> ignore
                Some r
            else None
        use _ = { new IDisposable with member _.Dispose() = reference |> Option.iter (fun r -> r.Dispose()) }
        use optimizer = Optimizer.forMagnet (TrainingRun.optimizerSettings common) model
        use sampling = Boundaries.generator (common.Seed + 1L) device
        let generators = [ TrainingRun.SamplingGenerator, sampling ]
        use session =
            new TrainingRun.Session<GrpoProgress>(runDir, common, "grpo_config", GrpoConfig.toJson config, start, model, optimizer, generators, options, events)
        // RL reads no targets.
        let collate = CollateOptions.ForMagnet(model, common.Language, Transcribe, [ for _ in model.Options.Predictors -> NoTarget ])
        let batching =
            { Seed = common.Seed; Shuffle = true; Size = Utterances common.BatchSize; BucketWindow = Some(50 * common.BatchSize) }
        let loader =
            BatchLoader(collate, batching, { Workers = common.Workers; Ahead = 4 * common.BatchSize; Ffmpeg = options.Ffmpeg; Device = device }, session.Train.Utterances)
        // The WER reward scores each sample against its utterance's transcript (ids are unique within a corpus).
        let transcripts =
            lazy
                (let byId = Collections.Generic.Dictionary<string, string>()
                 for u in session.Train.Utterances do
                     match byId.TryGetValue u.Id with
                     | true, t when t <> u.Transcript ->
                         raise (InvalidDataException $"key 'data': utterance id '{u.Id}' occurs twice with different transcripts, so the WER reward (wer_reward_weight) cannot tell its reference")
                     | _ -> byId.[u.Id] <- u.Transcript
                 byId)
        let werInput (batch: CollatedBatch) : WerRewardInput option =
            if settings.WerRewardWeight = 0.0 then None
            else
                // Twice the batch's longest label sequence: a hypothesis as long as its reference is never cut, and a
                // policy whose decodes run on costs a bounded number of steps.
                Some
                    { References = [| for _ in 1 .. k do for id in batch.Ids -> transcripts.Value.[id] |]
                      Prompt = collate.Prompt
                      MaxNewTokens = 2 * int batch.Labels.shape.[1]
                      TextOf = fun ids -> collate.Tokenizer.Decode(ids, SkipAll) }
        // eval/asr_loss: the dev data's token-mean cross-entropy with thresholded boundaries (the model stays in
        // evaluation mode), the reward's main term as the deployed model sees it. No eval/loss: GRPO's collate reads no
        // boundary targets.
        session.DevLoss <-
            Some(fun corpus ->
                let loaderOptions = { Workers = common.Workers; Ahead = 2 * common.EvalBatchSize; Ffmpeg = options.Ffmpeg; Device = device }
                let losses = DevLoss.measure model collate loaderOptions common.BatchSize Map.empty corpus.Utterances
                [ MetricKeys.EvalAsrLoss, losses.CrossEntropy ])
        // The policy is the predictors: their peak rate is the one logged.
        let policyLearningRate = defaultArg common.PredictorLearningRate common.LearningRate
        let schedule = LearningRate.validate (LearningRateSchedule.WithWarmupRatio(common.MaxSteps, common.WarmupRatio, common.Decay))
        let clock = Stopwatch.StartNew()
        for loaded in session.Batches loader do
            let step = session.Step
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
                use rollout = GrpoStep.sample model settings tiled (werInput batch) referenceOf
                let report = GrpoStep.update optimizer settings multiplier rollout (GrpoStep.replayEncoder model encoderInput)
                let mean (t: torch.Tensor) = TrainingStep.value (t.to_type(torch.float64).mean())
                report, (mean rollout.CrossEntropy, mean rollout.BoundaryLoss, mean rollout.KeptFraction, rollout.LayerKeptFractions,
                         rollout.WordErrorRate |> Option.map mean)
            session.Advance loaded.Next
            let step = session.Step
            let ce, boundary, kept, layers, wer = rolloutStats
            if session.IsLogStep then
                session.Log(
                         [ MetricKeys.TrainGrpoRewardMean, report.RewardMean
                           MetricKeys.TrainGrpoRewardStd, report.RewardStd
                           MetricKeys.TrainAsrLoss, ce
                           MetricKeys.TrainBoundaryLoss, boundary
                           MetricKeys.TrainTotalLoss, ce + settings.BoundaryLossWeight * boundary
                           MetricKeys.TrainCompressionRatio, (layers |> List.averageBy snd)
                           MetricKeys.TrainPolicyLoss, report.PolicyLoss
                           MetricKeys.TrainGradNorm, report.GradientNorm
                           MetricKeys.TrainLearningRate, policyLearningRate * multiplier
                           MetricKeys.TrainEpoch, TrainingRun.epochOf loader loaded
                           GrpoMetricKeys.ZeroSpreadFraction, report.ZeroSpreadFraction
                           GrpoMetricKeys.ClipFraction, report.ClipFraction
                           GrpoMetricKeys.ApproxKl, report.ApproxKl
                           GrpoMetricKeys.KlToReference, report.KlToReference
                           GrpoMetricKeys.Entropy, report.Entropy
                           GrpoMetricKeys.KeptFraction, kept
                           GrpoMetricKeys.EpochsApplied, float report.EpochsApplied
                           "train/skipped_update", (if report.Skipped.IsSome then 1.0 else 0.0) ]
                         @ [ for layer, f in layers -> $"{GrpoMetricKeys.KeptFractionLayerPrefix}{layer}", f ]
                         @ [ for w in Option.toList wer -> GrpoMetricKeys.Wer, 100.0 * w ])
            events.Progress
                { Step = step; FirstStep = session.FirstStep; MaxSteps = common.MaxSteps; RewardMean = report.RewardMean; KeptFraction = kept
                  ElapsedSeconds = clock.Elapsed.TotalSeconds }
            session.EndStep(report.Skipped, ct)
        session.Finish()
