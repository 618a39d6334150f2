/// `magnet grpo` run as a process: a converted tiny MagnetWhisper on a folder of tones runs one step, stops with a
/// checkpoint (--stop-at-step), resumes to the end and writes metrics with the GRPO keys and final/; usage errors exit
/// 2 naming the flag, the --set or the key before anything is loaded.
module MagnetWhisper.Cli.Tests.GrpoTests

open System.IO
open Expecto
open MagnetWhisper.Core.Training
open MagnetWhisper.Cli.Tests.Harness

/// A working folder with `magnet` (the tiny Whisper converted with a BP1 before layer 1) and `corpus` (2 tones).
let private setup () =
    let dir = tempDir "grpo"
    let converted = magnetIn dir [ "convert"; "--whisper"; tinyWhisper.Value; "-p"; "1:bp1"; "-o"; "magnet"; "--no-check" ]
    if converted.Code <> 0 then failwithf "convert failed: %O" converted
    let corpus = Path.Combine(dir, "corpus")
    Directory.CreateDirectory corpus |> ignore
    for name, text in [ "a", "one two"; "b", "three" ] do
        toneWav corpus $"{name}.wav" |> ignore
        File.WriteAllText(Path.Combine(corpus, $"{name}.txt"), text)
    dir

[<Tests>]
let tests =
    testSequenced <| testList "grpo" [
        test "magnet grpo stops at step 1 with a checkpoint, resumes to step 2, logs train/grpo_* and writes final/" {
            let dir = setup ()
            let common = [ "grpo"; "--model"; "magnet"; "--data"; "corpus"; "--max-steps"; "2"; "--batch-size"; "2"; "--group-size"; "2"; "--set"; "workers=1"; "--set"; "log_every=1" ]
            let first = magnetIn dir (common @ [ "--stop-at-step"; "1"; "-o"; "run" ])
            Expect.equal first.Code 0 (string first)
            Expect.stringContains first.Out "resume with: magnet grpo --resume run" "says how to resume"
            let second = magnetIn dir [ "grpo"; "--resume"; "run" ]
            Expect.equal second.Code 0 (string second)
            Expect.stringContains second.Out "completed 2 steps" "completed"
            Expect.isTrue (File.Exists(Path.Combine(dir, "run", "final", "magnet.json"))) "final/ holds a MagnetWhisper"
            let lines = MetricsJsonl.read (Path.Combine(dir, "run", "metrics.jsonl"))
            Expect.equal [ for l in lines -> l.Step ] [ 1L; 2L ] "one line per step"
            for l in lines do
                for key in [ MetricKeys.TrainGrpoRewardMean; GrpoMetricKeys.ZeroSpreadFraction; GrpoMetricKeys.KeptFraction ] do
                    Expect.isTrue (l.Values |> List.exists (fun (k, _) -> k = key)) $"step {l.Step} has {key}"
            let config = GrpoConfig.read (Path.Combine(dir, "run", TrainingRun.ConfigFile))
            Expect.equal (config.GroupSize, config.Common.MaxSteps, config.Common.Workers) (2, 2, 1) "flags and --set in config.json"
        }

        test "magnet grpo starts from a Hugging Face Whisper folder with predictors and reports test/wer of final/ on --test-data" {
            let dir = setup ()
            let r =
                magnetIn dir [ "grpo"; "--model"; tinyWhisper.Value; "--set"; """predictors=["1:bp1"]"""; "--data"; "corpus"; "--test-data"; "corpus"
                               "--max-steps"; "1"; "--batch-size"; "2"; "--group-size"; "2"; "--set"; "workers=1"; "-o"; "run" ]
            Expect.equal r.Code 0 (string r)
            let lines = MetricsJsonl.read (Path.Combine(dir, "run", "metrics.jsonl"))
            let wer = lines |> List.collect _.Values |> List.filter (fun (k, _) -> k = MetricKeys.TestWer) |> List.exactlyOne |> snd
            Expect.stringContains r.Out ("test        " + Path.Combine("run", "final")) "a test line naming final/"
            Expect.stringContains r.Out (sprintf "WER %.2f%%" wer) "the logged test WER"
            Expect.stringContains r.Out "(2 utterances)" "both utterances"
        }

        test "usage errors exit 2 and name the flag, the --set or the key" {
            let dir = setup ()
            let run args = magnetIn dir ("grpo" :: args)
            let bad = run [ "--model"; "magnet"; "--data"; "corpus"; "--set"; "group_sise=3"; "-o"; "r1" ]
            Expect.equal bad.Code 2 (string bad)
            Expect.stringContains bad.Err "--set group_sise=3: unknown key 'group_sise'" "names the --set"
            let flag = run [ "--model"; "magnet"; "--data"; "corpus"; "--group-size"; "1"; "-o"; "r2" ]
            Expect.equal flag.Code 2 (string flag)
            Expect.stringContains flag.Err "--group-size 1: key 'group_size'" "names the flag"
            let notMagnet = run [ "--model"; "corpus"; "--data"; "corpus"; "-o"; "r3" ]
            Expect.equal notMagnet.Code 2 (string notMagnet)
            Expect.stringContains notMagnet.Err "--model corpus: not a MagnetWhisper folder" "names --model"
            let resumed = run [ "--resume"; "r4"; "--max-steps"; "3" ]
            Expect.equal resumed.Code 2 (string resumed)
            Expect.stringContains resumed.Err "--max-steps" "a resumed run keeps its configuration"
            Expect.isFalse (Directory.Exists(Path.Combine(dir, "r1"))) "nothing written"
        }
    ]
