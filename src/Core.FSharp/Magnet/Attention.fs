namespace MagnetWhisper.Core.Magnet

// MagnetAttention (SPEC §5.1): Whisper's projections with rotary position embeddings (interleaved pairs) on queries
// and keys, and 1-D validity masks of queries and keys instead of 4-D additive masks. Fully masked rows give zero
// attention (never NaN), so a padded query's output is out_proj(0) = out_proj.bias, as in the original.

open TorchSharp
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Segments

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

/// Whisper attention with RoPE and 1-D masks. Parameters as Hugging Face: `q_proj` (bias), `k_proj` (no bias),
/// `v_proj` (bias), `out_proj` (bias). Heads are laid out (B, H, T, head_dim).
/// Queries are scaled by head_dim^−1/2 and rotated (SPEC §5.1 steps 2–3); because the rotation is linear the scale
/// is applied inside `scaled_dot_product_attention`, which equals scaling before the rotation up to rounding.
type MagnetAttention(embedDim: int64, numHeads: int64, theta: float) as this =
    inherit torch.nn.Module<Tensor, Tensor>("MagnetAttention")

    do
        if embedDim % numHeads <> 0L then
            invalidArg "numHeads" $"embed_dim {embedDim} is not divisible by num_heads {numHeads}"
        if (embedDim / numHeads) % 2L <> 0L then
            invalidArg "numHeads" $"RoPE needs an even head width, but embed_dim {embedDim} / num_heads {numHeads} is odd"

    let headDim = embedDim / numHeads
    let q_proj = torch.nn.Linear(embedDim, embedDim, hasBias = true)
    let k_proj = torch.nn.Linear(embedDim, embedDim, hasBias = false)
    let v_proj = torch.nn.Linear(embedDim, embedDim, hasBias = true)
    let out_proj = torch.nn.Linear(embedDim, embedDim, hasBias = true)

    do
        this.register_module("q_proj", q_proj)
        this.register_module("k_proj", k_proj)
        this.register_module("v_proj", v_proj)
        this.register_module("out_proj", out_proj)

    /// Components are registered explicitly under the Hugging Face names.
    override _.RegisterComponents() = ()

    /// Heads H.
    member _.NumHeads = numHeads
    /// head_dim = D / H.
    member _.HeadDim = headDim
    /// RoPE base θ.
    member _.Theta = theta

    /// (B, T, D) → (B, H, T, head_dim).
    member _.SplitHeads(x: Tensor) : Tensor =
        let b, t = x.shape.[0], x.shape.[1]
        x.view(b, t, numHeads, headDim).transpose(1, 2)

    /// Rotated query heads of x (B, T, D) at positions (T) or (B, T) → (B, H, T, head_dim).
    member this.Query(x: Tensor, positions: Tensor) : Tensor =
        Positions.applyRope theta positions (this.SplitHeads(q_proj.forward x))

    /// Rotated key heads and value heads of x (B, S, D), keys at positions (S) or (B, S) → (B, H, S, head_dim) each.
    member this.KeyValue(x: Tensor, positions: Tensor) : Tensor * Tensor =
        Positions.applyRope theta positions (this.SplitHeads(k_proj.forward x)), this.SplitHeads(v_proj.forward x)

    /// Self-attention heads of x (B, T, D) from one fused product of the stacked q/k/v weights, queries and keys
    /// rotated at positions: (B, H, T, head_dim) each.
    member _.QueryKeyValue(x: Tensor, positions: Tensor) : Tensor * Tensor * Tensor =
        let b, t = x.shape.[0], x.shape.[1]
        use weight = torch.cat([| q_proj.weight :> Tensor; k_proj.weight; v_proj.weight |], 0L)
        use kBias = torch.zeros_like(v_proj.bias)
        use bias = torch.cat([| q_proj.bias :> Tensor; kBias; v_proj.bias |], 0L)
        let heads = torch.nn.functional.linear(x, weight, bias).view(b, t, 3L, numHeads, headDim).permute(2, 0, 3, 1, 4)
        let rope = Positions.applyRope theta positions
        rope (heads.select(0, 0L)), rope (heads.select(0, 1L)), heads.select(0, 2L)

    /// softmax(q·kᵀ/√head_dim, masked)·v, zero rows for invalid queries, heads merged, `out_proj`.
    /// q (B, H, Tq, head_dim), k and v (B, H, Tk, head_dim) → (B, Tq, D).
    member _.Attend(q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask) : Tensor =
        let b, tq = q.shape.[0], q.shape.[2]
        let a =
            match mask.Allowed with
            | Some allowed -> torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask = allowed)
            | None -> torch.nn.functional.scaled_dot_product_attention(q, k, v, is_casual = mask.Causal)
        let a =
            match mask.QueryValid with
            | Some valid -> a * valid.view(b, 1L, tq, 1L).to_type(a.dtype)
            | None -> a
        out_proj.forward (a.transpose(1, 2).reshape(b, tq, embedDim))

    /// Bidirectional self-attention of x (B, T, D) at positions 0..T−1, without masks.
    override this.forward(x: Tensor) : Tensor =
        let t = x.shape.[1]
        use positions = torch.arange(t, dtype = torch.int64, device = x.device)
        let q, k, v = this.QueryKeyValue(x, positions)
        this.Attend(q, k, v, AttentionMask.None)

    /// Self-attention of x (B, T, D) at positions 0..T−1 with validity mask (B, T) (bool or 0/1): padded queries give
    /// zero attention; with maskKeys padded keys are ignored too (DECISIONS #2), otherwise valid queries attend to
    /// every position (the original's encoder).
    member this.SelfAttention(x: Tensor, valid: Tensor option, maskKeys: bool) : Tensor =
        let t = x.shape.[1]
        use positions = torch.arange(t, dtype = torch.int64, device = x.device)
        let q, k, v = this.QueryKeyValue(x, positions)
        let mask =
            match valid with
            | None -> AttentionMask.None
            | Some m when maskKeys ->
                { Allowed = Some(AttentionMask.keys m)
                  Causal = false
                  QueryValid = Some(AttentionMask.queriesOfKeys (Some m) m t) }
            | Some m -> { Allowed = None; Causal = false; QueryValid = Some(AttentionMask.asBool m) }
        this.Attend(q, k, v, mask)
