/// The supervised loop on a tiny random MagnetWhisper and a folder corpus of sine tones (sox) with short transcripts:
/// a run stopped at step 2 and resumed to 4 equals an uninterrupted 4-step run (metrics and parameters, bit for bit);
/// the newest K checkpoints are kept; cancellation ends a run after its step with a checkpoint; dev evaluation logs
/// eval/wer and writes best/; configuration errors name the key.
module MagnetWhisper.Tests.Training.SupervisedTests

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

/// The fixtures' tiny model with dropout on, so the global generator matters for resuming.
let private config = TrainingFixtures.runWhisper 0.1

/// A model folder (a BP1 before encoder layer 1) and a corpus folder of 4 tones with transcripts.
let private setup (temp: MagnetFixtures.Temp) =
    let modelDir = temp.Sub "model"
    if not (Directory.Exists modelDir) then
        TrainingFixtures.magnetFolder modelDir config (PredictorSlot.Create(1, Bp1, 0.3))
        TrainingFixtures.toneCorpus (temp.Sub "corpus")
    { TrainConfig.Default with
        Model = modelDir; Data = temp.Sub "corpus"; MaxSteps = 4; BatchSize = 2; MicroBatches = 2; LearningRate = 1e-3
        PredictorLearningRate = Some 1e-2; LogEvery = 1; EvalEvery = 0; CheckpointEvery = 0; KeepCheckpoints = 2; Seed = 3L
        Targets = [ "characters" ]; Workers = 1 }

let private options = TrainingFixtures.cpuRun

let private lossKeys = [ MetricKeys.TrainLoss; MetricKeys.TrainAsrLoss; MetricKeys.TrainBoundaryLoss; MetricKeys.TrainGradNorm; MetricKeys.TrainLearningRate ]

/// (step, key, value) of the loss keys of a run's metrics.jsonl.
let private losses (runDir: string) = TrainingFixtures.metrics runDir (fun k -> List.contains k lossKeys)

let private state = TrainingFixtures.folderState

let private run c dir resume o ct = Supervised.run c dir resume o SupervisedEvents.None ct

/// Runs c whole (4 steps) and stopped at 2 then resumed, in temp: losses and final parameters equal bit for bit,
/// and another seed differs. Returns the whole run's losses.
let private resumesBitIdentically (c: TrainConfig) (temp: MagnetFixtures.Temp) =
    let whole = run c (temp.Sub "whole") false options CancellationToken.None
    Expect.equal (whole.Outcome, whole.Step) (Completed, 4) "the whole run completes"
    let parted = temp.Sub "parted"
    let first = run c parted false { options with StopAtStep = Some 2 } CancellationToken.None
    Expect.equal (first.Outcome, first.Step) (Interrupted, 2) "stopped at step 2"
    Expect.isFalse (Directory.Exists(Path.Combine(parted, "final"))) "no final/ for an interrupted run"
    // The global generator moves on in between, as in a new process.
    torch.manual_seed 999L |> ignore
    let second = run TrainConfig.Default parted true options CancellationToken.None
    Expect.equal (second.Outcome, second.Step) (Completed, 4) "resumed to 4"
    let expected = losses (temp.Sub "whole")
    Expect.equal (expected |> List.map (fun (s, _, _) -> s) |> List.distinct) [ 1L; 2L; 3L; 4L ] "a line per step"
    // Training moves: the losses are not one constant (else equality would prove nothing).
    let trainLoss = expected |> List.filter (fun (_, k, _) -> k = MetricKeys.TrainLoss) |> List.map (fun (_, _, v) -> v)
    Expect.isGreaterThan (List.distinct trainLoss).Length 1 "losses change"
    Expect.sequenceEqual (losses parted) expected "metrics.jsonl losses bit-identical"
    // The BP1's spacing CV (≥ 0) and adjacent-boundary share (a percentage, SPEC §8) on every logged step.
    let spacing = TrainingFixtures.metrics (temp.Sub "whole") (fun k -> k = MetricKeys.TrainBoundaryCv || k = MetricKeys.TrainBoundaryAdjacentPct)
    for key in [ MetricKeys.TrainBoundaryCv; MetricKeys.TrainBoundaryAdjacentPct ] do
        Expect.equal (spacing |> List.filter (fun (_, k, _) -> k = key) |> List.map (fun (s, _, _) -> s)) [ 1L; 2L; 3L; 4L ] $"{key} every step"
    for _, k, v in spacing do
        if k = MetricKeys.TrainBoundaryAdjacentPct then Expect.isTrue (v >= 0.0 && v <= 100.0) $"{k} = {v} is a percentage"
        else Expect.isTrue (v >= 0.0 && Double.IsFinite v) $"{k} = {v}"
    let a = state (Path.Combine(temp.Sub "whole", "final"))
    let b = state (Path.Combine(parted, "final"))
    Expect.isEmpty (TrainingFixtures.changed a b) "final parameters bit-identical"
    // Another seed gives other losses: the comparison above sees the run's randomness.
    let other = run { c with Seed = 4L } (temp.Sub "other") false options CancellationToken.None
    Expect.equal other.Step 4 "other seed ran"
    Expect.notEqual (losses (temp.Sub "other")) expected "another seed, other losses"
    expected

[<Tests>]
let tests =
    testSequenced <| testList "training.supervised" [
        test "a run stopped at step 2 and resumed to 4 has the uninterrupted run's losses and parameters, bit for bit" {
            use temp = new MagnetFixtures.Temp()
            resumesBitIdentically (setup temp) temp |> ignore
        }

        test "with SpecAugment on: resumed bit for bit, and the losses differ from the run without it" {
            use temp = new MagnetFixtures.Temp()
            let c = setup temp
            let augmented = resumesBitIdentically { c with SpecAugment = Some SpecAugmentSettings.Default } temp
            run c (temp.Sub "plain") false options CancellationToken.None |> ignore
            Expect.notEqual augmented (losses (temp.Sub "plain")) "SpecAugment changes what the model sees"
        }

        test "with the CTC loss on: resumed bit for bit, train/ctc_loss logged, final/ holds the head" {
            use temp = new MagnetFixtures.Temp()
            let c = setup temp
            let withCtc = resumesBitIdentically { c with CtcWeight = 0.3 } temp
            let ctcLine = MetricsJsonl.read (Path.Combine(temp.Sub "whole", "metrics.jsonl")) |> List.head
            let ctc = ctcLine.Values |> List.tryFind (fun (k, _) -> k = "train/ctc_loss")
            Expect.isTrue (ctc |> Option.exists (fun (_, v) -> v > 0.0)) "train/ctc_loss logged"
            let final = state (Path.Combine(temp.Sub "whole", "final"))
            Expect.isTrue (final |> List.exists (fun (n, _) -> n = "ctc_head.weight")) "the head is saved"
            Expect.isTrue (withCtc |> List.exists (fun (_, k, _) -> k = MetricKeys.TrainLoss)) "losses logged"
        }

        test "checkpoints every step keep the newest 2; a cancelled run stops after its step with a checkpoint" {
            use temp = new MagnetFixtures.Temp()
            let c = { setup temp with CheckpointEvery = 1; MaxSteps = 3 }
            let dir = temp.Sub "run"
            let result = run c dir false options CancellationToken.None
            let names = TrainingRun.checkpoints dir |> List.map Path.GetFileName
            Expect.equal names [ "step-00000002"; "step-00000003" ] "the newest two"
            Expect.equal (TrainingCheckpoint.read (Path.Combine(dir, "checkpoints", "step-00000003"))).Step 3 "trainer.json step"
            Expect.equal result.Checkpoint (Some(Path.Combine(dir, "checkpoints", "step-00000003"))) "reported"
            Expect.isTrue (File.Exists(Path.Combine(dir, "final", "config.json"))) "final/ holds the model"
            let saved = TrainConfig.read (Path.Combine(dir, TrainingRun.ConfigFile))
            Expect.equal saved c "config.json holds the resolved configuration"
            use cancelled = new CancellationTokenSource()
            cancelled.Cancel()
            let stopped = run { c with CheckpointEvery = 0 } (temp.Sub "cancelled") false options cancelled.Token
            Expect.equal (stopped.Outcome, stopped.Step) (Interrupted, 1) "one step, then the checkpoint"
            Expect.equal (TrainingRun.checkpoints (temp.Sub "cancelled") |> List.map Path.GetFileName) [ "step-00000001" ] "its checkpoint"
        }

        test "dev evaluation logs eval/wer every 2 steps and keeps best/" {
            use temp = new MagnetFixtures.Temp()
            let c = { setup temp with DevData = Some(temp.Sub "corpus"); EvalEvery = 2; MaxSteps = 2; EvalBatchSize = 4 }
            let dir = temp.Sub "run"
            let result = run c dir false options CancellationToken.None
            let evals =
                [ for line in MetricsJsonl.read (Path.Combine(dir, "metrics.jsonl")) do
                      for k, v in line.Values do
                          if k = MetricKeys.EvalWer then line.Step, v ]
            Expect.equal (evals |> List.map fst) [ 2L ] "eval/wer at step 2"
            let wer = snd evals.Head
            Expect.isTrue (wer >= 0.0 && Double.IsFinite wer) "a WER"
            // Logged in percent as the original logged it; the result holds the fraction.
            Expect.equal (result.Best |> Option.map (fun (w, s) -> 100.0 * w, s)) (Some(wer, 2)) "best by dev WER"
            Expect.isTrue (File.Exists(Path.Combine(dir, "best", "config.json"))) "best/ written"
            // eval/loss: the evaluated model (final/ = the model after step 2) on the dev corpus one utterance at a
            // time, in evaluation mode: Σ token cross-entropy / tokens + Σ boundary losses / utterances.
            let logged = TrainingFixtures.metrics dir ((=) MetricKeys.EvalLoss)
            Expect.equal (logged |> List.map (fun (s, _, _) -> s)) [ 2L ] "eval/loss at step 2"
            let ce, boundary = TrainingFixtures.devLosses (Path.Combine(dir, "final")) (temp.Sub "corpus") [ MagnetWhisper.Core.Data.Characters ]
            let expected = ce + boundary
            let _, _, actual = logged.Head
            Expect.floatClose { absolute = 1e-4; relative = 1e-4 } actual expected "eval/loss = token-mean CE + utterance-mean boundary loss"
            let asr = TrainingFixtures.metrics dir ((=) MetricKeys.EvalAsrLoss)
            Expect.equal (asr |> List.map (fun (s, _, _) -> s)) [ 2L ] "eval/asr_loss at step 2"
            let _, _, actualCe = asr.Head
            Expect.floatClose { absolute = 1e-4; relative = 1e-4 } actualCe ce "eval/asr_loss = token-mean CE"
        }

        test "test_data: a completed run evaluates best/ (final/ without dev data) on it, logs test/wer and reports it" {
            use temp = new MagnetFixtures.Temp()
            let c = { setup temp with DevData = Some(temp.Sub "corpus"); TestData = Some(temp.Sub "corpus"); EvalEvery = 1; MaxSteps = 2; EvalBatchSize = 4 }
            let dir = temp.Sub "run"
            let result = run c dir false options CancellationToken.None
            let tested = Expect.wantSome result.Test "a test evaluation"
            Expect.equal tested.Model (Path.Combine(dir, "best")) "best/ is tested"
            // The Evaluator on the folder itself, apart from the trainer.
            let wer, cer, n = TrainingFixtures.scoresOf tested.Model (temp.Sub "corpus") c.EvalBatchSize
            Expect.equal (tested.Wer, tested.Cer, tested.Utterances) (wer, cer, n) "the folder's scores"
            let logged = TrainingFixtures.metrics dir (fun k -> k.StartsWith "test/")
            Expect.contains logged (2L, MetricKeys.TestWer, 100.0 * wer) "test/wer logged in percent at the last step"
            Expect.contains logged (2L, MetricKeys.TestCer, 100.0 * cer) "test/cer logged in percent"
            Expect.contains logged (2L, MetricKeys.TestNumSamples, 4.0) "test/num_samples: the 4 utterances"
            let plain = run { c with DevData = None } (temp.Sub "plain") false options CancellationToken.None
            Expect.equal (plain.Test |> Option.map _.Model) (Some(Path.Combine(temp.Sub "plain", "final"))) "final/ without dev data"
            let stopped = run c (temp.Sub "stopped") false { options with StopAtStep = Some 1 } CancellationToken.None
            Expect.isNone stopped.Test "an interrupted run is not tested"
        }

        test "configuration errors name the key" {
            let message (f: unit -> TrainConfig) =
                try
                    f () |> ignore
                    failtest "accepted"
                with :? InvalidDataException as e -> e.Message
            Expect.stringContains (message (fun () -> TrainConfig.applyJson "c.json" """{"max_stesp": 3}""" TrainConfig.Default)) "unknown key 'max_stesp'" "unknown key"
            Expect.stringContains (message (fun () -> TrainConfig.applyJson "c.json" """{"batch_size": 0}""" TrainConfig.Default)) "c.json: key 'batch_size'" "bad value"
            Expect.stringContains (message (fun () -> TrainConfig.set "lr=fast" TrainConfig.Default)) "--set lr=fast: key 'lr'" "--set"
            Expect.stringContains (message (fun () -> TrainConfig.set "trained_parts=wings" TrainConfig.Default)) "key 'trained_parts'" "parts"
            Expect.stringContains (message (fun () -> TrainConfig.validate TrainConfig.Default)) "key 'model'" "model missing"
            let c = TrainConfig.Default |> TrainConfig.set "max_steps=7" |> TrainConfig.set "dev_data=dev" |> TrainConfig.set "max_grad_norm=null"
            Expect.equal (c.MaxSteps, c.DevData, c.MaxGradientNorm) (7, Some "dev", None) "overrides"
            Expect.equal (TrainConfig.set "data_splits=train" TrainConfig.Default).DataSplits [ "train" ] "one split by name"
            Expect.equal (TrainConfig.set """dev_splits=["dev","test"]""" TrainConfig.Default).DevSplits [ "dev"; "test" ] "a list of splits"
            Expect.stringContains (message (fun () -> TrainConfig.set "data_splits=3" TrainConfig.Default)) "key 'data_splits'" "splits are names"
            Expect.equal (TrainConfig.applyJson "resolved" (TrainConfig.toJson c) TrainConfig.Default) c "the resolved file reads back"
        }
    ]
