/// Segment-mean pooling (SPEC §2): boundaries mark the last frame of each segment; the frames of a segment are
/// averaged into one vector. The default implementation is O(B·L·D) (index_add) with the boundary gradient of the
/// original's dense `1 − (s − c)` construction computed in closed form; `denseReference` is that dense construction.
module MagnetWhisper.Core.Segments.Downsample

open System.Collections.Generic
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Tensors

/// What happens to the frames after a row's last boundary.
type TailRule =
    /// They are not pooled: a row's result never depends on the other rows of the batch (DECISIONS.md #1).
    | DropAfterLastBoundary
    /// The original's rule: they form an extra segment at index n_β when the row has fewer boundaries (n_β) than
    /// the batch maximum S, and are dropped only for the rows with S boundaries (batch-dependent, SPEC §2.1).
    | OriginalTail

/// Options of segment-mean pooling.
type DownsampleOptions =
    { Tail: TailRule }

    /// The batch-independent default: `{ Tail = DropAfterLastBoundary }`.
    static member Default = { Tail = DropAfterLastBoundary }

/// `{ Tail = DropAfterLastBoundary }`.
let defaultOptions = DownsampleOptions.Default

/// The original's options: `{ Tail = OriginalTail }`.
let originalOptions = { Tail = OriginalTail }

/// Normaliser added to segment sizes (SPEC §11): empty segments give exact zeros instead of NaN.
[<Literal>]
let Eps = 1e-9

/// Binarisation threshold of the finite-difference variant (SPEC §2.2).
[<Literal>]
let FiniteDifferenceThreshold = 0.5

/// Weight of the finite-difference part of the boundary gradient (SPEC §2.2).
[<Literal>]
let FiniteDifferenceWeight = 0.1

/// Default kernel of the smoothed variant (SPEC §2.4).
[<Literal>]
let DefaultSmoothingKernel = 3

// ---------------------------------------------------------------------------------------------------------------
// Internals

type private Backward =
    | Exact
    | FiniteDifference of scale: float
    | Smoothed of kernel: int

/// Accumulation dtype: float32 as in the original, float64 kept as float64 (so float64 parity holds exactly).
let private accumulation (hidden: Tensor) =
    if hidden.dtype = torch.float64 then torch.float64 else torch.float32

/// The segment assignment of every frame. Frames that are not pooled (masked, or dropped by the tail rule) are
/// sent to an extra "trash" row B·S, so no (B, L, D) weight product is ever materialised.
type private Plan =
    { Batch: int64
      Length: int64
      Segments: int64
      /// (B·L) int64: β·S + segment id for pooled frames, B·S for the others.
      Flat: Tensor
      /// (B·S + 1) accumulation dtype: pooled frames per segment (N in SPEC §2.1); the trash row last.
      Counts: Tensor }

let private boundaryCounts (acc: torch.ScalarType) (boundaries: Tensor) =
    use b = boundaries.detach().to_type(acc)
    use n = b.sum(1L)
    n.round().to_type(torch.int64)

/// Builds the plan; every tensor is created on the device of the boundaries and belongs to the caller's scope.
let private plan (acc: torch.ScalarType) (tail: TailRule) (segments: int64) (boundaries: Tensor) (mask: Tensor option) =
    let b = boundaries.detach().to_type(acc)
    let batch, length = b.shape.[0], b.shape.[1]
    // Exclusive prefix count, rounded: values stay integers even for straight-through boundaries (h + s − s).
    let ids = (b.cumsum(1L) - b).round().to_type(torch.int64)
    let kept =
        match tail with
        | DropAfterLastBoundary -> ids.lt(b.sum(1L, keepdim = true).round().to_type(torch.int64))
        | OriginalTail -> ids.lt(segments.ToScalar())
    let pooled =
        match mask with
        | Some m -> kept.logical_and(m.detach().ne((0.0).ToScalar()))
        | None -> kept
    let rowStart = torch.arange(batch, dtype = torch.int64, device = b.device).mul(segments.ToScalar()).unsqueeze(1)
    let trash = torch.full([| 1L; 1L |], (batch * segments).ToScalar(), dtype = torch.int64, device = b.device)
    let flat = torch.where(pooled, rowStart + ids.clamp_max((segments - 1L).ToScalar()), trash).reshape(-1L)
    let counts =
        torch.zeros(batch * segments + 1L, dtype = acc, device = b.device)
            .index_add_(0L, flat, torch.ones(batch * length, dtype = acc, device = b.device), 1)
    { Batch = batch; Length = length; Segments = segments; Flat = flat; Counts = counts }

/// 1/(N + ε) per segment, 0 for the trash row: (B·S + 1).
let private inverseCounts (p: Plan) =
    let inv = (p.Counts + Eps).reciprocal()
    inv.index_fill_(0L, torch.tensor([| p.Batch * p.Segments |], device = inv.device), (0.0).ToScalar())

/// (B, S, D) segment means in the accumulation dtype.
let private segmentMeans (acc: torch.ScalarType) (p: Plan) (hidden: Tensor) =
    let d = hidden.shape.[2]
    // A float32 contiguous input is read in place: no (B, L, D) temporary.
    let frames = hidden.detach().to_type(acc).reshape(p.Batch * p.Length, d)
    let sums = torch.zeros(p.Batch * p.Segments + 1L, d, dtype = acc, device = hidden.device).index_add_(0L, p.Flat, frames, 1)
    (sums * inverseCounts(p).unsqueeze(1L)).narrow(0L, 0L, p.Batch * p.Segments).view(p.Batch, p.Segments, d)

/// Reverse exclusive cumulative sum along dim 1: out[k] = Σ_{l>k} q[l].
let private suffixSumAfter (q: Tensor) =
    let inclusive = q.flip(1L).cumsum(1L).flip(1L)
    torch.nn.functional.pad(inclusive.narrow(1L, 1L, q.shape.[1] - 1L), [| 0L; 1L |])

/// Closed-form gradients of segment-mean pooling (SPEC §2.1) for upstream grad (B, S, D), in the accumulation
/// dtype: hidden (B, L, D) = G_c·m·kept/(N_c + ε); boundaries (B, L) = Σ_{l>k} q_l with q_l = (X_l − μ_c)·G_c·
/// m·kept/(N_c + ε). Uses μ_c·G_c/(N_c + ε) = Σ_{l∈c} X_l·(hidden gradient)_l/(N_c + ε), so the means are not
/// needed, and only one (B, L, D) tensor (the hidden gradient) is allocated.
let private closedForm (acc: torch.ScalarType) (p: Plan) (hidden: Tensor) (grad: Tensor) (wantBoundaries: bool) =
    let d = hidden.shape.[2]
    let n = p.Batch * p.Length
    let inv = inverseCounts p
    // Upstream gradient per segment divided by its size, plus a zero trash row.
    let scaled = torch.cat([| grad.to_type(acc).reshape(p.Batch * p.Segments, d); grad.new_zeros(1L, d, dtype = acc) |], 0L) * inv.unsqueeze(1L)
    let gradHidden = scaled.index_select(0L, p.Flat)
    let gradBoundaries =
        if wantBoundaries then
            let own = torch.einsum("nd,nd->n", hidden.detach().to_type(acc).reshape(n, d), gradHidden)
            let segmentDot = torch.zeros(p.Batch * p.Segments + 1L, dtype = acc, device = hidden.device).index_add_(0L, p.Flat, own, 1)
            let q = own - (inv * segmentDot).index_select(0L, p.Flat)
            Some(suffixSumAfter (q.view(p.Batch, p.Length)))
        else
            None
    gradHidden.view(p.Batch, p.Length, d), gradBoundaries

let private movingAverageAcc (kernel: int) (x: Tensor) =
    let k = int64 kernel
    let pooled = torch.nn.functional.avg_pool1d(x.transpose(1L, 2L), k, stride = 1L, padding = k / 2L, count_include_pad = true)
    pooled.transpose(1L, 2L)

/// Per-boundary estimated loss changes of moving the boundary one frame left/right (SPEC §2.2), (B, L) each, in
/// the accumulation dtype; zero where the move is infeasible.
let private moves (acc: torch.ScalarType) (boundaries: Tensor) (hidden: Tensor) (grad: Tensor) =
    let s = grad.shape.[1]
    let d = hidden.shape.[2]
    let binary = boundaries.detach().ge(FiniteDifferenceThreshold.ToScalar()).to_type(acc)
    let p = plan acc OriginalTail s binary None
    let batch, l = p.Batch, p.Length
    let device = hidden.device
    let x = hidden.detach().to_type(acc)
    let g = grad.to_type(acc).reshape(batch * s, d)
    // G_s·μ_s per segment: every dot with a mean is a gather of these scalars.
    let meanDot = torch.einsum("nd,nd->n", g, (segmentMeans acc p hidden).reshape(batch * s, d))
    // k = ordinal of the boundary at i (its exclusive prefix count); k + 1 must be a full segment of this row.
    let ids = (binary.cumsum(1L) - binary).round().to_type(torch.int64)
    let total = binary.sum(1L, keepdim = true).round().to_type(torch.int64)
    let next = ids.add((1L).ToScalar())
    let hasNext = binary.gt((0.5).ToScalar()).logical_and(next.lt(total)).logical_and(next.lt(s.ToScalar()))
    let rowStart = torch.arange(batch, dtype = torch.int64, device = device).mul(s.ToScalar()).unsqueeze(1)
    let kFlat = (rowStart + ids.clamp_max((s - 1L).ToScalar())).reshape(-1L)
    let k1Flat = (rowStart + next.clamp_max((s - 1L).ToScalar())).reshape(-1L)
    let nk = p.Counts.index_select(0L, kFlat).view(batch, l)
    let nk1 = p.Counts.index_select(0L, k1Flat).view(batch, l)
    let aK = meanDot.index_select(0L, kFlat).view(batch, l)
    let aK1 = meanDot.index_select(0L, k1Flat).view(batch, l)
    // G of each frame's own segment; at a boundary i (not the row's last) frame i+1 opens segment k+1, so
    // G_{k+1} = gc[i+1]. One (B·L, D) gather, then dot products of shifted views.
    let gc = g.index_select(0L, kFlat)
    let xf = x.reshape(batch * l, d)
    let n = batch * l
    // Dots of frame i with frame i + 1 over the flattened (B·L, D) rows: contiguous views, no copies. The pairs
    // that straddle two rows land on position L − 1, where no move is feasible.
    let shiftedDot (a: Tensor) (aStart: int64) (b: Tensor) (bStart: int64) =
        let dots = torch.einsum("nd,nd->n", a.narrow(0L, aStart, n - 1L), b.narrow(0L, bStart, n - 1L))
        torch.nn.functional.pad(dots, [| 0L; 1L |]).view(batch, l)
    let own = torch.einsum("nd,nd->n", gc, xf).view(batch, l) // G_k·X_i
    let ownNext = torch.nn.functional.pad(own.narrow(1L, 1L, l - 1L), [| 0L; 1L |]) // G_{k+1}·X_{i+1}
    let gkNext = shiftedDot gc 0L xf 1L // G_k·X_{i+1}
    let gk1Own = shiftedDot gc 1L xf 0L // G_{k+1}·X_i
    let nextFree = torch.nn.functional.pad(binary.narrow(1L, 1L, l - 1L), [| 0L; 1L |], value = 1.0).eq((0.0).ToScalar())
    let prevFree = torch.nn.functional.pad(binary.narrow(1L, 0L, l - 1L), [| 1L; 0L |], value = 1.0).eq((0.0).ToScalar())
    let position = torch.arange(l, dtype = torch.int64, device = device).unsqueeze(0)
    let rightOk = hasNext.logical_and(position.lt((l - 1L).ToScalar())).logical_and(nextFree).logical_and(nk1.gt((1.0).ToScalar()))
    let leftOk = hasNext.logical_and(position.gt((0L).ToScalar())).logical_and(prevFree).logical_and(nk.gt((1.0).ToScalar()))
    // Guarded denominators: infeasible entries are replaced by 1 and zeroed afterwards.
    let safe (den: Tensor) (ok: Tensor) = torch.where(ok, den, torch.ones_like(den))
    // Δ_R = G_k·(X_{i+1} − μ_k)/(n_k + 1) + G_{k+1}·(μ_{k+1} − X_{i+1})/(n_{k+1} − 1)
    let right = (gkNext - aK) / (nk + 1.0) + (aK1 - ownNext) / safe (nk1 - 1.0) rightOk
    // Δ_L = G_k·(μ_k − X_i)/(n_k − 1) + G_{k+1}·(X_i − μ_{k+1})/(n_{k+1} + 1)
    let left = (aK - own) / safe (nk - 1.0) leftOk + (gk1Own - aK1) / (nk1 + 1.0)
    let zero = torch.zeros_like(left)
    torch.where(leftOk, left, zero), torch.where(rightOk, right, zero), leftOk, rightOk

/// The finite-difference part g (B, L) of SPEC §2.2 from the per-boundary moves, already multiplied by scale.
let private finiteDifferenceGradient (scale: float) (left: Tensor) (right: Tensor) =
    let l = left.shape.[1]
    let cl = left.clamp_max((0.0).ToScalar()) * scale
    let cr = right.clamp_max((0.0).ToScalar()) * scale
    // g[i−1] += Δ_L, g[i+1] += Δ_R, g[i] −= Δ_L + Δ_R (only beneficial moves).
    let toPrevious = torch.nn.functional.pad(cl.narrow(1L, 1L, l - 1L), [| 0L; 1L |])
    let toNext = torch.nn.functional.pad(cr.narrow(1L, 0L, l - 1L), [| 1L; 0L |])
    toPrevious + toNext - cl - cr

let private listOf (tensors: Tensor list) = List<Tensor>(tensors)

/// The custom autograd function: forward = segment means; backward = closed form, finite difference or smoothed.
/// Arguments: boundaries, hidden, mask (or null), segments (int64), tail (TailRule), backward mode.
type internal SegmentMeanFunction() =
    inherit torch.autograd.SingleTensorFunction<SegmentMeanFunction>()

    override _.Name = "SegmentMean"

    override _.forward(ctx, vars) =
        let boundaries = vars.[0] :?> Tensor
        let hidden = vars.[1] :?> Tensor
        let mask = match vars.[2] with :? Tensor as m -> Some m | _ -> None
        let segments = vars.[3] :?> int64
        let tail = vars.[4] :?> TailRule
        ctx.save_for_backward(listOf [ boundaries; hidden; Option.toObj mask ])
        ctx.save_data("segments", box segments)
        ctx.save_data("tail", box tail)
        ctx.save_data("mode", vars.[5])
        ctx.save_data("boundariesNeedGrad", box boundaries.requires_grad)
        ctx.save_data("hiddenNeedsGrad", box hidden.requires_grad)
        scoped (fun () ->
            let acc = accumulation hidden
            let p = plan acc tail segments boundaries mask
            (segmentMeans acc p hidden).to_type(hidden.dtype))

    override _.backward(ctx, grad) =
        let segments = ctx.get_data("segments") :?> int64
        let tail = ctx.get_data("tail") :?> TailRule
        let mode = ctx.get_data("mode") :?> Backward
        let wantB = ctx.get_data("boundariesNeedGrad") :?> bool
        let wantX = ctx.get_data("hiddenNeedsGrad") :?> bool
        use _ = torch.NewDisposeScope()
        let saved = ctx.get_saved_variables()
        let boundaries, hidden = saved.[0], saved.[1]
        let mask = Option.ofObj saved.[2]
        let acc = accumulation hidden
        let p = plan acc tail segments boundaries mask
        let gradHidden, gradBoundaries = closedForm acc p hidden grad wantB
        let gradHidden, gradBoundaries =
            match mode with
            | Exact -> gradHidden, gradBoundaries
            | Smoothed kernel -> movingAverageAcc kernel gradHidden, gradBoundaries
            | FiniteDifference scale ->
                // The hidden gradient uses the binarised segmentation (the same as p for 0/1 boundaries).
                let gh =
                    if wantX then
                        let binary = boundaries.detach().ge(FiniteDifferenceThreshold.ToScalar()).to_type(acc)
                        fst (closedForm acc (plan acc tail segments binary None) hidden grad false)
                    else gradHidden
                let gb =
                    gradBoundaries
                    |> Option.map (fun auto ->
                        let left, right, _, _ = moves acc boundaries hidden grad
                        finiteDifferenceGradient scale left right * FiniteDifferenceWeight + auto * scale)
                gh, gb
        // Results outlive this scope: libtorch takes its own reference when backward returns.
        let outB =
            match gradBoundaries with
            | Some g when wantB -> g.to_type(boundaries.dtype).MoveToOuterDisposeScope()
            | _ -> null
        let outX = if wantX then gradHidden.to_type(hidden.dtype).MoveToOuterDisposeScope() else null
        listOf [ outB; outX; null; null; null; null ]

// ---------------------------------------------------------------------------------------------------------------
// Public API

let private sameDevice (a: Tensor) (b: Tensor) = a.device_type = b.device_type && a.device_index = b.device_index

let private validate (boundaries: Tensor) (hidden: Tensor) (mask: Tensor option) =
    requireRank "boundaries" 2 boundaries
    requireRank "hidden" 3 hidden
    let b, l = boundaries.shape.[0], boundaries.shape.[1]
    if hidden.shape.[0] <> b || hidden.shape.[1] <> l then
        invalidArg "hidden" $"hidden must have shape (B, L, D) = ({b}, {l}, D) to match boundaries {showShape boundaries.shape}, but has shape {showShape hidden.shape}"
    if not (hidden.is_floating_point()) then
        invalidArg "hidden" $"hidden must be a floating-point tensor, but has dtype {hidden.dtype}"
    if not (sameDevice boundaries hidden) then
        invalidArg "boundaries" $"boundaries are on {boundaries.device} but hidden is on {hidden.device}"
    match mask with
    | Some m ->
        requireRank "mask" 2 m
        requireDim "mask" 0 b m
        requireDim "mask" 1 l m
        if not (sameDevice m hidden) then invalidArg "mask" $"mask is on {m.device} but hidden is on {hidden.device}"
    | None -> ()

/// The number of output segments S = max_β Σ_l boundaries[β, l] (rounded), read to the host (one device sync).
/// boundaries: (B, L), 0/1 values.
let segmentCount (boundaries: Tensor) : int64 =
    requireRank "boundaries" 2 boundaries
    if boundaries.numel() = 0L then 0L
    else
        use n = boundaryCounts torch.float64 boundaries
        use m = n.max()
        m.item<int64>()

let private run (mode: Backward) (options: DownsampleOptions) (boundaries: Tensor) (hidden: Tensor) (mask: Tensor option) =
    validate boundaries hidden mask
    let s = segmentCount boundaries
    if s = 0L then
        hidden.narrow(1L, 0L, 0L)
    elif torch.is_grad_enabled () && (boundaries.requires_grad || hidden.requires_grad) then
        torch.autograd.SingleTensorFunction<SegmentMeanFunction>.apply(
            [| box boundaries; box hidden; box (Option.toObj mask); box s; box options.Tail; box mode |])
    else
        scoped (fun () ->
            let acc = accumulation hidden
            let p = plan acc options.Tail s boundaries mask
            (segmentMeans acc p hidden).to_type(hidden.dtype))

/// Segment-mean pooling, batch-first. boundaries: (B, L), 1 marks the last frame of a segment (0/1 values, may
/// carry a straight-through gradient); hidden: (B, L, D) float16/bfloat16/float32/float64; mask: optional (B, L)
/// 0/1 validity (frames with mask 0 are not pooled; nonzero counts as 1). Returns (B, S, D) in hidden's dtype with S = max boundary count (empty (B, 0, D) when S = 0):
/// row s is the masked mean of segment s, empty segments are exactly zero. Accumulates in float32 (float64 for
/// float64). O(B·L·D); the gradient to the boundaries is the original's (SPEC §2.1), in closed form; the mask
/// gets no gradient. Frames after a row's last boundary follow options.Tail.
let downsample (options: DownsampleOptions) (boundaries: Tensor) (hidden: Tensor) (mask: Tensor option) : Tensor =
    run Exact options boundaries hidden mask

/// Segment-mean pooling, sequence-first (the original's convention). boundaries: (B, L); hidden: (L, B, D); mask:
/// optional (B, L). Returns (S, B, D) (empty (0, B, D) when S = 0). Same semantics and gradients as `downsample`.
let downsampleSeqFirst (options: DownsampleOptions) (boundaries: Tensor) (hidden: Tensor) (mask: Tensor option) : Tensor =
    requireRank "hidden" 3 hidden
    scoped (fun () -> (downsample options boundaries (hidden.transpose(0L, 1L)) mask).transpose(0L, 1L))

/// The original's dense formulation (SPEC §2.1 steps 1–7), batch-first, autograd-native: the (B, L, S) weight
/// W = 1 − (s − c) where s = c (0 elsewhere), times the mask (and, for DropAfterLastBoundary, the constant
/// 1[c < n_β]), column-normalised with ε = 1e-9, then a batched matmul. boundaries: (B, L); hidden: (B, L, D);
/// mask: optional (B, L). Returns (B, S, D). O(B·L·S·D): a reference for tests and benchmarks.
let denseReference (options: DownsampleOptions) (boundaries: Tensor) (hidden: Tensor) (mask: Tensor option) : Tensor =
    validate boundaries hidden mask
    let s = segmentCount boundaries
    if s = 0L then
        hidden.narrow(1L, 0L, 0L)
    else
        scoped (fun () ->
            let acc = accumulation hidden
            let b = boundaries.to_type(acc)
            let c = b.cumsum(1L) - b
            let offset = torch.arange(s, dtype = acc, device = b.device).view(1L, 1L, s) - c.unsqueeze(-1L)
            let w = torch.where(offset.eq((0.0).ToScalar()), 1.0 - offset, torch.zeros_like(offset))
            let w = match mask with Some m -> w * m.detach().to_type(acc).unsqueeze(-1L) | None -> w
            let w =
                match options.Tail with
                | OriginalTail -> w
                | DropAfterLastBoundary ->
                    let kept = c.detach().lt(b.detach().sum(1L, keepdim = true)).to_type(acc)
                    w * kept.unsqueeze(-1L)
            let normalised = w / (w.sum(1L, keepdim = true) + Eps)
            torch.bmm(normalised.transpose(1L, 2L), hidden.to_type(acc)).to_type(hidden.dtype))

/// Segment-mean pooling whose boundary gradient adds the finite-difference move estimates of SPEC §2.2
/// (`fast_downsample`): 0.1·g + scale·g_auto, where g_auto is `downsample`'s gradient and g the scaled beneficial
/// moves of each boundary; the hidden gradient is that of `downsample` on the boundaries binarised at 0.5.
/// boundaries: (B, L); hidden: (B, L, D); no mask (as the original). Returns (B, S, D).
let finiteDifference (options: DownsampleOptions) (scale: float) (boundaries: Tensor) (hidden: Tensor) : Tensor =
    run (FiniteDifference scale) options boundaries hidden None

/// The estimated loss changes of moving each boundary one frame left or right (SPEC §2.2), for inspection.
type BoundaryMoves =
    { /// (B, L): Δ_L at each boundary where the left move is feasible, else 0.
      Left: Tensor
      /// (B, L): Δ_R at each boundary where the right move is feasible, else 0.
      Right: Tensor
      /// (B, L) bool: the left move is feasible (not the row's last boundary, i > 0, b̂[i−1] = 0, n_k > 1).
      LeftFeasible: Tensor
      /// (B, L) bool: the right move is feasible (not the row's last boundary, i < L−1, b̂[i+1] = 0, n_{k+1} > 1).
      RightFeasible: Tensor }

/// The per-boundary move estimates of SPEC §2.2 for boundaries binarised at 0.5. boundaries: (B, L); hidden:
/// (B, L, D); grad: (B, S, D) upstream gradient of the pooled output. Tensors in the accumulation dtype.
let boundaryMoves (boundaries: Tensor) (hidden: Tensor) (grad: Tensor) : BoundaryMoves =
    validate boundaries hidden None
    requireRank "grad" 3 grad
    requireDim "grad" 0 boundaries.shape.[0] grad
    requireDim "grad" 2 hidden.shape.[2] grad
    if grad.shape.[1] = 0L || boundaries.shape.[1] = 0L then
        let z = torch.zeros(boundaries.shape, dtype = accumulation hidden, device = hidden.device)
        let f = torch.zeros(boundaries.shape, dtype = torch.ScalarType.Bool, device = hidden.device)
        { Left = z; Right = z.clone(); LeftFeasible = f; RightFeasible = f.clone() }
    else
        use scope = torch.NewDisposeScope()
        let left, right, leftOk, rightOk = moves (accumulation hidden) boundaries hidden grad
        { Left = left.MoveToOuterDisposeScope()
          Right = right.MoveToOuterDisposeScope()
          LeftFeasible = leftOk.MoveToOuterDisposeScope()
          RightFeasible = rightOk.MoveToOuterDisposeScope() }

/// Depthwise moving average along time with an odd box kernel (weights 1/kernel, zero padding kernel/2).
/// x: (B, L, D). Returns (B, L, D) in x's dtype (averaged in float32, float64 for float64).
let movingAverage (kernel: int) (x: Tensor) : Tensor =
    requireRank "x" 3 x
    if kernel < 1 || kernel % 2 = 0 then
        invalidArg "kernel" $"kernel must be a positive odd number, but is {kernel}"
    scoped (fun () -> (movingAverageAcc kernel (x.to_type(accumulation x))).to_type(x.dtype))

/// Segment-mean pooling whose hidden gradient is smoothed by a moving average along time (SPEC §2.4): forward and
/// boundary gradient as `downsample`; the hidden gradient is `movingAverage kernel` of `downsample`'s. kernel must
/// be odd (3 in the original). boundaries: (B, L); hidden: (B, L, D); mask: optional (B, L). Returns (B, S, D).
let smoothed (options: DownsampleOptions) (kernel: int) (boundaries: Tensor) (hidden: Tensor) (mask: Tensor option) : Tensor =
    if kernel < 1 || kernel % 2 = 0 then
        invalidArg "kernel" $"kernel must be a positive odd number, but is {kernel}"
    run (Smoothed kernel) options boundaries hidden mask
