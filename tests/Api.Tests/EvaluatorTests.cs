using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using Xunit;

namespace MagnetWhisper.Api.Tests;

/// <summary>
/// The evaluator as a C# caller uses it: a folder corpus (jfk.flac, a truncated copy and a corrupt file), WER equal to a
/// recomputation from the per-utterance texts with an edit distance written here, the corrupt file skipped and
/// reported, progress after each batch, results independent of the batch size, MagnetWhisper's compression, cancellation.
/// </summary>
public class EvaluatorTests : IClassFixture<TinyCheckpoint>
{
    readonly TinyCheckpoint checkpoint;

    public EvaluatorTests(TinyCheckpoint checkpoint) => this.checkpoint = checkpoint;

    /// <summary>Reports synchronously (Progress&lt;T&gt; would post to the thread pool and arrive late).</summary>
    sealed class Collect<T> : IProgress<T>
    {
        public List<T> Items { get; } = new();
        public void Report(T value) { lock (Items) Items.Add(value); }
    }

    string Corpus()
    {
        var dir = Path.Combine(Path.GetTempPath(), "mw-eval-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        File.Copy(checkpoint.Jfk, Path.Combine(dir, "jfk.flac"));
        File.WriteAllText(Path.Combine(dir, "jfk.txt"), "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.");
        // The first 4 s of jfk.flac as 16-bit WAV.
        var samples = Core.Audio.Audio.load(checkpoint.Jfk).Take(64000).ToArray();
        WriteWav(Path.Combine(dir, "short.wav"), samples);
        File.WriteAllText(Path.Combine(dir, "short.txt"), "And so my fellow Americans");
        File.WriteAllText(Path.Combine(dir, "broken.wav"), "RIFF not audio at all");
        File.WriteAllText(Path.Combine(dir, "broken.txt"), "never heard");
        return dir;
    }

    static void WriteWav(string path, float[] samples)
    {
        using var w = new BinaryWriter(File.Create(path));
        w.Write("RIFF"u8.ToArray()); w.Write(36 + samples.Length * 2); w.Write("WAVE"u8.ToArray());
        w.Write("fmt "u8.ToArray()); w.Write(16); w.Write((short)1); w.Write((short)1); w.Write(16000); w.Write(32000); w.Write((short)2); w.Write((short)16);
        w.Write("data"u8.ToArray()); w.Write(samples.Length * 2);
        foreach (var x in samples) w.Write((short)Math.Round(Math.Clamp(x, -1f, 1f) * 32767.0));
    }

    /// <summary>Word-level Levenshtein distance with unit costs.</summary>
    static int Distance(string[] a, string[] b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (var i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (var j = 0; j <= b.Length; j++) d[0, j] = j;
        for (var i = 1; i <= a.Length; i++)
            for (var j = 1; j <= b.Length; j++)
                d[i, j] = Math.Min(d[i - 1, j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1), Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1));
        return d[a.Length, b.Length];
    }

    static string[] Words(string s) => s.Split(' ', StringSplitOptions.RemoveEmptyEntries);

    static readonly EvaluationOptions Fast = new() { BatchSize = 2, MaxTokensPerUtterance = 8 };

    [Fact]
    public async Task WhisperWerEqualsARecomputationAndTheCorruptFileIsSkipped()
    {
        var corpus = Corpus();
        try
        {
            using var model = WhisperModel.FromPretrained(checkpoint.Folder, "cpu");
            var progress = new Collect<EvaluationProgress>();
            var result = await new Evaluator(model).EvaluateAsync(corpus, Fast, progress);
            Assert.Equal(new[] { "jfk", "short" }, result.Utterances.Select(u => u.Id));
            var skipped = Assert.Single(result.Skipped);
            Assert.EndsWith("broken.wav", skipped.Source);
            var errors = result.Utterances.Sum(u => Distance(Words(u.NormalizedReference), Words(u.NormalizedHypothesis)));
            var words = result.Utterances.Sum(u => Words(u.NormalizedReference).Length);
            Assert.Equal((double)errors / words, result.WordErrorRate, 12);
            Assert.Empty(result.Predictors);
            Assert.All(result.Utterances, u => Assert.Equal(1.0, u.Compression));
            // jfk.flac's samples at 16 kHz plus the 64000-sample (4 s) copy
            Assert.Equal(Core.Audio.Audio.load(checkpoint.Jfk).Length / 16000.0 + 4.0, result.AudioSeconds, 9);
            Assert.True(result.RealTimeFactor > 0);
            var last = progress.Items.Last();
            Assert.Equal((3, 3, 1), (last.Done, last.Total, last.Skipped));

            var one = await new Evaluator(model).EvaluateAsync(corpus, new EvaluationOptions { BatchSize = 1, MaxTokensPerUtterance = 8 });
            Assert.Equal(result.Utterances.Select(u => u.Hypothesis), one.Utterances.Select(u => u.Hypothesis));

            var written = result.WriteReport(Path.Combine(corpus, "out"), "tiny");
            Assert.All(written, f => Assert.True(File.Exists(f)));
            Assert.Equal(3, File.ReadAllLines(Path.Combine(corpus, "out", "utterances.tsv")).Length);
        }
        finally
        {
            Directory.Delete(corpus, true);
        }
    }

    [Fact]
    public async Task MagnetWhisperReportsEachPredictorsCompression()
    {
        var corpus = Corpus();
        try
        {
            // A phone alignment beside short.wav only: a phone every 0.1 s of its 4 s → 39 boundaries (the end is none).
            File.WriteAllLines(Path.Combine(corpus, "short.phones"),
                Enumerable.Range(1, 40).Select(k => (k * 0.1).ToString("0.0", System.Globalization.CultureInfo.InvariantCulture) + " p"));
            var options = MagnetOptions.Default.WithPredictor(1, PredictorType.Bp1, prior: 0.25, pooling: PoolingMethod.Mean);
            using var model = MagnetWhisperModel.FromWhisper(checkpoint.Folder, options, "cpu");
            var result = await new Evaluator(model).EvaluateAsync(corpus, Fast);
            var boundaries = Assert.Single(result.Boundaries);
            Assert.Equal((1, 1, 39), (boundaries.Layer, boundaries.Utterances, boundaries.Reference));
            Assert.Equal(result.Utterances.Single(u => u.Id == "short").Predictors[0].Boundaries - 1, boundaries.Predicted);
            Assert.Equal(2.0 * boundaries.Matched / (boundaries.Predicted + boundaries.Reference), boundaries.F1, 12);
            Assert.InRange(boundaries.RandomF1, 0.0, 1.0);
            var layer = Assert.Single(result.Predictors);
            Assert.Equal(1, layer.Layer);
            Assert.Equal(result.Utterances.Sum(u => u.Predictors[0].Boundaries), layer.Boundaries);
            Assert.Equal((double)layer.Boundaries / layer.Positions, layer.KeptFraction, 12);
            // jfk.flac: 11 s → 1100 mel frames → 550 valid positions after the stem's stride 2.
            var jfk = result.Utterances.Single(u => u.Id == "jfk");
            Assert.Equal((int)Math.Ceiling(Math.Ceiling(jfk.Duration.TotalSeconds * 16000 / 160) / 2), jfk.Predictors[0].Positions);
        }
        finally
        {
            Directory.Delete(corpus, true);
        }
    }

    [Fact]
    public async Task ACancelledEvaluationThrowsAndAMissingCorpusIsNamed()
    {
        using var model = WhisperModel.FromPretrained(checkpoint.Folder, "cpu");
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => new Evaluator(model).EvaluateAsync(checkpoint.Folder, Fast, null, cancelled.Token));
        var missing = await Assert.ThrowsAsync<FileNotFoundException>(() => new Evaluator(model).EvaluateAsync("/no/such/corpus", Fast));
        Assert.Contains("/no/such/corpus", missing.Message);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => new Evaluator(model).EvaluateAsync(checkpoint.Folder, new EvaluationOptions { BatchSize = 0 }));
    }
}
