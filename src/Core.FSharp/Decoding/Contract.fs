namespace MagnetWhisper.Core.Decoding

// The decoding contract: what a decoding strategy needs from an encoder–decoder speech model, and the values that
// pass between them (encoder output, key/value cache, step result). Stock Whisper and MagnetWhisper both implement
// it; nothing here depends on either model's classes.

open System
open System.Collections.Generic
open TorchSharp
open MagnetWhisper.Core.Whisper

type Tensor = torch.Tensor

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

/// The decoder's key/value cache, passed in and returned as a value: each decode step returns a new cache whose
/// self K/V hold the new tokens too; cross K/V (computed once when the cache is started) and the encoder mask are
/// shared. Tensors live in the dispose scope that was current when they were created (see
/// DecoderCache.disposeSuperseded).
type DecoderCache =
    { /// One cache per decoder layer.
      Layers: LayerCache[]
      /// Tokens already decoded, T_past (= the self K/V length).
      Length: int64
      /// Bool (B, T_past), true for real tokens; None when no step had padding (every token is real).
      SelfMask: Tensor option
      /// Bool (B, S), true for valid encoder positions; None when every position is valid.
      EncoderMask: Tensor option }

    /// Batch size B.
    member c.BatchSize = c.Layers.[0].CrossKey.shape.[0]

    /// Every tensor the cache refers to.
    member c.Tensors: Tensor list =
        [ for l in c.Layers do
              yield! [ l.SelfKey; l.SelfValue; l.CrossKey; l.CrossValue ]
          yield! Option.toList c.SelfMask
          yield! Option.toList c.EncoderMask ]

/// Helpers for caches.
[<RequireQualifiedAccess>]
module DecoderCache =
    /// Disposes the tensors of an old cache that the newer cache no longer uses (its self K/V and self mask), so a
    /// long decoding loop keeps one generation of the cache alive. Do not use old afterwards.
    let disposeSuperseded (old: DecoderCache) (next: DecoderCache) : unit =
        let keep = HashSet<Tensor>(next.Tensors, HashIdentity.Reference)
        for t in old.Tensors do
            if not (keep.Contains t) then t.Dispose()

/// The result of one decode step.
type DecodeResult =
    { /// Next-token logits of the new tokens (B, T, V).
      Logits: Tensor
      /// The cache extended by the new tokens; pass it to the next step.
      Cache: DecoderCache }

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
/// written once. Implementations run inference deterministically (evaluation mode, no gradients, no sampling).
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
