namespace MagnetWhisper.Core.Evaluation

open System
open System.Globalization
open System.IO
open System.Text
open System.Text.Json
open MagnetWhisper.Core
open MagnetWhisper.Core.Text
open MagnetWhisper.Core.Training

/// The files of an evaluation: `summary.json` (corpus rates and counts, compression, timing, skipped entries) and
/// `utterances.tsv` (one row per utterance), both written through AtomicWrite.
[<RequireQualifiedAccess>]
module Report =
    /// The name of the summary file.
    [<Literal>]
    let SummaryFile = "summary.json"

    /// The name of the per-utterance file.
    [<Literal>]
    let UtterancesFile = "utterances.tsv"

    /// The columns of utterances.tsv. Words are those of the normalised texts; compression is the utterance's
    /// overall ratio (Compression.overall, 1 for stock Whisper).
    let columns =
        [ "id"; "duration"; "reference"; "hypothesis"; "normalized_reference"; "normalized_hypothesis"
          "reference_words"; "substitutions"; "deletions"; "insertions"; "compression" ]

    let private number (v: float) = v.ToString("R", CultureInfo.InvariantCulture)

    /// A TSV cell: tabs and line breaks become spaces (transcripts are single lines).
    let cell (text: string) : string =
        text.Replace('\t', ' ').Replace('\r', ' ').Replace('\n', ' ')

    /// utterances.tsv: a header line, then one line per utterance in the corpus's order.
    let utterancesTsv (result: EvaluationResult) : string =
        let text = StringBuilder()
        text.Append(String.Join("\t", columns)).Append('\n') |> ignore
        for u in result.Utterances do
            let s = u.Score
            let fields =
                [ cell u.Id; number u.Duration; cell s.Reference; cell s.Hypothesis; cell s.NormalizedReference
                  cell s.NormalizedHypothesis; string s.Words.ReferenceLength; string s.Words.Substitutions
                  string s.Words.Deletions; string s.Words.Insertions; number u.Compression ]
            text.Append(String.Join("\t", fields)).Append('\n') |> ignore
        text.ToString()

    let private writeFinite (w: Utf8JsonWriter) (name: string) (v: float) =
        if Double.IsFinite v then w.WriteNumber(name, v) else w.WriteNull name

    let private writeRate (w: Utf8JsonWriter) (name: string) (r: ErrorRate) =
        w.WriteStartObject name
        writeFinite w "rate" r.Rate
        w.WriteNumber("reference_length", r.ReferenceLength)
        w.WriteNumber("hits", r.Hits)
        w.WriteNumber("substitutions", r.Substitutions)
        w.WriteNumber("deletions", r.Deletions)
        w.WriteNumber("insertions", r.Insertions)
        w.WriteEndObject()

    /// summary.json: the model and corpus names, counts, WER (normalised and raw) and CER as fractions with their
    /// counts, compression per predictor, boundary accuracy per predictor (utterances with alignments), timing and real-time factor, the options and the skipped entries.
    let summaryJson (model: string) (result: EvaluationResult) : string =
        Whisper.Json.write (fun w ->
            w.WriteString("model", model)
            w.WriteString("corpus", result.Corpus)
            w.WriteNumber("utterances", result.Utterances.Length)
            w.WriteNumber("skipped", result.Skipped.Length)
            writeFinite w "wer" result.Score.Words.Rate
            writeFinite w "cer" result.Score.Characters.Rate
            writeFinite w "raw_wer" result.Score.RawWords.Rate
            writeRate w "words" result.Score.Words
            writeRate w "characters" result.Score.Characters
            writeRate w "raw_words" result.Score.RawWords
            w.WriteStartArray "compression"
            for p in result.Predictors do
                w.WriteStartObject()
                w.WriteNumber("layer", p.Layer)
                w.WriteNumber("kept_fraction", p.KeptFraction)
                writeFinite w "ratio" p.Ratio
                w.WriteNumber("boundaries", p.Boundaries)
                w.WriteNumber("positions", p.Positions)
                w.WriteNumber("mean_boundaries", p.MeanBoundaries)
                w.WriteNumber("std_boundaries", p.StdBoundaries)
                w.WriteNumber("min_boundaries", p.MinBoundaries)
                w.WriteNumber("max_boundaries", p.MaxBoundaries)
                w.WriteEndObject()
            w.WriteEndArray()
            // Against the phone alignments, ±tolerance, one-to-one (BoundaryAccuracy); the random F1 is of as many
            // boundaries drawn from the same candidate times.
            w.WriteStartArray "boundaries"
            for b in result.Boundaries do
                let c = b.Counts
                w.WriteStartObject()
                w.WriteNumber("layer", b.Layer)
                w.WriteNumber("utterances", b.Utterances)
                w.WriteNumber("tolerance_seconds", BoundaryAccuracy.DefaultTolerance)
                w.WriteNumber("precision", c.Precision)
                w.WriteNumber("recall", c.Recall)
                w.WriteNumber("f1", c.F1)
                w.WriteNumber("random_f1", c.RandomF1)
                w.WriteNumber("predicted", c.Predicted)
                w.WriteNumber("reference", c.Reference)
                w.WriteNumber("matched", c.Matched)
                w.WriteNumber("random_matched", c.RandomMatched)
                w.WriteEndObject()
            w.WriteEndArray()
            let t = result.Timing
            w.WriteStartObject "timing"
            w.WriteNumber("audio_seconds", t.AudioSeconds)
            w.WriteNumber("encoder_seconds", t.EncoderSeconds)
            w.WriteNumber("decode_seconds", t.DecodeSeconds)
            w.WriteNumber("total_seconds", t.TotalSeconds)
            w.WriteNumber("real_time_factor", t.RealTimeFactor)
            w.WriteNumber("encoder_real_time_factor", t.EncoderRealTimeFactor)
            w.WriteEndObject()
            let o = result.Options
            w.WriteStartObject "options"
            w.WriteNumber("batch_size", o.BatchSize)
            match o.BeamSize with
            | Some b -> w.WriteNumber("beam_size", b)
            | None -> w.WriteNull "beam_size"
            w.WriteString("language", o.Language)
            w.WriteEndObject()
            w.WriteStartArray "skipped_entries"
            for s in result.Skipped do
                w.WriteStartObject()
                w.WriteString("source", s.Source)
                w.WriteString("reason", s.Reason)
                w.WriteEndObject()
            w.WriteEndArray())

    /// Writes summary.json and utterances.tsv into dir (created if needed), each atomically; returns their paths.
    /// The evaluation as the original's evaluation logged it: `evaluation/wer` in percent and, under
    /// `evaluation/compression_ratio`, what the original put there: the kept fraction (positions leaving the last
    /// predictor per valid position entering the first; 1 without predictors). The sample count, the normalised CER
    /// and the raw WER are logged beside them.
    let metrics (result: EvaluationResult) : (string * float) list =
        let kept =
            match result.Predictors with
            | [] -> 1.0
            | predictors ->
                let first = predictors |> List.minBy _.Layer
                let last = predictors |> List.maxBy _.Layer
                if first.Positions > 0L then float last.Boundaries / float first.Positions else 0.0
        [ MetricKeys.EvaluationWer, 100.0 * result.Score.Words.Rate
          MetricKeys.EvaluationCompressionRatio, kept
          MetricKeys.EvalNumSamples, float result.Utterances.Length
          MetricKeys.EvaluationCer, 100.0 * result.Score.Characters.Rate
          MetricKeys.EvaluationRawWer, 100.0 * result.Score.RawWords.Rate ]

    /// Writes summary.json and utterances.tsv, and logs `metrics` at `step` to the folder's metrics.jsonl and
    /// TensorBoard events (so an evaluation folder reads like a run's); returns the report files.
    let writeAt (step: int64) (dir: string) (model: string) (result: EvaluationResult) : string list =
        Directory.CreateDirectory dir |> ignore
        let summary = Path.Combine(dir, SummaryFile)
        let utterances = Path.Combine(dir, UtterancesFile)
        AtomicWrite.text utterances (utterancesTsv result)
        AtomicWrite.text summary (summaryJson model result)
        use sink = MetricsSinks.runFolder dir None
        sink.Log(step, metrics result)
        [ summary; utterances; Path.Combine(dir, "metrics.jsonl") ]

    /// writeAt step 0.
    let write (dir: string) (model: string) (result: EvaluationResult) : string list = writeAt 0L dir model result
