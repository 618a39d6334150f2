/// Small descriptive statistics over samples of measurements (benchmark times, evaluation figures).
module MagnetWhisper.Core.Statistics

/// The median of a non-empty sample (the mean of the two middle values for an even count).
let median (xs: float seq) : float =
    let s = Seq.sort xs |> Array.ofSeq
    let n = s.Length
    if n = 0 then invalidArg (nameof xs) "the median of an empty sample is undefined"
    if n % 2 = 1 then s.[n / 2] else (s.[n / 2 - 1] + s.[n / 2]) / 2.0
