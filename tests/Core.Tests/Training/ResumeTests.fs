/// Resuming a run: 3 updates, a snapshot (parameters, AdamW moments, every generator), 2 more; the snapshot restored
/// into a fresh model and optimizer (in memory, and through a checkpoint folder on disk) gives bit-identical losses
/// and parameters on CPU. Dropout is on, so the global generator matters; boundaries are sampled, so the sampling
/// generator does. Then two learning checks: a tiny model overfits a fixed batch, and a predictor-only run changes
/// only predictor parameters.
module MagnetWhisper.Tests.Training.ResumeTests

open Expecto
open TorchSharp
open MagnetWhisper.Core.Segments
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Training
open MagnetWhisper.Tests.Magnet
open MagnetWhisper.Tests.Training.TrainingFixtures

/// Dropout everywhere, so training draws from torch's global generator too.
let private config = { MagnetFixtures.config with Dropout = 0.1; AttentionDropout = 0.1; ActivationDropout = 0.1 }

let private totalSteps = 5

let private data = lazy [ for i in 0 .. totalSteps - 1 -> batch (100L + int64 i) config 4 ]

let private curves =
    Map [ predictorLayer, { PredictorCurves.WhisperPy with Temperature = Linear(1.0, 0.5); CompressionSchedule = Linear(0.5, 1.0) } ]

let private lr = { WarmupSteps = 2; TotalSteps = totalSteps; Decay = CosineDecay }

let private settings = OptimizerSettings.PredictorsAndRest(1e-2, 1e-3)

/// A model in training mode with everything trainable, its optimizer and its sampling generator.
let private fresh (seed: int64) =
    let m = model seed config
    m.train()
    m.SetTrainable [ AllParameters ] |> ignore
    let o = Optimizer.forMagnet settings m
    let g = Boundaries.generator (seed + 1000L) torch.CPU
    m, o, g

let private generators (g: torch.Generator) = [ "boundary_sampling", g ]

/// Update number `step` on its batch (2 micro-batches of 2), with the scheduled predictor curves and learning rate.
let private update (m: MagnetWhisperModel) (o: TrainingOptimizer) (g: torch.Generator) (step: int) =
    let schedules = PredictorCurves.schedules curves (Curve.progress step totalSteps)
    let input b = { sampleInput g b with Schedules = schedules }
    let r = TrainingStep.run o { MaxGradientNorm = Some 1.0 } (LearningRate.multiplier lr step) (data.Value.[step].Split 2L) counts (fun b -> LossSums.magnet m (input b))
    Expect.isNone r.Skipped $"update {step} applied"
    r.Loss

[<Tests>]
let tests =
    testSequenced <| testList "training.resume" [
        test "restoring a snapshot after 3 updates reproduces updates 4 and 5 bit for bit (in memory and from a checkpoint folder)" {
            torch.manual_seed 1L |> ignore
            let m, o, g = fresh 11L
            use _ = m
            use _ = o
            use _ = g
            for step in 0 .. 2 do update m o g step |> ignore
            use snapshot = TrainingSnapshot.capture 3 3L m.State o (generators g)
            use temp = new MagnetFixtures.Temp()
            let dir = temp.Sub "checkpoint"
            TrainingCheckpoint.save dir m o { Step = 3; DataPosition = 3L; Random = RandomState.capture (generators g); Config = """{"run":"test"}""" }
            let expected = [ for step in 3 .. 4 -> update m o g step ]
            let final = copies m.State

            // In memory: a model of other weights, other generator seeds, the global generator moved on.
            let m2, o2, g2 = fresh 12L
            use _ = m2
            use _ = o2
            use _ = g2
            torch.manual_seed 999L |> ignore
            TrainingSnapshot.restore snapshot m2.State o2 (generators g2)
            let resumed = [ for step in snapshot.Step .. 4 -> update m2 o2 g2 step ]
            Expect.sequenceEqual resumed expected "losses bit-identical"
            Expect.isEmpty (changed final m2.State) "parameters bit-identical"

            // From disk: the model folder, optimizer.bin and trainer.json.
            let progress = TrainingCheckpoint.read dir
            Expect.equal (progress.Step, progress.DataPosition) (3, 3L) "step and data position"
            Expect.stringContains progress.Config "\"run\"" "the configuration is kept"
            use m3 = TrainingCheckpoint.loadModel dir torch.CPU torch.float32
            m3.train()
            m3.SetTrainable [ AllParameters ] |> ignore
            use o3 = Optimizer.forMagnet settings m3
            use g3 = Boundaries.generator 5L torch.CPU
            torch.manual_seed 998L |> ignore
            TrainingCheckpoint.restore dir o3 (generators g3) |> ignore
            let fromDisk = [ for step in progress.Step .. 4 -> update m3 o3 g3 step ]
            Expect.sequenceEqual fromDisk expected "losses bit-identical from the checkpoint folder"
            Expect.isEmpty (changed final m3.State) "parameters bit-identical from the checkpoint folder"

            // Controls: each generator matters (so the equalities above are not vacuous).
            TrainingSnapshot.restore snapshot m2.State o2 (generators g2)
            torch.rand([| 1L |]) |> ignore
            Expect.notEqual (update m2 o2 g2 3) expected.[0] "dropout draws from the global generator"
            TrainingSnapshot.restore snapshot m2.State o2 (generators g2)
            torch.rand([| 1L |], generator = g2) |> ignore
            Expect.notEqual (update m2 o2 g2 3) expected.[0] "boundaries draw from the sampling generator"
        }
        test "a checkpoint whose optimizer does not fit is an error naming the file" {
            torch.manual_seed 1L |> ignore
            let m, o, g = fresh 11L
            use _ = m
            use _ = o
            use _ = g
            use temp = new MagnetFixtures.Temp()
            let dir = temp.Sub "checkpoint"
            TrainingCheckpoint.save dir m o { Step = 0; DataPosition = 0L; Random = RandomState.capture (generators g); Config = "{}" }
            m.SetTrainable [ Predictors ] |> ignore
            use other = Optimizer.forMagnet settings m
            let ex = raises<System.IO.InvalidDataException> (fun () -> TrainingCheckpoint.restore dir other (generators g) |> ignore)
            Expect.stringContains ex.Message TrainingCheckpoint.OptimizerFile "names the file"
            let ex = raises<System.ArgumentException> (fun () -> TrainingCheckpoint.restore dir o [ "data_shuffle", g ] |> ignore)
            Expect.stringContains ex.Message "data_shuffle" "names the generator"
        }
        test "a tiny random MagnetWhisper overfits a fixed batch: the cross-entropy falls below a quarter of its start within 20 updates" {
            torch.manual_seed 2L |> ignore
            let m = model 21L MagnetFixtures.config
            use _ = m
            m.train()
            m.SetTrainable [ AllParameters ] |> ignore
            use o = Optimizer.forMagnet (OptimizerSettings.Default 3e-3) m
            use g = Boundaries.generator 3L torch.CPU
            let fixedBatch = batch 300L MagnetFixtures.config 4
            let losses =
                [ for _ in 1 .. 20 ->
                      let r = TrainingStep.run o { MaxGradientNorm = Some 2.0 } 1.0 [ fixedBatch ] counts (fun b -> LossSums.magnet m (replayInput g b))
                      r.CrossEntropy ]
            Expect.isLessThan (List.last losses) (losses.Head / 4.0) $"cross-entropy {losses.Head} → {List.last losses}"
        }
        test "a predictor-only run changes only predictor parameters" {
            torch.manual_seed 3L |> ignore
            let m = model 31L MagnetFixtures.config
            use _ = m
            m.train()
            let trained = m.SetTrainable [ Predictors ]
            Expect.isTrue (trained |> List.forall (fun n -> n.Contains ".boundary_predictors.")) "only predictors trainable"
            use o = Optimizer.forMagnet (OptimizerSettings.Default 1e-2) m
            use g = Boundaries.generator 4L torch.CPU
            let before = copies m.State
            for i in 0 .. 2 do
                let r = TrainingStep.run o { MaxGradientNorm = Some 1.0 } 1.0 [ batch (400L + int64 i) MagnetFixtures.config 4 ] counts (fun b -> LossSums.magnet m (sampleInput g b))
                Expect.isNone r.Skipped "applied"
            let moved = changed before m.State
            Expect.isNonEmpty moved "the predictor trained"
            for n in moved do
                Expect.stringContains n ".boundary_predictors." $"{n} changed"
            Expect.sequenceEqual (List.sort moved) (List.sort trained) "every predictor parameter moved"
        }
    ]
