/// The base model's pretraining pieces that are plain functions: the embedded recipe is the repository's
/// data/demo/pretrain.json, with the corpus and the command line's overrides on top; version lines picked out of the
/// tools' real outputs; the run's metrics summarised; pretrain.json round-trips.
module MagnetWhisper.Tests.Pretraining.PretrainingTests

open System
open System.IO
open System.Text.Json
open Expecto
open MagnetWhisper.Core.Pretraining
open MagnetWhisper.Core.Training
open MagnetWhisper.Tests

let private recipeFile () = Path.Combine(PythonReference.repoRoot.Value, "data", "demo", "pretrain.json")

[<Tests>]
let tests =
    testList "pretraining" [
        test "the embedded recipe is data/demo/pretrain.json; the corpus fills data, dev_data and test_data" {
            Expect.equal (PretrainRecipe.text ()) (File.ReadAllText(recipeFile ())) "the embedded text is the file's"
            let config = PretrainRecipe.config "/corpora/synth/manifest.jsonl" [] None None
            let fromFile = TrainConfig.read (recipeFile ())
            let expected = { fromFile with Data = "/corpora/synth/manifest.jsonl"; DevData = Some "/corpora/synth/manifest.jsonl"; TestData = Some "/corpora/synth/manifest.jsonl" }
            Expect.equal (TrainConfig.toJson config) (TrainConfig.toJson expected) "the file's keys with the corpus"
            use recipe = JsonDocument.Parse(File.ReadAllText(recipeFile ()))
            for key in [ "data"; "dev_data"; "test_data"; "model" ] do
                Expect.isFalse (fst (recipe.RootElement.TryGetProperty key)) $"the recipe holds no machine-specific '{key}'"
            // What docs/PRETRAINING.md says the recipe is.
            Expect.equal (config.FromScratch, config.DModel, config.EncoderLayers, config.DecoderLayers, config.AttentionHeads) (Some "tiny", Some 192, Some 4, Some 4, Some 4) "the model"
            Expect.equal (config.CtcWeight, config.Decay, config.MaxSteps, config.Seed) (0.5, CosineDecay, 2000, 0L) "the objective and schedule"
            Expect.isSome config.SpecAugment "SpecAugment on"
            Expect.equal (config.DataSplits, config.DevSplits, config.TestSplits) ([ "train" ], [ "dev" ], [ "test"; "test-unseen-voice" ]) "the splits"
        }

        test "overrides: --set over the recipe, then the seed and steps; a bad key names the --set" {
            let config = PretrainRecipe.config "c" [ "max_steps=7"; "batch_size=3"; "seed=4" ] (Some 11L) (Some 9)
            Expect.equal (config.MaxSteps, config.BatchSize, config.Seed) (9, 3, 11L) "--steps and --seed win over --set; --set over the recipe"
            let kept = PretrainRecipe.config "c" [ "batch_size=3" ] None None
            Expect.equal (kept.MaxSteps, kept.Seed) (2000, 0L) "the recipe's without flags"
            match (try Ok(PretrainRecipe.config "c" [ "batch_sise=3" ] None None) with e -> Error e) with
            | Error(:? InvalidDataException as e) -> Expect.stringContains e.Message "--set batch_sise=3: unknown key 'batch_sise'" "names the --set"
            | other -> failtestf "expected InvalidDataException, got %A" other
        }

        test "version lines: the line with a dotted number (flite's follows a copyright line), else the first" {
            let flite = "  Carnegie Mellon University, Copyright (c) 1999-2016, all rights reserved\n  version: flite-2.2-current Sep 2018 (http://cmuflite.org)\n"
            Expect.equal (ToolVersions.versionLine flite) (Some "version: flite-2.2-current Sep 2018 (http://cmuflite.org)") "flite"
            let espeak = "eSpeak NG text-to-speech: 1.51  Data at: /usr/lib/x86_64-linux-gnu/espeak-ng-data\n"
            Expect.equal (ToolVersions.versionLine espeak) (Some "eSpeak NG text-to-speech: 1.51  Data at: /usr/lib/x86_64-linux-gnu/espeak-ng-data") "espeak-ng"
            let ffmpeg = "ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2026 the FFmpeg developers\nbuilt with gcc 12 (Debian 12.2.0-14+deb12u1)\n"
            Expect.equal (ToolVersions.versionLine ffmpeg) (Some "ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2026 the FFmpeg developers") "ffmpeg"
            Expect.equal (ToolVersions.versionLine "\n  some tool\nno number\n") (Some "some tool") "no version number: the first line"
            Expect.equal (ToolVersions.versionLine " \n") None "nothing"
            Expect.isNone (ToolVersions.ask "magnet-no-such-tool" [ "--version" ]) "a tool that is not installed"
        }

        test "the run's metrics: the lowest dev WER and its step (the first of equal ones), the last, and the test scores" {
            let lines =
                [ 25L, [ "train/loss", 3.0 ]
                  250L, [ "eval/loss", 0.8; "eval/wer", 64.6 ]
                  500L, [ "eval/wer", 31.5 ]
                  750L, [ "eval/wer", nan ]
                  1000L, [ "eval/wer", 31.5 ]
                  1250L, [ "eval/wer", 33.0 ]
                  1250L, [ "test/wer", 12.25; "test/cer", 6.5 ] ]
            let m = Provenance.metricsOf lines
            Expect.equal m.BestDev (Some(31.5, 500L)) "best: best/ keeps the first of equal WERs (a later one must be lower)"
            Expect.equal m.LastDev (Some(33.0, 1250L)) "last"
            Expect.equal m.Test (Some(12.25, 6.5)) "test"
            Expect.equal (Provenance.metricsOf [ 1L, [ "train/loss", 1.0 ] ]) { BestDev = None; LastDev = None; Test = None } "no evaluation"
        }

        test "clock: hours, minutes and seconds of a wall time" {
            Expect.equal (Provenance.clock 3723.4) "1:02:03" "1 h 2 min 3 s"
            Expect.equal (Provenance.clock 59.6) "0:01:00" "rounded to the second"
            Expect.equal (Provenance.clock (26.0 * 3600.0)) "26:00:00" "beyond a day"
        }

        test "pretrain.json round-trips; stage seconds add up over sessions" {
            let s: PretrainState =
                { Commands = [ "magnet demo pretrain -o run"; "magnet demo pretrain -o run --resume" ]
                  Corpus = "/r/corpus/manifest.jsonl"; Synthesised = true; Utterances = 3000; Seed = 7L; Steps = Some 12
                  Sets = [ "batch_size=16"; "lr=0.0005" ]; Seconds = Map [ "training", 12.5 ] }
            let added = s.Add("training", 2.25).Add("corpus synthesis", 800.0)
            Expect.equal added.Seconds (Map [ "training", 14.75; "corpus synthesis", 800.0 ]) "summed per stage"
            Expect.equal (PretrainState.parse "pretrain.json" (PretrainState.toJson added)) added "round trip"
            let noSteps = { s with Steps = None; Sets = [] }
            Expect.equal (PretrainState.parse "pretrain.json" (PretrainState.toJson noSteps)) noSteps "round trip without steps"
            match (try Ok(PretrainState.parse "x/pretrain.json" """{"commands": []}""") with e -> Error e) with
            | Error(:? InvalidDataException as e) -> Expect.stringContains e.Message "x/pretrain.json: no 'corpus'" "names the file and field"
            | other -> failtestf "expected InvalidDataException, got %A" other
        }
    ]
