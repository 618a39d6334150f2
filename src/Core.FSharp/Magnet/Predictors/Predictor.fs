namespace MagnetWhisper.Core.Magnet

// The shared interface of the four boundary predictors (SPEC §4, DECISIONS #1, #3–#8): configuration, schedules,
// inputs, the one result record and the common forward pipeline (score → sample or threshold → mask and force the last
// valid frame → pool → sinusoidal re-embedding → shortened mask, loss and statistics). Each predictor only supplies
// its scorer, its pooling and its count loss.

open System
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Segments

/// Which of the original's four boundary predictors (SPEC §4.2–§4.5).
type PredictorKind =
    /// Per-frame MLP scorer (ReLU), single-head attention pooling by default; the original's primary predictor.
    | Bp1
    /// Dissimilarity of consecutive frames (shared residual GELU MLP, identity projections), 8-head attention pooling.
    | Bp2
    /// BP2's idea on hidden + UNet(hidden), separate q/k MLPs without residual.
    | Bp3
    /// Convolutional scorer (k3 conv + 1×1), logit at the end of the receptive field; mean pooling only.
    | Bp4

/// How the frames of a segment are combined (DECISIONS #7).
type PoolingKind =
    /// Learned-query attention over each segment's frames (the original default of BP1–BP3). The scorer gets no
    /// gradient from the pooled output: only the count loss trains it.
    | AttentionPooling
    /// Segment mean through `Downsample.downsample` (BP4's only pooling). The boundary gradient of `downsample` also
    /// trains the scorer from any loss on the pooled output.
    | MeanPooling

/// How BP3's U-Net joins its upsampled branch to its skip connection (DECISIONS #6).
type UNetAlignment =
    /// The skip (half resolution) is repeated to full resolution, the transposed-convolution output is trimmed or
    /// padded to the sequence length L, and the two are concatenated at full resolution; padded frames are zeroed
    /// before every convolution, so a row's result does not depend on the padding of its batch.
    | Aligned
    /// The original: the transposed-convolution output is cut to the skip's length ⌈L/2⌉ (only its first half is
    /// kept), concatenated with the skip, then linearly interpolated to L; padded frames enter the convolutions.
    | OriginalCrop

/// How a row's segments relate to the other rows of its batch (DECISIONS #1).
type BatchingRule =
    /// The default: every row gets a forced boundary at its last valid frame (padded or not), and frames after a
    /// row's last boundary are not pooled, so a row's result never depends on the other rows of its batch.
    | BatchIndependent
    /// The original (SPEC §2.1, §4.1 step 5): the forced boundary is applied only when some row of the batch has
    /// padding, to each padded row just before its first padded position; pooling uses the original tail rule (the
    /// frames after row β's last boundary form an extra segment n_β when n_β &lt; S, dropped for the rows with S
    /// boundaries). Under this rule the log-probability covers every valid frame, as the original's.
    | OriginalBatching

/// What BP1 pools in RL mode (DECISIONS #4, SPEC §4.2 step 3).
type RlPooling =
    /// The default: the sampled boundaries are pooled, so the reward depends on the actions.
    | PoolSampled
    /// The original: all-ones boundaries (masked) are pooled, so S = the valid length (no compression); the sample
    /// only feeds the log-probability and the loss terms see the all-ones boundaries. BP1 only.
    | PoolAllFrames

/// Numeric constants of the predictors (SPEC §11).
module PredictorConstants =
    /// Multiplier of every supervised boundary-count loss.
    [<Literal>]
    let LossMultiplier = 10.0

    /// Dropout of BP1–BP3 and of BP3's U-Net.
    [<Literal>]
    let Dropout = 0.1

    /// Initial bias of BP1's and BP4's final scorer layer: σ(−2.5) ≈ 7.6 % ≈ 1/13 initial boundary rate.
    [<Literal>]
    let InitialBoundaryBias = -2.5

    /// Standard deviation of BP1's initial pool query.
    [<Literal>]
    let PoolQueryStd = 0.02

    /// Attention-pooling heads of BP2 and BP3 (BP1 uses one).
    [<Literal>]
    let PoolingHeads = 8

    /// Epsilon of BP2's and BP3's pool LayerNorm (PyTorch's default).
    [<Literal>]
    let LayerNormEps = 1e-5

    /// Initial similarity bias β of BP2.
    [<Literal>]
    let Bp2SimilarityBias = -0.7

    /// Initial similarity bias β of BP3.
    [<Literal>]
    let Bp3SimilarityBias = -0.126

    /// Standard deviation of the initial weights of BP3's U-Net refine convolution (bias 0).
    [<Literal>]
    let RefineInitStd = 0.01

    /// Kernel of BP4's first convolution; its logit is written at the end of the receptive field.
    [<Literal>]
    let Bp4Kernel = 3

    /// Logit of BP4's first Bp4Kernel − 1 positions (no complete window): σ(−10) ≈ 4.5e-5.
    [<Literal>]
    let Bp4FillLogit = -10.0

    /// Cap of BP1's binomial term in RL mode.
    [<Literal>]
    let RlBinomialCap = 1.0

/// Immutable configuration of one boundary predictor. Create it with `PredictorConfig.Default(kind, prior)` and change
/// fields with `{ c with … }`.
type PredictorConfig =
    { /// Which predictor.
      Kind: PredictorKind
      /// Target boundary prior p_t in (0, 1] (the original's `prior`/`target_prior`, saved as `layer_priors`). Used by
      /// the prior-scheduled binomial losses (BP3 without targets, RL mode).
      Prior: float
      /// Stored Gumbel-sigmoid temperature τ > 0 (the original's `temp`, saved as `layer_temps`). The forward pass
      /// uses `Schedule.Temperature`; `Schedule.OfConfig` starts from this value.
      Temperature: float
      /// Decision threshold in [0, 1]: hard boundaries are 1[z > threshold] while sampling and 1[p > threshold] at
      /// inference, for every predictor (DECISIONS #5; saved as `layer_thresholds`).
      Threshold: float
      /// Segment pooling (DECISIONS #7). BP4 supports MeanPooling only.
      Pooling: PoolingKind
      /// Width of the scorer's hidden layer: the MLPs of BP1–BP3 (None → D, as the original's encoder builds them)
      /// and the channels of BP4's first convolution (None → ⌊D/3⌋, the original's 256 for 768).
      HiddenDim: int option
      /// Dropout probability of the scorer input (BP1–BP3) and of BP3's U-Net; active only in training mode
      /// (`module.train()`). BP4 has none.
      Dropout: float
      /// Initial bias of the final scorer layer of BP1 and BP4 (the original's `init_for_12`); None keeps PyTorch's
      /// default initialisation. Ignored by BP2 and BP3.
      InitialBoundaryBias: float option
      /// BP3's U-Net skip alignment (DECISIONS #6); ignored by the others.
      UNetAlignment: UNetAlignment
      /// Upper bound of the per-utterance binomial term in RL mode (the original's 1.0 for BP1); None = no cap.
      RlBinomialCap: float option
      /// Forced boundary and tail rule (DECISIONS #1): BatchIndependent (default) or OriginalBatching.
      Batching: BatchingRule
      /// What RL mode pools (DECISIONS #4): PoolSampled (default) or PoolAllFrames (the original; BP1 only).
      RlPooling: RlPooling
      /// The threshold at inference when it differs from Threshold: None (default) uses Threshold; the original's
      /// BP1 and BP4 always thresholded at the literal 0.5 at inference, whatever their saved threshold
      /// (`AsOriginal` sets Some 0.5 for them; DECISIONS #5).
      InferenceThreshold: float option
      /// Precision of the target probability of the target-count losses (DECISIONS #11): ClampInFloat64 (default)
      /// or the original's ClampInFloat32.
      TargetClamp: Losses.TargetClamp }

    /// The original's construction for a kind, with the DECISIONS applied: temperature 1, threshold 0.5, attention
    /// pooling for BP1–BP3 and mean pooling for BP4, hidden width D (BP4: ⌊D/3⌋), dropout 0.1 (BP4: 0), initial
    /// bias −2.5 for BP1/BP4, the aligned U-Net, and the RL binomial cap 1.0 for BP1 only.
    static member Default(kind: PredictorKind, prior: float) : PredictorConfig =
        { Kind = kind
          Prior = prior
          Temperature = 1.0
          Threshold = 0.5
          Pooling = (match kind with Bp4 -> MeanPooling | _ -> AttentionPooling)
          HiddenDim = None
          Dropout = (match kind with Bp4 -> 0.0 | _ -> PredictorConstants.Dropout)
          InitialBoundaryBias =
            (match kind with
             | Bp1 | Bp4 -> Some PredictorConstants.InitialBoundaryBias
             | Bp2 | Bp3 -> None)
          UNetAlignment = Aligned
          RlBinomialCap = (match kind with Bp1 -> Some PredictorConstants.RlBinomialCap | _ -> None)
          Batching = BatchIndependent
          RlPooling = PoolSampled
          InferenceThreshold = None
          TargetClamp = Losses.ClampInFloat64 }

    /// The threshold of inference (Threshold mode): InferenceThreshold, or Threshold when it is None.
    member c.EffectiveInferenceThreshold: float = defaultArg c.InferenceThreshold c.Threshold

    /// The configuration with the original's segmentation: OriginalBatching and, for BP1, all-ones RL pooling
    /// (BP3's U-Net alignment is a separate option and is left unchanged).
    member c.WithOriginalSegmentation() : PredictorConfig =
        { c with
            Batching = OriginalBatching
            RlPooling = (match c.Kind with Bp1 -> PoolAllFrames | _ -> c.RlPooling) }

    /// Every option of the predictor that reproduces the original's numbers: `WithOriginalSegmentation` (with the
    /// 50/50 tie gradient of the forced boundary), BP3's cropped U-Net, the float32 target clamp and, for BP1 and
    /// BP4, the literal inference threshold 0.5.
    member c.AsOriginal() : PredictorConfig =
        { c.WithOriginalSegmentation() with
            UNetAlignment = OriginalCrop
            TargetClamp = Losses.ClampInFloat32
            InferenceThreshold = (match c.Kind with Bp1 | Bp4 -> Some 0.5 | Bp2 | Bp3 -> c.InferenceThreshold) }

/// Values a trainer sets before each forward pass (DECISIONS #8: inputs, not state of the module).
type Schedule =
    { /// Gumbel-sigmoid temperature τ > 0 of the relaxed sample; with threshold 0.5 the hard sample is Bernoulli(p)
      /// for every τ, and τ only scales the straight-through gradient (SPEC §4.1).
      Temperature: float
      /// BP1/BP4 target schedule s ∈ [0, 1] (SPEC §4.2 step 6): 0 → every frame a boundary, 1 → the given targets.
      CompressionSchedule: float
      /// Prior schedule s ∈ [0, 1]: the prior used is p_t / (p_t + s·(1 − p_t)) (BP3 without targets, RL mode).
      PriorSchedule: float
      /// Weight of BP3's prior-scheduled loss when it has no targets (the original's `boundary_loss_weight`).
      BoundaryLossWeight: float
      /// The encoder's target-progress lerp ρ ∈ [0, 1] of this predictor's targets (SPEC §6.4): 0 → every frame a
      /// boundary, 1 → the targets. Applied by the encoder before the predictor runs; a predictor called directly
      /// gets its targets as given.
      TargetProgress: float }

    /// The original's effective values in training: τ = 1, compression schedule 1 and prior schedule 1 (whisper.py's
    /// CompressionScheduler sets the schedule of every predictor to the constant 1, overriding BP1/BP4's initial 0),
    /// boundary-loss weight 0 (BP2/BP3's default; the weight scheduler was never registered), target progress 1.
    static member Default: Schedule =
        { Temperature = 1.0; CompressionSchedule = 1.0; PriorSchedule = 1.0; BoundaryLossWeight = 0.0; TargetProgress = 1.0 }

    /// `Schedule.Default` with the configured temperature.
    static member OfConfig(config: PredictorConfig) : Schedule =
        { Schedule.Default with Temperature = config.Temperature }

/// Training versus inference, explicitly (the module's train()/eval() state only switches dropout and BatchNorm).
type PredictorMode =
    /// Training: relaxed-Bernoulli samples (Bernoulli samples in RL mode) drawn from the generator, so the same seed
    /// reproduces the same boundaries; a boundary loss is computed.
    | Sample of torch.Generator
    /// Inference: deterministic boundaries 1[p > threshold] (`PredictorConfig.EffectiveInferenceThreshold`); the
    /// loss is 0.
    | Threshold
    /// Replays recorded actions instead of sampling (PPO ratios, the KL penalty of DECISIONS #4): the (B, L) hard
    /// actions (nonzero = boundary, as `PredictorOutput.Actions` of the sampling pass; masked and forced like a
    /// sample) are pooled, and LogProb is their log-probability under the current weights, differentiable into
    /// the scorer. Losses are computed as when sampling; the straight-through boundaries of a supervised replay
    /// carry p's gradient (the relaxed sample of the recording is not kept). With unchanged weights and dropout
    /// off (eval(), or Dropout 0) every value equals the recording's; in training mode dropout draws from
    /// TorchSharp's global generator.
    | Replay of actions: Tensor

/// The input of a predictor's forward pass.
type PredictorInput =
    { /// (B, L, D) encoder states, floating point; D is the predictor's width.
      Hidden: Tensor
      /// (B, L) validity (nonzero = valid frame) or None (every frame valid).
      Mask: Tensor option
      /// (B,) target boundary counts of this predictor (its own row of the target matrix, DECISIONS #3), or None.
      /// BP1/BP2/BP4 need them when sampling outside RL mode.
      Targets: Tensor option
      /// Sampled (training), thresholded (inference) or replayed (recorded actions, PPO ratios).
      Mode: PredictorMode
      /// RL mode (DECISIONS #4): Bernoulli samples without relaxation are pooled, their log-probability is returned
      /// with a gradient into the scorer, and the per-utterance loss is the prior-scheduled binomial (capped for
      /// BP1) + repulsion + adjacency.
      Rl: bool
      /// Temperature, schedules and loss weight set by the trainer.
      Schedule: Schedule }

    /// An input without targets, outside RL mode, with `Schedule.Default`.
    static member Create(hidden: Tensor, mask: Tensor option, mode: PredictorMode) : PredictorInput =
        { Hidden = hidden; Mask = mask; Targets = None; Mode = mode; Rl = false; Schedule = Schedule.Default }

/// Everything one forward pass of a predictor returns (one record for all four). Per-utterance tensors are (B,).
/// Dispose it to free its tensors.
type PredictorOutput =
    { /// (B, S, D) pooled segments plus the sinusoidal embedding of their ordinal (SPEC §4.6), in Hidden's dtype;
      /// S = the largest boundary count of a row. Rows s ≥ n_β hold only the embedding.
      Pooled: Tensor
      /// (B, S) shortened mask, [1]*n_β + [0]*(S − n_β) per row. Always present: rows of one batch can have different
      /// segment counts even when the input had no mask. float32 unless the input mask was another floating dtype.
      Mask: Tensor
      /// (B,) boundary loss per utterance (0 at inference), differentiable through the straight-through counts.
      LossPerUtterance: Tensor
      /// () mean of LossPerUtterance.
      Loss: Tensor
      /// (B,) boundaries per utterance n_β (forced last boundary included), detached.
      BoundaryCounts: Tensor
      /// (B,) valid frames per utterance (Σ mask, or L).
      ValidCounts: Tensor
      /// (B,) log-probability of the sampled boundaries under independent Bernoulli(p) frames, over each row's valid
      /// frames except its forced last one; differentiable in p. Present when sampling or replaying, and in RL mode.
      LogProb: Tensor option
      /// (B,) mean |p − 0.5| over valid frames, detached.
      Confidence: Tensor
      /// (B,) summed binary entropy of p over valid frames, differentiable.
      Entropy: Tensor
      /// (B,) spacing coefficient of variation (0 for rows with fewer than two gaps; never NaN).
      SpacingCv: Tensor
      /// (B,) bool: rows with at least two gaps, whose SpacingCv is defined.
      CvDefined: Tensor
      /// () mean SpacingCv over rows where it is defined (0 if none).
      MeanSpacingCv: Tensor
      /// (B,) fraction of a row's gaps equal to 1, in [0, 1].
      Adjacency: Tensor
      /// () #(gaps = 1) / #gaps over the batch, in [0, 1].
      AdjacencyOverall: Tensor
      /// (B, L) the hard boundaries that were pooled (0/1, masked, forced last frame), detached; for visualisation.
      Boundaries: Tensor
      /// (B, L) the raw hard actions before masking and forcing (0/1, detached): the sample (Sample), the replayed
      /// actions (Replay) or the thresholded probabilities (Threshold). `Replay Actions` reproduces the pass.
      Actions: Tensor
      /// (B, L) boundary probabilities p (0 on padded frames), differentiable.
      Probabilities: Tensor }

    /// Every tensor of the record.
    member o.Tensors: Tensor list =
        List.concat
            [ [ o.Pooled; o.Mask; o.LossPerUtterance; o.Loss; o.BoundaryCounts; o.ValidCounts ]
              Option.toList o.LogProb
              [ o.Confidence; o.Entropy; o.SpacingCv; o.CvDefined; o.MeanSpacingCv; o.Adjacency; o.AdjacencyOverall
                o.Boundaries; o.Actions; o.Probabilities ] ]

    /// Disposes every tensor of the record.
    member o.Dispose() =
        for t in o.Tensors do
            t.Dispose()

    interface IDisposable with
        member o.Dispose() = o.Dispose()

/// What a predictor's scorer produces.
type BoundaryScores =
    { /// (B, L) boundary probability p of every frame ("frame l ends a segment").
      Probabilities: Tensor
      /// (B, L) logits of p when the scorer has them (BP1, BP4): sampling from logits avoids clamping p.
      Logits: Tensor option
      /// (B, L, D) the states that are pooled (hidden, or BP3's hidden + UNet(hidden)).
      Features: Tensor }

/// Helpers shared by the predictor implementations.
module internal PredictorCore =
    /// Fails with a clear message unless the configuration is usable for width dim.
    let validate (config: PredictorConfig) (dim: int) =
        if dim < 1 then invalidArg "dim" $"the width must be positive, but is {dim}"
        if not (config.Prior > 0.0 && config.Prior <= 1.0) then
            invalidArg "config" $"Prior must be in (0, 1], but is {config.Prior}"
        if not (config.Temperature > 0.0) then
            invalidArg "config" $"Temperature must be positive, but is {config.Temperature}"
        if not (config.Threshold >= 0.0 && config.Threshold <= 1.0) then
            invalidArg "config" $"Threshold must be in [0, 1], but is {config.Threshold}"
        match config.InferenceThreshold with
        | Some t when not (t >= 0.0 && t <= 1.0) -> invalidArg "config" $"InferenceThreshold must be in [0, 1], but is {t}"
        | _ -> ()
        if not (config.Dropout >= 0.0 && config.Dropout < 1.0) then
            invalidArg "config" $"Dropout must be in [0, 1), but is {config.Dropout}"
        match config.HiddenDim with
        | Some h when h < 1 -> invalidArg "config" $"HiddenDim must be positive, but is {h}"
        | _ -> ()
        match config.RlBinomialCap with
        | Some c when not (c > 0.0) -> invalidArg "config" $"RlBinomialCap must be positive, but is {c}"
        | _ -> ()
        if config.RlPooling = PoolAllFrames && config.Kind <> Bp1 then
            invalidArg "config" $"RlPooling = PoolAllFrames is BP1's original RL mode only, but Kind is {config.Kind}"

    /// A trainable parameter holding data, detached from any dispose scope (a module may be built inside one).
    let parameter (data: unit -> Tensor) : Modules.Parameter =
        use _ = torch.NewDisposeScope()
        let p = torch.nn.Parameter(data ())
        p.DetachFromDisposeScope() |> ignore
        p

    /// Fails unless D is divisible by the attention-pooling heads.
    let requireHeads (kind: PredictorKind) (heads: int) (dim: int) =
        if dim % heads <> 0 then
            invalidArg "dim" $"{kind} attention pooling uses {heads} heads, which must divide the width D = {dim}; use MeanPooling or a width divisible by {heads}"

    /// A bias-free D×D linear initialised to the identity.
    let identityLinear (dim: int) =
        let linear = torch.nn.Linear(int64 dim, int64 dim, hasBias = false)
        use _ = torch.no_grad ()
        linear.weight.copy_(torch.eye(int64 dim)) |> ignore
        linear

    /// The learned-query attention-pooling parameters of the original (`pool_key`, `pool_value`, `pool_output`
    /// identity-initialised, bias-free).
    type AttentionPoolModules =
        { Key: Modules.Linear
          Value: Modules.Linear
          Output: Modules.Linear }

        static member Create(dim: int) =
            { Key = identityLinear dim; Value = identityLinear dim; Output = identityLinear dim }

        member m.Params(query: Tensor) : Pooling.AttentionPoolParams =
            { Query = query; Key = m.Key.weight; Value = m.Value.weight; Output = m.Output.weight }

    /// The pooling tail rule of a configuration (DECISIONS #1).
    let tailRule (config: PredictorConfig) : Downsample.TailRule =
        match config.Batching with
        | BatchIndependent -> Downsample.DropAfterLastBoundary
        | OriginalBatching -> Downsample.OriginalTail

    /// Segment-mean pooling with the configuration's tail rule (DECISIONS #1). (B, L), (B, L, D) → (B, S, D).
    let meanPool (config: PredictorConfig) (boundaries: Tensor) (mask: Tensor option) (features: Tensor) =
        Downsample.downsample { Tail = tailRule config } boundaries features mask

    /// Forces the configuration's boundaries on masked hard boundaries: the last valid frame of every row
    /// (BatchIndependent) or the original's padded-row frames (OriginalBatching). b (B, L), mask or None → (B, L).
    let force (config: PredictorConfig) (mask: Tensor option) (b: Tensor) : Tensor =
        match config.Batching with
        | BatchIndependent -> Boundaries.forceLast mask b
        | OriginalBatching -> Boundaries.forceOriginal mask b

    /// Masks then forces with the configuration's rule. (B, L) → (B, L).
    let maskAndForce (config: PredictorConfig) (mask: Tensor option) (b: Tensor) : Tensor =
        use _ = torch.NewDisposeScope()
        (force config mask (Boundaries.applyMask mask b)).MoveToOuterDisposeScope()

    /// Dropout with probability p, active only when training: the kept-frame mask is drawn from the generator when
    /// there is one (sampling mode, so one seed reproduces the whole training forward), otherwise from TorchSharp's
    /// global generator. Kept values are scaled by 1/(1 − p), as torch's dropout.
    let dropout (training: bool) (p: float) (generator: torch.Generator option) (x: Tensor) : Tensor =
        if not training || p = 0.0 then x
        else
            match generator with
            | Some g ->
                let keep = torch.rand(x.shape, dtype = x.dtype, device = x.device, generator = g).ge(Boundaries.sc p)
                x * keep.to_type(x.dtype) * (1.0 / (1.0 - p))
            | None -> torch.nn.functional.dropout(x, p, true)

    /// L2-normalises the last dimension (as torch's F.normalize, eps 1e-12).
    let normalize (x: Tensor) = torch.nn.functional.normalize(x, 2.0, -1L, 1e-12)

    /// BP2/BP3's probability from the similarity s of frames t and t+1: clamp((1 − (s + β))/2, 0, 1), then p = 0 at
    /// the last frame L−1 and at each row's last valid frame (the sequence ends there; the forced boundary applies).
    /// similarity (B, L−1), bias 0-d, mask (B, L) or None → (B, L).
    let similarityProbabilities (similarity: Tensor) (bias: Tensor) (mask: Tensor option) =
        let p = ((1.0 - (similarity + bias.to_type(similarity.dtype))) * 0.5).clamp(Boundaries.sc 0.0, Boundaries.sc 1.0)
        let full = torch.nn.functional.pad(p, [| 0L; 1L |], value = 0.0)
        match mask with
        | Some m -> full * (1.0 - Boundaries.lastValidFrame mask m).to_type(full.dtype)
        | None -> full

    /// Valid frames except each row's last one (the forced boundary is not an action). (B, L) in like's dtype.
    let actionMask (mask: Tensor option) (like: Tensor) =
        Boundaries.maskOrOnes like mask * (1.0 - Boundaries.lastValidFrame mask like)

/// A boundary predictor: a TorchSharp module whose registered parameter names equal the original's state-dict keys
/// (SPEC §6.9). `forward` scores every frame, samples (training) or thresholds (inference) hard boundaries, masks
/// them and forces a boundary at the last valid frame of every row (DECISIONS #1), pools the frames of each segment,
/// adds the sinusoidal embedding of the segment ordinal and returns everything as a `PredictorOutput`
/// (no state is kept between calls, DECISIONS #8).
[<AbstractClass>]
type BoundaryPredictor(name: string, config: PredictorConfig, dim: int) =
    inherit torch.nn.Module<PredictorInput, PredictorOutput>(name)

    do PredictorCore.validate config dim

    /// Every component is registered explicitly under the original's state-dict name; TorchSharp's field-based
    /// registration (run when a parent registers this module) would add the F# field names a second time.
    override _.RegisterComponents() = ()

    /// The configuration the predictor was built with.
    member _.Config: PredictorConfig = config

    /// The width D of the states it scores and pools.
    member _.Dim: int = dim

    /// Scores every frame. hidden (B, L, D), mask (B, L) float 0/1 or None, the sampling generator (None at
    /// inference; dropout draws from it while training) → probabilities (B, L), optional logits (B, L) and the
    /// features (B, L, D) to pool.
    abstract Score: hidden: Tensor * mask: Tensor option * generator: torch.Generator option -> BoundaryScores

    /// Pools the features of each segment. boundaries (B, L) hard (possibly with a straight-through gradient), mask
    /// (B, L) or None, features (B, L, D) → (B, S, D).
    abstract Pool: boundaries: Tensor * mask: Tensor option * features: Tensor -> Tensor

    /// The supervised count loss per utterance (sampling outside RL mode). counts k (B,) with the straight-through
    /// gradient, valid frames n (B,), both float32 (float64 for float64 inputs) → (B,).
    abstract CountLoss: input: PredictorInput * counts: Tensor * valid: Tensor -> Tensor

    /// Fails with a clear message when a supervised predictor gets no targets.
    member internal this.RequireTargets(input: PredictorInput) : Tensor =
        match input.Targets with
        | Some t -> t
        | None ->
            invalidOp $"{this.Config.Kind} needs target boundary counts (PredictorInput.Targets) when sampling or replaying outside RL mode"

    /// The binomial loss of BP1/BP4: 10 · NLL_Bin(k; n', t_eff)/n' with t_eff the targets after the compression
    /// schedule (SPEC §4.2 step 6). (B,).
    member internal this.ScheduledTargetLoss(input: PredictorInput, counts: Tensor, valid: Tensor) : Tensor =
        let targets = this.RequireTargets input
        let totals = Losses.scheduleTotals input.Mask targets
        let effective = Losses.compressionScheduledTargets input.Schedule.CompressionSchedule totals targets
        Losses.binomialFromTargetsWith config.TargetClamp counts valid effective * PredictorConstants.LossMultiplier

    /// Runs the predictor on one batch (see the type's summary and `PredictorInput`/`PredictorOutput`).
    override this.forward(input: PredictorInput) : PredictorOutput =
        let hidden = input.Hidden
        requireRank "input.Hidden" 3 hidden
        requireDim "input.Hidden" 2 (int64 dim) hidden
        if not (hidden.is_floating_point ()) then
            invalidArg "input" $"input.Hidden must be floating point, but has dtype {hidden.dtype}"
        let b, l = hidden.shape.[0], hidden.shape.[1]
        input.Mask
        |> Option.iter (fun m ->
            requireRank "input.Mask" 2 m
            requireDim "input.Mask" 0 b m
            requireDim "input.Mask" 1 l m)
        input.Targets
        |> Option.iter (fun t ->
            requireRank "input.Targets" 1 t
            requireDim "input.Targets" 0 b t)
        let schedule = input.Schedule
        if not (schedule.Temperature > 0.0) then
            invalidArg "input" $"Schedule.Temperature must be positive, but is {schedule.Temperature}"
        match input.Mode with
        | Replay actions ->
            if actions.shape <> [| b; l |] then
                invalidArg "input" $"the replayed actions (PredictorMode.Replay) must have shape ({b}, {l}) like input.Hidden's first two dimensions, but have shape {showShape actions.shape}"
        | Sample _ | Threshold -> ()
        use _ = torch.NewDisposeScope()
        let work = computeType hidden
        let maskDtype =
            match input.Mask with
            | Some m when m.is_floating_point () -> m.dtype
            | _ -> torch.float32
        // 0/1 validity in the computation dtype.
        let mask = input.Mask |> Option.map (fun m -> m.detach().ne(Boundaries.sc 0.0).to_type(work))
        let generator =
            match input.Mode with
            | Sample g -> Some g
            | Threshold | Replay _ -> None
        let scores = this.Score(hidden, mask, generator)
        let p = Boundaries.applyMask mask scores.Probabilities
        let maskAndForce = PredictorCore.maskAndForce config
        let steOrder (m: Tensor option) (h: Tensor) (z: Tensor) =
            match config.Kind with
            | Bp2 | Bp3 -> Boundaries.straightThrough (maskAndForce m h) (maskAndForce m z)
            | Bp1 | Bp4 -> maskAndForce m (Boundaries.straightThrough h z)
        let actionFrames =
            match config.Batching with
            | BatchIndependent -> PredictorCore.actionMask mask p
            | OriginalBatching -> Boundaries.maskOrOnes p mask
        let logProbOf (h: Tensor) = Boundaries.logProb (Some actionFrames) p h
        // Recorded actions as 0/1 in p's dtype on p's device (a copy: the caller keeps its tensor).
        let replayed (a: Tensor) = a.detach().``to``(p.device).ne(Boundaries.sc 0.0).to_type(p.dtype)
        // RL actions h (Bernoulli(p), no relaxation) are pooled themselves (DECISIONS #4) or, with PoolAllFrames, all ones.
        let rlStep (h: Tensor) =
            let pooledBoundaries =
                match config.RlPooling with
                | PoolSampled -> h
                | PoolAllFrames -> torch.ones_like h
            h, maskAndForce mask pooledBoundaries, Some(logProbOf h)
        let actions, boundaries, logProb =
            match input.Mode, input.Rl with
            | Sample generator, true -> rlStep ((Boundaries.uniformLike generator p).lt(p.detach()).to_type(p.dtype))
            | Replay a, true -> rlStep (replayed a)
            | Sample generator, false ->
                let z =
                    match scores.Logits with
                    | Some logits -> Boundaries.relaxedSampleLogits generator schedule.Temperature logits
                    | None -> Boundaries.relaxedSample generator schedule.Temperature p
                let h = Boundaries.hard config.Threshold z
                h, steOrder mask h z, Some(logProbOf h)
            | Replay a, false ->
                let h = replayed a
                h, steOrder mask h p, Some(logProbOf h)
            | Threshold, rl ->
                let h = Boundaries.hard config.EffectiveInferenceThreshold p
                h, steOrder mask h p, (if rl then Some(logProbOf h) else None)
        let pooled = Positions.addSinusoidal (this.Pool(boundaries, mask, scores.Features))
        let stats = Boundaries.stats mask p boundaries
        let counts = Boundaries.counts(boundaries).to_type(work)
        let valid = stats.ValidPositions.to_type(work)
        let perUtterance =
            match input.Mode with
            | Threshold -> torch.zeros([| b |], dtype = work, device = hidden.device)
            | Sample _ | Replay _ when input.Rl ->
                let prior = Losses.scheduledPrior config.Prior schedule.PriorSchedule
                let binomial = Losses.binomialPerUtterance prior counts valid
                let capped =
                    match config.RlBinomialCap with
                    | Some cap -> binomial.clamp_max(Boundaries.sc cap)
                    | None -> binomial
                capped
                + Losses.repulsionPerUtterance boundaries mask
                + Losses.adjacencyPerUtterance boundaries mask
            | Sample _ | Replay _ -> this.CountLoss(input, counts, valid)
        let perUtterance = perUtterance.to_type(work)
        let keep (t: Tensor) = t.MoveToOuterDisposeScope()
        { Pooled = keep pooled
          Mask = keep (Boundaries.shortenedMaskOfCounts maskDtype stats.Counts)
          LossPerUtterance = keep perUtterance
          Loss = keep (perUtterance.mean())
          BoundaryCounts = keep stats.Counts
          ValidCounts = keep stats.ValidPositions
          LogProb = logProb |> Option.map keep
          Confidence = keep stats.Confidence
          Entropy = keep stats.Entropy
          SpacingCv = keep stats.SpacingCv
          CvDefined = keep stats.CvDefined
          MeanSpacingCv = keep stats.MeanSpacingCv
          Adjacency = keep stats.Adjacency
          AdjacencyOverall = keep stats.AdjacencyOverall
          Boundaries = keep stats.Positions
          Actions = keep (actions.detach())
          Probabilities = keep p }
