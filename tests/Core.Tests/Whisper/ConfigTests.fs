module MagnetWhisper.Tests.Whisper.ConfigTests

open System
open System.IO
open Expecto
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Tests.Whisper.WhisperReference

/// openai/whisper-tiny's config.json as published on the Hugging Face hub.
let whisperTinyJson =
    """{
  "_name_or_path": "openai/whisper-tiny",
  "activation_dropout": 0.0,
  "activation_function": "gelu",
  "architectures": [
    "WhisperForConditionalGeneration"
  ],
  "attention_dropout": 0.0,
  "begin_suppress_tokens": [
    220,
    50257
  ],
  "bos_token_id": 50257,
  "d_model": 384,
  "decoder_attention_heads": 6,
  "decoder_ffn_dim": 1536,
  "decoder_layerdrop": 0.0,
  "decoder_layers": 4,
  "decoder_start_token_id": 50258,
  "dropout": 0.0,
  "encoder_attention_heads": 6,
  "encoder_ffn_dim": 1536,
  "encoder_layerdrop": 0.0,
  "encoder_layers": 4,
  "eos_token_id": 50257,
  "forced_decoder_ids": [
    [1, 50259],
    [2, 50359],
    [3, 50363]
  ],
  "init_std": 0.02,
  "is_encoder_decoder": true,
  "max_length": 448,
  "max_source_positions": 1500,
  "max_target_positions": 448,
  "model_type": "whisper",
  "num_hidden_layers": 4,
  "num_mel_bins": 80,
  "pad_token_id": 50257,
  "scale_embedding": false,
  "suppress_tokens": [1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92, 93, 359, 503,
    522, 542, 873, 893, 902, 918, 922, 931, 1350, 1853, 1982, 2460, 2627, 3246, 3253, 3268, 3536, 3846, 3961, 4183,
    4667, 6585, 6647, 7273, 9061, 9383, 10428, 10929, 11938, 12033, 12331, 12562, 13793, 14157, 14635, 15265, 15618,
    16553, 16604, 18362, 18956, 20075, 21675, 22520, 26130, 26161, 26435, 28279, 29464, 31650, 32302, 32470, 36865,
    42863, 47425, 49870, 50254, 50258, 50360, 50361, 50362],
  "torch_dtype": "float32",
  "transformers_version": "4.27.0.dev0",
  "use_cache": true,
  "vocab_size": 51865
}"""

/// A generation_config.json in the hub's layout (shortened language table).
let generationJson =
    """{
  "alignment_heads": [[2, 2], [3, 0], [3, 2], [3, 3], [3, 4], [3, 5]],
  "begin_suppress_tokens": [220, 50257],
  "bos_token_id": 50257,
  "decoder_start_token_id": 50258,
  "eos_token_id": 50257,
  "forced_decoder_ids": [[1, null], [2, 50359]],
  "is_multilingual": true,
  "lang_to_id": { "<|de|>": 50261, "<|en|>": 50259, "<|zh|>": 50260 },
  "max_initial_timestamp_index": 50,
  "max_length": 448,
  "no_timestamps_token_id": 50363,
  "pad_token_id": 50257,
  "return_timestamps": false,
  "suppress_tokens": [1, 2, 7],
  "task_to_id": { "transcribe": 50359, "translate": 50358 },
  "transformers_version": "4.31.0.dev0"
}"""

let private parseError (json: string) =
    let e = Expect.throwsC (fun () -> WhisperConfig.parse "test.json" json |> ignore) id
    Expect.isTrue (e :? InvalidDataException) $"InvalidDataException, got {e.GetType().Name}: {e.Message}"
    Expect.stringContains e.Message "test.json" "names the source"
    e.Message

[<Tests>]
let tests =
    testList "whisper" [
        testList "config" [
            test "parses whisper-tiny's config.json" {
                let c = WhisperConfig.parse "whisper-tiny" whisperTinyJson
                Expect.equal (c.DModel, c.EncoderLayers, c.DecoderLayers) (384, 4, 4) "width and depth"
                Expect.equal (c.EncoderAttentionHeads, c.DecoderAttentionHeads, c.EncoderHeadDim) (6, 6, 64) "heads"
                Expect.equal (c.EncoderFfnDim, c.DecoderFfnDim) (1536, 1536) "ffn"
                Expect.equal (c.NumMelBins, c.VocabSize) (80, 51865) "mels and vocab"
                Expect.equal (c.MaxSourcePositions, c.MaxTargetPositions, c.InputFrames) (1500, 448, 3000) "positions"
                Expect.equal (c.PadTokenId, c.BosTokenId, c.EosTokenId, c.DecoderStartTokenId) (50257, 50257, 50257, 50258) "special ids"
                Expect.sequenceEqual c.BeginSuppressTokens [| 220; 50257 |] "begin suppress"
                Expect.equal c.SuppressTokens.Length 86 "suppress tokens"
                Expect.equal (c.SuppressTokens.[0], Array.last c.SuppressTokens) (1, 50362) "suppress ends"
                Expect.equal c.ActivationFunction "gelu" "activation"
                Expect.isFalse c.ScaleEmbedding "scale_embedding"
                Expect.isTrue c.TieWordEmbeddings "tied by default"
                Expect.isTrue (c.Extra.ContainsKey "forced_decoder_ids") "unknown keys kept"
                Expect.isFalse (c.Extra.ContainsKey "d_model") "known keys not duplicated"
                Expect.equal c (WhisperConfig.preset "tiny" |> fun p -> { p with SuppressTokens = c.SuppressTokens; Extra = c.Extra }) "the tiny preset has the same sizes"
            }

            test "serialises to config.json and back unchanged, with the Hugging Face markers" {
                let c = WhisperConfig.parse "whisper-tiny" whisperTinyJson
                let json = WhisperConfig.toJson "float16" c
                use doc = System.Text.Json.JsonDocument.Parse json
                let root = doc.RootElement
                Expect.equal (root.GetProperty("architectures").[0].GetString()) "WhisperForConditionalGeneration" "architectures"
                Expect.equal (root.GetProperty("model_type").GetString()) "whisper" "model_type"
                Expect.equal (root.GetProperty("torch_dtype").GetString()) "float16" "torch_dtype"
                Expect.equal (root.GetProperty("forced_decoder_ids").[2].[1].GetInt32()) 50363 "extra keys written back"
                Expect.equal (WhisperConfig.parse "again" json) c "round trip"
            }

            test "missing fields take Hugging Face's WhisperConfig defaults" {
                let c = WhisperConfig.parse "empty" "{}"
                Expect.equal (c.VocabSize, c.NumMelBins, c.DModel, c.EncoderLayers, c.EncoderAttentionHeads) (51865, 80, 256, 6, 4) "sizes"
                Expect.equal (c.MaxSourcePositions, c.MaxTargetPositions) (1500, 448) "positions"
                Expect.equal (c.ActivationFunction, c.TieWordEmbeddings) ("gelu", true) "activation and tying"
            }

            test "bad config.json gets errors naming the source and the field" {
                Expect.stringContains (parseError "{ \"d_model\": 384,") "invalid JSON" "syntax"
                Expect.stringContains (parseError "[1, 2]") "JSON object" "not an object"
                Expect.stringContains (parseError """{ "d_model": "384" }""") "'d_model' must be an integer" "wrong type"
                Expect.stringContains (parseError """{ "d_model": 384.5 }""") "'d_model' must be an integer" "fraction"
                Expect.stringContains (parseError """{ "model_type": "bert" }""") "expected 'whisper'" "model type"
                Expect.stringContains (parseError """{ "d_model": 100, "encoder_attention_heads": 6 }""") "not divisible" "heads"
                Expect.stringContains (parseError """{ "activation_function": "mish" }""") "mish" "activation"
                Expect.stringContains (parseError """{ "encoder_layers": 0 }""") "EncoderLayers" "non-positive"
                Expect.stringContains (parseError """{ "suppress_tokens": [1, "a"] }""") "suppress_tokens" "array element"
                let e = Expect.throwsC (fun () -> WhisperConfig.load "/nonexistent/config.json" |> ignore) id
                Expect.isTrue (e :? FileNotFoundException) "missing file"
                Expect.stringContains e.Message "/nonexistent/config.json" "names the path"
            }

            test "parses generation_config.json and round-trips it, keeping alignment heads opaque" {
                let g = GenerationConfig.parse "gen" generationJson
                Expect.equal g.LangToId.["<|en|>"] 50259 "lang_to_id"
                Expect.equal g.LangToId.Count 3 "languages"
                Expect.equal g.TaskToId.["translate"] 50358 "task_to_id"
                Expect.equal g.NoTimestampsTokenId (Some 50363) "no_timestamps_token_id"
                Expect.sequenceEqual g.SuppressTokens [| 1; 2; 7 |] "suppress"
                Expect.sequenceEqual g.BeginSuppressTokens [| 220; 50257 |] "begin suppress"
                Expect.sequenceEqual g.EosTokenIds [| 50257 |] "eos"
                Expect.equal (g.DecoderStartTokenId, g.MaxLength, g.IsMultilingual) (Some 50258, Some 448, Some true) "scalars"
                Expect.isTrue (g.Extra.ContainsKey "alignment_heads") "alignment heads kept, not interpreted"
                Expect.equal (GenerationConfig.parse "again" (GenerationConfig.toJson g)) g "round trip"
                let list = GenerationConfig.parse "list" """{ "eos_token_id": [50257, 50256] }"""
                Expect.sequenceEqual list.EosTokenIds [| 50257; 50256 |] "eos as a list"
                Expect.throwsT<InvalidDataException> (fun () -> GenerationConfig.parse "bad" """{ "lang_to_id": { "<|en|>": "x" } }""" |> ignore) "bad map value"
            }

            test "presets have the released sizes" {
                let dims name =
                    let c = WhisperConfig.preset name
                    c.DModel, c.EncoderLayers, c.EncoderAttentionHeads, c.EncoderFfnDim
                Expect.equal (dims "tiny") (384, 4, 6, 1536) "tiny"
                Expect.equal (dims "base") (512, 6, 8, 2048) "base"
                Expect.equal (dims "small") (768, 12, 12, 3072) "small"
                Expect.throwsT<ArgumentException> (fun () -> WhisperConfig.preset "huge" |> ignore) "unknown size"
                Expect.equal tinyConfig.InputFrames 24 "test config frames"
            }
        ]
    ]
