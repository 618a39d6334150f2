/// A toy ISpeechModel for the decoding tests: its next-token logits are a function, written in the test, of the
/// tokens so far and of the audio (the mean of its log-mel). The "cache" stores the token history in SelfKey, so
/// beam reordering and padding go through the same code paths as with a real model.
module MagnetWhisper.Tests.Decoding.ToyModel

open System
open TorchSharp
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Decoding
open MagnetWhisper.Core.Text

type Tensor = torch.Tensor

/// The multilingual tokenizer the toy uses (51865 ids).
let tokenizer = Tokenizer.load Multilingual
let specials = tokenizer.Specials
let eot = specials.EndOfText
let tb = specials.TimestampBegin
/// The timestamp token of k · 0.02 s.
let ts (k: int) = tb + k
/// One text token per word (words chosen to be single tokens).
let word (w: string) =
    match tokenizer.Encode(" " + w) with
    | [| t |] -> t
    | ids -> failwithf "' %s' is %d tokens" w ids.Length

/// Logit of every token the function does not mention.
let floor = -1.0e4f

/// The toy's configuration: whisper-tiny shapes with the multilingual vocabulary.
let config = { WhisperConfig.preset "tiny" with VocabSize = tokenizer.VocabSize }

/// The tokens after the last start-of-transcript (language and task tokens included).
let afterSot (history: int[]) =
    match Array.tryFindIndexBack ((=) specials.StartOfTranscript) history with
    | Some i -> history.[i + 1 ..]
    | None -> history

/// The tokens after the start-of-transcript sequence: history after SOT without language, task and notimestamps.
let sampledOf (history: int[]) =
    afterSot history
    |> Array.skipWhile (fun t -> t >= specials.FirstLanguage && t <= specials.NoTimestamps)

/// A toy speech model: logits history audio → (token, logit) pairs, every other token at `floor`.
type Toy(logitsOf: int[] -> float -> (int * float32) list) =
    let mutable calls = 0
    let mutable encodes = 0
    /// Decode calls so far.
    member _.Calls = calls
    /// Encode calls so far.
    member _.Encodes = encodes

    interface ISpeechModel with
        member _.Config = config
        member _.Generation = None
        member _.Device = torch.CPU

        member _.Encode(mel, _mask) =
            encodes <- encodes + 1
            let b = mel.shape.[0]
            { Hidden = mel.to_type(torch.float64).mean([| 1L; 2L |]).reshape(b, 1L, 1L); Mask = None }

        member _.Decode(tokens, audio, cache, tokenMask) =
            calls <- calls + 1
            let b, t = tokens.shape.[0], tokens.shape.[1]
            let newIds = tokens.to_type(torch.float64)
            let newIds =
                match tokenMask with
                | Some m -> newIds.masked_fill(m.to_type(torch.ScalarType.Bool).logical_not(), (-1.0).ToScalar())
                | None -> newIds
            let previous =
                match cache with
                | Some c -> c.Layers.[0].SelfKey
                | None -> torch.zeros([| b; 1L; 0L; 1L |], dtype = torch.float64)
            let history = torch.cat([| previous; newIds.reshape(b, 1L, t, 1L) |], 2L)
            let cross =
                match cache with
                | Some c -> c.Layers.[0].CrossKey
                | None -> audio.Hidden.reshape(b, 1L, 1L, 1L)
            let flat = history.reshape(b, -1L).data<float>().ToArray()
            let total = int history.shape.[2]
            let audioValues = cross.reshape(b).data<float>().ToArray()
            let v = config.VocabSize
            let logits = Array.create (int b * int t * v) floor
            for row in 0 .. int b - 1 do
                let ids = flat.[row * total .. row * total + total - 1]
                for step in 0 .. int t - 1 do
                    let upTo = total - int t + step
                    let seen = ids.[.. upTo] |> Array.filter (fun x -> x >= 0.0) |> Array.map int
                    for token, logit in logitsOf seen audioValues.[row] do
                        logits.[(row * int t + step) * v + token] <- logit
            let logitsTensor = torch.tensor(logits, ReadOnlySpan<int64>([| b; t; int64 v |]))
            let layer = { SelfKey = history; SelfValue = history; CrossKey = cross; CrossValue = cross }
            { Logits = logitsTensor
              Cache = { Layers = [| layer |]; Length = int64 total; SelfMask = None; EncoderMask = None } }

/// A toy whose logits depend only on the tokens sampled after the start-of-transcript sequence.
let ofSampled (f: int[] -> (int * float32) list) = Toy(fun history _ -> f (sampledOf history))

/// Log-mel windows (B, 80, 3000) filled with a constant per row (the toy's audio value).
let mels (values: float list) =
    let b = int64 values.Length
    torch.cat([| for v in values -> torch.full([| 1L; 80L; 3000L |], v.ToScalar(), dtype = torch.float32) |], 0L)
    |> fun t -> t.reshape(b, 80L, 3000L)
