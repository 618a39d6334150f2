namespace MagnetWhisper.Core.Transformer

// Whisper's multi-head attention, once for both models: fused q/k/v projections, optional rotary positions
// (MagnetWhisper, SPEC §5.1) and 1-D query/key validity masks. Fully masked query rows give zero attention (never NaN),
// so a padded query's output is out_proj(0) = out_proj.bias, as in the original.

open System
open TorchSharp
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Segments

/// Device comparison (torch.Device has reference equality).
module Devices =
    /// True when both are the same device.
    let same (a: torch.Device) (b: torch.Device) = a.``type`` = b.``type`` && a.index = b.index

/// The FFN activation functions of Hugging Face's `ACT2FN`, by their config names.
[<RequireQualifiedAccess>]
module Activation =
    /// Applies the named activation elementwise (see WhisperConfig.ActivationFunction for the names).
    let apply (name: string) (x: Tensor) : Tensor =
        match name with
        | "gelu" -> torch.nn.functional.gelu x
        | "gelu_new"
        | "gelu_pytorch_tanh"
        | "gelu_fast" -> torch.nn.functional.gelu (x, TorchSharp.Modules.GELU.Approximate.tanh)
        | "relu" -> torch.nn.functional.relu x
        | "silu"
        | "swish" -> torch.nn.functional.silu x
        | other -> invalidArg "name" $"unsupported activation function '{other}'"

/// Pieces shared by every block.
module LayerOps =
    /// Dropout with probability p while m is training.
    let dropout (m: torch.nn.Module) (p: float) (x: Tensor) =
        if p > 0.0 && m.training then torch.nn.functional.dropout (x, p, true) else x

    /// Keeps fp16 activations finite, as Hugging Face does in its encoder layer.
    let clampHalf (x: Tensor) =
        if x.dtype = torch.float16 then
            let limit = 65504.0 - 1000.0
            x.clamp((-limit).ToScalar(), limit.ToScalar())
        else x

/// Masks of one attention call.
type AttentionMask =
    { /// Bool, broadcastable to (B, 1, Tq, Tk): true where a query may attend to a key. Every row must allow at least
      /// one key (see `AttentionMask.keys`); None allows every key (unless Causal).
      Allowed: Tensor option
      /// With Allowed None: the plain lower-triangular mask (Tq = Tk, no cache).
      Causal: bool
      /// Bool (B, Tq): false for padded queries, whose attention output is zero; None = every query is valid.
      QueryValid: Tensor option }

    /// No mask at all.
    static member None = { Allowed = None; Causal = false; QueryValid = None }

/// Construction of attention masks from 1-D validity vectors.
[<RequireQualifiedAccess>]
module AttentionMask =
    /// A validity vector (B, T), bool or 0/1 numbers, as bool.
    let asBool (m: Tensor) : Tensor =
        if m.dtype = torch.ScalarType.Bool then m else m.ne(torch.tensor(0, device = m.device))

    /// Key mask (B, 1, 1, Tk) from key validity (B, Tk): rows without any valid key allow every key instead (their
    /// queries must be marked invalid, see `queriesOfKeys`), so no softmax row is empty.
    let keys (keyValid: Tensor) : Tensor =
        let valid = asBool keyValid
        let empty = valid.any(1L, keepdim = true).logical_not()
        valid.logical_or(empty).unsqueeze(1L).unsqueeze(1L)

    /// Query validity (B, Tq) restricted to rows that have at least one valid key (B, Tk).
    let queriesOfKeys (queryValid: Tensor option) (keyValid: Tensor) (tq: int64) : Tensor =
        let rowHasKey = (asBool keyValid).any(1L, keepdim = true)
        match queryValid with
        | Some q -> (asBool q).logical_and(rowHasKey)
        | None -> rowHasKey.expand(-1L, tq)

    /// Bidirectional self-attention over T positions with validity (B, T) (bool or 0/1): padded queries give zero
    /// attention; with maskKeys padded keys are ignored too (DECISIONS #2), otherwise valid queries attend to every
    /// position (the original's encoder). None = no mask.
    let selfAttention (valid: Tensor option) (maskKeys: bool) : AttentionMask =
        match valid with
        | None -> AttentionMask.None
        | Some m when maskKeys ->
            { Allowed = Some(keys m); Causal = false; QueryValid = Some(queriesOfKeys (Some m) m m.shape.[1]) }
        | Some m -> { Allowed = None; Causal = false; QueryValid = Some(asBool m) }

    /// Cross-attention of Tq queries (validity (B, Tq) or None) over keys with validity (B, Tk) or None.
    let cross (queryValid: Tensor option) (keyValid: Tensor option) (tq: int64) : AttentionMask =
        match keyValid with
        | Some m -> { Allowed = Some(keys m); Causal = false; QueryValid = Some(queriesOfKeys queryValid m tq) }
        | None -> { AttentionMask.None with QueryValid = queryValid }

/// Rotary position angles (interleaved pairs, SPEC §5.1) at a set of positions, computed once per forward pass or
/// decode step and shared by every layer that rotates at those positions.
type Rotation =
    { /// cos of the angles: (T, head_dim/2) shared by the batch, or (B, T, head_dim/2).
      Cos: Tensor
      /// sin of the angles, the same shape.
      Sin: Tensor }

    /// The angles of positions (T) or (B, T) for heads of width headDim, base theta, in dtype.
    static member At(theta: float, headDim: int64, dtype: torch.ScalarType, positions: Tensor) : Rotation =
        let cos, sin = Positions.ropeTable theta (int headDim) dtype positions
        { Cos = cos; Sin = sin }

    /// The angles of positions 0..T−1.
    static member Range(theta: float, headDim: int64, dtype: torch.ScalarType, device: torch.Device, t: int64) : Rotation =
        use positions = torch.arange(t, dtype = torch.int64, device = device)
        Rotation.At(theta, headDim, dtype, positions)

    /// Rotates heads x (B, H, T, head_dim).
    member r.Apply(x: Tensor) : Tensor = Positions.rotate (r.Cos, r.Sin) x

/// How a model encodes token and frame positions.
type PositionEncoding =
    /// Learned or fixed absolute embeddings added to the inputs (stock Whisper).
    | Absolute
    /// Rotary embeddings with base θ inside every attention, no absolute embeddings (MagnetWhisper).
    | Rotary of theta: float

/// Multi-head attention with Hugging Face's parameters: `q_proj` (bias), `k_proj` (no bias), `v_proj` (bias),
/// `out_proj` (bias). Heads are laid out (B, H, T, head_dim). Scores are q·kᵀ · head_dim^−1/2, applied inside
/// `scaled_dot_product_attention` (equal to scaling q before a rotation, up to rounding, because the rotation is
/// linear). Rotations, when given, are applied to queries and keys.
type Attention(embedDim: int64, numHeads: int64, attentionDropout: float) as this =
    inherit torch.nn.Module<Tensor, Tensor>("Attention")

    do
        if embedDim % numHeads <> 0L then
            invalidArg "numHeads" $"embed_dim {embedDim} is not divisible by num_heads {numHeads}"

    let headDim = embedDim / numHeads
    let q_proj = torch.nn.Linear(embedDim, embedDim, hasBias = true)
    let k_proj = torch.nn.Linear(embedDim, embedDim, hasBias = false)
    let v_proj = torch.nn.Linear(embedDim, embedDim, hasBias = true)
    let out_proj = torch.nn.Linear(embedDim, embedDim, hasBias = true)

    // Below this many positions the three projections are cheaper than concatenating their weights: a decode step
    // (T = 1) reads each weight once either way, so fusing would only add a copy of 3·D² values per layer and step.
    static let fuseFrom = 16L

    let rotate (rotation: Rotation option) (x: Tensor) =
        match rotation with
        | Some r -> r.Apply x
        | None -> x

    do
        this.register_module("q_proj", q_proj)
        this.register_module("k_proj", k_proj)
        this.register_module("v_proj", v_proj)
        this.register_module("out_proj", out_proj)

    /// Components are registered explicitly under the Hugging Face names.
    override _.RegisterComponents() = ()

    /// Number of heads H.
    member _.NumHeads = numHeads
    /// Head width head_dim = D / H.
    member _.HeadDim = headDim
    /// Model width D.
    member _.EmbedDim = embedDim

    /// (B, T, D) → (B, H, T, head_dim).
    member _.SplitHeads(x: Tensor) : Tensor =
        let b, t = x.shape.[0], x.shape.[1]
        x.view(b, t, numHeads, headDim).transpose(1, 2)

    /// Query heads of x (B, T, D), rotated when a rotation is given → (B, H, T, head_dim), unscaled.
    member this.Query(x: Tensor, rotation: Rotation option) : Tensor = rotate rotation (this.SplitHeads(q_proj.forward x))

    /// Key heads (rotated when a rotation is given) and value heads of x (B, S, D) → (B, H, S, head_dim) each.
    member this.KeyValue(x: Tensor, rotation: Rotation option) : Tensor * Tensor =
        rotate rotation (this.SplitHeads(k_proj.forward x)), this.SplitHeads(v_proj.forward x)

    /// Self-attention heads of x (B, T, D): queries and keys rotated when a rotation is given, (B, H, T, head_dim)
    /// each. Long inputs use one product with the stacked q/k/v weights (one large GEMM instead of three).
    member this.QueryKeyValue(x: Tensor, rotation: Rotation option) : Tensor * Tensor * Tensor =
        let b, t = x.shape.[0], x.shape.[1]
        if t < fuseFrom then
            let k, v = this.KeyValue(x, rotation)
            this.Query(x, rotation), k, v
        else
            // The stacked weights are concatenated on every call, not cached: measured on 2 CPU threads (libtorch,
            // float32), the concatenation takes 0.04-0.05 ms per layer, 0.2 ms per whisper-tiny and 0.25 ms per
            // whisper-base encoder forward over 30 s, against 253-270 ms (tiny) and 600-780 ms (base) for the forward
            // (`magnet bench encoder`), i.e. under 0.1 %, far below the run-to-run spread. A cache would have to notice
            // in-place optimizer updates, which TorchSharp 0.107 cannot tell (no tensor version counter).
            use weight = torch.cat([| q_proj.weight :> Tensor; k_proj.weight; v_proj.weight |], 0L)
            use kBias = torch.zeros_like(v_proj.bias)
            use bias = torch.cat([| q_proj.bias :> Tensor; kBias; v_proj.bias |], 0L)
            let heads = torch.nn.functional.linear(x, weight, bias).view(b, t, 3L, numHeads, headDim).permute(2, 0, 3, 1, 4)
            rotate rotation (heads.select(0, 0L)), rotate rotation (heads.select(0, 1L)), heads.select(0, 2L)

    /// softmax(q·kᵀ/√head_dim, masked)·v, zero rows for invalid queries, heads merged, `out_proj`. In training mode
    /// the attention probabilities are dropped with the configured attention dropout.
    /// q (B, H, Tq, head_dim), k and v (B, H, Tk, head_dim) → (B, Tq, D).
    member this.Attend(q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask) : Tensor =
        let b, tq = q.shape.[0], q.shape.[2]
        let p = if this.training then attentionDropout else 0.0
        let a =
            match mask.Allowed with
            | Some allowed -> torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask = allowed, p = p)
            | None -> torch.nn.functional.scaled_dot_product_attention(q, k, v, p = p, is_casual = mask.Causal)
        let a =
            match mask.QueryValid with
            | Some valid -> a * valid.view(b, 1L, tq, 1L).to_type(a.dtype)
            | None -> a
        out_proj.forward (a.transpose(1, 2).reshape(b, tq, embedDim))

    /// Self-attention of x (B, T, D) with an optional rotation at its positions and a mask.
    member this.SelfAttend(x: Tensor, rotation: Rotation option, mask: AttentionMask) : Tensor =
        let q, k, v = this.QueryKeyValue(x, rotation)
        this.Attend(q, k, v, mask)

    /// Unmasked bidirectional self-attention without positions: x (B, T, D) → (B, T, D).
    override this.forward(x: Tensor) : Tensor = this.SelfAttend(x, None, AttentionMask.None)
