using System;
using System.Collections.Generic;
using System.Linq;
using Ev = MagnetWhisper.Core.Evaluation;

namespace MagnetWhisper
{
    /// <summary>Error counts of a minimal alignment and the rate (S + D + I) / N, for words or characters.</summary>
    public sealed class ErrorCounts
    {
        internal ErrorCounts(Core.Text.ErrorRate r)
        {
            Rate = r.Rate;
            ReferenceLength = r.ReferenceLength;
            Hits = r.Hits;
            Substitutions = r.Substitutions;
            Deletions = r.Deletions;
            Insertions = r.Insertions;
        }

        /// <summary>(S + D + I) / N: 0 when both sides are empty, +∞ when only the reference is.</summary>
        public double Rate { get; }

        /// <summary>N, the reference units.</summary>
        public int ReferenceLength { get; }

        /// <summary>Reference units recognised correctly.</summary>
        public int Hits { get; }

        /// <summary>Reference units replaced by another unit.</summary>
        public int Substitutions { get; }

        /// <summary>Reference units missing from the hypothesis.</summary>
        public int Deletions { get; }

        /// <summary>Hypothesis units the reference lacks.</summary>
        public int Insertions { get; }
    }

    /// <summary>What one boundary predictor did to one utterance.</summary>
    public sealed class PredictorCountResult
    {
        internal PredictorCountResult(Ev.PredictorCount c)
        {
            Layer = c.Layer;
            Boundaries = c.Boundaries;
            Positions = c.Positions;
        }

        /// <summary>The encoder layer the predictor runs before.</summary>
        public int Layer { get; }

        /// <summary>Boundaries placed (the forced last one included) = positions kept.</summary>
        public int Boundaries { get; }

        /// <summary>Valid input positions.</summary>
        public int Positions { get; }
    }

    /// <summary>One predictor's compression over the evaluated corpus.</summary>
    public sealed class PredictorCompressionResult
    {
        internal PredictorCompressionResult(Ev.PredictorCompression p)
        {
            Layer = p.Layer;
            KeptFraction = p.KeptFraction;
            Ratio = p.Ratio;
            Boundaries = p.Boundaries;
            Positions = p.Positions;
            MeanBoundaries = p.MeanBoundaries;
            StdBoundaries = p.StdBoundaries;
            MinBoundaries = p.MinBoundaries;
            MaxBoundaries = p.MaxBoundaries;
        }

        /// <summary>The encoder layer the predictor runs before.</summary>
        public int Layer { get; }

        /// <summary>Σ boundaries / Σ valid input positions.</summary>
        public double KeptFraction { get; }

        /// <summary>1 / <see cref="KeptFraction"/>.</summary>
        public double Ratio { get; }

        /// <summary>Σ boundaries.</summary>
        public long Boundaries { get; }

        /// <summary>Σ valid input positions.</summary>
        public long Positions { get; }

        /// <summary>Mean boundaries per utterance.</summary>
        public double MeanBoundaries { get; }

        /// <summary>Population standard deviation of the boundaries per utterance.</summary>
        public double StdBoundaries { get; }

        /// <summary>Fewest boundaries of an utterance.</summary>
        public int MinBoundaries { get; }

        /// <summary>Most boundaries of an utterance.</summary>
        public int MaxBoundaries { get; }
    }

    /// <summary>One predictor's boundaries scored against true phone boundaries (±20 ms, one-to-one matching), summed
    /// over the utterances that have a phone alignment, with the F1 of as many random boundaries for comparison.</summary>
    public sealed class BoundaryAccuracyResult
    {
        internal BoundaryAccuracyResult(Ev.BoundaryAccuracy.LayerBoundaryCounts b)
        {
            Layer = b.Layer;
            Utterances = b.Utterances;
            Predicted = b.Counts.Predicted;
            Reference = b.Counts.Reference;
            Matched = b.Counts.Matched;
            Precision = b.Counts.Precision;
            Recall = b.Counts.Recall;
            F1 = b.Counts.F1;
            RandomF1 = b.Counts.RandomF1;
        }

        /// <summary>The encoder layer the predictor runs before.</summary>
        public int Layer { get; }

        /// <summary>Utterances with a phone alignment that were counted.</summary>
        public int Utterances { get; }

        /// <summary>Predicted boundaries (the forced one at the end of each utterance excluded).</summary>
        public int Predicted { get; }

        /// <summary>Reference phone boundaries (the end of each utterance excluded).</summary>
        public int Reference { get; }

        /// <summary>Predictions matched one-to-one to a reference within the tolerance.</summary>
        public int Matched { get; }

        /// <summary>Matched / predicted.</summary>
        public double Precision { get; }

        /// <summary>Matched / reference.</summary>
        public double Recall { get; }

        /// <summary>2 · matched / (predicted + reference).</summary>
        public double F1 { get; }

        /// <summary>The F1 of as many boundaries drawn at random from the same candidate times (mean of seeded draws).</summary>
        public double RandomF1 { get; }
    }

    /// <summary>An entry left out of the evaluation, and why.</summary>
    public sealed class SkippedEntry
    {
        internal SkippedEntry(Core.Data.Skipped s)
        {
            Source = s.Source;
            Reason = s.Reason;
        }

        /// <summary>The file (or row of a file) as the user would find it.</summary>
        public string Source { get; }

        /// <summary>Why it was left out.</summary>
        public string Reason { get; }
    }

    /// <summary>The evaluation of one utterance.</summary>
    public sealed class UtteranceEvaluation
    {
        internal UtteranceEvaluation(Ev.UtteranceResult u)
        {
            Id = u.Id;
            Source = u.Source;
            Duration = TimeSpan.FromSeconds(u.Duration);
            Reference = u.Score.Reference;
            Hypothesis = u.Score.Hypothesis;
            NormalizedReference = u.Score.NormalizedReference;
            NormalizedHypothesis = u.Score.NormalizedHypothesis;
            Words = new ErrorCounts(u.Score.Words);
            Characters = new ErrorCounts(u.Score.Characters);
            RawWords = new ErrorCounts(u.Score.RawWords);
            Compression = u.Compression;
            Predictors = Array.AsReadOnly(u.Predictors.Select(c => new PredictorCountResult(c)).ToArray());
        }

        /// <summary>The utterance's id in its corpus.</summary>
        public string Id { get; }

        /// <summary>Where its audio came from.</summary>
        public string Source { get; }

        /// <summary>Its length, measured after decoding.</summary>
        public TimeSpan Duration { get; }

        /// <summary>The reference as the corpus writes it.</summary>
        public string Reference { get; }

        /// <summary>The decoded text.</summary>
        public string Hypothesis { get; }

        /// <summary>The reference after Whisper's English normaliser.</summary>
        public string NormalizedReference { get; }

        /// <summary>The hypothesis after Whisper's English normaliser.</summary>
        public string NormalizedHypothesis { get; }

        /// <summary>Word errors of the normalised texts.</summary>
        public ErrorCounts Words { get; }

        /// <summary>Character errors of the normalised texts.</summary>
        public ErrorCounts Characters { get; }

        /// <summary>Word errors of the unnormalised texts (reference lower-cased, hypothesis as decoded).</summary>
        public ErrorCounts RawWords { get; }

        /// <summary>Valid positions entering the first predictor per position leaving the last (1 for stock Whisper).</summary>
        public double Compression { get; }

        /// <summary>What each boundary predictor did (empty for stock Whisper).</summary>
        public IReadOnlyList<PredictorCountResult> Predictors { get; }
    }

    /// <summary>How far an evaluation is.</summary>
    public sealed class EvaluationProgress
    {
        internal EvaluationProgress(Ev.EvaluationProgress p)
        {
            Done = p.Done;
            Total = p.Total;
            Skipped = p.Skipped;
            AudioSeconds = p.AudioSeconds;
            Elapsed = TimeSpan.FromSeconds(p.ElapsedSeconds);
            var remaining = p.RemainingSeconds;
            Remaining = remaining is null ? null : TimeSpan.FromSeconds(remaining.Value);
        }

        /// <summary>Utterances done (evaluated or skipped while loading).</summary>
        public int Done { get; }

        /// <summary>Utterances to do.</summary>
        public int Total { get; }

        /// <summary>Of <see cref="Done"/>, those skipped.</summary>
        public int Skipped { get; }

        /// <summary>Seconds of audio evaluated so far.</summary>
        public double AudioSeconds { get; }

        /// <summary>Time since the start.</summary>
        public TimeSpan Elapsed { get; }

        /// <summary>Time left at the rate so far; null before anything is done.</summary>
        public TimeSpan? Remaining { get; }
    }

    /// <summary>The evaluation of a corpus: corpus error rates, compression, timing, per-utterance results.</summary>
    public sealed class EvaluationResult
    {
        readonly Ev.EvaluationResult result;

        internal EvaluationResult(Ev.EvaluationResult result)
        {
            this.result = result;
            Corpus = result.Corpus;
            Utterances = Array.AsReadOnly(result.Utterances.Select(u => new UtteranceEvaluation(u)).ToArray());
            Skipped = Array.AsReadOnly(result.Skipped.Select(s => new SkippedEntry(s)).ToArray());
            Words = new ErrorCounts(result.Score.Words);
            Characters = new ErrorCounts(result.Score.Characters);
            RawWords = new ErrorCounts(result.Score.RawWords);
            Predictors = Array.AsReadOnly(result.Predictors.Select(p => new PredictorCompressionResult(p)).ToArray());
            Boundaries = Array.AsReadOnly(result.Boundaries.Select(b => new BoundaryAccuracyResult(b)).ToArray());
            AudioSeconds = result.Timing.AudioSeconds;
            EncoderSeconds = result.Timing.EncoderSeconds;
            DecodeSeconds = result.Timing.DecodeSeconds;
            TotalSeconds = result.Timing.TotalSeconds;
            RealTimeFactor = result.Timing.RealTimeFactor;
        }

        /// <summary>What the corpus was read from.</summary>
        public string Corpus { get; }

        /// <summary>Evaluated utterances in the corpus's order.</summary>
        public IReadOnlyList<UtteranceEvaluation> Utterances { get; }

        /// <summary>Entries left out, with the reason.</summary>
        public IReadOnlyList<SkippedEntry> Skipped { get; }

        /// <summary>Corpus word error rate after the English normaliser (a fraction; ×100 for percent).</summary>
        public double WordErrorRate => Words.Rate;

        /// <summary>Corpus character error rate after the English normaliser.</summary>
        public double CharacterErrorRate => Characters.Rate;

        /// <summary>Corpus word error rate without the normaliser (the original's training-time metric).</summary>
        public double RawWordErrorRate => RawWords.Rate;

        /// <summary>Normalised word error counts.</summary>
        public ErrorCounts Words { get; }

        /// <summary>Normalised character error counts.</summary>
        public ErrorCounts Characters { get; }

        /// <summary>Unnormalised word error counts.</summary>
        public ErrorCounts RawWords { get; }

        /// <summary>Compression of each predictor in layer order (empty for stock Whisper).</summary>
        public IReadOnlyList<PredictorCompressionResult> Predictors { get; }

        /// <summary>Boundary accuracy of each predictor in layer order, over the utterances with phone alignments
        /// (empty when none has one, or for stock Whisper).</summary>
        public IReadOnlyList<BoundaryAccuracyResult> Boundaries { get; }

        /// <summary>Seconds of audio evaluated.</summary>
        public double AudioSeconds { get; }

        /// <summary>Seconds in the encoder (predictors included).</summary>
        public double EncoderSeconds { get; }

        /// <summary>Seconds decoding tokens.</summary>
        public double DecodeSeconds { get; }

        /// <summary>Wall-clock seconds of the whole evaluation.</summary>
        public double TotalSeconds { get; }

        /// <summary>Processing seconds per audio second.</summary>
        public double RealTimeFactor { get; }

        /// <summary>Writes summary.json and utterances.tsv into a folder (created if needed), each atomically; returns their paths.</summary>
        /// <param name="directory">The output folder.</param>
        /// <param name="modelName">How summary.json names the model (e.g. its folder).</param>
        public IReadOnlyList<string> WriteReport(string directory, string modelName)
        {
            ArgumentException.ThrowIfNullOrEmpty(directory);
            ArgumentNullException.ThrowIfNull(modelName);
            return Ev.Report.write(directory, modelName, result).ToArray();
        }
    }
}
