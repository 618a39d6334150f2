namespace MagnetWhisper.Core.Demo

// The figures `magnet demo` reports from an evaluation's per-utterance counts (issue 11 §4.3): the encoder
// compression (positions entering the encoder over positions leaving the last predictor, summed over utterances), the
// theoretical FLOP reduction of running the layers after the predictor on the shorter sequence, and the measured
// speed-up. Pure functions.

open System
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Evaluation

/// What one utterance's encoder did: valid positions in, positions after the last predictor.
type EncoderLengths =
    { /// Valid encoder positions (after the convolution stem) = positions the first predictor saw.
      FramesIn: int
      /// Positions after the last predictor (its boundaries); FramesIn without predictors.
      FramesOut: int }

/// Arithmetic of the demo's summary.
[<RequireQualifiedAccess>]
module DemoArithmetic =
    /// The encoder lengths of one evaluated utterance (MagnetWhisper with predictors; None for stock Whisper).
    let lengthsOf (counts: PredictorCount[]) : EncoderLengths option =
        if counts.Length = 0 then None
        else
            let ordered = counts |> Array.sortBy _.Layer
            Some { FramesIn = ordered.[0].Positions; FramesOut = (Array.last ordered).Boundaries }

    /// Σ frames in / Σ frames out over utterances (the corpus compression); NaN without utterances, +∞ when nothing
    /// was kept.
    let compression (lengths: EncoderLengths seq) : float =
        let lengths = Seq.toArray lengths
        if lengths.Length = 0 then nan
        else
            let framesIn = lengths |> Array.sumBy (fun l -> int64 l.FramesIn)
            let framesOut = lengths |> Array.sumBy (fun l -> int64 l.FramesOut)
            if framesOut = 0L then Double.PositiveInfinity else float framesIn / float framesOut

    /// Matrix-product FLOPs of one utterance's encoder forward with T = FramesIn valid positions (2T mel frames),
    /// encoder layers before `layer` on T positions and the rest on FramesOut: conv1 2·2T·D·M·3 + conv2 2·T·D·D·3 +
    /// Σ per layer 8·t·D² + 4·t²·D + 4·t·D·F (MagnetEncoderFlops.layer). With FramesOut = FramesIn: the encoder
    /// without predictors. The predictor itself is not counted.
    let encoderFlops (config: WhisperConfig) (layer: int) (l: EncoderLengths) : float =
        let t = float l.FramesIn
        let d, m = float config.DModel, float config.NumMelBins
        let conv = 2.0 * (2.0 * t) * d * m * 3.0 + 2.0 * t * d * d * 3.0
        let layers =
            [ for i in 0 .. config.EncoderLayers - 1 -> MagnetEncoderFlops.layer config (if i < layer then t else float l.FramesOut) ]
        conv + List.sum layers

    /// Σ FLOPs without predictors / Σ FLOPs with the predictor before `layer`, over utterances; NaN without any.
    let flopReduction (config: WhisperConfig) (layer: int) (lengths: EncoderLengths seq) : float =
        let lengths = Seq.toArray lengths
        if lengths.Length = 0 then nan
        else
            let full = lengths |> Array.sumBy (fun l -> encoderFlops config layer { l with FramesOut = l.FramesIn })
            let reduced = lengths |> Array.sumBy (encoderFlops config layer)
            full / reduced

    /// Baseline encoder seconds / MagnetWhisper encoder seconds (NaN unless both are positive).
    let speedup (baselineSeconds: float) (magnetSeconds: float) : float =
        if baselineSeconds > 0.0 && magnetSeconds > 0.0 then baselineSeconds / magnetSeconds else nan

    /// The stepped compression-schedule curve that rises from 0 (every position kept: compression 1) to 1 (the
    /// target) in `stairs` equal steps reaching 1 at progress `rampEnd`, then stays at 1: [(rampEnd·k/stairs, k/stairs)].
    let rampSteps (rampEnd: float) (stairs: int) : (float * float) list =
        if not (rampEnd > 0.0 && rampEnd <= 1.0) then invalidArg (nameof rampEnd) $"the ramp must end at a progress in (0, 1], got {rampEnd}"
        if stairs < 1 then invalidArg (nameof stairs) $"the ramp needs at least one step, got {stairs}"
        [ for k in 1 .. stairs -> rampEnd * float k / float stairs, float k / float stairs ]

    /// The inference threshold that keeps as many positions as the targets ask for: a predictor trains on sampled boundaries
    /// (Bernoulli(p) per position), so its expected count is Σ p, while inference keeps the positions with p above
    /// the threshold; before the probabilities are near 0 or 1 the two counts differ widely. Over the calibration
    /// utterances' valid-position probabilities, the threshold halfway between the K-th and the (K+1)-th largest,
    /// K = Σ targets (so exactly K positions lie above it when those two differ); 1 when K is 0, 0 when K is at least
    /// the number of positions.
    let calibratedThreshold (probabilities: float[] seq) (targets: int seq) : float =
        let all = probabilities |> Seq.concat |> Seq.sortDescending |> Array.ofSeq
        let k = targets |> Seq.sumBy (max 0)
        if k <= 0 then 1.0
        elif k >= all.Length then 0.0
        else (all.[k - 1] + all.[k]) / 2.0
