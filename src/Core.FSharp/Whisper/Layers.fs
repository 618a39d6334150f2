namespace MagnetWhisper.Core.Whisper

open System
open TorchSharp
open MagnetWhisper.Core.Tensors

/// Device comparison (torch.Device has reference equality).
module internal Devices =
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

/// Whisper's fixed sinusoidal table of the encoder positions (openai/whisper `sinusoids`).
[<RequireQualifiedAccess>]
module Sinusoids =
    /// `sinusoids(length, channels, max_timescale = 10000)`: row p is [sin(p·ω_0) … sin(p·ω_{c/2−1}) | cos(p·ω_0) …
    /// cos(p·ω_{c/2−1})] with ω_i = exp(−i·ln(10000)/(c/2 − 1)). Computed in float64, returned as float32
    /// (length, channels) on the CPU. channels must be even and at least 4.
    let create (length: int64) (channels: int64) : Tensor =
        if channels % 2L <> 0L || channels < 4L then invalidArg "channels" $"channels must be even and at least 4, got {channels}"
        if length < 0L then invalidArg "length" $"length must be non-negative, got {length}"
        scoped (fun () ->
            let half = channels / 2L
            let increment = Math.Log 10000.0 / float (half - 1L)
            let inv = (torch.arange(half, dtype = torch.float64) * -increment).exp()
            let scaled = torch.arange(length, dtype = torch.float64).unsqueeze(1) * inv.unsqueeze(0)
            torch.cat([| scaled.sin(); scaled.cos() |], 1L).to_type(torch.float32))

/// The key/value cache of one decoder layer, passed in and returned as a value (never mutated).
/// Self K/V grow by the tokens of each step; cross K/V are projected once from the encoder output and shared by
/// every later cache.
type LayerCache =
    { /// Self-attention keys (B, H, T_past, head_dim).
      SelfKey: Tensor
      /// Self-attention values (B, H, T_past, head_dim).
      SelfValue: Tensor
      /// Cross-attention keys (B, H, S, head_dim).
      CrossKey: Tensor
      /// Cross-attention values (B, H, S, head_dim).
      CrossValue: Tensor }

/// Attention masks of one decoder step, shared by all layers.
type DecoderMasks =
    { /// Bool (B or 1, 1, T, T_past + T), true where a new token may attend to a key; None = Causal decides.
      SelfMask: Tensor option
      /// With SelfMask None: true for the plain causal mask (only when T_past = 0), false for no mask (T = 1).
      Causal: bool
      /// Bool (B, 1, 1, S), true for valid encoder positions; None attends to all.
      CrossMask: Tensor option }

/// The output of a decoder layer.
type DecoderLayerOutput =
    { /// (B, T, D)
      Hidden: Tensor
      Cache: LayerCache }

/// Shared pieces of the two layer kinds.
module internal LayerOps =
    let dropout (m: torch.nn.Module) (p: float) (x: Tensor) =
        if p > 0.0 && m.training then torch.nn.functional.dropout (x, p, true) else x

    /// Keeps fp16 activations finite, as Hugging Face does in its encoder layer.
    let clampHalf (x: Tensor) =
        if x.dtype = torch.float16 then
            let limit = 65504.0 - 1000.0
            x.clamp((-limit).ToScalar(), limit.ToScalar())
        else x

/// A pre-LayerNorm encoder block (HF `WhisperEncoderLayer`): x + SelfAttn(LN(x)), then + fc2(act(fc1(LN(·)))).
/// Parameter names: self_attn.{q,k,v,out}_proj, self_attn_layer_norm, fc1, fc2, final_layer_norm.
type WhisperEncoderLayer(config: WhisperConfig) as this =
    inherit torch.nn.Module<Tensor, Tensor>("WhisperEncoderLayer")
    let d = int64 config.DModel
    let ffn = int64 config.EncoderFfnDim
    let self_attn = new WhisperAttention(d, int64 config.EncoderAttentionHeads, config.AttentionDropout)
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

    /// x (B, T, D) → (B, T, D).
    override this.forward(x: Tensor) : Tensor =
        let drop = LayerOps.dropout this config.Dropout
        let h = x + drop (self_attn.forward (self_attn_layer_norm.forward x))
        let a = LayerOps.dropout this config.ActivationDropout (Activation.apply config.ActivationFunction (fc1.forward (final_layer_norm.forward h)))
        LayerOps.clampHalf (h + drop (fc2.forward a))

/// A pre-LayerNorm decoder block (HF `WhisperDecoderLayer`): causal self-attention, cross-attention over the encoder
/// output, FFN, each with a residual. Parameter names: self_attn, self_attn_layer_norm, encoder_attn,
/// encoder_attn_layer_norm, fc1, fc2, final_layer_norm.
type WhisperDecoderLayer(config: WhisperConfig) as this =
    inherit torch.nn.Module<Tensor, LayerCache, DecoderMasks, DecoderLayerOutput>("WhisperDecoderLayer")
    let d = int64 config.DModel
    let ffn = int64 config.DecoderFfnDim
    let heads = int64 config.DecoderAttentionHeads
    let self_attn = new WhisperAttention(d, heads, config.AttentionDropout)
    let self_attn_layer_norm = torch.nn.LayerNorm(d)
    let encoder_attn = new WhisperAttention(d, heads, config.AttentionDropout)
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

    /// The cross-attention keys and values of encoder output (B, S, D): (B, H, S, head_dim) each.
    member _.CrossKeyValue(encoderHidden: Tensor) : Tensor * Tensor = encoder_attn.KeyValue encoderHidden

    /// Self-attention heads H and head width.
    member _.SelfHeads = self_attn.NumHeads, self_attn.HeadDim

    /// x (B, T, D) of the new tokens, the layer's cache (self K/V of the T_past earlier tokens, cross K/V), and
    /// the step's masks → (B, T, D) and the cache extended by the new tokens' keys and values.
    override this.forward(x: Tensor, cache: LayerCache, masks: DecoderMasks) : DecoderLayerOutput =
        let drop = LayerOps.dropout this config.Dropout
        let h = self_attn_layer_norm.forward x
        let q, k, v = self_attn.QueryKeyValue h
        let keys, values =
            if cache.SelfKey.shape.[2] = 0L then k, v
            else torch.cat([| cache.SelfKey; k |], 2L), torch.cat([| cache.SelfValue; v |], 2L)
        let x = x + drop (self_attn.Attend(q, keys, values, masks.SelfMask, masks.Causal))
        let h = encoder_attn_layer_norm.forward x
        let x = x + drop (encoder_attn.Attend(encoder_attn.Query h, cache.CrossKey, cache.CrossValue, masks.CrossMask, false))
        let a = LayerOps.dropout this config.ActivationDropout (Activation.apply config.ActivationFunction (fc1.forward (final_layer_norm.forward x)))
        { Hidden = x + drop (fc2.forward a)
          Cache = { cache with SelfKey = keys; SelfValue = values } }
