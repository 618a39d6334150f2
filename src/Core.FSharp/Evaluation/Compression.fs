namespace MagnetWhisper.Core.Evaluation

open System

/// What one boundary predictor did to one utterance.
type PredictorCount =
    { /// The encoder layer the predictor runs before.
      Layer: int
      /// Boundaries it placed (its forced last boundary included) = positions it kept.
      Boundaries: int
      /// Valid input positions it saw.
      Positions: int }

/// One predictor's compression over a corpus.
type PredictorCompression =
    { /// The encoder layer the predictor runs before.
      Layer: int
      /// Σ boundaries / Σ valid input positions (the original's kept fraction), 0 when no position was valid.
      KeptFraction: float
      /// 1 / KeptFraction: input positions per kept position (+∞ when nothing was kept).
      Ratio: float
      /// Σ boundaries.
      Boundaries: int64
      /// Σ valid input positions.
      Positions: int64
      /// Mean boundaries per utterance.
      MeanBoundaries: float
      /// Population standard deviation of the boundaries per utterance.
      StdBoundaries: float
      /// Fewest boundaries of an utterance.
      MinBoundaries: int
      /// Most boundaries of an utterance.
      MaxBoundaries: int }

/// Aggregation of per-utterance predictor counts (pure).
[<RequireQualifiedAccess>]
module Compression =
    /// Per predictor layer (in layer order), the compression over the utterances' counts. Utterances without a
    /// count for a layer (stock Whisper) add nothing; no counts at all give an empty list.
    let summarize (utterances: PredictorCount[] seq) : PredictorCompression list =
        utterances
        |> Seq.concat
        |> Seq.groupBy _.Layer
        |> Seq.sortBy fst
        |> Seq.map (fun (layer, counts) ->
            let counts = Seq.toArray counts
            let boundaries = counts |> Array.sumBy (fun c -> int64 c.Boundaries)
            let positions = counts |> Array.sumBy (fun c -> int64 c.Positions)
            let kept = if positions > 0L then float boundaries / float positions else 0.0
            let perUtterance = counts |> Array.map (fun c -> float c.Boundaries)
            let mean = Array.average perUtterance
            let variance = perUtterance |> Array.averageBy (fun b -> (b - mean) * (b - mean))
            { Layer = layer
              KeptFraction = kept
              Ratio = (if kept > 0.0 then 1.0 / kept else Double.PositiveInfinity)
              Boundaries = boundaries
              Positions = positions
              MeanBoundaries = mean
              StdBoundaries = sqrt variance
              MinBoundaries = counts |> Array.map _.Boundaries |> Array.min
              MaxBoundaries = counts |> Array.map _.Boundaries |> Array.max })
        |> List.ofSeq

    /// One utterance's overall compression: valid positions entering the first predictor per position leaving the
    /// last one; 1 without predictors.
    let overall (counts: PredictorCount[]) : float =
        if counts.Length = 0 then 1.0
        else
            let ordered = counts |> Array.sortBy _.Layer
            let last = (Array.last ordered).Boundaries
            if last > 0 then float ordered.[0].Positions / float last else Double.PositiveInfinity
