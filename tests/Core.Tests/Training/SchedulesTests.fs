/// The learning-rate schedule (HF's get_*_schedule_with_warmup, written out below), the progress curves and the
/// per-predictor schedules (the original's CompressionScheduler, TemperatureScheduler and BoundaryLossWeightScheduler,
/// SPEC §8.1).
module MagnetWhisper.Tests.Training.SchedulesTests

open System
open Expecto
open FsCheck
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Training
open MagnetWhisper.Tests.Training.TrainingFixtures

/// Hugging Face's lr_lambda functions (transformers/optimization.py), transcribed.
module private HuggingFace =
    let warmup (current: int) (warmupSteps: int) = float current / float (max 1 warmupSteps)

    let linear (warmupSteps: int) (total: int) (current: int) =
        if current < warmupSteps then warmup current warmupSteps
        else max 0.0 (float (total - current) / float (max 1 (total - warmupSteps)))

    let cosine (warmupSteps: int) (total: int) (current: int) =
        let numCycles = 0.5
        if current < warmupSteps then warmup current warmupSteps
        else
            let progress = float (current - warmupSteps) / float (max 1 (total - warmupSteps))
            max 0.0 (0.5 * (1.0 + Math.Cos(Math.PI * numCycles * 2.0 * progress)))

    let constant (warmupSteps: int) (current: int) =
        if current < warmupSteps then warmup current warmupSteps else 1.0

let private schedule warmup total decay = { WarmupSteps = warmup; TotalSteps = total; Decay = decay }

let private near (tol: float) (actual: float) (expected: float) (message: string) =
    Expect.floatClose { absolute = tol; relative = 0.0 } actual expected message

[<Tests>]
let tests =
    testList "training.schedules" [
        testList "learning rate" [
            test "hand-worked values: warmup 10 of 110 updates" {
                let at decay step = LearningRate.multiplier (schedule 10 110 decay) step
                // Warmup: step/10.
                near 1e-15 (at LinearDecay 0) 0.0 "step 0"
                near 1e-15 (at LinearDecay 5) 0.5 "step 5"
                near 1e-15 (at CosineDecay 5) 0.5 "cosine warmup"
                near 1e-15 (at LinearDecay 10) 1.0 "peak"
                // Linear: (110 − s)/100.
                near 1e-15 (at LinearDecay 60) 0.5 "linear halfway"
                near 1e-15 (at LinearDecay 85) 0.25 "linear 3/4"
                near 1e-15 (at LinearDecay 110) 0.0 "linear end"
                // Cosine: ½(1 + cos(π·(s − 10)/100)); at s = 35, ½(1 + √2/2).
                near 1e-15 (at CosineDecay 60) 0.5 "cosine halfway"
                near 1e-15 (at CosineDecay 35) (0.5 + Math.Sqrt 2.0 / 4.0) "cosine 1/4"
                near 1e-15 (at CosineDecay 110) 0.0 "cosine end"
                near 1e-15 (at ConstantAfterWarmup 100) 1.0 "constant"
                // Past the end the multiplier stays at its end value (HF's cosine would rise again).
                near 1e-15 (at CosineDecay 300) 0.0 "cosine after the end"
                near 1e-15 (at LinearDecay 300) 0.0 "linear after the end"
            }
            testProperty "equals Hugging Face's lambdas at every step of a run" (fun (w: NonNegativeInt) (extra: PositiveInt) (s: NonNegativeInt) ->
                let warmup = w.Get % 50
                let total = warmup + extra.Get % 500
                let step = s.Get % (total + 1)
                let m decay = LearningRate.multiplier (schedule warmup total decay) step
                abs (m LinearDecay - HuggingFace.linear warmup total step) < 1e-12
                && abs (m CosineDecay - HuggingFace.cosine warmup total step) < 1e-12
                && abs (m ConstantAfterWarmup - HuggingFace.constant warmup step) < 1e-12)
            test "a warmup ratio rounds up as HF's get_warmup_steps (ceil)" {
                Expect.equal (LearningRateSchedule.WithWarmupRatio(1000, 0.1, LinearDecay)).WarmupSteps 100 "0.1 of 1000"
                Expect.equal (LearningRateSchedule.WithWarmupRatio(15, 0.1, LinearDecay)).WarmupSteps 2 "⌈1.5⌉"
                Expect.equal (LearningRateSchedule.WithWarmupRatio(15, 0.0, LinearDecay)).WarmupSteps 0 "none"
            }
            test "bad schedules are errors that name the field" {
                let ex = raises<ArgumentException> (fun () -> LearningRate.multiplier (schedule 20 10 LinearDecay) 0 |> ignore)
                Expect.stringContains ex.Message "WarmupSteps" "names the field"
                let ex = raises<ArgumentException> (fun () -> LearningRate.multiplier (schedule 0 0 LinearDecay) 0 |> ignore)
                Expect.stringContains ex.Message "TotalSteps" "names the field"
            }
        ]
        testList "curves" [
            test "hand-worked values of each shape" {
                near 1e-15 (Curve.at (Constant 0.7) 0.3) 0.7 "constant"
                // The original's TemperatureScheduler(1, 0): τ = 1 − progress.
                near 1e-15 (Curve.at (Linear(1.0, 0.0)) 0.25) 0.75 "linear"
                near 1e-15 (Curve.at (Linear(0.2, 1.0)) 0.5) 0.6 "linear up"
                // start + (end − start)(1 − cos πp)/2: at p = ¼, (1 − √2/2)/2 of the way.
                near 1e-15 (Curve.at (Cosine(0.0, 1.0)) 0.25) ((1.0 - Math.Sqrt 2.0 / 2.0) / 2.0) "cosine ¼"
                near 1e-15 (Curve.at (Cosine(2.0, 1.0)) 0.5) 1.5 "cosine ½"
                near 1e-15 (Curve.at (Cosine(2.0, 1.0)) 1.0) 1.0 "cosine end"
                let stepped = Stepped(0.0, [ 0.25, 0.5; 0.75, 1.0 ])
                near 0.0 (Curve.at stepped 0.2) 0.0 "before the first step"
                near 0.0 (Curve.at stepped 0.25) 0.5 "a step holds from its progress on"
                near 0.0 (Curve.at stepped 0.74) 0.5 "between"
                near 0.0 (Curve.at stepped 1.0) 1.0 "last"
                near 0.0 (Curve.at (Linear(1.0, 0.0)) 3.0) 0.0 "progress clamps to 1"
            }
            test "progress is min(1, step / max_steps) as the original's callbacks compute it" {
                near 0.0 (Curve.progress 0 400) 0.0 "start"
                near 0.0 (Curve.progress 100 400) 0.25 "quarter"
                near 0.0 (Curve.progress 500 400) 1.0 "clamped"
            }
            test "unsorted steps and non-finite values are errors" {
                raises<ArgumentException> (fun () -> Curve.validate "c" (Stepped(0.0, [ 0.5, 1.0; 0.25, 0.5 ])) |> ignore) |> ignore
                raises<ArgumentException> (fun () -> Curve.validate "c" (Linear(nan, 1.0)) |> ignore) |> ignore
                raises<ArgumentException> (fun () -> Curve.validate "c" (Stepped(0.0, [ 1.5, 1.0 ])) |> ignore) |> ignore
            }
        ]
        testList "per-predictor schedules" [
            test "whisper.py's curves: compression 1, τ = 1 − progress, weight 0, ρ = 1; the prior schedule follows compression" {
                let s = PredictorCurves.at 3 PredictorCurves.WhisperPy 0.4
                near 1e-15 s.Temperature 0.6 "τ = 1 − 0.4"
                near 0.0 s.CompressionSchedule 1.0 "compression"
                near 0.0 s.PriorSchedule 1.0 "prior = compression"
                near 0.0 s.BoundaryLossWeight 0.0 "weight"
                near 0.0 s.TargetProgress 1.0 "ρ"
            }
            test "each predictor follows its own curves; the prior schedule defaults to the compression curve" {
                let bp1 = { PredictorCurves.Constant Schedule.Default with CompressionSchedule = Linear(0.0, 1.0); PriorSchedule = None }
                let bp3 = { PredictorCurves.Constant Schedule.Default with BoundaryLossWeight = Stepped(0.0, [ 0.5, 2.0 ]); PriorSchedule = Some(Cosine(0.0, 1.0)) }
                let map = PredictorCurves.schedules (Map [ 1, bp1; 2, bp3 ]) 0.5
                Expect.sequenceEqual (Map.keys map) [ 1; 2 ] "one entry per predictor with curves"
                near 1e-15 map.[1].CompressionSchedule 0.5 "BP1's compression at ½"
                near 1e-15 map.[1].PriorSchedule 0.5 "BP1's prior follows its compression"
                near 0.0 map.[1].BoundaryLossWeight 0.0 "BP1's weight"
                near 0.0 map.[2].CompressionSchedule 1.0 "BP3's compression constant"
                near 1e-15 map.[2].PriorSchedule 0.5 "BP3's cosine prior at ½: (1 − cos π/2)/2"
                near 0.0 map.[2].BoundaryLossWeight 2.0 "BP3's stepped weight"
            }
            test "a temperature reaching 0 while training and out-of-range schedules are errors naming the layer" {
                let ex = raises<ArgumentException> (fun () -> PredictorCurves.at 4 PredictorCurves.WhisperPy 1.0 |> ignore)
                Expect.stringContains ex.Message "layer 4" "names the layer"
                let bad = { PredictorCurves.WhisperPy with TargetProgress = Linear(0.0, 1.5) }
                let ex = raises<ArgumentException> (fun () -> PredictorCurves.validate 2 bad |> ignore)
                Expect.stringContains ex.Message "target-progress" "names the curve"
                Expect.stringContains ex.Message "layer 2" "names the layer"
                Expect.equal (PredictorCurves.validate 2 PredictorCurves.WhisperPy) PredictorCurves.WhisperPy "whisper.py's curves are valid"
            }
        ]
    ]
