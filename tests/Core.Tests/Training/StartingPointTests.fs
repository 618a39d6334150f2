/// Where a run starts (issue 9 §1): a Hugging Face folder with `predictors`/`conv_strides` gives the tensors of the
/// conversion `magnet convert --whisper` does (slots built here by hand, not parsed); a fresh model has the asked
/// shapes, the vocabulary's special tokens and Hugging Face's initialisation (normal(0, 0.02) weights, zero biases,
/// unit LayerNorms, a zero pad row, sinusoidal encoder positions written out here in float64); an original project's
/// checkpoint (written here with torch.save's format) starts with the weights it was written from; errors name the key.
/// And the non-finite stop: a run whose updates keep being skipped stops past `max_nonfinite_steps` without a
/// checkpoint of that state.
module MagnetWhisper.Tests.Training.StartingPointTests

open System
open System.IO
open System.Threading
open Expecto
open TorchSharp
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Training
open MagnetWhisper.Tests.Magnet
open MagnetWhisper.Tests.Magnet.MagnetFixtures
open MagnetWhisper.Tests.Data

let private small = TrainingFixtures.runWhisper (WhisperConfig.preset "tiny").Dropout

/// Saves a random Whisper of the small shape.
let private saveWhisper (dir: string) =
    use w = new WhisperModel(small)
    w.Save dir

/// Converts a Whisper folder without predictors into a MagnetWhisper folder.
let private saveMagnet (whisperDir: string) (dir: string) =
    use w = WhisperModel.fromPretrained whisperDir torch.CPU torch.float32
    use m = MagnetWhisperModel.FromWhisper(w, MagnetOptions.Default)
    MagnetFormat.save dir m

let private stateOf (m: MagnetWhisperModel) = [ for n, t in m.State -> n, t.detach().clone() ]

let private invalid (f: unit -> unit) : string = (TrainingFixtures.raises<InvalidDataException> f).Message

/// The size keys of a fresh model of width 64, 2 + 1 layers, 4 heads.
let private fresh =
    { TrainConfig.Default with
        FromScratch = Some "tiny"; Data = "unused"; DModel = Some 64; EncoderLayers = Some 2; DecoderLayers = Some 1; AttentionHeads = Some 4 }

/// HF's sinusoids(length, channels), in float64.
let private sinusoids (length: int) (channels: int) : float[,] =
    let half = channels / 2
    let increment = Math.Log 10000.0 / float (half - 1)
    Array2D.init length channels (fun t c ->
        let scaled = float t * Math.Exp(-increment * float (c % half))
        if c < half then Math.Sin scaled else Math.Cos scaled)

/// A corpus folder of 4 tones with transcripts.
let private corpus (temp: MagnetFixtures.Temp) =
    let dir = temp.Sub "corpus"
    TrainingFixtures.toneCorpus dir
    dir

[<Tests>]
let tests =
    testSequenced <| testList "training.startingpoint" [
        test "a Hugging Face folder with predictors and conv strides loads as convert makes it" {
            use temp = new MagnetFixtures.Temp()
            let dir = temp.Sub "whisper"
            torch.manual_seed 5L |> ignore
            saveWhisper dir
            let config = { TrainConfig.Default with Model = dir; Data = "unused"; Predictors = [ "1:bp1:0.3:mean" ]; ConvStrides = [ 2 ] }
            let start = StartingPoint.ofConfig config
            torch.manual_seed 11L |> ignore
            use loaded = StartingPoint.load start torch.CPU torch.float32
            // convert's conversion, with the slot written out rather than parsed.
            let slot = { PredictorSlot.Create(1, Bp1, 0.3) with Predictor = { PredictorConfig.Default(Bp1, 0.3) with Pooling = MeanPooling } }
            let options = { MagnetOptions.Default with Predictors = [ slot ]; Convs = ConvConfig.FromStrides([ 2 ], small.DModel) }
            torch.manual_seed 11L |> ignore
            use whisper = WhisperModel.fromPretrained dir torch.CPU torch.float32
            use expected = MagnetWhisperModel.FromWhisper(whisper, options)
            Expect.equal loaded.Options expected.Options "the same slots and convolutions"
            let a, b = stateOf loaded, stateOf expected
            Expect.equal (a |> List.map fst) (b |> List.map fst) "the same tensors"
            Expect.isEmpty (TrainingFixtures.changed a b) "bit-identical tensors"
            Expect.isTrue (a |> List.exists (fun (n, _) -> n.Contains ".boundary_predictors.1.")) "the predictor is there"
            Expect.isTrue (a |> List.exists (fun (n, _) -> n.Contains ".additional_convs.0.")) "the convolution is there"
            // Whisper's tensors are the folder's.
            let theirs = [ for n, t in whisper.State -> n, t ]
            Expect.isEmpty (TrainingFixtures.changed theirs (a |> List.filter (fun (n, _) -> theirs |> List.exists (fun (m, _) -> m = n)))) "Whisper's weights kept"
            // The new weights come from the global generator: another seed, other predictor weights.
            torch.manual_seed 12L |> ignore
            use other = StartingPoint.load start torch.CPU torch.float32
            let predictor (s: (string * torch.Tensor) list) = s |> List.filter (fun (n, _) -> n.Contains "boundary_predictors")
            Expect.isNonEmpty (TrainingFixtures.changed (predictor a) (predictor (stateOf other))) "the seed draws the new weights"
        }

        test "a MagnetWhisper folder with predictors in its Identity slots keeps its tensors and gets the new predictor" {
            use temp = new MagnetFixtures.Temp()
            let whisperDir = temp.Sub "whisper"
            torch.manual_seed 6L |> ignore
            saveWhisper whisperDir
            let magnetDir = temp.Sub "magnet"
            saveMagnet whisperDir magnetDir
            let config = { TrainConfig.Default with Model = magnetDir; Data = "unused"; Predictors = [ "1:bp1:0.25:mean" ] }
            let start = StartingPoint.ofConfig config
            torch.manual_seed 21L |> ignore
            use loaded = StartingPoint.load start torch.CPU torch.float32
            let slot = { PredictorSlot.Create(1, Bp1, 0.25) with Predictor = { PredictorConfig.Default(Bp1, 0.25) with Pooling = MeanPooling } }
            Expect.equal loaded.Options.Predictors [ slot ] "the new slot, written out here"
            use saved = MagnetFormat.load magnetDir torch.CPU torch.float32
            let theirs = stateOf saved
            let mine = stateOf loaded
            let mineByName = dict mine
            Expect.isEmpty (TrainingFixtures.changed theirs [ for n, _ in theirs -> n, mineByName.[n] ]) "every tensor of the folder kept bit for bit"
            let added = mine |> List.filter (fun (n, _) -> not (theirs |> List.exists (fun (m, _) -> m = n)))
            Expect.isNonEmpty added "new tensors"
            Expect.isTrue (added |> List.forall (fun (n, _) -> n.StartsWith "model.encoder.boundary_predictors.1.")) $"only the predictor's tensors are new: {added |> List.map fst}"
            // The predictor is a fresh BP1 of that slot: its tensors are those of a model built with the same draws
            // (after loading the folder, whose module construction draws too).
            torch.manual_seed 21L |> ignore
            (MagnetFormat.load magnetDir torch.CPU torch.float32).Dispose()
            use expected = new MagnetWhisperModel(saved.Config, saved.GenerationConfig, loaded.Options, false)
            let expectedByName = dict (stateOf expected)
            Expect.isEmpty (TrainingFixtures.changed added [ for n, _ in added -> n, expectedByName.[n] ]) "the predictor as the slot initialises it"
            // A slot that already holds a predictor is refused, naming the key and the layer.
            let withPredictor = temp.Sub "with-predictor"
            MagnetFormat.save withPredictor loaded
            let e = invalid (fun () -> StartingPoint.ofConfig { config with Model = withPredictor; Predictors = [ "1:bp2" ] } |> ignore)
            Expect.stringContains e "key 'predictors'" "names the key"
            Expect.stringContains e "1:bp2" "names the entry"
            Expect.stringContains e "before layer 1" "names the layer"
            // Another layer of that folder is free.
            match StartingPoint.ofConfig { config with Model = withPredictor; Predictors = [ "0:bp1" ] } with
            | MagnetFolderWithPredictors(_, o) -> Expect.equal (o.Predictors |> List.map _.Layer) [ 0; 1 ] "both slots"
            | other -> failtest $"started from {other}"
        }

        test "an original checkpoint folder starts with the weights it was written from" {
            use temp = new MagnetFixtures.Temp()
            use w = MagnetFixtures.whisper 47L small
            use reference = MagnetWhisperModel.FromWhisper(w, withPredictor 1 Bp1 0.25)
            let dir = temp.Sub "original"
            w.Save dir
            let prefix = "model.encoder.boundary_predictors.1."
            TorchWriter.save (Path.Combine(dir, "boundary_predictors.bin"))
                (Dict' [ Str' "1", TorchWriter.stateDict [ for n, t in reference.State do if n.StartsWith prefix then n.Substring prefix.Length, t ] ])
            let pairs (xs: (int * Py) list) = List' [ for l, v in xs -> Tuple' [ Int'(int64 l); v ] ]
            TorchWriter.save (Path.Combine(dir, "boundary_params.pt"))
                (Dict'
                    [ Str' "layer_priors", pairs [ 1, Float' 0.25 ]
                      Str' "layer_temps", pairs [ 1, Float' 1.0 ]
                      Str' "layer_thresholds", pairs [ 1, Float' 0.5 ]
                      Str' "layer_types", pairs [ 0, Str' "Identity"; 1, Str' "BoundaryPredictor1" ] ])
            let config = { TrainConfig.Default with Model = dir; Data = "unused" }
            let start = StartingPoint.ofConfig config
            match start with
            | OriginalFolder d -> Expect.equal d dir "recognised as an original checkpoint"
            | other -> failtest $"started from {other}"
            use loaded = StartingPoint.load start torch.CPU torch.float32
            Expect.equal (loaded.Options.Predictors |> List.map (fun s -> s.Layer, s.Predictor.Kind, s.Predictor.Prior)) [ 1, Bp1, 0.25 ] "the slot of boundary_params.pt"
            let mine = dict (stateOf loaded)
            let written = stateOf reference
            Expect.isNonEmpty (written |> List.filter (fun (n, _) -> n.StartsWith prefix)) "predictor weights written"
            Expect.isEmpty (TrainingFixtures.changed written [ for n, _ in written -> n, mine.[n] ]) "every written weight loaded"
            let e = invalid (fun () -> StartingPoint.ofConfig { config with Predictors = [ "1:bp2" ] } |> ignore)
            Expect.stringContains e "an original checkpoint" "predictors are refused for it"
        }

        test "from scratch: the asked shapes, the vocabulary's special tokens and Hugging Face's initialisation" {
            let start = StartingPoint.ofConfig fresh
            torch.manual_seed 3L |> ignore
            use m = StartingPoint.load start torch.CPU torch.float32
            let c = m.Config
            Expect.equal (c.DModel, c.EncoderLayers, c.DecoderLayers, c.EncoderAttentionHeads, c.DecoderAttentionHeads) (64, 2, 1, 4, 4) "the size keys"
            Expect.equal (c.EncoderFfnDim, c.DecoderFfnDim) (256, 256) "ffn_dim defaults to 4 · d_model"
            let state = stateOf m
            let shape name = (state |> List.find (fun (n, _) -> n = name) |> snd).shape
            Expect.equal (shape "model.decoder.embed_tokens.weight") [| 51865L; 64L |] "multilingual vocabulary × width"
            Expect.equal (shape "model.encoder.layers.1.fc1.weight") [| 256L; 64L |] "fc1"
            let layersOf (prefix: string) =
                state |> List.choose (fun (n, _) -> if n.StartsWith prefix then Some(n.Substring(prefix.Length).Split('.').[0]) else None) |> List.distinct
            Expect.equal (layersOf "model.encoder.layers.") [ "0"; "1" ] "2 encoder layers"
            Expect.equal (layersOf "model.decoder.layers.") [ "0" ] "1 decoder layer"
            Expect.equal (c.EosTokenId, c.DecoderStartTokenId, c.PadTokenId) (50257, 50258, 50257) "multilingual <|endoftext|> and <|startoftranscript|>"
            let values (t: torch.Tensor) = t.to_type(torch.float64).data<float>().ToArray()
            // Hugging Face's _init_weights: Linear, Conv1d and Embedding weights normal(0, init_std).
            let drawn =
                [| for n, t in state do
                       if not (n.Contains "layer_norm" || n.EndsWith ".bias" || n = "model.encoder.embed_positions.weight") then
                           let v = values t
                           if n = "model.decoder.embed_tokens.weight" then
                               // Without the pad row, which is zero.
                               yield! v |> Array.indexed |> Array.filter (fun (i, _) -> i / 64 <> 50257) |> Array.map snd
                           else yield! v |]
            let mean = Array.average drawn
            let std = sqrt (drawn |> Array.averageBy (fun x -> (x - mean) ** 2.0))
            let n = float drawn.Length
            Expect.isLessThan (abs mean) (4.0 * 0.02 / sqrt n) "mean 0 within 4 standard errors"
            Expect.isLessThan (abs (std - 0.02)) (4.0 * 0.02 / sqrt (2.0 * n)) "standard deviation init_std = 0.02 within 4 standard errors"
            let all (pred: string -> bool) = [| for nm, t in state do if pred nm then yield! values t |]
            Expect.allEqual (all (fun nm -> nm.EndsWith ".bias")) 0.0 "biases 0"
            Expect.allEqual (all (fun nm -> nm.Contains "layer_norm" && nm.EndsWith ".weight")) 1.0 "LayerNorm weights 1"
            let embeddings = values (state |> List.find (fun (nm, _) -> nm = "model.decoder.embed_tokens.weight") |> snd)
            Expect.allEqual embeddings.[50257 * 64 .. 50258 * 64 - 1] 0.0 "the pad token's row is 0"
            match state |> List.tryFind (fun (nm, _) -> nm = "model.encoder.embed_positions.weight") with
            | Some(_, t) ->
                let expected = sinusoids (int t.shape.[0]) (int t.shape.[1])
                let got = values t
                let worst = got |> Array.mapi (fun i g -> abs (g - expected.[i / 64, i % 64])) |> Array.max
                Expect.isLessThan worst 2e-4 "sinusoidal encoder positions"
            | None -> ()
            // The English vocabulary brings its own special tokens.
            let english = StartingPoint.freshConfig { fresh with VocabSize = Some 51864 }
            Expect.equal (english.VocabSize, english.EosTokenId, english.DecoderStartTokenId) (51864, 50256, 50257) "English <|endoftext|> and <|startoftranscript|>"
        }

        test "starting-point errors name the key" {
            use temp = new MagnetFixtures.Temp()
            let whisperDir = temp.Sub "whisper"
            saveWhisper whisperDir
            let magnetDir = temp.Sub "magnet"
            saveMagnet whisperDir magnetDir
            let check (c: TrainConfig) (parts: string list) =
                let message = invalid (fun () -> StartingPoint.ofConfig c |> ignore)
                for p in parts do Expect.stringContains message p $"'{message}' names {p}"
            let base' = { TrainConfig.Default with Data = "unused" }
            check { base' with Model = magnetDir; ConvStrides = [ 2 ] } [ "'conv_strides'"; "MagnetWhisper folder" ]
            check { base' with Model = magnetDir; Predictors = [ "7:bp1" ] } [ "key 'predictors'"; "layer 7" ]
            check { base' with Model = whisperDir; Predictors = [ "9:bp1" ] } [ "key 'predictors'"; "layer 9" ]
            check { base' with Model = whisperDir; Predictors = [ "1:bp7" ] } [ "key 'predictors'"; "bp7" ]
            check { base' with Model = whisperDir; DModel = Some 64 } [ "key 'd_model'"; "from_scratch" ]
            check { base' with Model = whisperDir; FromScratch = Some "tiny" } [ "'model'"; "'from_scratch'" ]
            check { base' with FromScratch = Some "huge" } [ "key 'from_scratch'"; "huge" ]
            check { fresh with DModel = Some 30 } [ "key 'from_scratch'"; "divisible" ]
            check { fresh with VocabSize = Some 1000 } [ "key 'vocab_size'"; "1000" ]
            let empty = temp.Sub "empty"
            Directory.CreateDirectory empty |> ignore
            check { base' with Model = empty } [ "key 'model'"; "neither" ]
            let missing = TrainingFixtures.raises<DirectoryNotFoundException> (fun () -> StartingPoint.ofConfig { base' with Model = temp.Sub "nowhere" } |> ignore)
            Expect.stringContains missing.Message "key 'model'" "a missing folder names the key"
        }

        test "a run whose updates keep being skipped stops past max_nonfinite_steps, the newest checkpoint the last good state" {
            use temp = new MagnetFixtures.Temp()
            // An absurd learning rate: the first update throws the weights to ~1e30, every later loss is non-finite.
            let c =
                { fresh with
                    Data = corpus temp; DModel = Some 32; EncoderLayers = Some 1; DecoderLayers = Some 1; AttentionHeads = Some 2
                    MaxSteps = 8; BatchSize = 2; LearningRate = 1e30; PredictorLearningRate = None; WarmupRatio = 0.0
                    Decay = ConstantAfterWarmup; WeightDecay = 0.0; LogEvery = 1; EvalEvery = 0; CheckpointEvery = 1
                    KeepCheckpoints = 10; MaxNonFiniteSteps = 2; Workers = 1; Seed = 1L }
            let dir = temp.Sub "run"
            let options = TrainingFixtures.cpuRun
            let e = TrainingFixtures.raises<NonFiniteTrainingException> (fun () -> Supervised.run c dir false options SupervisedEvents.None CancellationToken.None |> ignore)
            let skipped =
                [ for line in MetricsJsonl.read (Path.Combine(dir, "metrics.jsonl")) do
                      for k, v in line.Values do
                          if k = "train/skipped_update" then line.Step, v ]
            Expect.equal skipped [ 1L, 0.0; 2L, 1.0; 3L, 1.0; 4L, 1.0 ] "step 1 applied, 2 to 4 skipped; the run ends at the third in a row"
            Expect.equal e.Step 4 "stopped at step 4"
            Expect.stringContains e.Message "max_nonfinite_steps" "the message names the key"
            let names = TrainingRun.checkpoints dir |> List.map Path.GetFileName
            Expect.equal names [ "step-00000001"; "step-00000002"; "step-00000003" ] "no checkpoint of step 4"
            Expect.equal e.LastCheckpoint (Some(Path.Combine(dir, "checkpoints", "step-00000003"))) "the last good checkpoint is reported"
            Expect.isFalse (Directory.Exists(Path.Combine(dir, "final"))) "no final/"
            // Skipped updates leave the weights alone: the checkpoints of steps 1 and 3 hold the same finite model.
            let weights (step: string) =
                use m = TrainingCheckpoint.loadModel (Path.Combine(dir, "checkpoints", step)) torch.CPU torch.float32
                stateOf m
            let first, last = weights "step-00000001", weights "step-00000003"
            Expect.isEmpty (TrainingFixtures.changed first last) "the same weights"
            Expect.isTrue (last |> List.forall (fun (_, t) -> (use f = t.isfinite().all() in f.item<bool>()))) "finite weights"
            // A tolerance above the streak lets the run finish.
            let tolerant = Supervised.run { c with MaxSteps = 4; MaxNonFiniteSteps = 3 } (temp.Sub "tolerant") false options SupervisedEvents.None CancellationToken.None
            Expect.equal (tolerant.Outcome, tolerant.Step) (Completed, 4) "completed with 3 skipped updates"
        }
    ]
