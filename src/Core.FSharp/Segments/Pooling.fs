/// Segment attention pooling (SPEC §4.2 step 4 for BP1, §4.3 step 4 for BP2/BP3): the tokens of each segment are
/// combined by a softmax over learned scores restricted to that segment. A hard boundary at token l means "l is the
/// last token of its segment". Tokens after a row's last boundary are not pooled (DECISIONS #1), so a row's result
/// never depends on the other rows of its batch. Membership comes from the boundary values only: no gradient flows
/// to the boundaries (SPEC §4.2: with attention pooling the scorer is trained by the count loss alone).
module MagnetWhisper.Core.Segments.Pooling

open System
open TorchSharp
open MagnetWhisper.Core.Tensors

type private F = torch.nn.functional

/// Weights of segment attention pooling. Matrices use the nn.Linear layout (out, in): the projection of x is x·Wᵀ.
type AttentionPoolParams =
    { /// Learned query q, shape (D); for H heads, head h uses q[h·D/H .. (h+1)·D/H − 1].
      Query: Tensor
      /// Key projection W_k, shape (D, D), bias-free.
      Key: Tensor
      /// Value projection W_v, shape (D, D), bias-free.
      Value: Tensor
      /// Output projection W_o, shape (D, D), bias-free.
      Output: Tensor }

/// An affine LayerNorm over the last dimension (BP2/BP3's `pool_layernorm`), applied before multi-head pooling.
type LayerNormParams =
    { /// γ, shape (D).
      Weight: Tensor
      /// β, shape (D).
      Bias: Tensor
      /// Variance epsilon, > 0 (PyTorch's default is 1e-5).
      Eps: float }

let private checkVector name (d: int64) (t: Tensor) =
    requireRank name 1 t
    requireDim name 0 d t

let private checkMatrix name (d: int64) (t: Tensor) =
    requireRank name 2 t
    requireDim name 0 d t
    requireDim name 1 d t

/// The max score of each token's run (segment), members only, without gradient: (N, H) for scores (N, H).
/// TorchSharp exposes no scatter/index reduction with max, so this uses runs being contiguous and non-decreasing in
/// token order: adding run·spread (spread > the score range) makes a cumulative max restart at every run, and a
/// run's max is the cumulative max at its last token. Only a stabilising shift: float64 rounding here is harmless.
let private segmentMax (run: Tensor) (runs: int64) (outsiders: Tensor) (scores: Tensor) : Tensor =
    use _ = torch.NewDisposeScope()
    let sc = scores.detach().to_type(torch.float64)
    let low = sc.min()
    let spread = sc.max() - low + 1.0
    // Non-members take the global minimum so they never raise a run's max.
    let floored = torch.where(outsiders, low.expand_as(sc), sc)
    let offset = run.to_type(torch.float64).unsqueeze(1) * spread
    let struct (running, _) = (floored + offset).cummax(0L)
    let ends = torch.zeros(runs, dtype = torch.int64, device = run.device).index_add(0L, run, torch.ones_like(run), (1).ToScalar()).cumsum(0L) - 1L
    // A run without tokens points at the previous run's end; no token looks it up.
    let perRun = running.index_select(0L, ends.clamp_min((0L).ToScalar()))
    let runOffset = torch.arange(runs, dtype = torch.float64, device = run.device).unsqueeze(1) * spread
    (perRun - runOffset).index_select(0L, run).to_type(scores.dtype).MoveToOuterDisposeScope()

/// H-head segment attention pooling (SPEC §4.3 step 4; with heads = 1 and no LayerNorm, §4.2 step 4).
/// X = LayerNorm(hidden) (or hidden); per head h, token score e[l,h] = q_h·(W_k X_l)_h·(D/H)^−1/2, one score per token
/// shared by every segment; α = softmax of e over the members of each segment; pooled_s = W_o concat_h(Σ_l α[s,l,h]
/// (W_v X_l)_h). Token l belongs to segment c_l = Σ_{j&lt;l} boundaries[β,j] when mask[β,l] ≠ 0 and c_l &lt; n_β (the row's
/// boundary count). Segments without members (s ≥ n_β, or all members masked) are exactly zero, never NaN.
/// Computed in float32 (float64 when hidden is float64) in O(B·L·D) memory; one host sync reads S.
/// <param name="heads">H ≥ 1, dividing D.</param>
/// <param name="layerNorm">Optional LayerNorm applied to hidden first (BP2/BP3); None for BP1.</param>
/// <param name="parameters">Query (D) and projections (D, D).</param>
/// <param name="boundaries">(B, L), values in {0, 1} (read as > 0.5; gradients are ignored).</param>
/// <param name="mask">Optional (B, L) validity, nonzero = valid; masked tokens are never pooled.</param>
/// <param name="hidden">(B, L, D) token states, any floating dtype; D is the width of parameters.Query.</param>
/// <param name="tail">What happens to the tokens after a row's last boundary: DropAfterLastBoundary (the default,
/// batch-independent) or OriginalTail (they form segment n_β when n_β &lt; S, and are dropped for the rows with S
/// boundaries; SPEC §2.1, DECISIONS #1).</param>
/// <returns>(B, S, D) in hidden's dtype, with S = max_β n_β; (B, 0, D) when no row has a boundary.</returns>
let multiHeadAttentionPoolWithTail
    (tail: Downsample.TailRule)
    (heads: int)
    (layerNorm: LayerNormParams option)
    (parameters: AttentionPoolParams)
    (boundaries: Tensor)
    (mask: Tensor option)
    (hidden: Tensor)
    : Tensor =
    // The parameters define the width; hidden must match it.
    requireRank "parameters.Query" 1 parameters.Query
    let d = parameters.Query.shape.[0]
    requireRank "hidden" 3 hidden
    requireDim "hidden" 2 d hidden
    let b, l = hidden.shape.[0], hidden.shape.[1]
    requireRank "boundaries" 2 boundaries
    requireDim "boundaries" 0 b boundaries
    requireDim "boundaries" 1 l boundaries
    mask
    |> Option.iter (fun m ->
        requireRank "mask" 2 m
        requireDim "mask" 0 b m
        requireDim "mask" 1 l m)
    if heads < 1 || d % int64 heads <> 0L then
        invalidArg "heads" $"heads must be positive and divide the width {d}, but is {heads}"
    checkMatrix "parameters.Key" d parameters.Key
    checkMatrix "parameters.Value" d parameters.Value
    checkMatrix "parameters.Output" d parameters.Output
    layerNorm
    |> Option.iter (fun ln ->
        checkVector "layerNorm.Weight" d ln.Weight
        checkVector "layerNorm.Bias" d ln.Bias
        if not (ln.Eps > 0.0) then invalidArg "layerNorm" $"layerNorm.Eps must be positive, but is {ln.Eps}")
    let h = int64 heads
    let dh = d / h
    scoped (fun () ->
        let device = hidden.device
        let ct = computeType hidden
        let hard = boundaries.detach().to_type(torch.float32).gt((0.5).ToScalar()).to_type(torch.int64)
        // Exclusive prefix count: the segment each token belongs to.
        let index = hard.cumsum(1) - hard
        let counts = hard.sum(1L)
        let s = if counts.numel() = 0L then 0L else counts.max().item<int64>()
        if s = 0L then
            torch.zeros([| b; 0L; d |], dtype = hidden.dtype, device = device)
        else
            // Tail rule: tokens after the row's own last boundary (c = n_β) are not pooled; with the original's rule
            // they are pooled as segment n_β unless n_β = S (c ≤ n_β ≤ S, so c < S selects exactly these).
            let inSegment =
                match tail with
                | Downsample.DropAfterLastBoundary -> index.lt(counts.unsqueeze(1))
                | Downsample.OriginalTail -> index.lt(s.ToScalar())
            let members =
                match mask with
                | Some m -> inSegment.logical_and(m.detach().ne((0.0).ToScalar()))
                | None -> inSegment
            let outsiders = members.logical_not().reshape(b * l, 1L)
            // Run r = β·(S+1) + c: one bucket per (row, segment) plus one for the row's tail. Runs are contiguous and
            // non-decreasing in flattened token order, which the segment max below relies on.
            let runs = b * (s + 1L)
            let run = (torch.arange(b, dtype = torch.int64, device = device).unsqueeze(1) * (s + 1L) + index).reshape(-1L)
            // Zeroing non-members first keeps garbage (even NaN) in padding out of the results and gradients.
            let x0 = hidden.to_type(ct).masked_fill(outsiders.reshape(b, l, 1L), (0.0).ToScalar())
            let x =
                match layerNorm with
                | Some ln -> F.layer_norm(x0, [| d |], ln.Weight.to_type(ct), ln.Bias.to_type(ct), ln.Eps)
                | None -> x0
            let q = parameters.Query.to_type(ct)
            // q_h·(W_k x)_h = (W_k,hᵀ q_h)·x: folding the query into the key matrix costs O(D²) instead of O(B·L·D²).
            let folded = (parameters.Key.to_type(ct).view(h, dh, d) * q.view(h, dh, 1L)).sum(1L)
            let scores = F.linear(x, folded).reshape(b * l, h) * (1.0 / Math.Sqrt(float dh))
            let shift = segmentMax run runs outsiders scores
            // Softmax is shift-invariant: subtracting each segment's max keeps every exp ≤ 1. Non-members take exp(0)
            // before being zeroed, so no inf/NaN can appear even in the backward pass.
            let weights =
                torch.where(outsiders, torch.zeros_like(scores), scores - shift).exp()
                    .masked_fill(outsiders, (0.0).ToScalar())
            // Σ_l w·source over the tokens of each segment, (B, S, …); the tail runs are dropped.
            let perSegment (source: Tensor) =
                let rest = source.shape.[1..]
                torch.zeros(Array.append [| runs |] rest, dtype = ct, device = device)
                    .index_add(0L, run, source, (1.0).ToScalar())
                    .view(Array.append [| b; s + 1L |] rest)
                    .narrow(1L, 0L, s)
            let denominator = perSegment weights
            // A non-empty segment has denominator ≥ 1 (its max scores exp 0 = 1); an empty one has 0/0, made 0/1 = 0.
            let safe = denominator.masked_fill(denominator.eq((0.0).ToScalar()), (1.0).ToScalar())
            let value = parameters.Value.to_type(ct)
            let pooled =
                if h = 1L then
                    // One head: Σ α·W_v x = W_v Σ α·x, so project the S pooled vectors instead of the L tokens.
                    F.linear(perSegment (weights * x.reshape(b * l, d)) / safe, value)
                else
                    let values = F.linear(x, value).reshape(b * l, h, dh)
                    (perSegment (weights.unsqueeze(-1) * values) / safe.unsqueeze(-1)).reshape(b, s, d)
            F.linear(pooled, parameters.Output.to_type(ct)).to_type(hidden.dtype))

/// H-head segment attention pooling with the batch-independent tail rule:
/// <c>multiHeadAttentionPoolWithTail DropAfterLastBoundary</c>. (B, L), (B, L), (B, L, D) → (B, S, D).
let multiHeadAttentionPool
    (heads: int)
    (layerNorm: LayerNormParams option)
    (parameters: AttentionPoolParams)
    (boundaries: Tensor)
    (mask: Tensor option)
    (hidden: Tensor)
    : Tensor =
    multiHeadAttentionPoolWithTail Downsample.DropAfterLastBoundary heads layerNorm parameters boundaries mask hidden

/// Single-head segment attention pooling with a tail rule: <c>multiHeadAttentionPoolWithTail tail 1 None</c>.
/// boundaries (B, L), mask (B, L) or None, hidden (B, L, D) → (B, S, D).
let attentionPoolWithTail
    (tail: Downsample.TailRule)
    (parameters: AttentionPoolParams)
    (boundaries: Tensor)
    (mask: Tensor option)
    (hidden: Tensor)
    : Tensor =
    multiHeadAttentionPoolWithTail tail 1 None parameters boundaries mask hidden

/// Single-head segment attention pooling (BP1, SPEC §4.2 step 4): score e_l = (q·W_k h_l)·D^−1/2 per token, softmax
/// over each segment's valid members, pooled_s = W_o Σ_l α[s,l] W_v h_l. Tokens after a row's last boundary are not
/// pooled; empty segments are exactly zero. Equals <c>multiHeadAttentionPool 1 None</c>.
/// <param name="parameters">Query (D) and projections (D, D) in nn.Linear layout.</param>
/// <param name="boundaries">(B, L), values in {0, 1}; gradients are ignored.</param>
/// <param name="mask">Optional (B, L) validity, nonzero = valid.</param>
/// <param name="hidden">(B, L, D).</param>
/// <returns>(B, S, D) in hidden's dtype, S = the largest boundary count of a row.</returns>
let attentionPool (parameters: AttentionPoolParams) (boundaries: Tensor) (mask: Tensor option) (hidden: Tensor) : Tensor =
    multiHeadAttentionPool 1 None parameters boundaries mask hidden
