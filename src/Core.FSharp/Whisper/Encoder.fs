namespace MagnetWhisper.Core.Whisper

open TorchSharp
open TorchSharp.Modules
open MagnetWhisper.Core.Tensors

/// Whisper's audio encoder (HF `WhisperEncoder`): conv1 (k3, p1) + GELU, conv2 (k3, stride 2, p1) + GELU,
/// + `embed_positions.weight` (the fixed sinusoids stored in the checkpoint), pre-LN blocks, final `layer_norm`.
/// Parameter names: conv1, conv2, embed_positions.weight, layers.N.*, layer_norm.
type WhisperEncoder(config: WhisperConfig) as this =
    inherit torch.nn.Module<Tensor, Tensor>("WhisperEncoder")
    let d = int64 config.DModel
    let conv1 = torch.nn.Conv1d(int64 config.NumMelBins, d, 3L, padding = 1L)
    let conv2 = torch.nn.Conv1d(d, d, 3L, stride = 2L, padding = 1L)
    let embed_positions = torch.nn.Embedding(int64 config.MaxSourcePositions, d)
    let layers = torch.nn.ModuleList<WhisperEncoderLayer>([| for _ in 1 .. config.EncoderLayers -> new WhisperEncoderLayer(config) |])
    let layer_norm = torch.nn.LayerNorm(d)

    do
        this.register_module("conv1", conv1)
        this.register_module("conv2", conv2)
        this.register_module("embed_positions", embed_positions)
        this.register_module("layers", layers)
        this.register_module("layer_norm", layer_norm)
        // Fixed sinusoids, as in Hugging Face (requires_grad false).
        embed_positions.weight.requires_grad <- false

    /// The configuration the encoder was built from.
    member _.Config = config

    /// Log-mel features (B, n_mels, 2·max_source_positions) → hidden states (B, max_source_positions, D).
    /// The features are converted to the parameters' dtype; they must be on the parameters' device. Whisper's
    /// encoder sees exactly 2·max_source_positions frames (3000 = 30 s): other lengths raise an ArgumentException.
    override this.forward(mel: Tensor) : Tensor =
        requireRank "mel" 3 mel
        let frames = int64 config.InputFrames
        if mel.shape.[1] <> int64 config.NumMelBins then
            invalidArg "mel" $"mel must have {config.NumMelBins} mel bins (num_mel_bins) in dimension 1, but has shape {showShape mel.shape}"
        if mel.shape.[2] <> frames then
            invalidArg "mel" $"Whisper's encoder takes exactly {frames} mel frames (2 × max_source_positions = 2 × {config.MaxSourcePositions}), but mel has shape {showShape mel.shape}: pad or trim the features to 30 s"
        let w = conv1.weight
        if not (Devices.same mel.device w.device) then
            invalidArg "mel" $"mel is on {mel.device} but the encoder is on {w.device}"
        let mel = if mel.dtype = w.dtype then mel else mel.to_type w.dtype
        let x = torch.nn.functional.gelu (conv1.forward mel)
        let x = torch.nn.functional.gelu (conv2.forward x)
        let mutable h = x.permute(0, 2, 1) + embed_positions.get_parameter "weight"
        if config.Dropout > 0.0 && this.training then h <- torch.nn.functional.dropout (h, config.Dropout, true)
        for layer in layers do
            h <- layer.forward h
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
