namespace MagnetWhisper.Core.Decoding

open System
open TorchSharp
open MagnetWhisper.Core.Whisper

/// Stock Whisper as an ISpeechModel: the encoder ignores the frame mask (Whisper has no encoder mask) and every
/// decode step calls `WhisperModel.Decode`. Disposing it disposes the model when it owns it.
[<Sealed>]
type WhisperSpeechModel(model: WhisperModel, ownsModel: bool) =
    /// Wraps a model the caller keeps owning.
    new(model: WhisperModel) = new WhisperSpeechModel(model, false)

    /// The wrapped model.
    member _.Model = model

    /// Loads a Hugging Face Whisper folder (config.json + model.safetensors) onto device as float32, in eval mode;
    /// the returned object owns the model.
    static member Load(dir: string, device: torch.Device) : WhisperSpeechModel =
        new WhisperSpeechModel(WhisperModel.FromPretrained(dir, device, torch.float32), true)

    interface ISpeechModel with
        member _.Config = model.Config
        member _.Generation = model.GenerationConfig
        member _.Device = model.Device

        member _.Encode(mel, _frameMask) =
            use scope = torch.NewDisposeScope()
            let input =
                if Devices.same mel.device model.Device && mel.dtype = model.DType then mel
                else mel.``to``(model.DType, model.Device)
            let hidden = model.Encode input
            MagnetWhisper.Core.Tensors.keep scope [ hidden ]
            { Hidden = hidden; Mask = None }

        member _.Decode(tokens, audio, cache, tokenMask) =
            model.Decode(tokens, audio.Hidden, cache, tokenMask, audio.Mask)

    interface IDisposable with
        member _.Dispose() = if ownsModel then model.Dispose()
