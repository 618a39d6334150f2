using System;
using System.Collections.Generic;
using System.Linq;
using System.Runtime.CompilerServices;
using System.Threading;
using System.Threading.Channels;
using System.Threading.Tasks;
using MagnetWhisper.Core.Decoding;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;

namespace MagnetWhisper
{
    /// <summary>What to do with the speech.</summary>
    public enum TranscriptionTask
    {
        /// <summary>Write it down in the spoken language.</summary>
        Transcribe,

        /// <summary>Translate it into English.</summary>
        Translate,
    }

    /// <summary>
    /// Options of a transcription, with openai/whisper's <c>transcribe</c> defaults: the language is detected, greedy
    /// decoding with temperature fallback (0, 0.2, …, 1.0) on the compression-ratio (2.4) and log-probability (−1.0)
    /// thresholds, silence at a no-speech probability above 0.6, timestamps on, each window prompted with the previous text.
    /// </summary>
    public sealed class TranscribeOptions
    {
        /// <summary>Language code or name (<c>"en"</c>, <c>"english"</c>); null detects it from the first 30 seconds.</summary>
        public string? Language { get; init; }

        /// <summary>Transcribe (default) or translate into English.</summary>
        public TranscriptionTask Task { get; init; } = TranscriptionTask.Transcribe;

        /// <summary>Beams of beam search at temperature 0; null decodes greedily.</summary>
        public int? BeamSize { get; init; }

        /// <summary>Beam-search patience; null means 1.</summary>
        public double? Patience { get; init; }

        /// <summary>Candidates sampled at temperatures above 0; null means 1.</summary>
        public int? BestOf { get; init; }

        /// <summary>Length penalty α in [0, 1] for ranking candidates; null divides by the length.</summary>
        public double? LengthPenalty { get; init; }

        /// <summary>Temperatures tried in turn while a window fails the thresholds.</summary>
        public IReadOnlyList<double> Temperatures { get; init; } = new[] { 0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0 };

        /// <summary>A window whose text compresses better than this (gzip ratio) is decoded again; null disables the check.</summary>
        public double? CompressionRatioThreshold { get; init; } = 2.4;

        /// <summary>A window whose average log-probability is below this is decoded again; null disables the check.</summary>
        public double? LogProbabilityThreshold { get; init; } = -1.0;

        /// <summary>A failed window whose no-speech probability is above this is silence; null disables the check.</summary>
        public double? NoSpeechThreshold { get; init; } = 0.6;

        /// <summary>Prompt each 30-second window with the text transcribed so far.</summary>
        public bool ConditionOnPreviousText { get; init; } = true;

        /// <summary>Text that prompts the first window (names, spelling, style).</summary>
        public string? InitialPrompt { get; init; }

        /// <summary>Decode text only, without timestamp tokens (one segment per 30-second window).</summary>
        public bool WithoutTimestamps { get; init; }

        /// <summary>Token ids never to write; −1 stands for the non-speech symbols (whisper's default).</summary>
        public IReadOnlyList<int> SuppressTokens { get; init; } = new[] { -1 };

        /// <summary>Forbid a blank or an immediate end as the first token of a window.</summary>
        public bool SuppressBlank { get; init; } = true;

        /// <summary>The first timestamp of a window is at most this many seconds; null removes the limit.</summary>
        public double? MaxInitialTimestamp { get; init; } = 1.0;

        /// <summary>Most tokens decoded per window; null means half the decoder's positions (224).</summary>
        public int? MaxTokensPerWindow { get; init; }

        /// <summary>Seed of temperature sampling: equal inputs and seed give equal transcripts.</summary>
        public long Seed { get; init; }

        static FSharpOption<T> Opt<T>(T? value) where T : struct =>
            value.HasValue ? FSharpOption<T>.Some(value.Value) : FSharpOption<T>.None;

        static FSharpOption<string> Opt(string? value) =>
            string.IsNullOrEmpty(value) ? FSharpOption<string>.None : FSharpOption<string>.Some(value);

        internal Core.Decoding.TranscribeOptions ToCore()
        {
            if (Temperatures is null || Temperatures.Count == 0)
                throw new ArgumentException("At least one temperature is needed.", nameof(Temperatures));
            if (SuppressTokens is null) throw new ArgumentException("SuppressTokens must not be null (use an empty list).", nameof(SuppressTokens));
            var decoding = new DecodingOptions(
                task: Task == TranscriptionTask.Translate ? Core.Text.TaskKind.Translate : Core.Text.TaskKind.Transcribe,
                language: Opt(Language),
                temperature: 0.0,
                sampleLen: Opt(MaxTokensPerWindow),
                bestOf: Opt(BestOf),
                beamSize: Opt(BeamSize),
                patience: Opt(Patience),
                lengthPenalty: Opt(LengthPenalty),
                prompt: FSharpOption<TextOrTokens>.None,
                prefix: FSharpOption<TextOrTokens>.None,
                suppressTokens: ListModule.OfSeq(SuppressTokens),
                suppressBlank: SuppressBlank,
                withoutTimestamps: WithoutTimestamps,
                maxInitialTimestamp: Opt(MaxInitialTimestamp),
                seed: Seed);
            return new Core.Decoding.TranscribeOptions(
                decoding: decoding,
                temperatures: ListModule.OfSeq(Temperatures),
                compressionRatioThreshold: Opt(CompressionRatioThreshold),
                logProbThreshold: Opt(LogProbabilityThreshold),
                noSpeechThreshold: Opt(NoSpeechThreshold),
                conditionOnPreviousText: ConditionOnPreviousText,
                initialPrompt: Opt(InitialPrompt));
        }
    }

    /// <summary>A stretch of transcribed speech with its timing and decoding statistics.</summary>
    public sealed class TranscriptSegment
    {
        internal TranscriptSegment(Segment s)
        {
            Id = s.Id;
            Seek = s.Seek;
            Start = TimeSpan.FromSeconds(s.Start);
            End = TimeSpan.FromSeconds(s.End);
            Text = s.Text;
            Tokens = Array.AsReadOnly(s.Tokens.ToArray());
            Temperature = s.Temperature;
            AverageLogProbability = s.AvgLogProb;
            CompressionRatio = s.CompressionRatio;
            NoSpeechProbability = s.NoSpeechProb;
        }

        /// <summary>Position in the transcript, from 0.</summary>
        public int Id { get; }

        /// <summary>Mel frame (10 ms) where the 30-second window of this segment started.</summary>
        public int Seek { get; }

        /// <summary>Start time.</summary>
        public TimeSpan Start { get; }

        /// <summary>End time.</summary>
        public TimeSpan End { get; }

        /// <summary>The text, usually with a leading space; empty for a blank or instantaneous segment.</summary>
        public string Text { get; }

        /// <summary>Token ids, timestamp tokens included.</summary>
        public IReadOnlyList<int> Tokens { get; }

        /// <summary>Sampling temperature of the window's decoding.</summary>
        public double Temperature { get; }

        /// <summary>Average log-probability of the window's tokens.</summary>
        public double AverageLogProbability { get; }

        /// <summary>gzip compression ratio of the window's text (high = repetitive).</summary>
        public double CompressionRatio { get; }

        /// <summary>Probability that the window holds no speech.</summary>
        public double NoSpeechProbability { get; }

        /// <inheritdoc />
        public override string ToString() => $"[{Start} --> {End}]{Text}";
    }

    /// <summary>The transcript of one audio.</summary>
    public sealed class Transcription
    {
        internal Transcription(Transcript t)
        {
            Text = t.Text;
            Language = t.Language;
            Segments = Array.AsReadOnly(t.Segments.Select(s => new TranscriptSegment(s)).ToArray());
        }

        /// <summary>The whole text.</summary>
        public string Text { get; }

        /// <summary>Language code, given or detected (e.g. <c>"en"</c>).</summary>
        public string Language { get; }

        /// <summary>The segments in time order.</summary>
        public IReadOnlyList<TranscriptSegment> Segments { get; }
    }

    /// <summary>
    /// A Whisper speech-recognition model loaded from a Hugging Face folder (config.json + model.safetensors), with
    /// openai/whisper's transcription: language detection, timestamps, temperature fallback, beam search and long audio
    /// in 30-second windows. Calls on one instance run one at a time. Dispose it to free the weights.
    /// </summary>
    public sealed class WhisperModel : IDisposable
    {
        readonly ISpeechModel model;
        readonly Transcriber transcriber;
        readonly ModelGate gate;

        WhisperModel(ISpeechModel model, ModelGate gate)
        {
            this.model = model;
            this.gate = gate;
            transcriber = new Transcriber(model);
        }

        /// <summary>
        /// Transcription over any speech model (e.g. MagnetWhisper's) under the model's own gate, so its other calls and
        /// the transcriptions run one at a time; disposing the gate, not this object, frees the model.
        /// </summary>
        internal static WhisperModel Over(ISpeechModel model, ModelGate gate) => new(model, gate);

        /// <summary>
        /// Loads a Hugging Face Whisper folder onto a device: <c>"auto"</c> (CUDA when available, else CPU), <c>"cpu"</c>,
        /// <c>"cuda"</c> or <c>"cuda:N"</c>. The tokenizer follows the vocabulary size (English-only or multilingual).
        /// </summary>
        /// <exception cref="System.IO.IOException">The folder, its config.json or its weights are missing.</exception>
        /// <exception cref="System.IO.InvalidDataException">The checkpoint does not match its configuration.</exception>
        public static WhisperModel FromPretrained(string path, string device = "auto")
        {
            ArgumentException.ThrowIfNullOrEmpty(path);
            ArgumentException.ThrowIfNullOrEmpty(device);
            var loaded = Core.Whisper.WhisperModel.FromPretrained(path, Core.Device.parse(device), TorchSharp.torch.float32);
            return new WhisperModel(loaded, new ModelGate(loaded, nameof(WhisperModel)));
        }

        /// <summary>The core model, for the evaluator.</summary>
        internal ISpeechModel SpeechModel => model;

        /// <summary>The model's one-call-at-a-time gate, for the evaluator.</summary>
        internal ModelGate Gate => gate;

        /// <summary>The device the weights live on, e.g. <c>cpu</c>.</summary>
        public string Device => model.Device.ToString();

        /// <summary>True when the model has language tokens (it can detect languages and translate).</summary>
        public bool IsMultilingual => Search.isMultilingual(transcriber.Tokenizer);

        /// <summary>Transcribes an audio file (WAV and FLAC natively, other formats through ffmpeg).</summary>
        public Transcription Transcribe(string audioPath, TranscribeOptions? options = null)
        {
            ArgumentException.ThrowIfNullOrEmpty(audioPath);
            return Transcribe(Core.Audio.Audio.load(audioPath), options);
        }

        /// <summary>Transcribes 16 kHz mono samples (full scale ±1).</summary>
        public Transcription Transcribe(float[] samples, TranscribeOptions? options = null)
        {
            ArgumentNullException.ThrowIfNull(samples);
            return TranscribeBatch(new[] { samples }, options)[0];
        }

        /// <summary>
        /// Transcribes several 16 kHz mono audios decoded together in batches; each result equals the audio's result alone.
        /// </summary>
        public IReadOnlyList<Transcription> TranscribeBatch(IReadOnlyList<float[]> audios, TranscribeOptions? options = null)
        {
            ArgumentNullException.ThrowIfNull(audios);
            if (audios.Any(a => a is null)) throw new ArgumentException("An audio is null.", nameof(audios));
            var core = (options ?? new TranscribeOptions()).ToCore();
            return gate.Run(() =>
            {
                var results = transcriber.Transcribe(audios.ToArray(), core, FuncConvert.FromAction<WindowProgress>(_ => { }), CancellationToken.None);
                return (IReadOnlyList<Transcription>)Array.AsReadOnly(results.Select(t => new Transcription(t)).ToArray());
            });
        }

        /// <summary>Transcribes an audio file on a background thread; cancellation stops between decoding steps.</summary>
        public async Task<Transcription> TranscribeAsync(string audioPath, TranscribeOptions? options = null, CancellationToken cancellationToken = default)
        {
            ArgumentException.ThrowIfNullOrEmpty(audioPath);
            var core = (options ?? new TranscribeOptions()).ToCore();
            await gate.EnterAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                return await Task.Factory.StartNew(() =>
                {
                    var samples = Core.Audio.Audio.load(audioPath);
                    var t = transcriber.Transcribe(new[] { samples }, core, FuncConvert.FromAction<WindowProgress>(_ => { }), cancellationToken);
                    return new Transcription(t[0]);
                }, cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default).ConfigureAwait(false);
            }
            finally
            {
                gate.Exit();
            }
        }

        /// <summary>
        /// Transcribes an audio file, yielding the segments of each 30-second window as soon as it is decoded, for long
        /// audio. Stopping the enumeration or cancelling stops the transcription. The model is busy until the
        /// enumeration ends.
        /// </summary>
        public async IAsyncEnumerable<TranscriptSegment> TranscribeSegmentsAsync(
            string audioPath, TranscribeOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            ArgumentException.ThrowIfNullOrEmpty(audioPath);
            var core = (options ?? new TranscribeOptions()).ToCore();
            var channel = Channel.CreateUnbounded<TranscriptSegment>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            await gate.EnterAsync(cancellationToken).ConfigureAwait(false);
            Task producer;
            try
            {
                producer = Task.Factory.StartNew(() =>
                {
                    try
                    {
                        var samples = Core.Audio.Audio.load(audioPath);
                        var onWindow = FuncConvert.FromAction<WindowProgress>(w =>
                        {
                            foreach (var s in w.Segments) channel.Writer.TryWrite(new TranscriptSegment(s));
                        });
                        transcriber.Transcribe(new[] { samples }, core, onWindow, stop.Token);
                        channel.Writer.TryComplete();
                    }
                    catch (Exception e)
                    {
                        channel.Writer.TryComplete(e);
                    }
                }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
            }
            catch
            {
                gate.Exit();
                throw;
            }
            try
            {
                await foreach (var segment in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
                    yield return segment;
            }
            finally
            {
                stop.Cancel();
                await producer.ConfigureAwait(false);
                gate.Exit();
            }
        }

        /// <summary>Frees the model's weights (waits for a running transcription to finish).</summary>
        public void Dispose() => gate.Dispose();
    }
}
