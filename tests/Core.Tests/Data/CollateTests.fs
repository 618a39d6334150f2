module MagnetWhisper.Tests.Data.CollateTests

// Collation against values worked out by hand: labels of a two-utterance batch for the multilingual and the
// English-only tokenizer (special ids from the tokenizer's table, text ids from the rank files), −100 on every padded
// label, decoder inputs shifted right, frames cut to the longest utterance for MagnetWhisper, and the target matrix.

open Expecto
open TorchSharp
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Text
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Data

let private multilingual = WhisperConfig.preset "tiny"

/// whisper-tiny.en's ids: English-only vocabulary, `<|endoftext|>` 50256 pads, `<|startoftranscript|>` 50257 starts.
let private english =
    { multilingual with VocabSize = 51864; PadTokenId = 50256; BosTokenId = 50256; EosTokenId = 50256; DecoderStartTokenId = 50257 }

let private utterance id text =
    { Id = id; Audio = AudioFile $"{id}.wav"; Transcript = text; Duration = None; Speaker = None; Split = None; Phones = None }

/// A 16 kHz tone of n samples.
let private tone (n: int) = Array.init n (fun i -> float32 (0.1 * sin (2.0 * System.Math.PI * 440.0 * float i / 16000.0)))

let private prepared (options: CollateOptions) (u: Utterance) (samples: float32[]) =
    match Collate.tokens options u.Transcript with
    | Ok tokens -> Collate.prepare options u tokens samples
    | Error e -> failtest e

let private rows (t: torch.Tensor) : int64[][] =
    let b, n = int t.shape.[0], int t.shape.[1]
    let flat = t.to_type(torch.int64).data<int64>().ToArray()
    Array.init b (fun i -> flat.[i * n .. i * n + n - 1])

let private boolRows (t: torch.Tensor) : bool[][] =
    let b, n = int t.shape.[0], int t.shape.[1]
    let flat = t.data<bool>().ToArray()
    Array.init b (fun i -> flat.[i * n .. i * n + n - 1])

// Text ids from the rank files (gpt2.tiktoken and multilingual.tiktoken agree on single bytes): "!" = 0, "a" = 64,
// "b" = 65. "A" → "a" → [64]; "B!" → "b!" → pieces "b", "!" → [65; 0]. Transcripts are lower-cased (SPEC §7.1).
let private batchOf (config: WhisperConfig) =
    let options = CollateOptions.Of(config, "en", Transcribe)
    let items = [| prepared options (utterance "one" "A") (tone 1600); prepared options (utterance "two" " B! ") (tone 3200) |]
    Collate.stack options torch.CPU items

[<Tests>]
let tests =
    testSequenced <| testList "data.collate" [
        test "multilingual labels: the prompt after <|startoftranscript|>, text, <|endoftext|>, −100 padding" {
            // Multilingual table: <|endoftext|> 50257, <|startoftranscript|> 50258, <|en|> 50259 (first language),
            // 99 languages → <|translate|> 50358, <|transcribe|> 50359, <|startoflm|> 50360, <|startofprev|> 50361,
            // <|nospeech|> 50362, <|notimestamps|> 50363.
            use batch = batchOf multilingual
            Expect.equal (rows batch.Labels)
                [| [| 50259L; 50359L; 50363L; 64L; 50257L; -100L |]
                   [| 50259L; 50359L; 50363L; 65L; 0L; 50257L |] |] "labels"
            Expect.equal (rows batch.DecoderInputs)
                [| [| 50258L; 50259L; 50359L; 50363L; 64L; 50257L |]
                   [| 50258L; 50259L; 50359L; 50363L; 65L; 0L |] |] "decoder inputs: shifted right, <|endoftext|> on padding"
            Expect.equal (boolRows batch.TokenMask)
                [| [| true; true; true; true; true; false |]; Array.create 6 true |] "real decoder inputs"
            Expect.equal batch.Ids [| "one"; "two" |] "ids in order"
        }

        test "English-only labels: no language or task tokens" {
            // English-only table: <|endoftext|> 50256, <|startoftranscript|> 50257, <|en|> 50258 … 99 languages,
            // <|translate|> 50357, <|transcribe|> 50358, <|startoflm|> 50359, <|startofprev|> 50360,
            // <|nospeech|> 50361, <|notimestamps|> 50362.
            use batch = batchOf english
            Expect.equal (rows batch.Labels) [| [| 50362L; 64L; 50256L; -100L |]; [| 50362L; 65L; 0L; 50256L |] |] "labels"
            Expect.equal (rows batch.DecoderInputs) [| [| 50257L; 50362L; 64L; 50256L |]; [| 50257L; 50362L; 65L; 0L |] |] "decoder inputs"
        }

        test "the decoder inputs equal the model's own shift of the labels" {
            use batch = batchOf multilingual
            use shifted = MagnetWhisper.Core.Transformer.SpeechTransformer.decoderInputs multilingual batch.Labels
            Expect.equal (rows batch.DecoderInputs) (rows shifted) "HF shift_tokens_right"
        }

        test "padding in the token helper: every position after a row's end is −100 / pad / false" {
            let labels, inputs, real = Collate.padTokens 7 [| [| 1; 2 |]; [| 1; 3; 4; 5 |] |]
            Expect.equal labels (array2D [ [ 2L; -100L; -100L ]; [ 3L; 4L; 5L ] ]) "labels"
            Expect.equal inputs (array2D [ [ 1L; 7L; 7L ]; [ 1L; 3L; 4L ] ]) "inputs"
            Expect.equal real (array2D [ [ true; false; false ]; [ true; true; true ] ]) "mask"
        }

        test "features of the full window for Whisper: (B, 80, 3000), masks of ⌈samples / 160⌉ frames" {
            use batch = batchOf multilingual
            Expect.equal batch.Mel.shape [| 2L; 80L; 3000L |] "full window"
            // 1600 samples → 10 frames, 3200 → 20.
            Expect.equal (batch.FrameMask.sum(1L).data<float32>().ToArray()) [| 10.0f; 20.0f |] "valid frames"
            use expected = LogMel.logMelSpectrogram 80 (torch.tensor(tone 3200))
            let diff = (batch.Mel.select(0L, 1L) - expected).abs().max().item<float32>()
            Expect.isLessThan diff 1e-6f "row 1 is the utterance's own 30 s features"
            Expect.equal batch.Durations [| 0.1; 0.2 |] "seconds"
        }

        test "an empty or too long transcript has no tokens, with the reason" {
            let options = CollateOptions.Of(multilingual, "en", Transcribe)
            Expect.equal (Collate.tokens options "  ") (Error "the transcript is empty") "empty"
            // Labels of "a b c": <|en|> <|transcribe|> <|notimestamps|>, "a", " b", " c", <|endoftext|> = 7.
            Expect.isOk (Collate.tokens { options with MaxTokens = 7 } "a b c") "7 labels fit in 7"
            match Collate.tokens { options with MaxTokens = 6 } "a b c" with
            | Error reason -> Expect.stringContains reason "7 label tokens, more than the 6" "too long"
            | Ok t -> failtest $"accepted {t}"
        }

        test "MagnetWhisper: frames cut to the longest utterance, and the target matrix (rows × B)" {
            torch.manual_seed 5L |> ignore
            let options = MagnetOptions.Default.WithPredictor(1, Bp1, 0.2).WithPredictor(3, Bp1, 0.2)
            use whisper = WhisperModel.create multilingual
            use model = MagnetWhisperModel.FromWhisper(whisper, options)
            let collate = CollateOptions.ForMagnet(model, "en", Transcribe, [ Phonemes; Words ])
            // "Ask not": AE1 S K + N AA1 T = 6 phonemes, 2 words; "What your country can do for you":
            // W AH1 T, Y AO1 R, K AH1 N T R IY0, K AE1 N, D UW1, F AO1 R, Y UW1 = 3+3+6+3+2+3+2 = 22 phonemes, 7 words.
            let items =
                [| prepared collate (utterance "a" "Ask not") (tone 16000)
                   prepared collate (utterance "b" "What your country can do for you") (tone 8000) |]
            use batch = Collate.stack collate torch.CPU items
            // 16000 samples → 100 frames; + the stem's lookahead of 2 frames (two kernel-3 convolutions) = 102, a
            // multiple of the stride 2.
            Expect.equal batch.Mel.shape [| 2L; 80L; 102L |] "cut to 102 frames"
            Expect.equal (batch.FrameMask.sum(1L).data<float32>().ToArray()) [| 100.0f; 50.0f |] "valid frames"
            // The model's own cut of the full-window batch agrees.
            use whole = Collate.stack { collate with Frames = FullWindow } torch.CPU items
            let cutMel, _ = model.CutToLongest(whole.Mel, Some whole.FrameMask)
            Expect.equal cutMel.shape [| 2L; 80L; 102L |] "MagnetWhisperModel.CutToLongest"
            Expect.equal ((cutMel - batch.Mel).abs().max().item<float32>()) 0.0f "same features"
            match batch.TargetMatrix with
            | Some m ->
                Expect.equal m.shape [| 2L; 2L |] "rows × B"
                Expect.equal (m.data<float32>().ToArray()) [| 6.0f; 22.0f; 2.0f; 7.0f |] "row 0 phonemes, row 1 words"
            | None -> failtest "no target matrix"
            // The original's options depend on padding: the full window.
            use original = MagnetWhisperModel.FromWhisper(whisper, options.WithOriginalCompatibility())
            let collateOriginal = CollateOptions.ForMagnet(original, "en", Transcribe, [ Phonemes; Words ])
            Expect.equal (Collate.frames collateOriginal 16000) 3000 "full window"
        }
    ]
