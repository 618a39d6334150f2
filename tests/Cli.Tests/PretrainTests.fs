/// `magnet convert --model` (re-saving a MagnetWhisper folder in float16 and/or without its CTC head) and `magnet demo
/// pretrain` (corpus, training, export with PROVENANCE.md) run as processes; the written folders are read back with
/// the safetensors reader and the expected tensors computed here with torch's own dtype conversion.
module MagnetWhisper.Cli.Tests.PretrainTests

open System
open System.IO
open System.Text.Json
open Expecto
open TorchSharp
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Cli.Tests.Harness

/// A random tiny MagnetWhisper folder (a BP1 before layer 1) with a 39-class CTC head, stored in float32.
let private withCtcHead (dir: string) =
    MagnetWhisper.Core.NativeBackend.preload () |> ignore
    torch.manual_seed 77L |> ignore
    let options = { MagnetOptions.Default with Predictors = [ PredictorSlot.Create(1, Bp1, 0.3) ] }
    use m = new MagnetWhisperModel(tinyConfig, options)
    m.AttachCtcHead 39
    MagnetFormat.save dir m

/// Every stored tensor of a folder: name → (stored dtype, the tensor loaded as float32 for floating ones).
let private stored (dir: string) : Map<string, SafeDType * torch.Tensor> =
    use w = CheckpointWeights.Open dir
    Map [ for n in w.Names ->
              let info = w.Info n
              let asLoaded = match info.DType with F32 | F16 | BF16 | F64 -> torch.float32 | d -> SafeDType.toTorch d
              n, (info.DType, w.Load(n, asLoaded)) ]

let private same (a: torch.Tensor) (b: torch.Tensor) = a.shape = b.shape && (a.eq b).all().item<bool> ()

let private weightsBytes (dir: string) = FileInfo(Path.Combine(dir, "model.safetensors")).Length

let private jsonHas (path: string) (key: string) =
    use d = JsonDocument.Parse(File.ReadAllText path)
    fst (d.RootElement.TryGetProperty key)

/// Skips a test when no speech engine is installed (corpus synth needs one).
let private requireSpeechEngine () =
    let onPath (command: string) =
        (Environment.GetEnvironmentVariable "PATH").Split(':')
        |> Array.exists (fun d -> d <> "" && File.Exists(Path.Combine(d, command)))
    if not ([ "espeak-ng"; "festival"; "flite" ] |> List.exists onPath) then
        skiptest "no speech engine (espeak-ng, festival, flite) is installed"

/// A tiny model and a short run for `demo pretrain` (the recipe's other keys stay).
let private tinyRecipe =
    [ "--set"; "d_model=32"; "--set"; "encoder_layers=1"; "--set"; "decoder_layers=1"; "--set"; "attention_heads=2"
      "--set"; "batch_size=4"; "--set"; "eval_every=0"; "--set"; "checkpoint_every=0"; "--set"; "log_every=1"; "--set"; "eval_batch_size=8" ]

[<Tests>]
let tests =
    testList "cli pretrain" [
        test "convert --model --dtype float16 --drop-ctc-head: each tensor is the source's rounded through float16, half the size, no CTC head" {
            let dir = tempDir "resave"
            let source = Path.Combine(dir, "source")
            withCtcHead source
            let r = magnetIn dir [ "convert"; "--model"; "source"; "--dtype"; "float16"; "--drop-ctc-head"; "-o"; "half" ]
            Expect.equal r.Code 0 (string r)
            let half = Path.Combine(dir, "half")
            let before, after = stored source, stored half
            let heads = before |> Map.filter (fun n _ -> n.StartsWith "ctc_head.") |> Map.keys |> List.ofSeq
            Expect.equal heads [ "ctc_head.bias"; "ctc_head.weight" ] "the source has the head"
            Expect.isFalse (after |> Map.exists (fun n _ -> n.StartsWith "ctc_head.")) "no ctc_head tensor written"
            Expect.isFalse (jsonHas (Path.Combine(half, "magnet.json")) "ctc_head_classes") "magnet.json declares no head"
            Expect.isTrue (jsonHas (Path.Combine(source, "magnet.json")) "ctc_head_classes") "the source's declares one"
            Expect.equal (Set(Map.keys after)) (Set(Map.keys before) - Set heads) "every other tensor is there"
            for KeyValue(name, (dtype, tensor)) in after do
                let sourceDType, sourceTensor = before.[name]
                Expect.equal sourceDType F32 $"{name} was float32"
                Expect.equal dtype F16 $"{name} is stored as float16"
                // torch's own rounding to half, back to float32.
                use expected = sourceTensor.to_type(torch.float16).to_type(torch.float32)
                Expect.isTrue (same expected tensor) $"{name}: the source rounded through float16"
            let roundedSomething = after |> Map.exists (fun name (_, t) -> not (same (snd before.[name]) t))
            Expect.isTrue roundedSomething "some tensor changed in the rounding (else the comparison would prove little)"
            let ratio = float (weightsBytes half) / float (weightsBytes source - 39L * 65L * 4L)
            Expect.isTrue (ratio > 0.49 && ratio < 0.51) $"half the bytes of the source without its head ({ratio})"
            use d = JsonDocument.Parse(File.ReadAllText(Path.Combine(half, "config.json")))
            Expect.equal (d.RootElement.GetProperty("torch_dtype").GetString()) "float16" "config.json's torch_dtype"
            use loaded = MagnetFormat.load half torch.CPU torch.float32
            Expect.isNone loaded.CtcHeadClasses "loads without a head"
            Expect.equal (loaded.Options.Predictors |> List.map _.Layer) [ 1 ] "the predictor kept"
        }

        test "convert --model without --dtype keeps float32 and the tensors bit for bit; with the head unless dropped" {
            let dir = tempDir "resave"
            let source = Path.Combine(dir, "source")
            withCtcHead source
            let r = magnetIn dir [ "convert"; "--model"; "source"; "-o"; "copy" ]
            Expect.equal r.Code 0 (string r)
            let before, after = stored source, stored (Path.Combine(dir, "copy"))
            Expect.equal (Set(Map.keys after)) (Set(Map.keys before)) "the same tensors, the head included"
            for KeyValue(name, (dtype, tensor)) in after do
                Expect.equal dtype (fst before.[name]) $"{name}: same dtype"
                Expect.isTrue (same tensor (snd before.[name])) $"{name}: same values"
        }

        test "convert --model: bad flags and folders exit 2 naming the flag" {
            let dir = tempDir "resave"
            withCtcHead (Path.Combine(dir, "source"))
            let cases =
                [ [ "--model"; "source"; "--dtype"; "float64"; "-o"; "out" ], "--dtype: unknown dtype 'float64'"
                  [ "--model"; "source"; "--dtype"; "half-ish"; "-o"; "out" ], "--dtype: unknown dtype 'half-ish'"
                  [ "--model"; "source"; "-p"; "1:bp1"; "-o"; "out" ], "--predictor does not apply to --model"
                  [ "--model"; "source"; "--seed"; "3"; "-o"; "out" ], "--seed does not apply to --model"
                  [ "--whisper"; tinyWhisper.Value; "--drop-ctc-head"; "-o"; "out" ], "--drop-ctc-head applies to --model"
                  [ "--model"; "nowhere"; "-o"; "out" ], "--model nowhere: folder not found"
                  [ "--model"; tinyWhisper.Value; "-o"; "out" ], "not a MagnetWhisper folder (no magnet.json)"
                  [ "--model"; "source"; "-o"; "source" ], "-o source is the --model folder"
                  [ "--model"; "source"; "--drop-ctc-hed"; "-o"; "out" ], "--drop-ctc-hed" ]
            for args, expected in cases do
                let r = magnetIn dir ("convert" :: args)
                let shown = String.Join(" ", args)
                Expect.equal r.Code 2 $"magnet convert {shown}\n{r}"
                Expect.stringContains r.Err expected $"magnet convert {shown}\n{r}"
                Expect.isFalse (Directory.Exists(Path.Combine(dir, "out"))) $"nothing written by magnet convert {shown}"
        }

        test "demo pretrain: corpus, training stopped at step 2, --resume to step 4, a float16 base model without CTC head and its provenance" {
            requireSpeechEngine ()
            let dir = tempDir "pretrain"
            let first = magnetIn dir ([ "demo"; "pretrain"; "-o"; "run"; "--utterances"; "10"; "--steps"; "4"; "--seed"; "5"; "--stop-at-step"; "2" ] @ tinyRecipe)
            Expect.equal first.Code 0 (string first)
            Expect.stringContains first.Out "resume with: magnet demo pretrain -o run --resume" (string first)
            let run = Path.Combine(dir, "run")
            Expect.isTrue (File.Exists(Path.Combine(run, "corpus", "manifest.jsonl"))) "the corpus"
            Expect.isFalse (Directory.Exists(Path.Combine(run, "base-model"))) "no export of an unfinished training"
            let second = magnetIn dir [ "demo"; "pretrain"; "-o"; "run"; "--resume" ]
            Expect.equal second.Code 0 (string second)
            Expect.stringContains second.Err "is already synthesised" (string second)
            Expect.stringContains second.Err "resuming" (string second)
            let baseModel = Path.Combine(run, "base-model")
            let train = Path.Combine(run, "train")
            // The recipe: every key of data/demo/pretrain.json reached the run, but those the command line set.
            let overridden = set [ "d_model"; "encoder_layers"; "decoder_layers"; "attention_heads"; "batch_size"; "eval_every"; "checkpoint_every"; "log_every"; "eval_batch_size"; "max_steps"; "seed" ]
            use recipe = JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "data", "demo", "pretrain.json")))
            use config = JsonDocument.Parse(File.ReadAllText(Path.Combine(train, "config.json")))
            for p in recipe.RootElement.EnumerateObject() do
                if not (overridden.Contains p.Name) then
                    Expect.equal (config.RootElement.GetProperty(p.Name).GetRawText().Replace(" ", "").Replace("\n", ""))
                        (p.Value.GetRawText().Replace(" ", "").Replace("\n", "")) $"recipe key {p.Name}"
            Expect.equal (config.RootElement.GetProperty("max_steps").GetInt32(), config.RootElement.GetProperty("seed").GetInt64()) (4, 5L) "--steps and --seed"
            Expect.equal (config.RootElement.GetProperty("d_model").GetInt32()) 32 "--set"
            // The export: float16, no CTC head (training had one), each tensor best/'s rounded through float16.
            Expect.isTrue (jsonHas (Path.Combine(train, "final", "magnet.json")) "ctc_head_classes") "training used a CTC head"
            Expect.isFalse (jsonHas (Path.Combine(baseModel, "magnet.json")) "ctc_head_classes") "the base model has none"
            let trained, exported = stored (Path.Combine(train, "best")), stored baseModel
            Expect.isFalse (exported |> Map.exists (fun n _ -> n.StartsWith "ctc_head.")) "no ctc_head tensor"
            Expect.equal (Set(Map.keys exported)) (Set(Map.keys trained |> Seq.filter (fun n -> not (n.StartsWith "ctc_head.")))) "every other tensor"
            for KeyValue(name, (dtype, tensor)) in exported do
                Expect.equal dtype F16 $"{name} is float16"
                use expected = (snd trained.[name]).to_type(torch.float16).to_type(torch.float32)
                Expect.isTrue (same expected tensor) $"{name}: best/ rounded through float16"
            use loaded = MagnetFormat.load baseModel torch.CPU torch.float32
            Expect.isEmpty loaded.Options.Predictors "no predictors"
            Expect.equal loaded.Config.DModel 32 "the asked width"
            // The provenance.
            let provenance = File.ReadAllText(Path.Combine(baseModel, "PROVENANCE.md"))
            Expect.stringContains provenance "- seed: 5" "the seed"
            Expect.stringContains provenance "- steps: 4 of 4" "the steps"
            Expect.stringContains provenance "--stop-at-step 2" "the first command"
            Expect.stringContains provenance "magnet demo pretrain -o run --resume" "the resume"
            Expect.stringContains provenance $"On {Environment.ProcessorCount} cores" "the cores"
            for tool in [ "espeak-ng"; "festival"; "flite"; "ffmpeg"; "TorchSharp" ] do
                Expect.stringContains provenance $"- {tool}: " $"{tool}'s version line"
            for split in [ "dev"; "test"; "test-unseen-voice" ] do
                Expect.stringContains provenance $"| {split} | " $"the {split} row"
            let sha = Convert.ToHexString(Security.Cryptography.SHA256.HashData(File.ReadAllBytes(Path.Combine(baseModel, "model.safetensors")))).ToLowerInvariant()
            Expect.stringContains provenance sha "the weights' SHA-256"
            Expect.stringContains second.Out "base model" (string second)
            // The trained run exported on its own (as for a run `magnet train` made): the same tensors, the same
            // provenance but for the training's wall time, read from the run folder's file times.
            let again = magnetIn dir [ "demo"; "pretrain"; "-o"; "exported"; "--from-run"; Path.Combine("run", "train") ]
            Expect.equal again.Code 0 (string again)
            let reexported = stored (Path.Combine(dir, "exported", "base-model"))
            Expect.equal (Set(Map.keys reexported)) (Set(Map.keys exported)) "the same tensors"
            for KeyValue(name, (_, tensor)) in exported do
                Expect.isTrue (same tensor (snd reexported.[name])) $"{name}: the same values"
            let fromRun = File.ReadAllText(Path.Combine(dir, "exported", "base-model", "PROVENANCE.md"))
            Expect.stringContains fromRun "- steps: 4 of 4" "the steps, from the run's metrics"
            Expect.stringContains fromRun "- seed: 5" "the seed, from the run's configuration"
            Expect.stringContains fromRun "file times" "says how the training time was measured"
            Expect.isFalse (Directory.Exists(Path.Combine(dir, "exported", "train"))) "nothing trained"
        }

        test "demo pretrain: bad flags and folders exit 2 naming them, leaving nothing behind" {
            let dir = tempDir "pretrain"
            Directory.CreateDirectory(Path.Combine(dir, "used")) |> ignore
            File.WriteAllText(Path.Combine(dir, "used", "something"), "")
            Directory.CreateDirectory(Path.Combine(dir, "unfinished")) |> ignore
            File.WriteAllText(Path.Combine(dir, "unfinished", "config.json"), "{}")
            let cases =
                [ [ "--utterances"; "3"; "-o"; "r" ], "--utterances must be at least 10"
                  [ "--steps"; "0"; "-o"; "r" ], "--steps must be at least 1"
                  [ "--set"; "batch_sise=2"; "-o"; "r" ], "unknown key 'batch_sise'"
                  [ "--set"; "lr=-1"; "-o"; "r" ], "key 'lr' must be a positive number"
                  [ "--corpus"; "nowhere"; "-o"; "r" ], "--corpus nowhere: no such file or folder"
                  [ "--corpus"; "used"; "--utterances"; "30"; "-o"; "r" ], "--utterances sizes the corpus to synthesise; with --corpus none"
                  [ "--uterances"; "30"; "-o"; "r" ], "--uterances"
                  [ "-o"; "used" ], "-o used is not empty"
                  [ "-o"; "r"; "--resume" ], "--resume: r is not a pretraining run"
                  [ "-o"; "used"; "--resume"; "--steps"; "3" ], "--steps: a resumed run keeps its own recipe"
                  [ "-o"; "r"; "--from-run"; "nowhere" ], "--from-run nowhere: folder not found"
                  [ "-o"; "r"; "--from-run"; "unfinished" ], "--from-run unfinished: the run has not completed"
                  [ "-o"; "r"; "--from-run"; "unfinished"; "--seed"; "1" ], "--seed does not apply to --from-run"
                  [ "-o"; "r"; "--stop-at-step"; "0" ], "--stop-at-step must be at least 1" ]
            for args, expected in cases do
                let r = magnetIn dir ("demo" :: "pretrain" :: args)
                let shown = String.Join(" ", args)
                Expect.equal r.Code 2 $"magnet demo pretrain {shown}\n{r}"
                Expect.stringContains r.Err expected $"magnet demo pretrain {shown}\n{r}"
                Expect.isFalse (Directory.Exists(Path.Combine(dir, "r"))) $"no run folder left by magnet demo pretrain {shown}"
        }
    ]
