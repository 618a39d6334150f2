/// Boundary accuracy against true phone boundaries (issue 11 §4.3): precision, recall and F1 of predicted boundary
/// times against reference times within a tolerance, and the F1 that random boundaries at the same rate reach.
///
/// Matching is one-to-one: each reference boundary is matched by at most one prediction and each prediction matches
/// at most one reference, |predicted − reference| ≤ tolerance. The count is the maximum such matching. It is found
/// greedily: references in increasing time, each takes the earliest unmatched prediction inside its window. Because
/// every window has the same width, windows are ordered alike by start and by end, and taking the earliest usable
/// prediction never blocks a later reference that a different choice would have served, so the greedy count is the
/// maximum (the tests check it against an exhaustive augmenting-path matching). A maximum matching, rather than
/// e.g. "nearest prediction per reference", never counts one prediction twice and never undercounts.
///
/// Random baseline: the same number of boundaries as predicted, drawn uniformly without replacement from the same
/// candidate times (the ends of the predictor's valid positions, where it could have put a boundary), matched the same
/// way. Its matched count is the mean over `RandomDraws` seeded draws (seeded per utterance and predictor, so a run
/// is deterministic and does not depend on batching).
[<RequireQualifiedAccess>]
module MagnetWhisper.Core.Evaluation.BoundaryAccuracy

open System
open MagnetWhisper.Core.Data

/// ±20 ms, the usual tolerance of phone segmentation scoring.
[<Literal>]
let DefaultTolerance = 0.020

/// Draws averaged for the random baseline of one utterance and predictor.
[<Literal>]
let RandomDraws = 32

// Times are in seconds computed from frame counts; a boundary exactly at the tolerance must count whatever the
// rounding of the subtraction.
let private slack = 1e-9

/// The size of a maximum one-to-one matching of predicted to reference times with |p − r| ≤ tolerance.
let matches (tolerance: float) (predicted: float[]) (reference: float[]) : int =
    if not (tolerance >= 0.0) then invalidArg (nameof tolerance) $"the tolerance must be at least 0 seconds, got {tolerance}"
    let p = Array.sort predicted
    let r = Array.sort reference
    let mutable j = 0
    let mutable matched = 0
    for t in r do
        // Predictions before this window are before every later window too: never usable again.
        while j < p.Length && p.[j] < t - tolerance - slack do
            j <- j + 1
        if j < p.Length && p.[j] <= t + tolerance + slack then
            matched <- matched + 1
            j <- j + 1
    matched

/// Counts of one utterance (or summed over many) for one predictor.
type BoundaryCounts =
    { /// Predicted boundaries.
      Predicted: int
      /// Reference boundaries.
      Reference: int
      /// Predictions matched one-to-one to references.
      Matched: int
      /// Expected matches of random boundaries at the same rate (mean over seeded draws).
      RandomMatched: float }

    /// Nothing counted.
    static member Zero = { Predicted = 0; Reference = 0; Matched = 0; RandomMatched = 0.0 }

    /// Sums counts (corpus figures are micro-averages: sums of counts, then rates).
    static member (+)(a: BoundaryCounts, b: BoundaryCounts) =
        { Predicted = a.Predicted + b.Predicted
          Reference = a.Reference + b.Reference
          Matched = a.Matched + b.Matched
          RandomMatched = a.RandomMatched + b.RandomMatched }

    /// Matched / predicted (0 without predictions).
    member c.Precision = if c.Predicted > 0 then float c.Matched / float c.Predicted else 0.0

    /// Matched / references (0 without references).
    member c.Recall = if c.Reference > 0 then float c.Matched / float c.Reference else 0.0

    /// Harmonic mean of precision and recall, 2·matched / (predicted + references); 0 when both are empty.
    member c.F1 =
        let n = c.Predicted + c.Reference
        if n > 0 then 2.0 * float c.Matched / float n else 0.0

    /// The F1 of the random boundaries: 2·expected matches / (predicted + references) (the counts are fixed).
    member c.RandomF1 =
        let n = c.Predicted + c.Reference
        if n > 0 then 2.0 * c.RandomMatched / float n else 0.0

/// The mean matched count of `count` boundaries drawn uniformly without replacement from `candidates`, over `draws`
/// draws of a Random seeded with `seed`.
let randomMatches (seed: int) (draws: int) (tolerance: float) (candidates: float[]) (count: int) (reference: float[]) : float =
    if draws < 1 then invalidArg (nameof draws) $"at least one draw is needed, got {draws}"
    if count < 0 || count > candidates.Length then
        invalidArg (nameof count) $"cannot draw {count} boundaries from {candidates.Length} candidate times"
    if count = 0 || reference.Length = 0 then 0.0
    else
        let random = Random seed
        let pool = Array.copy candidates
        let mutable total = 0
        for _ in 1 .. draws do
            // Partial Fisher–Yates: the first `count` entries become a uniform sample without replacement.
            for i in 0 .. count - 1 do
                let k = random.Next(i, pool.Length)
                let swap = pool.[i]
                pool.[i] <- pool.[k]
                pool.[k] <- swap
            total <- total + matches tolerance pool.[0 .. count - 1] reference
        float total / float draws

/// The reference boundaries of an alignment inside [0, duration): every phone's end except the last phone's (the end
/// of the utterance is no boundary to find) and except ends at or after the audio the encoder saw.
let referenceBoundaries (phones: PhoneAlignment.Phone list) (duration: float) : float[] =
    match List.rev phones with
    | [] -> [||]
    | _ :: earlier -> earlier |> List.rev |> List.map _.End |> List.filter (fun t -> t > 0.0 && t < duration) |> Array.ofList

/// Where one predictor could put boundaries in one utterance and where it did, in seconds.
type PredictorBoundaries =
    { /// The encoder layer the predictor runs before.
      Layer: int
      /// The end time of every valid input position but the last (whose boundary is forced, so not a prediction).
      Candidates: float[]
      /// The end times of the positions it marked as boundaries, the forced last one excluded.
      Predicted: float[] }

/// One predictor's boundaries from the end times of its valid positions and its boundary flags (one each).
let predictorBoundaries (layer: int) (ends: float[]) (boundaries: bool[]) : PredictorBoundaries =
    if ends.Length <> boundaries.Length then
        invalidArg (nameof boundaries) $"there are {ends.Length} position end times but {boundaries.Length} boundary flags"
    let n = max 0 (ends.Length - 1)
    { Layer = layer
      Candidates = ends.[0 .. n - 1]
      Predicted = [| for i in 0 .. n - 1 do if boundaries.[i] then yield ends.[i] |] }

/// A stable 32-bit seed from an utterance id and a layer (FNV-1a; string hash codes differ between processes).
let seedOf (id: string) (layer: int) : int =
    let mutable h = 2166136261u
    for c in id + "#" + string layer do
        h <- (h ^^^ uint32 c) * 16777619u
    int h

/// The counts of one utterance and predictor against the reference boundaries.
let score (tolerance: float) (seed: int) (reference: float[]) (p: PredictorBoundaries) : BoundaryCounts =
    { Predicted = p.Predicted.Length
      Reference = reference.Length
      Matched = matches tolerance p.Predicted reference
      RandomMatched = randomMatches seed RandomDraws tolerance p.Candidates p.Predicted.Length reference }

/// One predictor's counts over one utterance or a corpus.
type LayerBoundaryCounts =
    { /// The encoder layer the predictor runs before.
      Layer: int
      /// Utterances counted (those with a phone alignment).
      Utterances: int
      Counts: BoundaryCounts }

/// Sums each predictor's counts over utterances (rows: one array per utterance), in layer order.
let summarize (rows: LayerBoundaryCounts[][]) : LayerBoundaryCounts list =
    rows
    |> Array.concat
    |> Array.groupBy _.Layer
    |> Array.sortBy fst
    |> Array.map (fun (layer, entries) ->
        { Layer = layer
          Utterances = entries |> Array.sumBy _.Utterances
          Counts = entries |> Array.fold (fun total e -> total + e.Counts) BoundaryCounts.Zero })
    |> List.ofArray
