namespace MagnetWhisper.Core.Training

// Per-predictor training schedules (DECISIONS #3): every value of a predictor's `Schedule` follows its own curve of
// training progress, and `PredictorCurves.schedules` gives the `ForwardInput.Schedules` map of one step.

open MagnetWhisper.Core.Magnet

/// The curves of one predictor's `Schedule` values.
type PredictorCurves =
    { /// The encoder's target-progress lerp ρ ∈ [0, 1] (SPEC §6.4; whisper.py: the constant 1).
      TargetProgress: Curve
      /// BP1/BP4's compression schedule s ∈ [0, 1] (SPEC §4.2 step 6; whisper.py's CompressionScheduler: the constant 1).
      CompressionSchedule: Curve
      /// The prior schedule s ∈ [0, 1] of the prior-scheduled losses; None = the compression curve, as in the
      /// original, where `get_scheduled_prior` reads the same `compression_schedule` value.
      PriorSchedule: Curve option
      /// Gumbel-sigmoid temperature τ > 0 (whisper.py's TemperatureScheduler: 1 → 0 linearly).
      Temperature: Curve
      /// BP3's prior-loss weight without targets (the original's BoundaryLossWeightScheduler, never registered: 0).
      BoundaryLossWeight: Curve }

    /// Constant curves holding a schedule's values.
    static member Constant(schedule: Schedule) : PredictorCurves =
        { TargetProgress = Constant schedule.TargetProgress
          CompressionSchedule = Constant schedule.CompressionSchedule
          PriorSchedule = Some(Constant schedule.PriorSchedule)
          Temperature = Constant schedule.Temperature
          BoundaryLossWeight = Constant schedule.BoundaryLossWeight }

    /// What whisper.py ran (SPEC §8.1): target progress 1, compression (and prior) schedule the constant 1, the
    /// temperature 1 → 0 linearly, boundary-loss weight 0.
    static member WhisperPy: PredictorCurves =
        { PredictorCurves.Constant Schedule.Default with
            PriorSchedule = None
            Temperature = Linear(1.0, 0.0) }

/// Schedules of every predictor at a point of training.
[<RequireQualifiedAccess>]
module PredictorCurves =
    let private unit (layer: int) (name: string) (curve: Curve) =
        let c = Curve.validate $"the {name} curve of the predictor before layer {layer}" curve
        let lo, hi = Curve.range c
        if lo < 0.0 || hi > 1.0 then
            invalidArg "curves" $"the {name} curve of the predictor before layer {layer} must stay in [0, 1], but ranges over [{lo}, {hi}]"

    /// Fails unless every curve is well formed and in range: ρ and the schedules in [0, 1], the temperature ≥ 0
    /// (it may reach 0 only at progress 1, which `Curve.progress` gives after the last update), the weight ≥ 0.
    let validate (layer: int) (curves: PredictorCurves) : PredictorCurves =
        unit layer "target-progress" curves.TargetProgress
        unit layer "compression-schedule" curves.CompressionSchedule
        curves.PriorSchedule |> Option.iter (unit layer "prior-schedule")
        let nonNegative (n: string) (curve: Curve) =
            let name = $"the {n} curve of the predictor before layer {layer}"
            let lo = Curve.minimum (Curve.validate name curve)
            if lo < 0.0 then invalidArg "curves" $"{name} must stay non-negative, but reaches {lo}"
        nonNegative "temperature" curves.Temperature
        nonNegative "boundary-loss-weight" curves.BoundaryLossWeight
        curves

    /// One predictor's schedule at progress p. Raises when the temperature is not positive there, naming the layer.
    let at (layer: int) (curves: PredictorCurves) (p: float) : Schedule =
        let compression = Curve.at curves.CompressionSchedule p
        let temperature = Curve.at curves.Temperature p
        if not (temperature > 0.0) then
            invalidArg "p" $"the temperature curve of the predictor before layer {layer} gives τ = {temperature} at progress {p}; it must be positive while training"
        { Temperature = temperature
          CompressionSchedule = compression
          PriorSchedule = curves.PriorSchedule |> Option.map (fun c -> Curve.at c p) |> Option.defaultValue compression
          BoundaryLossWeight = Curve.at curves.BoundaryLossWeight p
          TargetProgress = Curve.at curves.TargetProgress p }

    /// The `ForwardInput.Schedules` map at progress p: each predictor layer with curves gets its schedule; layers
    /// without an entry keep their `Schedule.OfConfig`.
    let schedules (curves: Map<int, PredictorCurves>) (p: float) : Map<int, Schedule> =
        curves |> Map.map (fun layer c -> at layer c p)
