namespace MagnetWhisper.Core.Magnet

// MagnetEncoderLayer and MagnetDecoderLayer (SPEC §5.2, §5.3): Whisper's pre-LayerNorm blocks with the same
// parameters, MagnetAttention everywhere, 1-D masks and RoPE positions.

open TorchSharp
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Whisper

/// Masks and positions of one decoder step, shared by every decoder layer.
type DecoderStep =
    { /// RoPE positions of the new tokens, (T) shared by the batch or (B, T) per row.
      Positions: Tensor
      /// Self-attention mask of the new tokens over past and new keys.
      Self: AttentionMask
      /// Cross-attention mask over the encoder positions.
      Cross: AttentionMask }

/// A pre-LN encoder block: x + SA(LN(x)) with RoPE at the current (compressed) positions 0..T−1 and 1-D masks, then
/// + fc2(act(fc1(LN(·)))). Parameter names as Hugging Face's `WhisperEncoderLayer`.
type MagnetEncoderLayer(config: WhisperConfig, theta: float, masking: EncoderSelfAttentionMask) as this =
    inherit torch.nn.Module<Tensor, Tensor option, Tensor>("MagnetEncoderLayer")
    let d = int64 config.DModel
    let ffn = int64 config.EncoderFfnDim
    let self_attn = new MagnetAttention(d, int64 config.EncoderAttentionHeads, theta)
    let self_attn_layer_norm = torch.nn.LayerNorm(d)
    let fc1 = torch.nn.Linear(d, ffn)
    let fc2 = torch.nn.Linear(ffn, d)
    let final_layer_norm = torch.nn.LayerNorm(d)

    do
        this.register_module("self_attn", self_attn)
        this.register_module("self_attn_layer_norm", self_attn_layer_norm)
        this.register_module("fc1", fc1)
        this.register_module("fc2", fc2)
        this.register_module("final_layer_norm", final_layer_norm)

    /// Components are registered explicitly under the Hugging Face names.
    override _.RegisterComponents() = ()

    /// The self-attention module.
    member _.SelfAttention = self_attn

    /// x (B, T, D) and validity (B, T) (bool or 0/1; None = all valid) → (B, T, D).
    override this.forward(x: Tensor, mask: Tensor option) : Tensor =
        let drop = LayerOps.dropout this config.Dropout
        let h = x + drop (self_attn.SelfAttention(self_attn_layer_norm.forward x, mask, (masking = QueriesAndKeys)))
        let a =
            LayerOps.dropout this config.ActivationDropout (Activation.apply config.ActivationFunction (fc1.forward (final_layer_norm.forward h)))
        LayerOps.clampHalf (h + drop (fc2.forward a))

/// A pre-LN decoder block: causal RoPE self-attention (keys rotated at their absolute positions before caching),
/// RoPE cross-attention over the encoder output (keys rotated at the encoder positions 0..S−1, SPEC §5.1 step 4)
/// masked by the (shortened) encoder mask, FFN. Parameter names as Hugging Face's `WhisperDecoderLayer`.
type MagnetDecoderLayer(config: WhisperConfig, theta: float) as this =
    inherit torch.nn.Module<Tensor, LayerCache, DecoderStep, DecoderLayerOutput>("MagnetDecoderLayer")
    let d = int64 config.DModel
    let ffn = int64 config.DecoderFfnDim
    let heads = int64 config.DecoderAttentionHeads
    let self_attn = new MagnetAttention(d, heads, theta)
    let self_attn_layer_norm = torch.nn.LayerNorm(d)
    let encoder_attn = new MagnetAttention(d, heads, theta)
    let encoder_attn_layer_norm = torch.nn.LayerNorm(d)
    let fc1 = torch.nn.Linear(d, ffn)
    let fc2 = torch.nn.Linear(ffn, d)
    let final_layer_norm = torch.nn.LayerNorm(d)

    do
        this.register_module("self_attn", self_attn)
        this.register_module("self_attn_layer_norm", self_attn_layer_norm)
        this.register_module("encoder_attn", encoder_attn)
        this.register_module("encoder_attn_layer_norm", encoder_attn_layer_norm)
        this.register_module("fc1", fc1)
        this.register_module("fc2", fc2)
        this.register_module("final_layer_norm", final_layer_norm)

    /// Components are registered explicitly under the Hugging Face names.
    override _.RegisterComponents() = ()

    /// Cross-attention keys (rotated at 0..S−1) and values of the encoder output (B, S, D): (B, H, S, head_dim).
    member _.CrossKeyValue(encoderHidden: Tensor) : Tensor * Tensor =
        use positions = torch.arange(encoderHidden.shape.[1], dtype = torch.int64, device = encoderHidden.device)
        encoder_attn.KeyValue(encoderHidden, positions)

    /// Self-attention heads and head width.
    member _.SelfHeads = self_attn.NumHeads, self_attn.HeadDim

    /// x (B, T, D) of the new tokens, the layer's cache and the step's positions and masks → (B, T, D) and the cache
    /// extended by the new tokens' (rotated) keys and values.
    override this.forward(x: Tensor, cache: LayerCache, step: DecoderStep) : DecoderLayerOutput =
        let drop = LayerOps.dropout this config.Dropout
        let h = self_attn_layer_norm.forward x
        let q, k, v = self_attn.QueryKeyValue(h, step.Positions)
        let keys, values =
            if cache.SelfKey.shape.[2] = 0L then k, v
            else torch.cat([| cache.SelfKey; k |], 2L), torch.cat([| cache.SelfValue; v |], 2L)
        let x = x + drop (self_attn.Attend(q, keys, values, step.Self))
        let h = encoder_attn_layer_norm.forward x
        let x = x + drop (encoder_attn.Attend(encoder_attn.Query(h, step.Positions), cache.CrossKey, cache.CrossValue, step.Cross))
        let a =
            LayerOps.dropout this config.ActivationDropout (Activation.apply config.ActivationFunction (fc1.forward (final_layer_norm.forward x)))
        { Hidden = x + drop (fc2.forward a)
          Cache = { cache with SelfKey = keys; SelfValue = values } }
