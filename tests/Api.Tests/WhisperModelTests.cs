using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using Xunit;

namespace MagnetWhisper.Api.Tests;

/// <summary>A tiny random Whisper checkpoint (multilingual vocabulary) written once for the tests of this class.</summary>
public sealed class TinyCheckpoint : IDisposable
{
    public TinyCheckpoint()
    {
        Folder = Path.Combine(Path.GetTempPath(), "mw-api-" + Guid.NewGuid().ToString("N"));
        const string json = """
            { "vocab_size": 51865, "num_mel_bins": 80, "d_model": 64, "encoder_layers": 2, "decoder_layers": 2,
              "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128,
              "max_source_positions": 1500, "max_target_positions": 448, "pad_token_id": 50257, "bos_token_id": 50257,
              "eos_token_id": 50257, "decoder_start_token_id": 50258 }
            """;
        var config = MagnetWhisper.Core.Whisper.WhisperConfigModule.parse("config.json", json);
        TorchSharp.torch.manual_seed(4321);
        using var model = new MagnetWhisper.Core.Whisper.WhisperModel(config);
        model.Save(Folder);
        Jfk = FindData("jfk.flac");
    }

    public string Folder { get; }

    public string Jfk { get; }

    static string FindData(string name)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "tests", "data", name);
            if (File.Exists(candidate)) return candidate;
        }
        throw new FileNotFoundException($"tests/data/{name} not found above the test assembly");
    }

    public void Dispose()
    {
        try { Directory.Delete(Folder, true); } catch (IOException) { }
    }
}

public class WhisperModelTests : IClassFixture<TinyCheckpoint>
{
    readonly TinyCheckpoint checkpoint;

    public WhisperModelTests(TinyCheckpoint checkpoint) => this.checkpoint = checkpoint;

    /// <summary>Fast options: one temperature, 32 tokens per window (a random model never stops by itself).</summary>
    static readonly TranscribeOptions Fast = new() { Temperatures = new[] { 0.0 }, MaxTokensPerWindow = 32 };

    static List<IReadOnlyList<int>> TokensOf(Transcription t) => t.Segments.Select(s => s.Tokens).ToList();

    [Fact]
    public void TranscribesAFileIntoWellFormedSegmentsDeterministically()
    {
        using var model = WhisperModel.FromPretrained(checkpoint.Folder, "cpu");
        Assert.True(model.IsMultilingual);
        Assert.Equal("cpu", model.Device);
        var first = model.Transcribe(checkpoint.Jfk, Fast);
        var second = model.Transcribe(checkpoint.Jfk, Fast);
        Assert.NotEmpty(first.Segments);
        Assert.False(string.IsNullOrEmpty(first.Language));
        Assert.Equal(TokensOf(first), TokensOf(second));
        Assert.Equal(first.Text, second.Text);
        for (var i = 0; i < first.Segments.Count; i++)
        {
            var s = first.Segments[i];
            Assert.Equal(i, s.Id);
            Assert.True(s.Start <= s.End);
            Assert.All(s.Tokens, t => Assert.InRange(t, 0, 51864));
            Assert.False(double.IsNaN(s.AverageLogProbability));
            Assert.InRange(s.NoSpeechProbability, 0.0, 1.0);
        }
    }

    [Fact]
    public void WithoutTimestampsAndAGivenLanguage()
    {
        using var model = WhisperModel.FromPretrained(checkpoint.Folder, "cpu");
        var t = model.Transcribe(checkpoint.Jfk, new TranscribeOptions
        {
            Temperatures = new[] { 0.0 }, MaxTokensPerWindow = 16, WithoutTimestamps = true, Language = "English",
        });
        Assert.Equal("en", t.Language);
        Assert.All(t.Segments, s => Assert.DoesNotContain(s.Tokens, id => id >= 50364));
        Assert.All(t.Segments, s => Assert.Equal(TimeSpan.Zero, s.Start));
    }

    [Fact]
    public async Task AsyncAndBatchGiveTheSameResultAsSync()
    {
        using var model = WhisperModel.FromPretrained(checkpoint.Folder, "cpu");
        var sync = model.Transcribe(checkpoint.Jfk, Fast);
        var async = await model.TranscribeAsync(checkpoint.Jfk, Fast);
        Assert.Equal(TokensOf(sync), TokensOf(async));
        var samples = MagnetWhisper.Core.Audio.Audio.load(checkpoint.Jfk);
        var noise = new Random(3);
        var other = Enumerable.Range(0, 5 * 16000).Select(_ => (float)(noise.NextDouble() - 0.5) * 0.1f).ToArray();
        var batch = model.TranscribeBatch(new[] { other, samples }, Fast);
        Assert.Equal(2, batch.Count);
        Assert.Equal(TokensOf(sync), TokensOf(batch[1]));
    }

    [Fact]
    public async Task StreamsTheSegmentsOfLongAudioWindowByWindow()
    {
        using var model = WhisperModel.FromPretrained(checkpoint.Folder, "cpu");
        var samples = MagnetWhisper.Core.Audio.Audio.load(checkpoint.Jfk);
        var path = Path.Combine(Path.GetTempPath(), "mw-api-long-" + Guid.NewGuid().ToString("N") + ".wav");
        try
        {
            WriteWav(path, samples.Concat(samples).Concat(samples).ToArray());
            var options = new TranscribeOptions { Temperatures = new[] { 0.0 }, MaxTokensPerWindow = 24, Language = "en" };
            var streamed = new List<TranscriptSegment>();
            await foreach (var s in model.TranscribeSegmentsAsync(path, options)) streamed.Add(s);
            var whole = model.Transcribe(path, options);
            Assert.Equal(whole.Segments.Select(s => s.Tokens).ToList(), streamed.Select(s => s.Tokens).ToList());
            Assert.Equal(whole.Segments.Select(s => s.Start).ToList(), streamed.Select(s => s.Start).ToList());
            Assert.True(streamed.Max(s => s.Seek) > 0, "a second window");

            // stopping early ends the transcription; the model is usable afterwards
            await foreach (var _ in model.TranscribeSegmentsAsync(path, options)) break;
            Assert.Equal(TokensOf(whole), TokensOf(model.Transcribe(path, options)));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task CancellationAndErrorsSurface()
    {
        using var model = WhisperModel.FromPretrained(checkpoint.Folder, "cpu");
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => model.TranscribeAsync(checkpoint.Jfk, Fast, cancelled.Token));
        Assert.Throws<FileNotFoundException>(() => model.Transcribe(Path.Combine(Path.GetTempPath(), "no-such-file.flac"), Fast));
        Assert.Throws<ArgumentException>(() => model.Transcribe(checkpoint.Jfk, new TranscribeOptions { Temperatures = Array.Empty<double>() }));
        Assert.ThrowsAny<IOException>(() => WhisperModel.FromPretrained(Path.Combine(Path.GetTempPath(), "no-such-model")));
        model.Dispose();
        Assert.Throws<ObjectDisposedException>(() => model.Transcribe(checkpoint.Jfk, Fast));
    }

    /// <summary>Writes 16 kHz mono 16-bit PCM.</summary>
    static void WriteWav(string path, float[] samples)
    {
        using var w = new BinaryWriter(File.Create(path));
        w.Write("RIFF"u8.ToArray());
        w.Write(36 + samples.Length * 2);
        w.Write("WAVEfmt "u8.ToArray());
        w.Write(16);
        w.Write((short)1);
        w.Write((short)1);
        w.Write(16000);
        w.Write(32000);
        w.Write((short)2);
        w.Write((short)16);
        w.Write("data"u8.ToArray());
        w.Write(samples.Length * 2);
        foreach (var s in samples) w.Write((short)Math.Clamp(MathF.Round(s * 32767f), -32768f, 32767f));
    }
}
