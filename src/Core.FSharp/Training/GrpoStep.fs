namespace MagnetWhisper.Core.Training

// One GRPO update (DECISIONS #4, issue 10). A rollout: the batch is tiled K times (K-major, independent draws from the
// sampling generator) and run once in RL mode, the sampled boundaries being the ones pooled, so each sample's reward
//   r = −(token-mean CE over the utterance's real tokens) − w · (its own boundary loss) − λ · (its kept fraction)
//       [− μ_wer · (WER of a greedy decode from its own pooled encoder output), when on: GrpoWerReward]
// depends on its actions; the actions and their log-probabilities are recorded. The update: group advantages, then
// μ inner epochs, each replaying the recorded actions under the current weights (PredictorMode.Replay) for the PPO
// ratio, optionally the KL penalty to the reference policy and the entropy bonus, one clipped AdamW step per epoch.
// Only the optimizer's (trained) parameters get gradients and enter the clipping norm.

open System
open TorchSharp
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Decoding
open MagnetWhisper.Core.Magnet

/// The algorithm's settings.
type GrpoSettings =
    { /// K, the boundary sets sampled per audio.
      GroupSize: int
      /// μ, the optimizer steps per rollout (each against the sampling policy's log-probabilities).
      InnerEpochs: int
      /// How advantages are normalised.
      Normalisation: AdvantageNormalisation
      /// Clip ε, KL β and entropy weight.
      Objective: ObjectiveSettings
      /// w: weight of each utterance's own boundary loss in its reward (`ForwardInput.RlBoundaryLossWeight`).
      BoundaryLossWeight: float
      /// λ: weight of the kept fraction in the reward (0 = none; > 0 rewards compression directly).
      KeptFractionWeight: float
      /// Weight of the sample's WER (a greedy decode of its own pooled encoder output) in the reward; 0 = off (no
      /// decode), > 0 rewards recognition directly.
      WerRewardWeight: float
      /// Global gradient-norm clip over the trained parameters; None = none.
      MaxGradientNorm: float option }

    /// The project's defaults: K = 4, μ = 2, group normalisation, ε = 0.2, no KL, no entropy bonus, w = 1, λ = 0,
    /// no WER reward, clip norm 1.
    static member Default: GrpoSettings =
        { GroupSize = 4
          InnerEpochs = 2
          Normalisation = PerGroup
          Objective = { ClipEpsilon = Some 0.2; KlCoefficient = 0.0; EntropyCoefficient = 0.0 }
          BoundaryLossWeight = 1.0
          KeptFractionWeight = 0.0
          WerRewardWeight = 0.0
          MaxGradientNorm = Some 1.0 }

    /// The original's effective algorithm (SPEC §8.2): K = 4, one on-policy step (μ = 1), group mean then global
    /// normalisation, no clipping, no KL, no entropy bonus, clip norm 1.
    static member Original: GrpoSettings =
        { GrpoSettings.Default with
            InnerEpochs = 1
            Normalisation = GlobalAfterGroupMean
            Objective = { ClipEpsilon = None; KlCoefficient = 0.0; EntropyCoefficient = 0.0 } }

    /// Fails unless the settings are usable, naming the field.
    member s.Validate() : GrpoSettings =
        if s.GroupSize < 1 then invalidArg "settings" $"GroupSize must be at least 1, but is {s.GroupSize}"
        if s.InnerEpochs < 1 then invalidArg "settings" $"InnerEpochs must be at least 1, but is {s.InnerEpochs}"
        match s.Objective.ClipEpsilon with
        | Some e when not (e > 0.0 && e < 1.0) -> invalidArg "settings" $"ClipEpsilon must be in (0, 1), but is {e}"
        | _ -> ()
        if not (s.Objective.KlCoefficient >= 0.0) then invalidArg "settings" $"KlCoefficient must be ≥ 0, but is {s.Objective.KlCoefficient}"
        if not (Double.IsFinite s.Objective.EntropyCoefficient) then invalidArg "settings" "EntropyCoefficient must be finite"
        if not (Double.IsFinite s.BoundaryLossWeight) then invalidArg "settings" "BoundaryLossWeight must be finite"
        if not (Double.IsFinite s.KeptFractionWeight) then invalidArg "settings" "KeptFractionWeight must be finite"
        if not (s.WerRewardWeight >= 0.0 && Double.IsFinite s.WerRewardWeight) then
            invalidArg "settings" $"WerRewardWeight must be finite and at least 0, but is {s.WerRewardWeight}"
        match s.MaxGradientNorm with
        | Some m when not (m > 0.0) -> invalidArg "settings" $"MaxGradientNorm must be positive, but is {m}"
        | _ -> ()
        s

/// The recorded samples of a rollout (K·B rows, K-major). Dispose it to free its tensors.
type Rollout =
    { /// (K·B, L) raw actions of each predictor layer, for `EncoderInput.Replay`.
      Actions: Map<int, Tensor>
      /// (K·B) log-probability of the actions under the sampling policy (detached).
      OldLogProb: Tensor
      /// (K·B) log-probability under the reference policy, when a KL penalty needs it.
      ReferenceLogProb: Tensor option
      /// (K·B) float64 rewards.
      Rewards: Tensor
      /// (K·B) each sample's token-mean cross-entropy over its real tokens (NaN when the reward had none).
      CrossEntropy: Tensor
      /// (K·B) each sample's own boundary loss, Σ over predictors.
      BoundaryLoss: Tensor
      /// (K·B) each sample's kept fraction: its final segment count over its valid encoder positions.
      KeptFraction: Tensor
      /// (K·B) float64 each sample's word error rate (a fraction) when the reward had the WER term; None otherwise.
      WordErrorRate: Tensor option
      /// (layer, Σ boundaries / Σ valid positions) of each predictor over the rollout.
      LayerKeptFractions: (int * float) list }

    /// Every tensor of the record.
    member r.Tensors: Tensor list =
        [ yield! r.Actions |> Map.values
          yield r.OldLogProb
          yield! Option.toList r.ReferenceLogProb
          yield r.Rewards
          yield r.CrossEntropy
          yield r.BoundaryLoss
          yield r.KeptFraction
          yield! Option.toList r.WordErrorRate ]

    interface IDisposable with
        member r.Dispose() =
            for t in r.Tensors do
                t.Dispose()

/// A policy's view of the recorded actions under its current weights.
type PolicyEvaluation =
    { /// (K·B) log-probability of the recorded actions, differentiable.
      LogProb: Tensor
      /// (K·B) entropy per sample, differentiable.
      Entropy: Tensor }

/// What one GRPO update did (means over the inner epochs that ran).
type GrpoReport =
    { RewardMean: float
      /// Unbiased standard deviation of the rewards over the K·B samples.
      RewardStd: float
      ZeroSpreadFraction: float
      PolicyLoss: float
      ClipFraction: float
      ApproxKl: float
      KlToReference: float
      Entropy: float
      /// Global L2 norm of the trained parameters' gradient before clipping (mean over the epochs).
      GradientNorm: float
      LearningRateMultiplier: float
      /// Inner epochs whose step was applied.
      EpochsApplied: int
      /// None when every epoch's step was applied; otherwise why the update stopped.
      Skipped: SkipReason option }

/// Tiling a batch for K samples per audio.
[<RequireQualifiedAccess>]
module GrpoBatch =
    /// K copies of a tensor along dimension 0, K-major (copy k at rows k·B .. k·B + B − 1, SPEC §8.2 step 1).
    let tile (k: int) (t: Tensor) : Tensor =
        t.repeat([| yield int64 k; for _ in 1L .. t.Dimensions - 1L -> 1L |])

    /// K copies along dimension 1 (a (rows, B) target matrix).
    let tileColumns (k: int) (t: Tensor) : Tensor = t.repeat([| 1L; int64 k |])

/// The pieces of a GRPO update.
[<RequireQualifiedAccess>]
module GrpoStep =
    /// (N) each row's final segments over its valid encoder positions (the product of the predictors' per-row kept
    /// fractions); ones without predictors.
    let keptFraction (enc: EncoderOutput) : Tensor =
        use scope = torch.NewDisposeScope()
        let n = enc.Hidden.shape.[0]
        let f =
            enc.Layers
            |> List.fold
                (fun (acc: Tensor) l ->
                    acc * (l.Output.BoundaryCounts.to_type(torch.float64) / l.Output.ValidCounts.to_type(torch.float64).clamp_min((1.0).ToScalar())))
                (torch.ones([| n |], dtype = torch.float64, device = enc.Hidden.device))
        keep scope [ f ]
        f

    /// (N) Σ over predictors of the mean binary entropy of p per valid frame (differentiable).
    let entropy (enc: EncoderOutput) : Tensor =
        use scope = torch.NewDisposeScope()
        let n = enc.Hidden.shape.[0]
        let e =
            enc.Layers
            |> List.fold
                (fun (acc: Tensor) l -> acc + l.Output.Entropy.to_type(torch.float64) / l.Output.ValidCounts.to_type(torch.float64).clamp_min((1.0).ToScalar()))
                (torch.zeros([| n |], dtype = torch.float64, device = enc.Hidden.device))
        keep scope [ e ]
        e

    /// A rollout from a sampling encoder pass and the rewards of its samples. enc must come from an RL-mode
    /// sampling pass (its LogProb present); the actions are copied, so enc may be disposed after.
    let rollout (enc: EncoderOutput) (rewards: Tensor) (crossEntropy: Tensor) (boundaryLoss: Tensor) (reference: (Map<int, Tensor> -> Tensor) option) : Rollout =
        let logProb =
            match enc.LogProb with
            | Some l -> l
            | None -> invalidArg "enc" "the encoder pass has no log-probability: sample in RL mode with at least one predictor"
        requireRank "rewards" 1 rewards
        requireDim "rewards" 0 logProb.shape.[0] rewards
        use _ = torch.no_grad ()
        let detach (t: Tensor) = t.detach().clone()
        let actions = enc.Actions |> Map.map (fun _ a -> detach a)
        { Actions = actions
          OldLogProb = detach logProb
          ReferenceLogProb = reference |> Option.map (fun f -> f actions)
          Rewards = rewards.detach().to_type(torch.float64)
          CrossEntropy = detach crossEntropy
          BoundaryLoss = detach boundaryLoss
          KeptFraction = keptFraction enc
          WordErrorRate = None
          LayerKeptFractions = enc.Compression }

    /// A rollout of a MagnetWhisper on an input tiled K times (Mode = Sample generator): one RL-mode forward without
    /// gradients with w = settings.BoundaryLossWeight, rewards −LossPerUtterance − λ · kept fraction; with
    /// settings.WerRewardWeight μ > 0 also − μ · WER, each sample greedily decoded from that forward's own encoder
    /// output (its sampled boundaries) and scored against its reference in `wer` (required then, ignored at μ = 0).
    let sample (model: MagnetWhisperModel) (settings: GrpoSettings) (tiled: ForwardInput) (wer: WerRewardInput option) (reference: (Map<int, Tensor> -> Tensor) option) : Rollout =
        let werInput =
            match wer with
            | Some w when settings.WerRewardWeight > 0.0 -> Some w
            | None when settings.WerRewardWeight > 0.0 ->
                invalidArg "wer" $"the WER reward (weight {settings.WerRewardWeight}) needs the samples' references and decoding prompt"
            | _ -> None
        use _ = torch.no_grad ()
        use result = model.Forward { tiled with Rl = true; RlBoundaryLossWeight = settings.BoundaryLossWeight; TargetMatrix = None }
        use kept = keptFraction result.Encoder
        use rewards = -(result.LossPerUtterance.to_type(torch.float64)) - kept * settings.KeptFractionWeight
        match werInput with
        | None -> rollout result.Encoder rewards result.CrossEntropyPerUtterance result.Encoder.BoundaryLossPerUtterance reference
        | Some w ->
            // The decoder reads the pooled states through the cross-attention mask exactly as in the forward.
            let audio: EncodedAudio = { Hidden = result.Encoder.Hidden; Mask = Some result.Encoder.Mask }
            let rates = GrpoWerReward.rates (model :> ISpeechModel) audio w
            let wordErrorRate = torch.tensor(rates, dtype = torch.float64, device = rewards.device)
            use withWer = rewards - wordErrorRate * settings.WerRewardWeight
            let r = rollout result.Encoder withWer result.CrossEntropyPerUtterance result.Encoder.BoundaryLossPerUtterance reference
            { r with WordErrorRate = Some wordErrorRate }

    /// The encoder's replay of recorded actions under the current weights (RL mode, every predictor layer
    /// replayed): log-probabilities and entropies, differentiable. input gives features, frame mask and schedules.
    let replayEncoder (model: MagnetWhisperModel) (input: EncoderInput) (actions: Map<int, Tensor>) : PolicyEvaluation =
        use scope = torch.NewDisposeScope()
        use enc = model.Encode { input with Rl = true; Replay = actions; Mode = PredictorMode.Threshold; TargetMatrix = None }
        let logProb =
            match enc.LogProb with
            | Some l -> l.alias()
            | None -> invalidOp "the replay returned no log-probability (no predictor?)"
        let e = entropy enc
        keep scope [ logProb; e ]
        { LogProb = logProb; Entropy = e }

    /// The update: advantages of the rollout's rewards, then μ epochs of evaluate (the policy on the recorded
    /// actions) → objective → backward → clip → AdamW step at peak × multiplier. Gradients are cleared before and
    /// after each epoch. A non-finite loss or gradient norm skips that epoch's step and ends the update.
    let update (optimizer: TrainingOptimizer) (settings: GrpoSettings) (multiplier: float) (rollout: Rollout) (evaluate: Map<int, Tensor> -> PolicyEvaluation) : GrpoReport =
        let settings = settings.Validate()
        if not (multiplier >= 0.0 && Double.IsFinite multiplier) then
            invalidArg "multiplier" $"the learning-rate multiplier must be finite and non-negative, but is {multiplier}"
        let parameters = optimizer.Parameters |> List.map snd
        use advantages = GrpoAdvantages.compute settings.Normalisation settings.GroupSize rollout.Rewards
        let rewards = toFloatArray rollout.Rewards
        let rewardMean = Array.average rewards
        let rewardStd =
            if rewards.Length < 2 then 0.0
            else sqrt ((rewards |> Array.sumBy (fun r -> (r - rewardMean) ** 2.0)) / float (rewards.Length - 1))
        let epochs = ResizeArray<float * float * float * float * float * float>()
        let mutable skipped = None
        let mutable epoch = 0
        while epoch < settings.InnerEpochs && skipped.IsNone do
            TrainingStep.clearGradients parameters
            let outcome =
                use _ = torch.NewDisposeScope()
                let policy = evaluate rollout.Actions
                let t = GrpoObjective.terms settings.Objective policy.LogProb rollout.OldLogProb advantages.Advantages rollout.ReferenceLogProb policy.Entropy
                let loss = toFloat t.Loss
                if not (Double.IsFinite loss) then Error NonFiniteLoss
                else
                    t.Loss.backward()
                    let norm = TrainingStep.clip settings.MaxGradientNorm parameters
                    if not (Double.IsFinite norm) then Error NonFiniteGradient
                    else
                        optimizer.SetLearningRate multiplier
                        TrainingStep.optimizerStep optimizer.AdamW
                        Ok(toFloat t.PolicyLoss, t.ClipFraction, t.ApproxKl, toFloat t.KlToReference, toFloat t.Entropy, norm)
            match outcome with
            | Ok values -> epochs.Add values
            | Error reason -> skipped <- Some reason
            epoch <- epoch + 1
        TrainingStep.clearGradients parameters
        let mean (f: float * float * float * float * float * float -> float) = if epochs.Count = 0 then nan else epochs |> Seq.averageBy f
        { RewardMean = rewardMean
          RewardStd = rewardStd
          ZeroSpreadFraction = advantages.ZeroSpreadFraction
          PolicyLoss = mean (fun (p, _, _, _, _, _) -> p)
          ClipFraction = mean (fun (_, c, _, _, _, _) -> c)
          ApproxKl = mean (fun (_, _, k, _, _, _) -> k)
          KlToReference = mean (fun (_, _, _, k, _, _) -> k)
          Entropy = mean (fun (_, _, _, _, e, _) -> e)
          GradientNorm = mean (fun (_, _, _, _, _, n) -> n)
          LearningRateMultiplier = multiplier
          EpochsApplied = epochs.Count
          Skipped = skipped }
