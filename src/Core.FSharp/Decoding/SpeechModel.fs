namespace MagnetWhisper.Core.Decoding

open System
open TorchSharp
open MagnetWhisper.Core.Whisper

type Tensor = torch.Tensor

/// The encoder's output for a batch of audio, as decoding sees it.
type EncodedAudio =
    { /// Encoder hidden states (B, S, D); S is 1500 for stock Whisper, shorter after MagnetWhisper's predictors.
      Hidden: Tensor
      /// Valid encoder positions (B, S), bool or 0/1; None when every position is valid.
      Mask: Tensor option }

    interface IDisposable with
        member a.Dispose() =
            a.Hidden.Dispose()
            a.Mask |> Option.iter (fun m -> m.Dispose())

/// What decoding needs from an encoder–decoder speech model: stock Whisper and MagnetWhisper both provide it, so
/// greedy and beam search, the logit filters, temperature fallback, timestamps and long-form transcription are
/// written once. Implementations run inference deterministically (no sampling, no dropout).
type ISpeechModel =
    /// The architecture: vocabulary size, decoder positions, special token ids, mel bins.
    abstract Config: WhisperConfig
    /// The checkpoint's generation settings (suppress tokens, language ids), when it had them.
    abstract Generation: GenerationConfig option
    /// The device the model's parameters live on; inputs are moved there.
    abstract Device: torch.Device
    /// log-mel (B, n_mels, 3000) and its frame mask (B, 3000) (1 = real audio) → the encoder output.
    abstract Encode: mel: Tensor * frameMask: Tensor option -> EncodedAudio
    /// One decoder step: new tokens (B, T) int64, the audio, the cache of earlier steps (None on the first call:
    /// it is then built from the audio) and a mask of real tokens (B, T) → next-token logits (B, T, V) and the
    /// cache extended by the new tokens (a value; the old cache stays valid until disposed).
    abstract Decode: tokens: Tensor * audio: EncodedAudio * cache: DecoderCache option * tokenMask: Tensor option -> DecodeResult
