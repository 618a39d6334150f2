/// Boundary-rate losses (SPEC §3) and the schedules of priors and target counts (SPEC §4, §4.2 step 6, §6.4).
/// Pure functions over tensors; per-utterance losses are (B,), reduced ones 0-d. Counts k may be real-valued
/// (sums of straight-through boundaries): the binomial coefficient uses lgamma, so the losses stay differentiable
/// in k. A mask is a 0/1 (B, L) tensor or None (every frame valid).
module MagnetWhisper.Core.Segments.Losses

open TorchSharp
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Segments

/// Clamp of target boundary probabilities p = t/n into [eps, 1 − eps].
[<Literal>]
let TargetEpsilon = 1e-6

/// Width of the repulsion kernel (ones with the centre excluded).
[<Literal>]
let RepulsionKernel = 5

/// Bound scale s of the hinge loss: the band is μ ± s·σ.
[<Literal>]
let HingeScale = 3.0

/// Minimum target in the BP1 compression schedule.
[<Literal>]
let ScheduleTargetFloor = 1e-8

/// Totals per target when there is no mask in the BP1 compression schedule (the original's placeholder).
[<Literal>]
let PlaceholderFramesPerTarget = 12.0

// ---------------------------------------------------------------------------------------------------------------
// Helpers

let private requireVector (name: string) (t: Tensor) =
    requireRank name 1 t
    t.shape.[0]

/// Fails unless t is 0-d or (n,).
let private requireBroadcastable (name: string) (n: int64) (t: Tensor) =
    let ok = int t.Dimensions = 0 || (int t.Dimensions = 1 && t.shape.[0] = n)
    if not ok then invalidArg name $"{name} must be a scalar or have shape ({n}), but has shape {showShape t.shape}"

/// The floating dtype of the loss computation: k's if floating, else float32.
let private workDtype (k: Tensor) = Boundaries.floatingDtype k

/// softplus(x) = ln(1 + eˣ) as torch's Binomial computes it: max(x, 0) written so that its gradient at 0 is ½,
/// plus log1p(e^−|x|); exact for every x.
let private softplus (x: Tensor) : Tensor =
    let positive = (x.clamp_min(0.0) + x - x.clamp_max(0.0)) / 2.0
    positive + x.abs().neg().exp().log1p()

/// In which precision the target probability p = clamp(min(t, n')/n', 1e-6, 1 − 1e-6) of the target-count losses is
/// formed and its logarithms taken (DECISIONS #11).
type TargetClamp =
    /// float64 (the default): 1 − 1e-6 is held exactly, so ln(1 − p) = ln(1e-6) when the target reaches n'.
    | ClampInFloat64
    /// The original's float32 tensors: 1 − 1e-6 rounds to 0.99999899, so ln(1 − p) = ln(1.0133e-6), about 1.3e-2
    /// above ln(1e-6), whenever the target reaches the valid frames (every row while a compression schedule is 0).
    | ClampInFloat32

/// ln p and ln(1 − p) of p = clamp(min(t, n')/n', eps, 1 − eps), n' = max(n, 1) already applied by the caller,
/// formed in the precision of clamp and returned in dtype. float64 by default: near the clamp, float32 holds
/// 1 − 1e-6 only to ~1 %.
let private targetLogs (clamp: TargetClamp) (dtype: torch.ScalarType) (nClamped: Tensor) (t: Tensor) : Tensor * Tensor =
    let precision =
        match clamp with
        | ClampInFloat64 -> torch.float64
        | ClampInFloat32 -> torch.float32
    let n = nClamped.to_type precision
    let p = (torch.minimum(t.to_type precision, n) / n).clamp(Boundaries.sc TargetEpsilon, Boundaries.sc (1.0 - TargetEpsilon))
    p.log().to_type dtype, p.neg().log1p().to_type dtype

// ---------------------------------------------------------------------------------------------------------------
// Binomial

/// ln Bin(k; n, σ(logit)) = lnΓ(n+1) − lnΓ(k+1) − lnΓ(n−k+1) + k·logit − n·softplus(logit), elementwise with
/// broadcasting (k ln p + (n−k) ln(1−p) written through the logit, as torch's Binomial does). Real-valued k and n
/// with 0 ≤ k ≤ n; differentiable in k: ∂/∂k = ψ(n−k+1) − ψ(k+1) + logit.
let binomialLogProb (k: Tensor) (n: Tensor) (logit: Tensor) : Tensor =
    scoped (fun () ->
        let one = 1.0
        let coefficient = (n + one).lgamma() - (k + one).lgamma() - (n - k + one).lgamma()
        coefficient + k * logit - n * softplus logit)

/// The logit of a prior probability clamped to [ε, 1 − ε] of dtype (ε its machine epsilon), as a 0-d tensor on
/// like's device.
let private priorLogit (prior: float) (dtype: torch.ScalarType) (like: Tensor) : Tensor =
    if not (prior >= 0.0 && prior <= 1.0) then invalidArg "prior" $"prior must be in [0, 1], but is {prior}"
    let eps = Boundaries.machineEpsilon dtype
    let p = min (max prior eps) (1.0 - eps)
    torch.tensor(log p - log (1.0 - p), dtype = dtype, device = like.device)

/// Per-utterance binomial loss against a prior: NLL_Bin(k; n, prior) / max(n, 1).
/// k (B,) counts (real-valued allowed), n (B,) or 0-d totals, prior in [0, 1] → (B,) in k's floating dtype.
let binomialPerUtterance (prior: float) (k: Tensor) (n: Tensor) : Tensor =
    let b = requireVector "k" k
    requireBroadcastable "n" b n
    scoped (fun () ->
        let dtype = workDtype k
        let kf = k.to_type dtype
        let nf = n.to_type(dtype).expand(kf.shape)
        let nll = (binomialLogProb kf nf (priorLogit prior dtype kf)).neg()
        nll / nf.clamp_min(1.0))

/// Binomial loss against a prior, reduced to the batch mean as the original always did. k (B,), n (B,) or 0-d → ().
let binomial (prior: float) (k: Tensor) (n: Tensor) : Tensor =
    scoped (fun () -> (binomialPerUtterance prior k n).mean())

/// Binomial loss from target counts with the target probability formed in the precision of clamp: with n' = max(n, 1)
/// and p = clamp(min(t, n')/n', 1e-6, 1 − 1e-6), NLL_Bin(k; n', p) / n'. Its derivative in k is
/// [ψ(k+1) − ψ(n'−k+1) − logit p] / n'. k (B,) counts, n (B,) totals, t (B,) targets → (B,) in k's floating dtype.
let binomialFromTargetsWith (clamp: TargetClamp) (k: Tensor) (n: Tensor) (t: Tensor) : Tensor =
    let b = requireVector "k" k
    requireBroadcastable "n" b n
    requireBroadcastable "t" b t
    scoped (fun () ->
        let dtype = workDtype k
        let kf = k.to_type dtype
        let nc = n.to_type(dtype).expand(kf.shape).clamp_min(1.0)
        let lp, lq = targetLogs clamp dtype nc t
        (binomialLogProb kf nc (lp - lq)).neg() / nc)

/// binomialFromTargetsWith ClampInFloat64. k (B,), n (B,), t (B,) → (B,).
let binomialFromTargets (k: Tensor) (n: Tensor) (t: Tensor) : Tensor = binomialFromTargetsWith ClampInFloat64 k n t

/// Soft-count ("flexible") binomial loss without the coefficient, p formed in the precision of clamp:
/// E = Σ_l b·m, n' = max(Σ_l m, 1) (L without a mask), p as in binomialFromTargetsWith,
/// loss = −(E ln p + (n' − E) ln(1 − p)) / n'. Differentiable in soft b.
/// b (B, L), mask (B, L) or None, t (B,) → (B,) in b's floating dtype.
let binomialFlexibleWith (clamp: TargetClamp) (b: Tensor) (mask: Tensor option) (t: Tensor) : Tensor =
    let batch, _ = Boundaries.requireBatch "b" b
    Boundaries.requireMaskLike b mask
    requireBroadcastable "t" batch t
    scoped (fun () ->
        let dtype = workDtype b
        let bf = b.to_type dtype
        let m = Boundaries.maskOrOnes bf mask
        let e = (bf * m).sum(1L)
        let nc = m.sum(1L).clamp_min(1.0)
        let lp, lq = targetLogs clamp dtype nc (t.expand(e.shape))
        (e * lp + (nc - e) * lq).neg() / nc)

/// binomialFlexibleWith ClampInFloat64. b (B, L), mask (B, L) or None, t (B,) → (B,).
let binomialFlexible (b: Tensor) (mask: Tensor option) (t: Tensor) : Tensor = binomialFlexibleWith ClampInFloat64 b mask t

// ---------------------------------------------------------------------------------------------------------------
// Hinge, repulsion, adjacency

/// Hinge loss on the boundary rate r = k / max(n, 1) (the clamp keeps empty rows finite):
/// relu(r − (μ + s·σ)) + relu((μ − s·σ) − r). k (B,), n (B,) or 0-d → (B,) in k's floating dtype.
let hingeWith (scale: float) (mu: float) (sigma: float) (k: Tensor) (n: Tensor) : Tensor =
    let b = requireVector "k" k
    requireBroadcastable "n" b n
    scoped (fun () ->
        let dtype = workDtype k
        let r = k.to_type dtype / n.to_type(dtype).clamp_min(1.0)
        (r - (mu + scale * sigma)).relu() + ((mu - scale * sigma) - r).relu())

/// hingeWith HingeScale (s = 3). k (B,), n (B,) or 0-d → (B,).
let hinge (mu: float) (sigma: float) (k: Tensor) (n: Tensor) : Tensor = hingeWith HingeScale mu sigma k n

/// Repulsion violations per row and valid frames per row: near = conv1d(b, ones of width kernelSize with centre 0)
/// counts the other boundaries within ±kernelSize/2; returns (Σ_l near·b·m, Σ_l m) as (B,), (B,).
let private repulsionParts (kernelSize: int) (b: Tensor) (mask: Tensor option) : Tensor * Tensor =
    if kernelSize < 1 || kernelSize % 2 = 0 then
        invalidArg "kernelSize" $"kernelSize must be a positive odd number, but is {kernelSize}"
    Boundaries.requireBatch "b" b |> ignore
    Boundaries.requireMaskLike b mask
    let dtype = workDtype b
    let bf = b.to_type dtype
    let half = int64 (kernelSize / 2)
    let weights = Array.init kernelSize (fun i -> if int64 i = half then 0.0 else 1.0)
    let kernel = torch.tensor(weights, dtype = dtype, device = b.device).reshape(1L, 1L, int64 kernelSize)
    let near = torch.nn.functional.conv1d(bf.unsqueeze(1L), kernel, padding = half).squeeze(1L)
    let m = Boundaries.maskOrOnes bf mask
    (near * bf * m).sum(1L), m.sum(1L)

/// Per-utterance repulsion with a kernel of width kernelSize (odd): Σ_l near·b·m / max(Σ_l m, 1).
/// b (B, L), mask (B, L) or None (all valid) → (B,).
let repulsionPerUtteranceWith (kernelSize: int) (b: Tensor) (mask: Tensor option) : Tensor =
    scoped (fun () ->
        let violations, valid = repulsionParts kernelSize b mask
        violations / valid.clamp_min(1.0))

/// Repulsion over the batch as the original: Σ_{β,l} near·b·m / max(Σ_{β,l} m, 1). b (B, L), mask or None → ().
let repulsionWith (kernelSize: int) (b: Tensor) (mask: Tensor option) : Tensor =
    scoped (fun () ->
        let violations, valid = repulsionParts kernelSize b mask
        violations.sum() / valid.sum().clamp_min(1.0))

/// repulsionPerUtteranceWith RepulsionKernel (width 5). b (B, L), mask or None → (B,).
let repulsionPerUtterance (b: Tensor) (mask: Tensor option) : Tensor =
    repulsionPerUtteranceWith RepulsionKernel b mask

/// repulsionWith RepulsionKernel (width 5). b (B, L), mask or None → ().
let repulsion (b: Tensor) (mask: Tensor option) : Tensor = repulsionWith RepulsionKernel b mask

/// Adjacent-boundary penalty per row: Σ_l b_l·b_{l−1}·m_l with b_{−1} = 0. b (B, L), mask or None → (B,).
let adjacencyPerUtterance (b: Tensor) (mask: Tensor option) : Tensor =
    let _, l = Boundaries.requireBatch "b" b
    Boundaries.requireMaskLike b mask
    scoped (fun () ->
        let bf = b.to_type(workDtype b)
        let previous = torch.nn.functional.pad(bf, [| 1L; 0L |]).narrow(1L, 0L, l)
        (bf * previous * Boundaries.maskOrOnes bf mask).sum(1L))

/// Adjacent-boundary penalty, batch mean as the original. b (B, L), mask or None → ().
let adjacency (b: Tensor) (mask: Tensor option) : Tensor =
    scoped (fun () -> (adjacencyPerUtterance b mask).mean())

// ---------------------------------------------------------------------------------------------------------------
// Schedules

/// The scheduled prior p(s) = p_t / (p_t + s·(1 − p_t)): 1/p moves linearly from 1 (s = 0) to 1/p_t (s = 1);
/// 1 when |p_t − 1| < 1e-8.
let scheduledPrior (targetPrior: float) (schedule: float) : float =
    if abs (targetPrior - 1.0) < 1e-8 then 1.0
    else targetPrior / (targetPrior + schedule * (1.0 - targetPrior))

/// Totals T of BP1's compression schedule: Σ_l m per row, or the original's placeholder 12·t without a mask.
/// mask (B, L) or None, targets t (B,) → (B,) in the targets' floating dtype.
let scheduleTotals (mask: Tensor option) (targets: Tensor) : Tensor =
    let b = requireVector "targets" targets
    scoped (fun () ->
        let dtype = workDtype targets
        match mask with
        | Some m ->
            requireRank "mask" 2 m
            requireDim "mask" 0 b m
            m.to_type(dtype).sum(1L)
        | None -> targets.to_type dtype * PlaceholderFramesPerTarget)

/// BP1's compression schedule (SPEC §4.2 step 6): t' = max(t, 1e-8), C_max = T/t', C = 1 + (C_max − 1)·s,
/// t_eff = T/C (s = 0: every frame a boundary; s = 1: the target). totals T (B,), targets t (B,) → (B,).
let compressionScheduledTargets (schedule: float) (totals: Tensor) (targets: Tensor) : Tensor =
    let b = requireVector "targets" targets
    requireBroadcastable "totals" b totals
    scoped (fun () ->
        let dtype = workDtype targets
        let total = totals.to_type dtype
        let cMax = total / targets.to_type(dtype).clamp_min(ScheduleTargetFloor)
        total / ((cMax - 1.0) * schedule + 1.0))

/// The encoder's target-progress lerp (SPEC §6.4): T̂ = max(T, 1), t̃ = t if t > 0 else T̂, R = max(T̂/t̃, 1),
/// ρ = clamp(progress, 0, 1), C = 1 + ρ(R − 1), target = max(min(T̂/C, T), 0) (progress 0: every frame;
/// 1: the target). totals T (B,) (Σ m, or L), targets t (B,) → (B,) in the targets' floating dtype.
let progressTargets (progress: float) (totals: Tensor) (targets: Tensor) : Tensor =
    let b = requireVector "targets" targets
    requireBroadcastable "totals" b totals
    scoped (fun () ->
        let dtype = workDtype targets
        let t = targets.to_type dtype
        let total = totals.to_type(dtype).expand(t.shape)
        let totalHat = total.clamp_min(1.0)
        let tTilde = torch.where(t.gt(Boundaries.sc 0.0), t, totalHat)
        let r = (totalHat / tTilde).clamp_min(1.0)
        let rho = min (max progress 0.0) 1.0
        let c = (r - 1.0) * rho + 1.0
        torch.minimum(totalHat / c, total).clamp_min(0.0))
