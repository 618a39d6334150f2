/// `magnet demo` run as a process: `--quick` on the built-in corpus (data/demo/corpus) and base model
/// (data/demo/base-model; while a checkout has none, a random tiny MagnetWhisper folder written here stands in)
/// exits 0 and writes summary.json with every fixed key (finite numbers, WER ≥ 0, compression ≥ 1, the headline
/// equal to the test split's entry) and a self-contained report.html; bad flags exit 2 naming the flag; `magnet
/// demo toy` is the former demo.
module MagnetWhisper.Cli.Tests.DemoTests

open System
open System.IO
open System.Text.Json
open Expecto
open TorchSharp
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Cli.Tests.Harness

/// The built-in base model, or a random tiny MagnetWhisper folder without predictors (4 encoder layers, so that
/// layer 2 exists) when the checkout has none yet.
let private baseModelFlags =
    lazy
        (let builtIn = Path.Combine(root, "data", "demo", "base-model")
         if Directory.Exists builtIn then []
         else
             MagnetWhisper.Core.NativeBackend.preload () |> ignore
             let dir = Path.Combine(tempDir "demo-model", "base")
             torch.manual_seed 77L |> ignore
             use w = new WhisperModel({ tinyConfig with EncoderLayers = 4 })
             use m = MagnetWhisperModel.FromWhisper(w, MagnetOptions.Default)
             MagnetFormat.save dir m
             [ "--model"; dir ])

/// The value at a dotted path of a JSON document.
let private at (doc: JsonDocument) (path: string) : JsonElement =
    path.Split('.') |> Array.fold (fun (e: JsonElement) (k: string) -> e.GetProperty k) doc.RootElement

let private fixedKeys =
    [ "baseline.wer"; "baseline.cer"; "magnet.wer"; "magnet.cer"; "magnet.compression"; "magnet.encoder_speedup"
      "magnet.boundary_f1"; "magnet.boundary_f1_random"; "magnet.boundary_precision"; "magnet.boundary_recall"; "seconds" ]

[<Tests>]
let tests =
    testSequenced <| testList "cli demo" [
        test "--quick on the built-in corpus: exit 0, summary.json with every fixed key, report.html, a table" {
            let work = tempDir "demo"
            let runDir = Path.Combine(work, "run")
            let r = magnetIn work ([ "demo"; "--quick"; "-o"; runDir; "--seed"; "3" ] @ baseModelFlags.Force())
            Expect.equal r.Code 0 $"exit 0\n{r}"
            use doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(runDir, "summary.json")))
            let headline = (at doc "headline_split").GetString()
            Expect.equal headline "test" "the headline is the test split"
            for key in fixedKeys do
                let top = at doc key
                Expect.equal top.ValueKind JsonValueKind.Number $"{key} is a number"
                Expect.isTrue (Double.IsFinite(top.GetDouble())) $"{key} is finite"
                if key <> "seconds" then
                    Expect.equal (top.GetDouble()) ((at doc $"splits.test.{key}").GetDouble()) $"{key} is the test split's"
            for key in [ "baseline.wer"; "baseline.cer"; "magnet.wer"; "magnet.cer" ] do
                for split in [ "test"; "test-unseen-voice" ] do
                    Expect.isGreaterThanOrEqual ((at doc $"splits.{split}.{key}").GetDouble()) 0.0 $"splits.{split}.{key} ≥ 0"
            for split in [ "test"; "test-unseen-voice" ] do
                Expect.isGreaterThanOrEqual ((at doc $"splits.{split}.magnet.compression").GetDouble()) 1.0 $"{split}: compression ≥ 1"
                Expect.isGreaterThan ((at doc $"splits.{split}.magnet.encoder_speedup").GetDouble()) 0.0 $"{split}: a speed-up was measured"
            Expect.isGreaterThanOrEqual ((at doc "splits.dev.baseline.wer").GetDouble()) 0.0 "the base model's dev WER"
            Expect.equal (at doc "splits.dev.magnet.wer").ValueKind JsonValueKind.Null "the fine-tuned model is not evaluated on dev"
            let f1 = (at doc "magnet.boundary_f1").GetDouble()
            Expect.isTrue (f1 >= 0.0 && f1 <= 1.0) "F1 in [0, 1]"
            // The run folder: an ordinary training run and the evaluations' reports.
            Expect.isTrue (File.Exists(Path.Combine(runDir, "train", "metrics.jsonl"))) "train/metrics.jsonl"
            Expect.isTrue (File.Exists(Path.Combine(runDir, "train", "final", "magnet.json"))) "train/final is a MagnetWhisper folder"
            Expect.isTrue (File.Exists(Path.Combine(runDir, "model", "magnet.json"))) "model/ is the evaluated MagnetWhisper folder"
            Expect.equal (at doc "run.inference_threshold").ValueKind JsonValueKind.Number "the calibrated threshold"
            Expect.isTrue (File.Exists(Path.Combine(runDir, "eval", "magnet-test", "summary.json"))) "eval/magnet-test"
            let html = File.ReadAllText(Path.Combine(runDir, "report.html"))
            Expect.isGreaterThan html.Length 3_000_000 "plotly.js embedded"
            Expect.isFalse (html.Contains "<script src=") "no script loaded from elsewhere"
            for text in [ "WER against compression"; "log-mel"; "reference phones"; "fine-tuning (" ] do
                Expect.stringContains html text $"the report shows {text}"
            Expect.stringContains r.Out "magnet WER" "the summary table"
            Expect.stringContains r.Out "test-unseen-voice" "a row per split"
            for stage in 1 .. 4 do
                Expect.stringContains r.Err $"[{stage}/4]" $"a line for stage {stage}"
            // Another run into the same folder replaces it (a previous demo run); any other non-empty folder is refused.
            let other = Path.Combine(work, "other")
            Directory.CreateDirectory other |> ignore
            File.WriteAllText(Path.Combine(other, "keep.txt"), "mine")
            let refused = magnetIn work ([ "demo"; "--quick"; "-o"; other ] @ baseModelFlags.Force())
            Expect.equal refused.Code 2 $"exit 2\n{refused}"
            Expect.stringContains refused.Err "-o" "names the flag"
            Expect.isTrue (File.Exists(Path.Combine(other, "keep.txt"))) "the folder is left alone"
        }

        test "bad flags exit 2 naming the flag, before anything runs" {
            let work = tempDir "demo-flags"
            let model = baseModelFlags.Force()
            let check (args: string list) (flag: string) =
                let r = magnetIn work ("demo" :: args)
                Expect.equal r.Code 2 $"exit 2 for {args}\n{r}"
                Expect.stringContains r.Err flag $"names {flag}"
                Expect.isFalse (Directory.Exists(Path.Combine(work, "demo-run"))) "nothing was written"
            check [ "--steps"; "0" ] "--steps"
            check [ "--layr"; "2" ] "--layr"
            check ([ "--layer"; "9" ] @ model) "--layer"
            check [ "--corpus"; Path.Combine(work, "nowhere") ] "--corpus"
            check [ "--device"; "tpu" ] "--device"
            check [ "--predictor"; "bp9" ] "--predictor"
            check [ "--seed"; "x" ] "--seed"
        }

        test "demo toy is the tensor-core demonstration" {
            let r = magnet [ "demo"; "toy"; "--steps"; "3"; "--every"; "1" ]
            Expect.equal r.Code 0 $"exit 0\n{r}"
            Expect.stringContains r.Out "Compression" "its closing line"
            let bad = magnet [ "demo"; "toy"; "--stesp"; "3" ]
            Expect.equal bad.Code 2 $"exit 2\n{bad}"
            Expect.stringContains bad.Err "--stesp" "names the flag"
        }
    ]
