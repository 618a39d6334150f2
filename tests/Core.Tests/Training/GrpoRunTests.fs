/// The GRPO loop on a tiny random MagnetWhisper and a folder corpus of sine tones (sox) with short transcripts: a run
/// stopped at step 2 and resumed to 4 equals an uninterrupted 4-step run (metrics and parameters, bit for bit, with
/// the KL reference and two inner epochs; and with the WER reward); metrics carry the GRPO keys; only the predictors
/// change; dev evaluation keeps best/; configuration errors name the key.
module MagnetWhisper.Tests.Training.GrpoRunTests

open System
open System.IO
open System.Threading
open Expecto
open TorchSharp
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Training
open MagnetWhisper.Tests.Magnet
open MagnetWhisper.Tests.Data

/// The fixtures' tiny model (no dropout).
let private config = TrainingFixtures.runWhisper (WhisperConfig.preset "tiny").Dropout

/// A model folder (a BP1 before encoder layer 1, initial rate ½) and a corpus folder of 4 tones with transcripts.
let private setup (temp: MagnetFixtures.Temp) : GrpoConfig =
    let modelDir = temp.Sub "model"
    if not (Directory.Exists modelDir) then
        let predictor = { PredictorConfig.Default(Bp1, 0.3) with InitialBoundaryBias = Some 0.0 }
        TrainingFixtures.magnetFolder modelDir config { PredictorSlot.Create(1, Bp1, 0.3) with Predictor = predictor }
        TrainingFixtures.toneCorpus (temp.Sub "corpus")
    { GrpoConfig.Default with
        Common =
            { GrpoConfig.Default.Common with
                Model = modelDir; Data = temp.Sub "corpus"; MaxSteps = 4; BatchSize = 2; PredictorLearningRate = Some 1e-2
                LogEvery = 1; EvalEvery = 0; CheckpointEvery = 0; KeepCheckpoints = 2; Seed = 3L; Workers = 1 }
        GroupSize = 3
        InnerEpochs = 2
        KlCoefficient = 0.1
        EntropyCoefficient = 0.01
        KeptFractionWeight = 0.5 }

let private options = TrainingFixtures.cpuRun

/// (step, key, value) of every train/ metric of a run's metrics.jsonl.
let private trainMetrics (runDir: string) = TrainingFixtures.metrics runDir (fun k -> k.StartsWith "train/")

let private state = TrainingFixtures.folderState

let private run c dir resume o ct = Grpo.run c dir resume o GrpoEvents.None ct

[<Tests>]
let tests =
    testSequenced <| testList "training.grpo.run" [
        test "a GRPO run stopped at step 2 and resumed to 4 has the uninterrupted run's metrics and parameters, bit for bit" {
            use temp = new MagnetFixtures.Temp()
            let c = setup temp
            let whole = run c (temp.Sub "whole") false options CancellationToken.None
            Expect.equal (whole.Outcome, whole.Step) (Completed, 4) "the whole run completes"
            let parted = temp.Sub "parted"
            let first = run c parted false { options with StopAtStep = Some 2 } CancellationToken.None
            Expect.equal (first.Outcome, first.Step) (Interrupted, 2) "stopped at step 2"
            torch.manual_seed 999L |> ignore
            let second = run GrpoConfig.Default parted true options CancellationToken.None
            Expect.equal (second.Outcome, second.Step) (Completed, 4) "resumed to 4"
            let expected = trainMetrics (temp.Sub "whole")
            Expect.equal (expected |> List.map (fun (s, _, _) -> s) |> List.distinct) [ 1L; 2L; 3L; 4L ] "a line per step"
            let keys = expected |> List.map (fun (_, k, _) -> k) |> List.distinct
            for key in
                [ MetricKeys.TrainGrpoRewardMean; MetricKeys.TrainGrpoRewardStd; MetricKeys.TrainPolicyLoss; MetricKeys.TrainAsrLoss
                  MetricKeys.TrainBoundaryLoss; MetricKeys.TrainGradNorm; MetricKeys.TrainLearningRate; GrpoMetricKeys.ZeroSpreadFraction
                  GrpoMetricKeys.ClipFraction; GrpoMetricKeys.ApproxKl; GrpoMetricKeys.KlToReference; GrpoMetricKeys.Entropy
                  GrpoMetricKeys.KeptFraction; GrpoMetricKeys.KeptFractionLayerPrefix + "1" ] do
                Expect.contains keys key $"metrics.jsonl has {key}"
            Expect.isFalse (List.contains GrpoMetricKeys.Wer keys) "no train/grpo_wer while the WER reward is off"
            let values key = expected |> List.filter (fun (_, k, _) -> k = key) |> List.map (fun (_, _, v) -> v)
            Expect.isGreaterThan (List.distinct (values MetricKeys.TrainGrpoRewardMean)).Length 1 "rewards change"
            Expect.isTrue (values GrpoMetricKeys.KlToReference |> List.exists (fun v -> v > 0.0)) "the policy leaves its reference"
            Expect.isTrue (values GrpoMetricKeys.ApproxKl |> List.exists (fun v -> v > 0.0)) "the second epoch sees a changed policy"
            Expect.sequenceEqual (trainMetrics parted) expected "metrics.jsonl bit-identical"
            let start = state (temp.Sub "model")
            let a = state (Path.Combine(temp.Sub "whole", "final"))
            let b = state (Path.Combine(parted, "final"))
            Expect.isEmpty (TrainingFixtures.changed a b) "final parameters bit-identical"
            // Predictors only (the default): every other parameter is exactly the starting model's.
            let moved = TrainingFixtures.changed start a
            Expect.isNonEmpty moved "the predictor trained"
            for n in moved do
                Expect.stringContains n ".boundary_predictors." $"only predictor parameters change ({n})"
            let other = run { c with Common = { c.Common with Seed = 4L } } (temp.Sub "other") false options CancellationToken.None
            Expect.equal other.Step 4 "other seed ran"
            Expect.notEqual (trainMetrics (temp.Sub "other")) expected "another seed, other metrics"
        }

        test "with the WER reward on, a run stopped at step 2 and resumed to 4 is bit-identical and logs train/grpo_wer" {
            use temp = new MagnetFixtures.Temp()
            let c = { setup temp with WerRewardWeight = 0.5; KlCoefficient = 0.0 }
            run c (temp.Sub "whole") false options CancellationToken.None |> ignore
            let parted = temp.Sub "parted"
            let first = run c parted false { options with StopAtStep = Some 2 } CancellationToken.None
            Expect.equal (first.Outcome, first.Step) (Interrupted, 2) "stopped at step 2"
            let second = run GrpoConfig.Default parted true options CancellationToken.None
            Expect.equal (second.Outcome, second.Step) (Completed, 4) "resumed to 4"
            let expected = trainMetrics (temp.Sub "whole")
            let wer = expected |> List.filter (fun (_, k, _) -> k = GrpoMetricKeys.Wer)
            Expect.equal (wer |> List.map (fun (s, _, _) -> s)) [ 1L; 2L; 3L; 4L ] "train/grpo_wer at every step"
            for _, _, v in wer do
                Expect.isTrue (v >= 0.0 && Double.IsFinite v) $"a WER in percent ({v})"
            Expect.sequenceEqual (trainMetrics parted) expected "metrics.jsonl bit-identical"
            let a = state (Path.Combine(temp.Sub "whole", "final"))
            let b = state (Path.Combine(parted, "final"))
            Expect.isEmpty (TrainingFixtures.changed a b) "final parameters bit-identical"
            Expect.isNonEmpty (TrainingFixtures.changed (state (temp.Sub "model")) a) "the predictor trained"
        }

        test "dev evaluation logs eval/wer and keeps best/; config.json holds the resolved GRPO configuration" {
            use temp = new MagnetFixtures.Temp()
            let c0 = setup temp
            let c = { c0 with Common = { c0.Common with DevData = Some(temp.Sub "corpus"); EvalEvery = 2; MaxSteps = 2; EvalBatchSize = 4 } }
            let dir = temp.Sub "run"
            let result = run c dir false options CancellationToken.None
            let evals =
                [ for line in MetricsJsonl.read (Path.Combine(dir, "metrics.jsonl")) do
                      for k, v in line.Values do
                          if k = MetricKeys.EvalWer then line.Step, v ]
            Expect.equal (evals |> List.map fst) [ 2L ] "eval/wer at step 2"
            Expect.equal (result.Best |> Option.map (fun (w, s) -> 100.0 * w, s)) (Some(snd evals.Head, 2)) "best by dev WER (logged in percent)"
            Expect.isTrue (File.Exists(Path.Combine(dir, "best", "config.json"))) "best/ written"
            // eval/asr_loss: the evaluated policy (final/ = after step 2) on the dev corpus, thresholded boundaries.
            let asr = TrainingFixtures.metrics dir ((=) MetricKeys.EvalAsrLoss)
            Expect.equal (asr |> List.map (fun (s, _, _) -> s)) [ 2L ] "eval/asr_loss at step 2"
            let ce, _ = TrainingFixtures.devLosses (Path.Combine(dir, "final")) (temp.Sub "corpus") [ MagnetWhisper.Core.Data.NoTarget ]
            let _, _, actual = asr.Head
            Expect.floatClose { absolute = 1e-4; relative = 1e-4 } actual ce "eval/asr_loss = token-mean CE of the dev data"
            Expect.equal (GrpoConfig.read (Path.Combine(dir, TrainingRun.ConfigFile))) c "config.json reads back as the configuration"
        }

        test "eval_at_start: a new run evaluates the starting policy at step 0, then at the end" {
            use temp = new MagnetFixtures.Temp()
            let c0 = setup temp
            let c = { c0 with Common = { c0.Common with DevData = Some(temp.Sub "corpus"); EvalEvery = 0; EvalAtStart = true; MaxSteps = 2; EvalBatchSize = 4 } }
            let dir = temp.Sub "run"
            run c dir false options CancellationToken.None |> ignore
            let steps key = TrainingFixtures.metrics dir ((=) key) |> List.map (fun (s, _, _) -> s)
            Expect.equal (steps MetricKeys.EvalWer) [ 0L; 2L ] "eval/wer at the start and the end"
            Expect.equal (steps MetricKeys.EvalAsrLoss) [ 0L; 2L ] "eval/asr_loss at the start and the end"
            // Step 0 is the starting model folder itself.
            let ce, _ = TrainingFixtures.devLosses (temp.Sub "model") (temp.Sub "corpus") [ MagnetWhisper.Core.Data.NoTarget ]
            let _, _, first = TrainingFixtures.metrics dir ((=) MetricKeys.EvalAsrLoss) |> List.head
            Expect.floatClose { absolute = 1e-4; relative = 1e-4 } first ce "step 0: the starting policy's dev cross-entropy"
        }

        test "test_data: a completed GRPO run evaluates final/ on it without dev data and logs test/wer" {
            use temp = new MagnetFixtures.Temp()
            let c = setup temp
            let c = { c with Common = { c.Common with TestData = Some(temp.Sub "corpus"); MaxSteps = 1; EvalBatchSize = 4 } }
            let dir = temp.Sub "run"
            let result = run c dir false options CancellationToken.None
            let tested = Expect.wantSome result.Test "a test evaluation"
            Expect.equal tested.Model (Path.Combine(dir, "final")) "final/ is tested"
            let wer, cer, n = TrainingFixtures.scoresOf tested.Model (temp.Sub "corpus") 4
            Expect.equal (tested.Wer, tested.Cer, tested.Utterances) (wer, cer, n) "the folder's scores"
            Expect.equal (TrainingFixtures.metrics dir ((=) MetricKeys.TestWer)) [ 1L, MetricKeys.TestWer, 100.0 * wer ] "test/wer in percent at the last step"
        }

        test "GRPO configuration errors name the key" {
            let message (f: unit -> GrpoConfig) =
                try
                    f () |> ignore
                    failtest "accepted"
                with :? InvalidDataException as e -> e.Message
            Expect.stringContains (message (fun () -> GrpoConfig.applyJson "g.json" """{"group_sise": 3}""" GrpoConfig.Default)) "g.json: unknown key 'group_sise'" "unknown key"
            Expect.stringContains (message (fun () -> GrpoConfig.applyJson "g.json" """{"group_size": 1}""" GrpoConfig.Default)) "g.json: key 'group_size'" "K ≥ 2"
            Expect.stringContains (message (fun () -> GrpoConfig.applyJson "g.json" """{"batch_size": 0}""" GrpoConfig.Default)) "g.json: key 'batch_size'" "a common key"
            Expect.stringContains (message (fun () -> GrpoConfig.set "clip_epsilon=2" GrpoConfig.Default)) "--set clip_epsilon=2: key 'clip_epsilon'" "--set"
            Expect.stringContains (message (fun () -> GrpoConfig.set "advantage_normalization=batch" GrpoConfig.Default)) "key 'advantage_normalization'" "normalisation"
            let ok = GrpoConfig.Default |> GrpoConfig.set "model=m" |> GrpoConfig.set "data=d" |> GrpoConfig.set "micro_batches=2"
            Expect.stringContains (message (fun () -> GrpoConfig.validate ok)) "key 'micro_batches'" "micro-batches"
            let c =
                GrpoConfig.Default |> GrpoConfig.set "group_size=8" |> GrpoConfig.set "clip_epsilon=null" |> GrpoConfig.set "max_steps=7"
                |> GrpoConfig.set "advantage_normalization=global"
            Expect.equal (c.GroupSize, c.ClipEpsilon, c.Common.MaxSteps, c.Normalisation) (8, None, 7, GlobalAfterGroupMean) "overrides"
            Expect.equal (GrpoConfig.applyJson "resolved" (GrpoConfig.toJson c) GrpoConfig.Default) c "the resolved file reads back"
        }
    ]
