namespace MagnetWhisper.Core.Transformer

// Whisper's two pre-LayerNorm blocks (HF `WhisperEncoderLayer`, `WhisperDecoderLayer`), once for both models. What
// differs between stock Whisper and MagnetWhisper (rotary positions, validity masks) arrives as inputs.

open TorchSharp
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Decoding

/// Positions and masks of one self-attention pass over an encoder sequence, shared by the layers that see the same
/// sequence.
type EncoderContext =
    { /// Rotation at the positions 0..T−1 (MagnetWhisper); None for absolute positions.
      Rotation: Rotation option
      /// Validity masks of the sequence.
      Mask: AttentionMask }

    /// Neither positions nor masks (stock Whisper).
    static member Plain = { Rotation = None; Mask = AttentionMask.None }

/// Positions and masks of one decoder step, shared by every decoder layer.
type DecoderStep =
    { /// Rotation at the new tokens' positions (MagnetWhisper); None for absolute positions.
      Rotation: Rotation option
      /// Self-attention mask of the new tokens over past and new keys.
      Self: AttentionMask
      /// Cross-attention mask over the encoder positions.
      Cross: AttentionMask }

/// The output of a decoder block.
type DecoderBlockOutput =
    { /// (B, T, D)
      Hidden: Tensor
      Cache: LayerCache }

/// The feed-forward half shared by both blocks: x + fc2(act(fc1(LN(x)))), with dropouts while training. Its modules
/// are registered on the owning block under the Hugging Face names fc1, fc2, final_layer_norm.
type FeedForward(config: WhisperConfig, ffnDim: int) =
    let d = int64 config.DModel
    let fc1 = torch.nn.Linear(d, int64 ffnDim)
    let fc2 = torch.nn.Linear(int64 ffnDim, d)
    let final_layer_norm = torch.nn.LayerNorm(d)

    /// Registers fc1, fc2 and final_layer_norm on the owning block.
    member _.RegisterOn(owner: torch.nn.Module) =
        owner.register_module("fc1", fc1)
        owner.register_module("fc2", fc2)
        owner.register_module("final_layer_norm", final_layer_norm)

    /// x (B, T, D) → x + FFN(LN(x)), with dropouts when the owner is training.
    member _.Apply(x: Tensor, training: bool) : Tensor =
        let drop p (t: Tensor) = if p > 0.0 && training then torch.nn.functional.dropout (t, p, true) else t
        let a = drop config.ActivationDropout (Activation.apply config.ActivationFunction (fc1.forward (final_layer_norm.forward x)))
        x + drop config.Dropout (fc2.forward a)

/// A pre-LayerNorm encoder block: x + SelfAttn(LN(x)), then the feed-forward half. Parameter names:
/// self_attn.{q,k,v,out}_proj, self_attn_layer_norm, fc1, fc2, final_layer_norm.
type EncoderBlock(config: WhisperConfig) as this =
    inherit torch.nn.Module<Tensor, EncoderContext, Tensor>("EncoderBlock")
    let d = int64 config.DModel
    let self_attn = new Attention(d, int64 config.EncoderAttentionHeads, config.AttentionDropout)
    let self_attn_layer_norm = torch.nn.LayerNorm(d)
    let ffn = new FeedForward(config, config.EncoderFfnDim)

    do
        this.register_module("self_attn", self_attn)
        this.register_module("self_attn_layer_norm", self_attn_layer_norm)
        ffn.RegisterOn this

    /// Components are registered explicitly under the Hugging Face names.
    override _.RegisterComponents() = ()

    /// The self-attention module.
    member _.SelfAttention = self_attn

    /// x (B, T, D) with the sequence's positions and masks → (B, T, D).
    override this.forward(x: Tensor, context: EncoderContext) : Tensor =
        let h = x + LayerOps.dropout this config.Dropout (self_attn.SelfAttend(self_attn_layer_norm.forward x, context.Rotation, context.Mask))
        LayerOps.clampHalf (ffn.Apply(h, this.training))

/// A pre-LayerNorm decoder block: causal self-attention (keys rotated at their positions before caching, when
/// rotary), cross-attention over the encoder output, the feed-forward half, each with a residual. Parameter names:
/// self_attn, self_attn_layer_norm, encoder_attn, encoder_attn_layer_norm, fc1, fc2, final_layer_norm.
type DecoderBlock(config: WhisperConfig) as this =
    inherit torch.nn.Module<Tensor, LayerCache, DecoderStep, DecoderBlockOutput>("DecoderBlock")
    let d = int64 config.DModel
    let heads = int64 config.DecoderAttentionHeads
    let self_attn = new Attention(d, heads, config.AttentionDropout)
    let self_attn_layer_norm = torch.nn.LayerNorm(d)
    let encoder_attn = new Attention(d, heads, config.AttentionDropout)
    let encoder_attn_layer_norm = torch.nn.LayerNorm(d)
    let ffn = new FeedForward(config, config.DecoderFfnDim)

    do
        this.register_module("self_attn", self_attn)
        this.register_module("self_attn_layer_norm", self_attn_layer_norm)
        this.register_module("encoder_attn", encoder_attn)
        this.register_module("encoder_attn_layer_norm", encoder_attn_layer_norm)
        ffn.RegisterOn this

    /// Components are registered explicitly under the Hugging Face names.
    override _.RegisterComponents() = ()

    /// Cross-attention keys (rotated when a rotation at the encoder positions is given) and values of the encoder
    /// output (B, S, D): (B, H, S, head_dim) each.
    member _.CrossKeyValue(encoderHidden: Tensor, rotation: Rotation option) : Tensor * Tensor =
        encoder_attn.KeyValue(encoderHidden, rotation)

    /// Self-attention heads H and head width.
    member _.SelfHeads = self_attn.NumHeads, self_attn.HeadDim

    /// x (B, T, D) of the new tokens, the layer's cache (self K/V of the T_past earlier tokens, cross K/V), and the
    /// step's positions and masks → (B, T, D) and the cache extended by the new tokens' keys and values.
    override this.forward(x: Tensor, cache: LayerCache, step: DecoderStep) : DecoderBlockOutput =
        let drop = LayerOps.dropout this config.Dropout
        let q, k, v = self_attn.QueryKeyValue(self_attn_layer_norm.forward x, step.Rotation)
        let keys, values =
            if cache.SelfKey.shape.[2] = 0L then k, v
            else torch.cat([| cache.SelfKey; k |], 2L), torch.cat([| cache.SelfValue; v |], 2L)
        let x = x + drop (self_attn.Attend(q, keys, values, step.Self))
        let q = encoder_attn.Query(encoder_attn_layer_norm.forward x, step.Rotation)
        let x = x + drop (encoder_attn.Attend(q, cache.CrossKey, cache.CrossValue, step.Cross))
        { Hidden = ffn.Apply(x, this.training)
          Cache = { cache with SelfKey = keys; SelfValue = values } }
