namespace MagnetWhisper.Core.Text

open System
open System.Globalization

/// One step of a minimal alignment of a hypothesis to a reference.
type EditOperation =
    /// The reference unit was recognised correctly.
    | Hit
    /// The reference unit was recognised as another unit.
    | Substitution
    /// The reference unit is missing from the hypothesis.
    | Deletion
    /// The hypothesis has a unit the reference lacks.
    | Insertion

/// An aligned pair: the indices of the reference and hypothesis units (−1 where the side has none).
type AlignmentStep =
    { /// What happened to the units.
      Operation: EditOperation
      /// Index of the reference unit, −1 for an insertion.
      ReferenceIndex: int
      /// Index of the hypothesis unit, −1 for a deletion.
      HypothesisIndex: int }

/// Error counts of a minimal alignment and the error rate (S + D + I) / N, for words (WER) or characters (CER).
type ErrorRate =
    { /// Reference units recognised correctly.
      Hits: int
      /// Reference units replaced by another unit.
      Substitutions: int
      /// Reference units missing from the hypothesis.
      Deletions: int
      /// Hypothesis units the reference lacks.
      Insertions: int
      /// N, the number of reference units (hits + substitutions + deletions).
      ReferenceLength: int
      /// (S + D + I) / N; 0 when both sides are empty and +∞ when only the reference is.
      Rate: float }

    /// S + D + I.
    member this.Errors = this.Substitutions + this.Deletions + this.Insertions

/// Word and character error rates by Levenshtein alignment with backtrace, as jiwer computes them
/// (corpus rates sum the counts of every utterance before dividing, they do not average rates).
[<RequireQualifiedAccess>]
module Wer =
    /// The rate of given counts.
    let ofCounts (hits: int) (substitutions: int) (deletions: int) (insertions: int) : ErrorRate =
        let n = hits + substitutions + deletions
        let errors = substitutions + deletions + insertions
        { Hits = hits
          Substitutions = substitutions
          Deletions = deletions
          Insertions = insertions
          ReferenceLength = n
          Rate =
            if n > 0 then float errors / float n
            elif errors = 0 then 0.0
            else Double.PositiveInfinity }

    /// A minimal alignment of two sequences (unit cost for substitution, deletion and insertion). Among minimal
    /// alignments the backtrace from the end prefers a hit or substitution, then a deletion, then an insertion.
    /// Uses (|reference|+1)·(|hypothesis|+1) bytes.
    let align (reference: 'T[]) (hypothesis: 'T[]) : AlignmentStep list =
        let n, m = reference.Length, hypothesis.Length
        // moves[i, j]: 0 diagonal, 1 deletion (up), 2 insertion (left)
        let moves = Array2D.zeroCreate<byte> (n + 1) (m + 1)
        let mutable previous = Array.init (m + 1) id
        let mutable current = Array.zeroCreate<int> (m + 1)
        for j in 1..m do
            moves[0, j] <- 2uy
        for i in 1..n do
            current[0] <- i
            moves[i, 0] <- 1uy
            for j in 1..m do
                let diagonal = previous[j - 1] + (if reference[i - 1] = hypothesis[j - 1] then 0 else 1)
                let deletion = previous[j] + 1
                let insertion = current[j - 1] + 1
                if diagonal <= deletion && diagonal <= insertion then
                    current[j] <- diagonal
                elif deletion <= insertion then
                    current[j] <- deletion
                    moves[i, j] <- 1uy
                else
                    current[j] <- insertion
                    moves[i, j] <- 2uy
            let finished = previous
            previous <- current
            current <- finished
        let rec back i j acc =
            if i = 0 && j = 0 then
                acc
            else
                match moves[i, j] with
                | 0uy ->
                    let op = if reference[i - 1] = hypothesis[j - 1] then Hit else Substitution
                    back (i - 1) (j - 1) ({ Operation = op; ReferenceIndex = i - 1; HypothesisIndex = j - 1 } :: acc)
                | 1uy -> back (i - 1) j ({ Operation = Deletion; ReferenceIndex = i - 1; HypothesisIndex = -1 } :: acc)
                | _ -> back i (j - 1) ({ Operation = Insertion; ReferenceIndex = -1; HypothesisIndex = j - 1 } :: acc)
        back n m []

    /// The counts and rate of an alignment.
    let ofAlignment (steps: AlignmentStep seq) : ErrorRate =
        let steps = Seq.toArray steps
        let count op = steps |> Array.filter (fun s -> s.Operation = op) |> Array.length
        ofCounts (count Hit) (count Substitution) (count Deletion) (count Insertion)

    /// The error rate of two sequences of units.
    let ofSequences (reference: 'T[]) (hypothesis: 'T[]) : ErrorRate = ofAlignment (align reference hypothesis)

    /// Sums the counts of several results (corpus aggregation) and recomputes the rate.
    let combine (results: ErrorRate seq) : ErrorRate =
        let results = Seq.toArray results
        let sum f = results |> Array.sumBy f
        ofCounts (sum _.Hits) (sum _.Substitutions) (sum _.Deletions) (sum _.Insertions)

    /// Words of a text: split at white space (jiwer's default word transform). Normalise first if wanted.
    let words (text: string) : string[] =
        text.Split((null: char[]), StringSplitOptions.RemoveEmptyEntries)

    /// Characters (code points) of a text after trimming its ends, spaces included (jiwer's default CER transform).
    let characters (text: string) : string[] =
        text.Trim().EnumerateRunes() |> Seq.map (fun r -> r.ToString()) |> Seq.toArray

    /// Word error rate of one utterance.
    let wer (reference: string) (hypothesis: string) : ErrorRate = ofSequences (words reference) (words hypothesis)

    /// Character error rate of one utterance.
    let cer (reference: string) (hypothesis: string) : ErrorRate =
        ofSequences (characters reference) (characters hypothesis)

    /// Corpus word error rate of (reference, hypothesis) pairs: Σ(S + D + I) / ΣN.
    let corpusWer (pairs: (string * string) seq) : ErrorRate = pairs |> Seq.map (fun (r, h) -> wer r h) |> combine

    /// Corpus character error rate of (reference, hypothesis) pairs.
    let corpusCer (pairs: (string * string) seq) : ErrorRate = pairs |> Seq.map (fun (r, h) -> cer r h) |> combine

    /// The rate as a percentage with two decimals, as training logs print it ("12.34").
    let percent (result: ErrorRate) : string = (100.0 * result.Rate).ToString("F2", CultureInfo.InvariantCulture)
