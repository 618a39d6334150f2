namespace MagnetWhisper.Core.Training

// A value as a function of training progress ∈ [0, 1]: the shape of the original's CompressionScheduler,
// TemperatureScheduler and BoundaryLossWeightScheduler (SPEC §8.1), which set one value per step from
// progress = min(1, step / max_steps).

open System

/// How a scheduled value moves with training progress p ∈ [0, 1].
type Curve =
    /// The same value throughout (whisper.py's compression schedule: the constant 1).
    | Constant of value: float
    /// start + (end − start)·p (the original's schedulers: start → end linearly; the temperature 1 → 0).
    | Linear of start: float * finish: float
    /// start + (end − start)·(1 − cos πp)/2: flat at both ends, fastest at p = ½.
    | Cosine of start: float * finish: float
    /// initial until the first step's progress, then each step's value from its progress on (steps sorted by
    /// progress; a value holds from its progress inclusive).
    | Stepped of initial: float * steps: (float * float) list

/// Evaluation of curves.
[<RequireQualifiedAccess>]
module Curve =
    /// Training progress of update `step` out of `totalSteps`: min(1, step / totalSteps), as the original's
    /// callbacks computed it at the beginning of each step.
    let progress (step: int) (totalSteps: int) : float =
        if totalSteps <= 0 then invalidArg "totalSteps" $"the total number of steps must be positive, but is {totalSteps}"
        if step < 0 then invalidArg "step" $"the step must be non-negative, but is {step}"
        min 1.0 (float step / float totalSteps)

    /// Fails unless the curve is well formed: finite values, Stepped progresses in [0, 1] and non-decreasing.
    let validate (name: string) (curve: Curve) : Curve =
        let finite (v: float) = if not (Double.IsFinite v) then invalidArg name $"{name}: every value of the curve must be finite, but one is {v}"
        match curve with
        | Constant v -> finite v
        | Linear(a, b)
        | Cosine(a, b) ->
            finite a
            finite b
        | Stepped(initial, steps) ->
            finite initial
            for at, v in steps do
                finite v
                if not (at >= 0.0 && at <= 1.0) then
                    invalidArg name $"{name}: a step's progress must be in [0, 1], but one is {at}"
            if steps |> List.pairwise |> List.exists (fun ((a, _), (b, _)) -> b < a) then
                invalidArg name $"{name}: the steps must be sorted by progress, but are {steps}"
        curve

    /// The curve's value at progress p (clamped to [0, 1]).
    let at (curve: Curve) (p: float) : float =
        let p = if Double.IsNaN p then invalidArg "p" "the progress is NaN" else Math.Clamp(p, 0.0, 1.0)
        match curve with
        | Constant v -> v
        | Linear(a, b) -> a + (b - a) * p
        | Cosine(a, b) -> a + (b - a) * (1.0 - Math.Cos(Math.PI * p)) / 2.0
        | Stepped(initial, steps) ->
            steps |> List.fold (fun value (from, v) -> if p >= from then v else value) initial

    /// The smallest and the largest value the curve takes on [0, 1] (Linear and Cosine are monotone: their ends).
    let range (curve: Curve) : float * float =
        match curve with
        | Constant v -> v, v
        | Linear(a, b)
        | Cosine(a, b) -> min a b, max a b
        | Stepped(initial, steps) -> steps |> List.fold (fun (lo, hi) (_, v) -> min lo v, max hi v) (initial, initial)

    /// The smallest value the curve takes on [0, 1].
    let minimum (curve: Curve) : float = fst (range curve)
