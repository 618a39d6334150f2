/// Search.greedyTokens: greedy decoding for a vocabulary without a tokenizer, with the checkpoint's own special
/// tokens (begin-suppress, suppress, end-of-text ids from the config or the generation config).
module MagnetWhisper.Tests.Decoding.GreedyTokensTests

open System
open Expecto
open TorchSharp
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Decoding

type private Tensor = torch.Tensor

/// A 10-id vocabulary: 8 is the decoder start, 9 the end-of-text of config.json, 3 begin-suppressed, 5 suppressed.
let private config =
    { WhisperConfig.preset "tiny" with
        VocabSize = 10
        DecoderStartTokenId = 8
        EosTokenId = 9
        BeginSuppressTokens = [| 3 |]
        SuppressTokens = [| 5 |] }

/// A speech model whose next-token logits are `logitsOf history audio` (listed ids; every other id at −100). Its
/// "cache" carries the token history in SelfKey, so the search's cache handling is exercised.
type private MiniToy(generation: GenerationConfig option, logitsOf: int list -> float -> (int * float32) list) =
    interface ISpeechModel with
        member _.Config = config
        member _.Generation = generation
        member _.Device = torch.CPU

        member _.Encode(mel, _mask) =
            let b = mel.shape.[0]
            { Hidden = mel.to_type(torch.float64).mean([| 1L; 2L |]).reshape(b, 1L, 1L); Mask = None }

        member _.Decode(tokens, audio, cache, _tokenMask) =
            let b, t = tokens.shape.[0], tokens.shape.[1]
            let previous =
                match cache with
                | Some c -> c.Layers.[0].SelfKey
                | None -> torch.zeros([| b; 1L; 0L; 1L |], dtype = torch.float64)
            let history = torch.cat([| previous; tokens.to_type(torch.float64).reshape(b, 1L, t, 1L) |], 2L)
            let cross = match cache with Some c -> c.Layers.[0].CrossKey | None -> audio.Hidden.reshape(b, 1L, 1L, 1L)
            let total = int history.shape.[2]
            let flat = history.reshape(b, -1L).data<float>().ToArray()
            let audioValues = cross.reshape(b).data<float>().ToArray()
            let v = config.VocabSize
            let logits = Array.create (int b * int t * v) -100.0f
            for row in 0 .. int b - 1 do
                for step in 0 .. int t - 1 do
                    let seen = flat.[row * total .. row * total + total - int t + step] |> Array.map int |> List.ofArray
                    for token, logit in logitsOf seen audioValues.[row] do
                        logits.[(row * int t + step) * v + token] <- logit
            let layer = { SelfKey = history; SelfValue = history; CrossKey = cross; CrossValue = cross }
            { Logits = torch.tensor(logits, ReadOnlySpan<int64>([| b; t; int64 v |]))
              Cache = { Layers = [| layer |]; Length = int64 total; SelfMask = None; EncoderMask = None } }

/// Windows (B, 80, 3000) filled with one constant per row (the toy's audio value).
let private mels (values: float list) =
    torch.cat([| for v in values -> torch.full([| 1L; 80L; 3000L |], v.ToScalar(), dtype = torch.float32) |], 0L)

let private greedy (model: ISpeechModel) (values: float list) (maxNewTokens: int) =
    use _ = torch.NewDisposeScope()
    Search.greedyTokens model (mels values) None [| config.DecoderStartTokenId |] maxNewTokens

[<Tests>]
let tests =
    testSequenced <| testList "decoding.greedy-tokens" [
        test "the checkpoint's begin-suppress, suppress and end-of-text ids drive greedy decoding, row by row" {
            // Row 0 (audio 0): after [8] the best ids are 3 (begin-suppressed) then 5 (suppressed), so 1 is taken;
            // after [8; 1] 5 is suppressed again and 3 (allowed after the first step) wins; then end-of-text 9.
            // Row 1 (audio 1): 2, 2, 2, then 9 — it ends two steps after row 0, which is fed 9 meanwhile.
            let table (history: int list) (audio: float) =
                match int audio, history with
                | 0, [ 8 ] -> [ 3, 5.0f; 5, 4.0f; 1, 3.0f; 9, 1.0f ]
                | 0, [ 8; 1 ] -> [ 5, 6.0f; 3, 5.0f; 2, 1.0f ]
                | 0, [ 8; 1; 3 ] -> [ 9, 2.0f; 4, 1.0f ]
                | 1, h when h.Length < 4 -> [ 2, 3.0f; 9, 1.0f ]
                | _, _ when List.last history = 9 -> [ 9, 1.0f ]
                | _ -> [ 9, 2.0f; 6, 1.0f ]
            let result = greedy (MiniToy(None, table)) [ 0.0; 1.0 ] 20
            Expect.sequenceEqual result.[0] [| 1; 3 |] "row 0"
            Expect.sequenceEqual result.[1] [| 2; 2; 2 |] "row 1"
        }

        test "the generation config's lists and end-of-text ids come before config.json's" {
            // Generation config: 6 begin-suppressed, 4 suppressed, ends 7 or 9. Without it 6 would be taken first
            // (config.json suppresses only 3 at the start) and 4 next; with it 1, then 2, then the end 7.
            let generation = { GenerationConfig.empty with BeginSuppressTokens = [| 6 |]; SuppressTokens = [| 4 |]; EosTokenIds = [| 9; 7 |] }
            let table (history: int list) (_: float) =
                match history with
                | [ 8 ] -> [ 6, 4.0f; 1, 3.0f ]
                | [ 8; _ ] -> [ 4, 5.0f; 2, 3.0f ]
                | h when List.contains 7 h -> [ 9, 3.0f ]
                | _ -> [ 7, 3.0f; 2, 1.0f ]
            Expect.sequenceEqual (greedy (MiniToy(Some generation, table)) [ 0.0 ] 20).[0] [| 1; 2 |] "with the generation config"
            Expect.sequenceEqual (greedy (MiniToy(None, table)) [ 0.0 ] 20).[0] [| 6; 4; 7 |] "config.json only: 7 is no end"
        }

        test "at most maxNewTokens tokens, and never beyond max_target_positions" {
            let endless (_: int list) (_: float) = [ 1, 1.0f ]
            Expect.equal (greedy (MiniToy(None, endless)) [ 0.0 ] 5).[0].Length 5 "maxNewTokens"
            // 448 positions: after a 1-token prompt at most 447 new tokens.
            Expect.equal (greedy (MiniToy(None, endless)) [ 0.0 ] 1000).[0].Length (config.MaxTargetPositions - 1) "context"
            Expect.throwsT<ArgumentException> (fun () -> greedy (MiniToy(None, endless)) [ 0.0 ] 0 |> ignore) "zero tokens"
        }
    ]
