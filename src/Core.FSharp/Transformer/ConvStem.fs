namespace MagnetWhisper.Core.Transformer

// Whisper's convolutional front end, once for both models: conv1 (k3, p1) + GELU, conv2 (k3, stride 2, p1) + GELU.

open TorchSharp
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Whisper

/// The two convolutions that turn log-mel frames into encoder states at half the frame rate. Its modules are
/// registered on the owning encoder under the Hugging Face names conv1 and conv2.
type ConvStem(config: WhisperConfig) =
    let d = int64 config.DModel
    let conv1 = torch.nn.Conv1d(int64 config.NumMelBins, d, 3L, padding = 1L)
    let conv2 = torch.nn.Conv1d(d, d, 3L, stride = 2L, padding = 1L)

    /// Mel frames the stem consumes per output position.
    static member Stride = 2

    /// Mel frames right of a frame that its output position depends on (each k3 convolution looks one input ahead).
    static member Lookahead = 2

    /// Registers conv1 and conv2 on the owning encoder.
    member _.RegisterOn(owner: torch.nn.Module) =
        owner.register_module("conv1", conv1)
        owner.register_module("conv2", conv2)

    /// The weight of conv1 (its device and dtype are the encoder's).
    member _.Weight: Tensor = conv1.weight

    /// Checks log-mel features (B, n_mels, F) against the configuration and the encoder's device and converts them to
    /// its dtype; the frame count F is the caller's to check.
    member _.Prepare(mel: Tensor) : Tensor =
        requireRank "mel" 3 mel
        if mel.shape.[1] <> int64 config.NumMelBins then
            invalidArg "mel" $"mel must have {config.NumMelBins} mel bins (num_mel_bins) in dimension 1, but has shape {showShape mel.shape}"
        let w = conv1.weight
        if not (Devices.same mel.device w.device) then invalidArg "mel" $"mel is on {mel.device} but the encoder is on {w.device}"
        if mel.dtype = w.dtype then mel else mel.to_type w.dtype

    /// Prepared features (B, n_mels, F) → (B, D, ⌈F/2⌉).
    member _.Apply(mel: Tensor) : Tensor =
        torch.nn.functional.gelu (conv2.forward (torch.nn.functional.gelu (conv1.forward mel)))
