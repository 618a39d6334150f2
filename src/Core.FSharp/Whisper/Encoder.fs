namespace MagnetWhisper.Core.Whisper

open System
open TorchSharp
open TorchSharp.Modules
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Transformer

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

/// Whisper's audio encoder (HF `WhisperEncoder`): the conv stem, + `embed_positions.weight` (the fixed sinusoids
/// stored in the checkpoint), the shared pre-LN blocks without masks or rotary positions, final `layer_norm`.
/// Parameter names: conv1, conv2, embed_positions.weight, layers.N.*, layer_norm.
type WhisperEncoder(config: WhisperConfig) as this =
    inherit torch.nn.Module<Tensor, Tensor>("WhisperEncoder")
    let d = int64 config.DModel
    let stem = ConvStem(config)
    let embed_positions = torch.nn.Embedding(int64 config.MaxSourcePositions, d)
    let layers = torch.nn.ModuleList<EncoderBlock>([| for _ in 1 .. config.EncoderLayers -> new EncoderBlock(config) |])
    let layer_norm = torch.nn.LayerNorm(d)

    do
        stem.RegisterOn this
        this.register_module("embed_positions", embed_positions)
        this.register_module("layers", layers)
        this.register_module("layer_norm", layer_norm)
        // Fixed sinusoids, as in Hugging Face (requires_grad false).
        (embed_positions.get_parameter "weight").requires_grad <- false

    /// Components are registered explicitly under the Hugging Face names.
    override _.RegisterComponents() = ()

    /// The configuration the encoder was built from.
    member _.Config = config

    /// Log-mel features (B, n_mels, 2·max_source_positions) → hidden states (B, max_source_positions, D).
    /// The features are converted to the parameters' dtype; they must be on the parameters' device. Whisper's
    /// encoder sees exactly 2·max_source_positions frames (3000 = 30 s): its absolute positions fix the length, and
    /// other lengths raise an ArgumentException.
    override this.forward(mel: Tensor) : Tensor =
        let mel = stem.Prepare mel
        let frames = int64 config.InputFrames
        if mel.shape.[2] <> frames then
            invalidArg "mel" $"Whisper's encoder takes exactly {frames} mel frames (2 × max_source_positions = 2 × {config.MaxSourcePositions}), but mel has shape {showShape mel.shape}: pad or trim the features to 30 s"
        let mutable h = LayerOps.dropout this config.Dropout ((stem.Apply mel).permute(0, 2, 1) + embed_positions.get_parameter "weight")
        for layer in layers do
            h <- layer.forward(h, EncoderContext.Plain)
        layer_norm.forward h

/// The arithmetic of one encoder forward, for throughput figures.
[<RequireQualifiedAccess>]
module EncoderFlops =
    /// Floating-point operations of one encoder forward over one 30 s window, counting a multiply-add as 2 FLOPs and
    /// only the matrix products (LayerNorm, GELU, softmax, biases and the position add are ignored; they are O(T·D)).
    /// With M mel bins, N = 2·S input frames, S = max_source_positions, D = d_model, F = encoder_ffn_dim, L layers:
    ///   conv1 = 2·N·D·M·3            conv2 = 2·S·D·D·3
    ///   per layer: projections q, k, v, out = 4·(2·S·D·D); scores Q·Kᵀ and weights·V = 2·(2·S·S·D) over all heads;
    ///              FFN fc1 and fc2 = 2·(2·S·D·F)
    ///   total = conv1 + conv2 + L·(8·S·D² + 4·S²·D + 4·S·D·F).
    let perWindow (c: WhisperConfig) : float =
        let m, s, d, f, l = float c.NumMelBins, float c.MaxSourcePositions, float c.DModel, float c.EncoderFfnDim, float c.EncoderLayers
        let n = 2.0 * s
        let conv1 = 2.0 * n * d * m * 3.0
        let conv2 = 2.0 * s * d * d * 3.0
        let perLayer = 8.0 * s * d * d + 4.0 * s * s * d + 4.0 * s * d * f
        conv1 + conv2 + l * perLayer
