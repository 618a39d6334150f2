namespace MagnetWhisper.Core.Training

// Updates skipped for a NaN or infinite loss or gradient (issue 9 §3): each is counted; a streak longer than the
// configured tolerance stops the run without a checkpoint of that state, so the newest checkpoint stays the last
// good one.

open System

/// Raised when a run stops after too many non-finite updates in a row.
type NonFiniteTrainingException(message: string, step: int, lastCheckpoint: string option) =
    inherit InvalidOperationException(message)
    /// The step at which the run stopped.
    member _.Step = step
    /// The newest checkpoint (the last good state), if any was written.
    member _.LastCheckpoint = lastCheckpoint

/// Counting skipped updates in a row.
[<RequireQualifiedAccess>]
module NonFiniteStreak =
    /// The streak after an update: one longer when it was skipped, 0 when it was applied.
    let next (streak: int) (skipped: SkipReason option) : int =
        match skipped with
        | Some _ -> streak + 1
        | None -> 0

    /// True when a streak exceeds the tolerance (`max_nonfinite_steps`).
    let exceeds (tolerance: int) (streak: int) : bool = streak > tolerance

    /// The message of a stopped run.
    let message (step: int) (streak: int) (tolerance: int) (reason: SkipReason) (lastCheckpoint: string option) : string =
        let why =
            match reason with
            | NonFiniteLoss -> "the loss was NaN or infinite"
            | NonFiniteGradient -> "the gradient was NaN or infinite"
        let kept =
            match lastCheckpoint with
            | Some c ->
                let model = System.IO.Path.Combine(c, "model")
                $"the newest checkpoint, {c}, holds the last good state. Lower 'lr' or 'predictor_lr' (or set 'max_grad_norm') and start a new run, e.g. from {model}"
            | None -> "no checkpoint was written before (the starting model is unchanged). Lower 'lr' or 'predictor_lr' (or set 'max_grad_norm') and start again"
        $"training stopped at step {step}: {streak} updates in a row were skipped ({why} at the last; key 'max_nonfinite_steps' tolerates {tolerance}); {kept} (docs/TRAINING.md#non-finite-steps)"
