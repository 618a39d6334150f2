using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;
using MagnetWhisper.Core.Decoding;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Ev = MagnetWhisper.Core.Evaluation;

namespace MagnetWhisper
{
    /// <summary>How to evaluate a model on a corpus. Results do not depend on <see cref="BatchSize"/>.</summary>
    public sealed class EvaluationOptions
    {
        /// <summary>Utterances decoded together.</summary>
        public int BatchSize { get; init; } = 16;

        /// <summary>Beams of beam search; null decodes greedily.</summary>
        public int? BeamSize { get; init; }

        /// <summary>Background tasks loading audio.</summary>
        public int Workers { get; init; } = 2;

        /// <summary>Language of the start-of-transcript prompt of multilingual models.</summary>
        public string Language { get; init; } = "en";

        /// <summary>Most tokens decoded per utterance; null means half the decoder positions (224).</summary>
        public int? MaxTokensPerUtterance { get; init; }

        /// <summary>Utterances longer than this are skipped (at most 30 s, the window decoded); null keeps all up to 30 s.</summary>
        public TimeSpan? MaxDuration { get; init; }

        /// <summary>Splits or subsets to keep; empty keeps every utterance.</summary>
        public IReadOnlyList<string> Splits { get; init; } = Array.Empty<string>();

        /// <summary>At most this many utterances (the first ones); null evaluates all.</summary>
        public int? Limit { get; init; }

        static FSharpOption<T> Opt<T>(T? value) where T : struct =>
            value.HasValue ? FSharpOption<T>.Some(value.Value) : FSharpOption<T>.None;

        internal Core.Data.CorpusOptions ToCorpus() =>
            new(ListModule.OfSeq(Splits ?? throw new ArgumentException("Splits must not be null.", nameof(Splits))),
                Opt(MaxDuration?.TotalSeconds), Opt(Limit));

        internal Ev.EvaluationOptions ToCore()
        {
            if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "The batch size must be at least 1.");
            if (Workers < 1) throw new ArgumentOutOfRangeException(nameof(Workers), Workers, "At least one worker is needed.");
            if (BeamSize is < 1) throw new ArgumentOutOfRangeException(nameof(BeamSize), BeamSize, "The beam size must be at least 1 (null = greedy).");
            if (MaxTokensPerUtterance is < 1) throw new ArgumentOutOfRangeException(nameof(MaxTokensPerUtterance), MaxTokensPerUtterance, "At least one token.");
            if (MaxDuration is { } d && (d <= TimeSpan.Zero || d.TotalSeconds > Ev.Evaluator.maxSeconds))
                throw new ArgumentOutOfRangeException(nameof(MaxDuration), d, "The maximum duration must be above 0 and at most 30 s.");
            ArgumentException.ThrowIfNullOrEmpty(Language);
            return new Ev.EvaluationOptions(BatchSize, Opt(BeamSize), Workers, Language, Opt(MaxTokensPerUtterance),
                Opt(MaxDuration?.TotalSeconds), Core.Audio.Audio.findFfmpeg());
        }
    }

    /// <summary>
    /// Evaluates a Whisper or MagnetWhisper model on a corpus (a folder of audio files with same-name .txt transcripts):
    /// batched decoding of one 30-second window per utterance at temperature 0 without timestamps, corpus WER and CER
    /// after Whisper's English normaliser (and the unnormalised WER), compression per boundary predictor, timing and
    /// real-time factor. Unreadable, empty or over-long audio is skipped and reported, never stops the run. The model's
    /// other calls wait while an evaluation runs.
    /// </summary>
    public sealed class Evaluator
    {
        readonly ISpeechModel model;
        readonly ModelGate gate;

        /// <summary>An evaluator of a stock Whisper model.</summary>
        public Evaluator(WhisperModel model)
        {
            ArgumentNullException.ThrowIfNull(model);
            this.model = model.SpeechModel;
            gate = model.Gate;
        }

        /// <summary>An evaluator of a MagnetWhisper model (its results include each predictor's compression).</summary>
        public Evaluator(MagnetWhisperModel model)
        {
            ArgumentNullException.ThrowIfNull(model);
            this.model = model.CoreModel;
            gate = model.Gate;
        }

        /// <summary>Evaluates the corpus at <paramref name="corpusPath"/> on a background thread.</summary>
        /// <param name="corpusPath">A folder of audio files with same-name .txt transcripts.</param>
        /// <param name="options">Batch size, beams, selection; null for the defaults.</param>
        /// <param name="progress">Told after each batch.</param>
        /// <param name="cancellationToken">Stops between decoding steps.</param>
        /// <exception cref="System.IO.FileNotFoundException">No such corpus.</exception>
        /// <exception cref="System.IO.InvalidDataException">Not a corpus this version reads.</exception>
        public async Task<EvaluationResult> EvaluateAsync(
            string corpusPath, EvaluationOptions? options = null, IProgress<EvaluationProgress>? progress = null,
            CancellationToken cancellationToken = default)
        {
            ArgumentException.ThrowIfNullOrEmpty(corpusPath);
            options ??= new EvaluationOptions();
            var core = options.ToCore();
            var corpusOptions = options.ToCorpus();
            await gate.EnterAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                return await Task.Factory.StartNew(() =>
                {
                    var corpus = Core.Data.Corpora.read(corpusOptions, corpusPath);
                    var report = FuncConvert.FromAction<Ev.EvaluationProgress>(p => progress?.Report(new EvaluationProgress(p)));
                    return new EvaluationResult(Ev.Evaluator.evaluate(model, core, corpus, report, cancellationToken));
                }, cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default).ConfigureAwait(false);
            }
            finally
            {
                gate.Exit();
            }
        }
    }
}
