namespace MagnetWhisper.Core.Whisper

open TorchSharp
open TorchSharp.Modules
open MagnetWhisper.Core.Tensors

/// Whisper's multi-head attention (HF `WhisperAttention`): `q_proj`, `k_proj` (no bias), `v_proj`, `out_proj`.
/// Scores are q·kᵀ · head_dim^−0.5 (Hugging Face multiplies q by the same factor; `scaled_dot_product_attention`
/// applies it as its default scale). Heads are laid out as (B, H, T, head_dim).
/// `forward` is unmasked bidirectional self-attention (the encoder's); the decoder composes Query, KeyValue and Attend.
type WhisperAttention(embedDim: int64, numHeads: int64, attentionDropout: float) as this =
    inherit torch.nn.Module<Tensor, Tensor>("WhisperAttention")

    do
        if embedDim % numHeads <> 0L then
            invalidArg "numHeads" $"embed_dim {embedDim} is not divisible by num_heads {numHeads}"

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

    /// Query heads of x (B, T, D) → (B, H, T, head_dim), unscaled (Attend applies head_dim^−0.5).
    member this.Query(x: Tensor) : Tensor = this.SplitHeads(q_proj.forward x)

    /// Key and value heads of x (B, S, D) → (B, H, S, head_dim) each.
    member this.KeyValue(x: Tensor) : Tensor * Tensor = this.SplitHeads(k_proj.forward x), this.SplitHeads(v_proj.forward x)

    /// Query, key and value heads of x (B, T, D) from one fused matrix product with the stacked q/k/v weights
    /// (k_proj has no bias), each (B, H, T, head_dim). Same values as Query and KeyValue, one larger GEMM instead
    /// of three (markedly faster on CPUs for Whisper's widths).
    member _.QueryKeyValue(x: Tensor) : Tensor * Tensor * Tensor =
        let b, t = x.shape.[0], x.shape.[1]
        use weight = torch.cat([| q_proj.weight :> Tensor; k_proj.weight; v_proj.weight |], 0L)
        use kBias = torch.zeros_like(v_proj.bias)
        use bias = torch.cat([| q_proj.bias :> Tensor; kBias; v_proj.bias |], 0L)
        let heads = torch.nn.functional.linear(x, weight, bias).view(b, t, 3L, numHeads, headDim).permute(2, 0, 3, 1, 4)
        heads.select(0, 0L), heads.select(0, 1L), heads.select(0, 2L)

    /// softmax(q·kᵀ / √head_dim + mask)·v with heads merged and `out_proj` applied.
    /// q (B, H, Tq, head_dim); k, v (B, H, Tk, head_dim); mask: None, or a bool (B or 1, 1, Tq, Tk) tensor that is
    /// true where a query may attend to a key (every row must allow at least one key). causal applies the
    /// lower-triangular mask instead (only when Tq = Tk and mask is None). In training mode the attention
    /// probabilities are dropped with the configured attention dropout. Returns (B, Tq, D).
    member this.Attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor option, causal: bool) : Tensor =
        let b, tq = q.shape.[0], q.shape.[2]
        let p = if this.training then attentionDropout else 0.0
        let a =
            match mask with
            | Some m -> torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask = m, p = p)
            | None -> torch.nn.functional.scaled_dot_product_attention(q, k, v, p = p, is_casual = causal)
        out_proj.forward (a.transpose(1, 2).reshape(b, tq, embedDim))

    /// Unmasked bidirectional self-attention: x (B, T, D) → (B, T, D).
    override this.forward(x: Tensor) : Tensor =
        let q, k, v = this.QueryKeyValue x
        this.Attend(q, k, v, None, false)
