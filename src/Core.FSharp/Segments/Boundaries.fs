/// Boundary sampling and its bookkeeping (SPEC §4.1, DECISIONS #1 and #5): relaxed-Bernoulli samples, hard
/// thresholds, the straight-through estimator, masking with a forced boundary at the last valid frame, the shortened
/// mask, and per-utterance boundary statistics. Pure functions over (B, L) tensors; a 1 at position l means "frame l
/// is the last frame of its segment". A mask is a 0/1 (B, L) tensor or None (every frame valid).
module MagnetWhisper.Core.Segments.Boundaries

open System
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Tensors

/// Clamp of probabilities inside log-probabilities and entropies.
[<Literal>]
let ProbabilityClamp = 1e-8

/// Denominator epsilon of the spacing coefficient of variation.
[<Literal>]
let CvEpsilon = 1e-8

// ---------------------------------------------------------------------------------------------------------------
// Shapes, dtypes and masks

/// A TorchSharp Scalar (overloads taking a Scalar or a Tensor need it spelled out from F#).
let inline internal sc (x: float) : Scalar = Scalar.op_Implicit x

/// An int64 TorchSharp Scalar.
let inline internal si (x: int64) : Scalar = Scalar.op_Implicit x

/// Fails unless t is (B, L); returns (B, L).
let internal requireBatch (name: string) (t: Tensor) =
    requireRank name 2 t
    t.shape.[0], t.shape.[1]

/// Fails unless mask, when given, has exactly the shape of like.
let internal requireMaskLike (like: Tensor) (mask: Tensor option) =
    match mask with
    | Some m when m.shape <> like.shape ->
        invalidArg "mask" $"mask must have shape {showShape like.shape}, but has shape {showShape m.shape}"
    | _ -> ()

/// The floating dtype in which to compute with t: its own if floating, else float32.
let internal floatingDtype (t: Tensor) =
    if t.is_floating_point () then t.dtype else torch.float32

/// float64 stays float64; every other dtype becomes float32 (metrics and log-probabilities are at least float32).
let internal atLeastFloat32 (dtype: torch.ScalarType) =
    if dtype = torch.float64 then torch.float64 else torch.float32

/// Machine epsilon of a floating dtype.
let machineEpsilon (dtype: torch.ScalarType) : float = torch.finfo(dtype).eps

/// The mask in like's dtype, or ones of like's shape when there is none. (B, L).
let internal maskOrOnes (like: Tensor) (mask: Tensor option) : Tensor =
    match mask with
    | Some m -> m.to_type like.dtype
    | None -> torch.ones_like like

/// Valid frames per row: Σ_l m[β, l], or L without a mask. like (B, L), mask (B, L) or None → (B,) in like's
/// floating dtype.
let validCounts (mask: Tensor option) (like: Tensor) : Tensor =
    requireBatch "like" like |> ignore
    requireMaskLike like mask
    scoped (fun () ->
        let dtype = floatingDtype like
        match mask with
        | Some m -> m.to_type(dtype).sum(1L)
        | None -> torch.full([| like.shape.[0] |], si like.shape.[1], dtype = dtype, device = like.device))

/// Boundaries per row, Σ_l b[β, l]; keeps the gradient of b (the straight-through count the losses need).
/// b (B, L) → (B,).
let counts (b: Tensor) : Tensor =
    requireBatch "b" b |> ignore
    b.sum(1L)

// ---------------------------------------------------------------------------------------------------------------
// Sampling

/// A seedable random generator on a device: the same seed gives the same samples. Dispose it after use.
let generator (seed: int64) (device: torch.Device) : torch.Generator = new torch.Generator(uint64 seed, device)

/// Uniform noise u ~ U(0, 1) with like's shape, dtype and device, drawn from generator (on like's device).
let uniformLike (generator: torch.Generator) (like: Tensor) : Tensor =
    torch.rand(like.shape, dtype = floatingDtype like, device = like.device, generator = generator)

/// logit(p̃) = ln p̃ − ln(1 − p̃) with p̃ = p clamped to [ε, 1 − ε], ε the dtype's machine epsilon (as torch's
/// probs_to_logits). p any shape → same shape.
let probsToLogits (p: Tensor) : Tensor =
    scoped (fun () ->
        let eps = machineEpsilon p.dtype
        let pc = p.clamp(sc eps, sc (1.0 - eps))
        pc.log() - pc.neg().log1p())

/// The relaxed-Bernoulli (logistic, "Gumbel-sigmoid") sample for given uniform noise u:
/// z = σ((logit + ln u − ln(1 − u)) / τ), clamped to [ε, 1 − ε] (u is clamped to the same range so that the
/// noise is finite). Differentiable in logits: ∂z/∂logit = z(1 − z)/τ. logits and u of one shape → that shape.
let relaxedFromNoise (temperature: float) (u: Tensor) (logits: Tensor) : Tensor =
    if not (temperature > 0.0) then invalidArg "temperature" $"temperature must be positive, but is {temperature}"
    if u.shape <> logits.shape then
        invalidArg "u" $"u must have the shape of logits {showShape logits.shape}, but has shape {showShape u.shape}"
    scoped (fun () ->
        let eps = machineEpsilon logits.dtype
        let uc = u.to_type(logits.dtype).clamp(sc eps, sc (1.0 - eps))
        let noise = uc.log() - uc.neg().log1p()
        ((logits + noise) / temperature).sigmoid().clamp(sc eps, sc (1.0 - eps)))

/// A relaxed-Bernoulli sample from logits with temperature τ, noise drawn from generator. logits (B, L) or any
/// shape → same shape.
let relaxedSampleLogits (generator: torch.Generator) (temperature: float) (logits: Tensor) : Tensor =
    scoped (fun () -> relaxedFromNoise temperature (uniformLike generator logits) logits)

/// A relaxed-Bernoulli sample from probabilities p (clamped to [ε, 1 − ε]) with temperature τ, as torch's
/// RelaxedBernoulli(τ, probs=p).rsample(). p any shape → same shape.
let relaxedSample (generator: torch.Generator) (temperature: float) (p: Tensor) : Tensor =
    scoped (fun () -> relaxedSampleLogits generator temperature (probsToLogits p))

/// Hard boundaries 1[x > threshold] (compared in x's dtype) in x's dtype, without gradient. Used on relaxed samples while training and on
/// probabilities at inference. Any shape → same shape.
let hard (threshold: float) (x: Tensor) : Tensor =
    scoped (fun () -> x.detach().gt(sc threshold).to_type(floatingDtype x))

/// Straight-through estimator h + z − stopgrad(z): its value is exactly h, its gradient that of z.
/// h and z of one shape → that shape.
let straightThrough (h: Tensor) (z: Tensor) : Tensor =
    if h.shape <> z.shape then
        invalidArg "h" $"h must have the shape of z {showShape z.shape}, but has shape {showShape h.shape}"
    scoped (fun () -> h.detach() + (z - z.detach()))

// ---------------------------------------------------------------------------------------------------------------
// Masking and the forced last boundary

/// b·m: clears every padded frame. b (B, L), mask (B, L) or None (b unchanged) → (B, L).
let applyMask (mask: Tensor option) (b: Tensor) : Tensor =
    requireBatch "b" b |> ignore
    requireMaskLike b mask
    match mask with
    | Some m -> scoped (fun () -> b * m.to_type b.dtype)
    | None -> b.alias ()

/// One-hot of the last valid frame of every row, in like's dtype: row β has a single 1 at max{l : m[β, l] ≠ 0};
/// a row without a valid frame is all zeros; without a mask every row's last frame is marked.
/// like (B, L), mask (B, L) or None → (B, L).
let lastValidFrame (mask: Tensor option) (like: Tensor) : Tensor =
    let _, l = requireBatch "like" like
    requireMaskLike like mask
    scoped (fun () ->
        let dtype = floatingDtype like
        let positions = torch.arange(l, dtype = torch.int64, device = like.device).unsqueeze(0L)
        match mask with
        | Some m ->
            // −1 on padded frames, so an empty row's maximum is −1 and matches no position.
            let struct (last, _) = torch.where(m.ne(sc 0.0), positions, torch.full_like(positions, -1L)).max(1L)
            positions.eq(last.unsqueeze(1L)).to_type(dtype)
        | None -> positions.eq(si (l - 1L)).to_type(dtype).expand(like.shape).contiguous())

/// Sets the last valid frame of every row to exactly 1 (DECISIONS #1: padded or not). The forced frame is a
/// constant: it carries no gradient (the original's maximum split ties 50/50), every other frame is unchanged.
/// b (B, L), mask (B, L) or None → (B, L).
let forceLast (mask: Tensor option) (b: Tensor) : Tensor =
    scoped (fun () ->
        let f = lastValidFrame mask b
        b * (1.0 - f) + f)

/// The original's forced boundaries (SPEC §4.1 step 5): only when some row of the batch has padding, a 1 for each
/// padded row at the position just before its first padded position (the first-pad indicator rolled left by one,
/// last column cleared); rows without padding, and every row when there is no mask or no padding, get none. The
/// result therefore depends on the other rows of the batch (one host read decides whether any row is padded).
/// like (B, L), mask (B, L) or None → (B, L) 0/1 in like's floating dtype.
let originalForcedFrames (mask: Tensor option) (like: Tensor) : Tensor =
    let _, l = requireBatch "like" like
    requireMaskLike like mask
    scoped (fun () ->
        let dtype = floatingDtype like
        match mask with
        | Some m when l > 0L && m.eq(sc 0.0).any().item<bool>() ->
            let pad = m.eq(sc 0.0).to_type(torch.int64)
            let firstPad = pad.mul(pad.cumsum(1L).eq(si 1L).to_type(torch.int64))
            // Rolled left by one with the last column cleared: position f − 1 for a first pad at f ≥ 1.
            torch.nn.functional.pad(firstPad.narrow(1L, 1L, l - 1L), [| 0L; 1L |], value = 0.0).to_type(dtype)
        | _ -> torch.zeros_like(like, dtype = dtype))

/// The original's forcing (SPEC §4.1 step 5): the elementwise maximum of b and the forced frames
/// (`originalForcedFrames`), taken only when some row of the batch is padded (otherwise b unchanged). torch's
/// maximum splits the gradient of ties 50/50, so on a padded batch every frame where b equals the forced indicator
/// (every 0 of b outside the forced frames, and a forced frame already at 1) passes half of b's gradient, a forced
/// frame where b is 0 passes none, and b's other frames the full gradient (DECISIONS #1).
/// b (B, L), mask (B, L) or None → (B, L).
let forceOriginal (mask: Tensor option) (b: Tensor) : Tensor =
    let _, l = requireBatch "b" b
    requireMaskLike b mask
    match mask with
    | Some m when l > 0L && m.eq(sc 0.0).any().item<bool>() ->
        scoped (fun () -> torch.maximum(b, originalForcedFrames mask b))
    | _ -> b.alias ()

/// Masks then forces the last valid frame: forceLast mask (applyMask mask b). (B, L) → (B, L).
let maskAndForce (mask: Tensor option) (b: Tensor) : Tensor =
    scoped (fun () -> forceLast mask (applyMask mask b))

/// STE then mask (BP1, BP4): maskAndForce mask (straightThrough h z). Value: h masked with the forced boundary;
/// gradient: z's on valid, unforced frames. h, z (B, L), mask (B, L) or None → (B, L).
let steThenMask (mask: Tensor option) (h: Tensor) (z: Tensor) : Tensor =
    scoped (fun () -> maskAndForce mask (straightThrough h z))

/// Mask then STE (BP2, BP3): straightThrough (maskAndForce mask h) (maskAndForce mask z). Same value and gradient
/// as steThenMask (the forced frame is constant in both). h, z (B, L), mask (B, L) or None → (B, L).
let maskThenSte (mask: Tensor option) (h: Tensor) (z: Tensor) : Tensor =
    scoped (fun () -> straightThrough (maskAndForce mask h) (maskAndForce mask z))

// ---------------------------------------------------------------------------------------------------------------
// Shortened mask

/// The mask of the pooled sequence: row β is [1]*n_β + [0]*(S − n_β) with S = max_β n_β (one host read of S).
/// counts (B,) integer-valued → (B, S) in dtype.
let shortenedMaskOfCounts (dtype: torch.ScalarType) (counts: Tensor) : Tensor =
    requireRank "counts" 1 counts
    scoped (fun () ->
        let n = (if counts.is_floating_point () then counts.detach().round() else counts.detach()).to_type(torch.int64)
        let s = if n.numel () = 0L then 0L else n.max().item<int64>() |> max 0L
        let positions = torch.arange(s, dtype = torch.int64, device = counts.device).unsqueeze(0L)
        positions.lt(n.unsqueeze(1L)).to_type(dtype))

/// The shortened mask of hard (already masked) boundaries: shortenedMaskOfCounts of their row counts.
/// b (B, L) → (B, S) in b's floating dtype, S = max_β Σ_l b[β, l].
let shortenedMask (b: Tensor) : Tensor =
    requireBatch "b" b |> ignore
    scoped (fun () -> shortenedMaskOfCounts (floatingDtype b) (b.detach().sum(1L)))

// ---------------------------------------------------------------------------------------------------------------
// Statistics

/// ln p and ln(1 − p) of p clamped to [1e-8, 1 − 1e-8], computed in float64 (1 − 1e-8 rounds to 1 in float32, so
/// a saturated float32 p would give −∞) and returned in out's dtype; differentiable in p.
let internal clampedLogs (out: torch.ScalarType) (p: Tensor) : Tensor * Tensor =
    let pc = p.to_type(torch.float64).clamp(sc ProbabilityClamp, sc (1.0 - ProbabilityClamp))
    pc.log().to_type out, pc.neg().log1p().to_type out

/// Mean confidence per row, Σ_l |p − 0.5|·m / max(Σ_l m, 1), detached. p (B, L), mask (B, L) or None → (B,).
let confidence (mask: Tensor option) (p: Tensor) : Tensor =
    requireBatch "p" p |> ignore
    requireMaskLike p mask
    scoped (fun () ->
        let pd = p.detach()
        let m = maskOrOnes pd mask
        ((pd - 0.5).abs() * m).sum(1L) / m.sum(1L).clamp_min(1.0))

/// Summed binary entropy per row, Σ_l m·H(p) with p clamped to [1e-8, 1 − 1e-8]; differentiable. p (B, L),
/// mask (B, L) or None → (B,) in float32 (float64 for float64 p).
let entropy (mask: Tensor option) (p: Tensor) : Tensor =
    requireBatch "p" p |> ignore
    requireMaskLike p mask
    scoped (fun () ->
        let out = atLeastFloat32 p.dtype
        // float64 for the same reason as clampedLogs: 0·ln 0 would be NaN for saturated float32 p.
        let pc = p.to_type(torch.float64).clamp(sc ProbabilityClamp, sc (1.0 - ProbabilityClamp))
        let h = (pc * pc.log() + (1.0 - pc) * pc.neg().log1p()).neg().to_type out
        (h * maskOrOnes h mask).sum(1L))

/// Log-probability of a boundary set under independent Bernoulli(p) frames, Σ_l m[h ln p + (1 − h) ln(1 − p)]
/// with p clamped to [1e-8, 1 − 1e-8]; differentiable in p. p, h (B, L), mask (B, L) or None → (B,) in float32
/// (float64 for float64 p).
let logProb (mask: Tensor option) (p: Tensor) (h: Tensor) : Tensor =
    requireBatch "p" p |> ignore
    if h.shape <> p.shape then
        invalidArg "h" $"h must have the shape of p {showShape p.shape}, but has shape {showShape h.shape}"
    requireMaskLike p mask
    scoped (fun () ->
        let out = atLeastFloat32 p.dtype
        let lp, lq = clampedLogs out p
        let hd = h.detach().to_type out
        ((hd * lp + (1.0 - hd) * lq) * maskOrOnes lp mask).sum(1L))

/// Gaps between consecutive boundaries inside the valid prefix (the first Σ m frames) of every row.
/// Returns (gap, hasGap): gap[β, l] = l − (previous boundary of row β) at every boundary l that has a previous
/// one (0 elsewhere), in dtype; hasGap marks those positions. b (B, L), mask (B, L) or None → (B, L), (B, L) bool.
let internal gaps (dtype: torch.ScalarType) (mask: Tensor option) (b: Tensor) : Tensor * Tensor =
    let _, l = requireBatch "b" b
    let positions = torch.arange(l, dtype = torch.int64, device = b.device).unsqueeze(0L).expand(b.shape)
    let valid = validCounts mask b
    let inPrefix = positions.to_type(valid.dtype).lt(valid.unsqueeze(1L))
    let isBoundary = b.detach().gt(sc 0.5).logical_and(inPrefix)
    // Position of the latest boundary at or before l (−1 if none), shifted right: the previous boundary.
    let struct (latest, _) = torch.where(isBoundary, positions, torch.full_like(positions, -1L)).cummax(1L)
    let previous = torch.nn.functional.pad(latest, [| 1L; 0L |], value = -1.0).narrow(1L, 0L, l)
    let hasGap = isBoundary.logical_and(previous.ge(si 0L))
    let gap = torch.where(hasGap, positions - previous, torch.zeros_like(positions)).to_type dtype
    gap, hasGap

/// Spacing statistics of hard boundaries inside each row's valid prefix (DECISIONS #5). Returns
/// (gapCounts (B,), cv (B,), cvDefined (B,) bool, adjacency (B,)): cv = std_unbiased/(mean + 1e-8) of the gaps of
/// rows with ≥ 2 gaps (0 elsewhere, never NaN); adjacency = fraction of a row's gaps equal to 1 (0 without gaps).
/// b (B, L), mask (B, L) or None; float32 results (float64 for float64 b), detached.
let spacing (mask: Tensor option) (b: Tensor) : Tensor * Tensor * Tensor * Tensor =
    requireBatch "b" b |> ignore
    requireMaskLike b mask
    use scope = torch.NewDisposeScope()
    let dtype = atLeastFloat32 b.dtype
    let gap, hasGap = gaps dtype mask b
    let g = hasGap.to_type dtype
    let n = g.sum(1L)
    let mean = gap.sum(1L) / n.clamp_min(1.0)
    // Two-pass variance: deviations from the row mean on real gaps only.
    let dev = (gap - mean.unsqueeze(1L)) * g
    let var = (dev * dev).sum(1L) / (n - 1.0).clamp_min(1.0)
    let defined = n.ge(sc 2.0)
    let cv = torch.where(defined, var.sqrt() / (mean + CvEpsilon), torch.zeros_like(mean))
    let adjacency = (gap.eq(sc 1.0).to_type(dtype) * g).sum(1L) / n.clamp_min(1.0)
    n.MoveToOuterDisposeScope(), cv.MoveToOuterDisposeScope(), defined.MoveToOuterDisposeScope(),
    adjacency.MoveToOuterDisposeScope()

/// Statistics of one boundary decision for a batch. Every tensor is per utterance (B,) unless stated otherwise.
/// Dispose it to free its tensors.
type BoundaryStats =
    { /// (B,) boundaries per row, detached.
      Counts: Tensor
      /// (B,) valid frames per row (Σ m, or L without a mask).
      ValidPositions: Tensor
      /// (B, L) the hard boundaries on valid frames (0/1), detached.
      Positions: Tensor
      /// (B,) Σ |p − 0.5|·m / max(Σ m, 1), detached.
      Confidence: Tensor
      /// (B,) Σ m·H(p), differentiable in p.
      Entropy: Tensor
      /// (B,) number of gaps between consecutive boundaries inside the valid prefix.
      GapCounts: Tensor
      /// (B,) spacing coefficient of variation; 0 for rows with fewer than 2 gaps (see CvDefined).
      SpacingCv: Tensor
      /// (B,) bool: rows with ≥ 2 gaps, whose spacing CV is defined.
      CvDefined: Tensor
      /// () mean spacing CV over rows with ≥ 2 gaps; 0 if there are none.
      MeanSpacingCv: Tensor
      /// (B,) fraction of a row's gaps equal to 1, in [0, 1]; 0 for rows without gaps.
      Adjacency: Tensor
      /// () over the whole batch: #(gaps = 1) / #gaps, in [0, 1]; 0 if there are no gaps.
      AdjacencyOverall: Tensor
      /// (B,) Σ m[h ln p + (1 − h) ln(1 − p)] of the given boundaries, differentiable in p.
      LogProb: Tensor }

    /// Disposes every tensor of the record.
    member s.Dispose() =
        for t in [ s.Counts; s.ValidPositions; s.Positions; s.Confidence; s.Entropy; s.GapCounts; s.SpacingCv
                   s.CvDefined; s.MeanSpacingCv; s.Adjacency; s.AdjacencyOverall; s.LogProb ] do
            t.Dispose()

    interface IDisposable with
        member s.Dispose() = s.Dispose()

/// Statistics of hard boundaries b (0/1, typically masked with the forced last boundary) drawn with probabilities
/// p. p, b (B, L), mask (B, L) or None. Metrics are float32 (float64 for float64 inputs).
let stats (mask: Tensor option) (p: Tensor) (b: Tensor) : BoundaryStats =
    requireBatch "p" p |> ignore
    if b.shape <> p.shape then
        invalidArg "b" $"b must have the shape of p {showShape p.shape}, but has shape {showShape b.shape}"
    requireMaskLike p mask
    use scope = torch.NewDisposeScope()
    let bd = b.detach()
    let gapCounts, cv, defined, adjacency = spacing mask bd
    let dtype = cv.dtype
    let qualifying = defined.to_type dtype
    let meanCv = (cv * qualifying).sum() / qualifying.sum().clamp_min(1.0)
    let adjacencyOverall = (adjacency * gapCounts).sum() / gapCounts.sum().clamp_min(1.0)
    let keep (t: Tensor) = t.MoveToOuterDisposeScope()
    let positions = applyMask mask bd
    { Counts = keep (positions.sum(1L))
      ValidPositions = keep (validCounts mask bd)
      Positions = keep positions
      Confidence = keep (confidence mask p)
      Entropy = keep (entropy mask p)
      GapCounts = keep gapCounts
      SpacingCv = keep cv
      CvDefined = keep defined
      MeanSpacingCv = keep meanCv
      Adjacency = keep adjacency
      AdjacencyOverall = keep adjacencyOverall
      LogProb = keep (logProb mask p bd) }
