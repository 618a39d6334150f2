using System;
using System.Threading.Tasks;
using Xunit;
using static TorchSharp.torch;

namespace MagnetWhisper.Api.Tests;

/// <summary>Forward, Encode and GenerateTokens wait for a running transcription, and refuse a disposed model.</summary>
public class MagnetWhisperGateTests : IClassFixture<TinyCheckpoint>
{
    readonly TinyCheckpoint checkpoint;

    public MagnetWhisperGateTests(TinyCheckpoint checkpoint) => this.checkpoint = checkpoint;

    static readonly TranscribeOptions Fast = new() { Temperatures = new[] { 0.0 }, MaxTokensPerWindow = 8, Language = "en" };

    static readonly MagnetOptions OnePredictor = MagnetOptions.Default.WithPredictor(1, PredictorType.Bp1, prior: 0.25, pooling: PoolingMethod.Mean);

    [Fact]
    public async Task ModelCallsWaitForARunningTranscription()
    {
        using var model = MagnetWhisperModel.FromWhisper(checkpoint.Folder, OnePredictor, "cpu");
        var mel = zeros(1, 80, 3000);
        var labels = tensor(new long[] { 50258, 50259, 50359, 50363 }).reshape(1, 4);

        // A streaming transcription holds the model from its first segment until its enumeration ends. (It must end
        // before the model is disposed, even when an assertion fails, or Dispose would wait for it forever.)
        var segments = model.TranscribeSegmentsAsync(checkpoint.Jfk, Fast).GetAsyncEnumerator();
        Task<long[]> calls;
        Task<long> encode, forward, generate;
        try
        {
            Assert.True(await segments.MoveNextAsync());
            encode = Task.Run(() => { using var r = model.Encode(mel); return r.Hidden.shape[0]; });
            forward = Task.Run(() => { using var r = model.Forward(new MagnetForwardInput(mel, labels)); return r.Logits.shape[0]; });
            generate = Task.Run(() => (long)model.GenerateTokens(mel, maxTokens: 2).Count);
            calls = Task.WhenAll(encode, forward, generate);

            // Each call alone takes milliseconds on this tiny model; while the transcription runs, none may finish.
            await Task.WhenAny(calls, Task.Delay(TimeSpan.FromSeconds(2)));
            Assert.False(encode.IsCompleted || forward.IsCompleted || generate.IsCompleted,
                "a call ran on the model while a transcription held it");
        }
        finally
        {
            await segments.DisposeAsync();
        }
        Assert.Equal(new long[] { 1, 1, 1 }, await calls.WaitAsync(TimeSpan.FromSeconds(60)));
    }

    [Fact]
    public void ADisposedModelRefusesEveryCall()
    {
        var model = MagnetWhisperModel.FromWhisper(checkpoint.Folder, OnePredictor, "cpu");
        model.Dispose();
        model.Dispose();
        var mel = zeros(1, 80, 3000);
        var labels = tensor(new long[] { 50258, 50259 }).reshape(1, 2);
        Assert.Throws<ObjectDisposedException>(() => model.Encode(mel));
        Assert.Throws<ObjectDisposedException>(() => model.Forward(new MagnetForwardInput(mel, labels)));
        Assert.Throws<ObjectDisposedException>(() => model.GenerateTokens(mel));
        Assert.Throws<ObjectDisposedException>(() => model.Transcribe(checkpoint.Jfk, Fast));
        Assert.Throws<ObjectDisposedException>(() => model.Save(checkpoint.Folder + "-never"));
    }
}
