namespace MagnetWhisper.Core.Training

// The learning-rate schedule as a pure function of the update number (Hugging Face's get_*_schedule_with_warmup), so
// a resumed run needs the step only, no scheduler state (issue 9 §2).

open System

/// What the learning rate does after the warmup.
type LearningRateDecay =
    /// Linear from the peak to 0 at the last update (HF `get_linear_schedule_with_warmup`, whisper.py's default).
    | LinearDecay
    /// Half a cosine from the peak to 0 at the last update (HF `get_cosine_schedule_with_warmup`, 0.5 cycles).
    | CosineDecay
    /// The peak until the end (HF `get_constant_schedule_with_warmup`).
    | ConstantAfterWarmup

/// A warmup-then-decay schedule over a fixed number of updates.
type LearningRateSchedule =
    { /// Updates of linear warmup from 0 to the peak (0 = none).
      WarmupSteps: int
      /// Optimizer updates of the whole run (> 0).
      TotalSteps: int
      /// The shape after the warmup.
      Decay: LearningRateDecay }

    /// A schedule whose warmup is a fraction of the run, rounded up as HF's `get_warmup_steps` does
    /// (whisper.py: warmup ratio 0.1, linear decay).
    static member WithWarmupRatio(totalSteps: int, warmupRatio: float, decay: LearningRateDecay) : LearningRateSchedule =
        if not (warmupRatio >= 0.0 && warmupRatio <= 1.0) then
            invalidArg "warmupRatio" $"the warmup ratio must be in [0, 1], but is {warmupRatio}"
        { WarmupSteps = int (Math.Ceiling(float totalSteps * warmupRatio)); TotalSteps = totalSteps; Decay = decay }

/// Learning-rate multipliers (peak = 1).
[<RequireQualifiedAccess>]
module LearningRate =
    /// Fails unless the schedule is usable: TotalSteps > 0 and 0 ≤ WarmupSteps ≤ TotalSteps.
    let validate (schedule: LearningRateSchedule) : LearningRateSchedule =
        if schedule.TotalSteps <= 0 then
            invalidArg "schedule" $"TotalSteps must be positive, but is {schedule.TotalSteps}"
        if schedule.WarmupSteps < 0 || schedule.WarmupSteps > schedule.TotalSteps then
            invalidArg "schedule" $"WarmupSteps must be in [0, TotalSteps = {schedule.TotalSteps}], but is {schedule.WarmupSteps}"
        schedule

    /// The multiplier of the peak learning rate for update number `step` (0-based: the number of updates already
    /// applied), as HF's LambdaLR gives it: step/warmup during the warmup, then the decay over the remaining updates,
    /// never below 0. Steps past TotalSteps keep the end value.
    let multiplier (schedule: LearningRateSchedule) (step: int) : float =
        let s = validate schedule
        if step < 0 then invalidArg "step" $"the step must be non-negative, but is {step}"
        if step < s.WarmupSteps then float step / float (max 1 s.WarmupSteps)
        else
            let remaining = float (max 1 (s.TotalSteps - s.WarmupSteps))
            let progress = min 1.0 (float (step - s.WarmupSteps) / remaining)
            match s.Decay with
            | ConstantAfterWarmup -> 1.0
            | LinearDecay -> max 0.0 (float (s.TotalSteps - step) / remaining)
            | CosineDecay -> max 0.0 (0.5 * (1.0 + Math.Cos(Math.PI * progress)))
