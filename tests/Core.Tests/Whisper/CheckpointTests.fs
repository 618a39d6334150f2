module MagnetWhisper.Tests.Whisper.CheckpointTests

open System
open System.IO
open System.Text.Json
open Expecto
open TorchSharp
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Tests.Reference
open MagnetWhisper.Tests.Whisper.WhisperReference

let private cpu = torch.CPU
let private f32 = torch.ScalarType.Float32

let private paramsOf (m: WhisperModel) = [ for struct (n, p) in m.named_parameters() -> n, (p :> Tensor) ] |> Map.ofList

/// Every parameter of b equals the parameter of a after rounding through dtype (exactly).
let private sameParameters (dtype: torch.ScalarType) (a: WhisperModel) (b: WhisperModel) =
    let pa, pb = paramsOf a, paramsOf b
    Expect.sequenceEqual (Map.keys pb) (Map.keys pa) "parameter names"
    for KeyValue(n, p) in pa do
        use rounded = p.detach().to_type(dtype).to_type(pb.[n].dtype)
        Expect.isTrue (identical rounded pb.[n]) $"{n} identical after {dtype} storage"

/// A second configuration of another shape: wider, unequal depths and heads, relu, untied output projection.
let private otherConfig =
    { tinyConfig with
        DModel = 48
        EncoderLayers = 1
        DecoderLayers = 3
        EncoderAttentionHeads = 6
        DecoderAttentionHeads = 3
        EncoderFfnDim = 40
        DecoderFfnDim = 96
        NumMelBins = 8
        MaxSourcePositions = 6
        MaxTargetPositions = 9
        VocabSize = 50
        PadTokenId = 49
        BosTokenId = 49
        EosTokenId = 49
        DecoderStartTokenId = 48
        ActivationFunction = "relu"
        TieWordEmbeddings = false }

/// Writes a checkpoint folder from raw named tensors and a config, without the model's Save.
let private writeFolder (dir: string) (config: WhisperConfig) (tensors: (string * Tensor) list) =
    Directory.CreateDirectory dir |> ignore
    File.WriteAllText(Path.Combine(dir, "config.json"), WhisperConfig.toJson "float32" config)
    SafeTensors.write (Path.Combine(dir, "model.safetensors")) (Map [ "format", "pt" ]) tensors

/// Random tensors for the independent key list of a configuration.
let private randomTensors (config: WhisperConfig) =
    torch.manual_seed 77L |> ignore
    [ for n, shape in hfKeys config -> n, torch.randn(shape) ]

/// Rounds every parameter through dtype, in place.
let private roundInPlace (dtype: torch.ScalarType) (m: WhisperModel) =
    use _ = torch.no_grad()
    for struct (_, p) in m.named_parameters() do
        use r = p.detach().to_type(dtype).to_type(p.dtype)
        p.copy_(r) |> ignore

let private loadError (dir: string) =
    let e = Expect.throwsC (fun () -> (WhisperModel.fromPretrained dir cpu f32).Dispose()) id
    e

[<Tests>]
let tests =
    testList "whisper" [
        testList "checkpoint" [
            test "save → load gives identical parameters and forward outputs (two shapes, F32, F16 and BF16 storage)" {
                for config, seed in [ tinyConfig, 40L; otherConfig, 41L ] do
                    use source = randomModel seed config
                    let mel = randomMel seed config 2L
                    let tokens = randomTokens seed config 2L 5L
                    for dtype in [ f32; torch.ScalarType.Float16; torch.ScalarType.BFloat16 ] do
                        use dir = new TempDir()
                        let folder = dir.Sub "ckpt"
                        source.Save(folder, { SaveOptions.Default with DType = Some dtype })
                        use weights = CheckpointWeights.Open folder
                        let stored = (weights.Info "model.decoder.embed_tokens.weight").DType
                        Expect.equal (SafeDType.toTorch stored) dtype "stored dtype"
                        use loaded = WhisperModel.fromPretrained folder cpu f32
                        Expect.equal loaded.Config config "config round trip"
                        sameParameters dtype source loaded
                        // The source with its parameters rounded the same way gives bit-identical outputs.
                        use rounded = randomModel seed config
                        roundInPlace dtype rounded
                        use expected = rounded.forward (mel, tokens)
                        use actual = loaded.forward (mel, tokens)
                        Expect.isTrue (identical actual expected) $"identical logits after {dtype} storage"
            }

            test "the saved folder is what Hugging Face reads: config markers, HF names, format metadata, no proj_out when tied" {
                use dir = new TempDir()
                let folder = dir.Sub "hf"
                use m = randomModel 42L tinyConfig
                m.Save folder
                Expect.sequenceEqual (Directory.GetFiles folder |> Array.map Path.GetFileName |> Array.sort) [| "config.json"; "model.safetensors" |] "files"
                use doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))
                Expect.equal (doc.RootElement.GetProperty("architectures").[0].GetString()) "WhisperForConditionalGeneration" "architectures"
                Expect.equal (doc.RootElement.GetProperty("model_type").GetString()) "whisper" "model_type"
                use f = SafeTensorsFile.Open(Path.Combine(folder, "model.safetensors"))
                Expect.equal f.Metadata.["format"] "pt" "metadata"
                let expected = hfKeys tinyConfig |> List.map fst |> List.sort
                Expect.sequenceEqual (f.Names |> Seq.sort) expected "exactly the HF keys"
                for n, shape in hfKeys tinyConfig do
                    Expect.sequenceEqual (f.Info n).Shape shape $"{n} shape"
                Expect.sequenceEqual (Directory.GetDirectories dir.Path |> Array.map Path.GetFileName) [| "hf" |] "no temporary folder left beside it"
            }

            test "a checkpoint written from the key list alone loads strictly, and a stray tied proj_out is ignored" {
                use dir = new TempDir()
                let folder = dir.Sub "raw"
                let tensors = randomTensors tinyConfig
                let embed = tensors |> List.find (fun (n, _) -> n = "model.decoder.embed_tokens.weight") |> snd
                writeFolder folder tinyConfig (tensors @ [ "proj_out.weight", embed ])
                use m = WhisperModel.fromPretrained folder cpu f32
                let p = paramsOf m
                for n, t in tensors do
                    Expect.isTrue (identical p.[n] t) $"{n} loaded"
                use weights = CheckpointWeights.Open folder
                use fresh = new WhisperModel(tinyConfig)
                let report = fresh.LoadWeights(weights, LoadOptions.Default)
                Expect.equal report.Ignored [ "proj_out.weight" ] "tied proj_out ignored"
                Expect.isEmpty report.Missing "nothing missing"
                Expect.isEmpty report.Unexpected "nothing unexpected"
            }

            test "bare WhisperModel keys (encoder.*, decoder.*) load too" {
                use dir = new TempDir()
                let folder = dir.Sub "bare"
                let tensors = randomTensors tinyConfig
                writeFolder folder tinyConfig [ for n, t in tensors -> n.Substring("model.".Length), t ]
                use m = WhisperModel.fromPretrained folder cpu f32
                let p = paramsOf m
                for n, t in tensors do
                    Expect.isTrue (identical p.[n] t) $"{n} loaded"
            }

            test "sharded checkpoints: saved with an index, hand-written, and re-saved over" {
                use dir = new TempDir()
                let folder = dir.Sub "sharded"
                use m = randomModel 43L tinyConfig
                m.Save(folder, { SaveOptions.Default with MaxShardBytes = Some 40000L })
                let shards = Directory.GetFiles(folder, "model-*-of-*.safetensors")
                Expect.isGreaterThan shards.Length 2 "several shards"
                Expect.isFalse (File.Exists(Path.Combine(folder, "model.safetensors"))) "no single file"
                use index = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "model.safetensors.index.json")))
                let total = index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64()
                Expect.equal total (shards |> Array.sumBy (fun s -> use f = SafeTensorsFile.Open s in f.Names |> Seq.sumBy (fun n -> let i = f.Info n in i.End - i.Begin))) "total_size"
                use loaded = WhisperModel.fromPretrained folder cpu f32
                sameParameters f32 m loaded
                // Hand-written: two shards split by encoder/decoder and an index written here.
                let hand = dir.Sub "hand"
                Directory.CreateDirectory hand |> ignore
                File.WriteAllText(Path.Combine(hand, "config.json"), WhisperConfig.toJson "float32" tinyConfig)
                let tensors = randomTensors tinyConfig
                let enc, dec = tensors |> List.partition (fun (n, _) -> n.StartsWith "model.encoder.")
                SafeTensors.write (Path.Combine(hand, "a.safetensors")) Map.empty enc
                SafeTensors.write (Path.Combine(hand, "b.safetensors")) Map.empty dec
                let entries = [ for n, _ in enc -> $"\"{n}\": \"a.safetensors\"" ] @ [ for n, _ in dec -> $"\"{n}\": \"b.safetensors\"" ]
                let weightMap = String.Join(",\n", entries)
                File.WriteAllText(Path.Combine(hand, "model.safetensors.index.json"), "{ \"metadata\": {}, \"weight_map\": {\n" + weightMap + "\n} }")
                use handLoaded = WhisperModel.fromPretrained hand cpu f32
                let p = paramsOf handLoaded
                for n, t in tensors do
                    Expect.isTrue (identical p.[n] t) $"{n} from its shard"
                // A shard named by the index but absent.
                File.Delete(Path.Combine(hand, "b.safetensors"))
                Expect.stringContains (loadError hand).Message "b.safetensors" "missing shard named"
                // Saving a single file over the sharded folder removes the shards and the index.
                m.Save folder
                Expect.isEmpty (Directory.GetFiles(folder, "model-*")) "old shards removed"
                Expect.isFalse (File.Exists(Path.Combine(folder, "model.safetensors.index.json"))) "old index removed"
                use again = WhisperModel.fromPretrained folder cpu f32
                sameParameters f32 m again
            }

            test "strict loading names missing and unexpected keys; non-strict reports them" {
                use dir = new TempDir()
                let folder = dir.Sub "mismatch"
                let tensors = randomTensors tinyConfig
                let dropped = "model.decoder.layers.1.encoder_attn.k_proj.weight"
                writeFolder folder tinyConfig ((tensors |> List.filter (fun (n, _) -> n <> dropped)) @ [ "model.encoder.extra.weight", torch.ones 3 ])
                let e = loadError folder
                Expect.isTrue (e :? InvalidDataException) "InvalidDataException"
                Expect.stringContains e.Message dropped "names the missing key"
                Expect.stringContains e.Message "model.encoder.extra.weight" "names the unexpected key"
                use weights = CheckpointWeights.Open folder
                use m = new WhisperModel(tinyConfig)
                let report = m.LoadWeights(weights, { Strict = false })
                Expect.equal report.Missing [ dropped ] "missing"
                Expect.equal report.Unexpected [ "model.encoder.extra.weight" ] "unexpected"
                // An untied config needs proj_out.weight.
                let untied = dir.Sub "untied"
                writeFolder untied { tinyConfig with TieWordEmbeddings = false } tensors
                Expect.stringContains (loadError untied).Message "proj_out.weight" "untied checkpoint without proj_out"
            }

            test "shape mismatches name the tensor and both shapes" {
                use dir = new TempDir()
                let folder = dir.Sub "shape"
                let tensors = randomTensors tinyConfig |> List.map (fun (n, t) -> if n = "model.encoder.conv1.weight" then n, torch.randn(32L, 80L, 3L) else n, t)
                writeFolder folder tinyConfig tensors
                let e = loadError folder
                Expect.stringContains e.Message "model.encoder.conv1.weight" "names the tensor"
                Expect.stringContains e.Message "(32, 80, 3)" "checkpoint shape"
                Expect.stringContains e.Message "(32, 16, 3)" "model shape"
            }

            test "missing files and bad JSON in a folder get clear errors" {
                use dir = new TempDir()
                let e1 = loadError (dir.Sub "absent")
                Expect.isTrue (e1 :? DirectoryNotFoundException) "missing folder"
                let noConfig = dir.Sub "noconfig"
                Directory.CreateDirectory noConfig |> ignore
                let e2 = loadError noConfig
                Expect.isTrue (e2 :? FileNotFoundException) "missing config"
                Expect.stringContains e2.Message "config.json" "names config.json"
                File.WriteAllText(Path.Combine(noConfig, "config.json"), WhisperConfig.toJson "float32" tinyConfig)
                let e3 = loadError noConfig
                Expect.isTrue (e3 :? FileNotFoundException) "missing weights"
                Expect.stringContains e3.Message "model.safetensors" "names the weights file"
                File.WriteAllText(Path.Combine(noConfig, "pytorch_model.bin"), "")
                Expect.stringContains (loadError noConfig).Message "pytorch_model.bin" "pickle hint"
                File.WriteAllText(Path.Combine(noConfig, "config.json"), "{ \"d_model\": ")
                let e4 = loadError noConfig
                Expect.isTrue (e4 :? InvalidDataException) "bad JSON"
                Expect.stringContains e4.Message "config.json" "names the file"
            }

            test "generation_config.json is read when present and saved back" {
                use dir = new TempDir()
                let folder = dir.Sub "gen"
                let generation = GenerationConfig.parse "gen" ConfigTests.generationJson
                torch.manual_seed 44L |> ignore
                use m = new WhisperModel(tinyConfig, generation)
                m.Save folder
                use loaded = WhisperModel.fromPretrained folder cpu f32
                Expect.equal loaded.GenerationConfig (Some generation) "generation config round trip"
                use plain = randomModel 45L tinyConfig
                plain.Save folder
                Expect.isFalse (File.Exists(Path.Combine(folder, "generation_config.json"))) "a stale generation config is removed"
            }

            test "loading into bfloat16 converts every parameter" {
                use dir = new TempDir()
                let folder = dir.Sub "bf16"
                use m = randomModel 46L tinyConfig
                m.Save folder
                use loaded = WhisperModel.fromPretrained folder cpu torch.ScalarType.BFloat16
                for KeyValue(n, p) in paramsOf loaded do
                    Expect.equal p.dtype torch.ScalarType.BFloat16 $"{n} dtype"
                sameParameters torch.ScalarType.BFloat16 m loaded
                let mel = randomMel 47L tinyConfig 1L
                let tokens = randomTokens 47L tinyConfig 1L 4L
                use low = loaded.forward (mel, tokens)
                use full = m.forward (mel, tokens)
                close 0.25 "bfloat16 forward close to float32" low full
            }
        ]
    ]
