using System.IO;
using System.Linq;
using System.Threading.Tasks;
using Xunit;

namespace MagnetWhisper.Api.Tests;

/// <summary>MagnetWhisper transcribes through the same decoders as Whisper, deterministically.</summary>
public class MagnetTranscribeTests : IClassFixture<TinyCheckpoint>
{
    readonly TinyCheckpoint checkpoint;

    public MagnetTranscribeTests(TinyCheckpoint checkpoint) => this.checkpoint = checkpoint;

    static readonly TranscribeOptions Fast = new() { Temperatures = new[] { 0.0 }, MaxTokensPerWindow = 16 };

    [Fact]
    public async Task TranscribesThroughTheCompressedEncoderDeterministically()
    {
        var options = MagnetOptions.Default.WithPredictor(1, PredictorType.Bp1, prior: 0.25, pooling: PoolingMethod.Mean);
        using var model = MagnetWhisperModel.FromWhisper(checkpoint.Folder, options, "cpu");
        var first = model.Transcribe(checkpoint.Jfk, Fast);
        var second = await model.TranscribeAsync(checkpoint.Jfk, Fast);
        Assert.NotEmpty(first.Segments);
        Assert.Equal(first.Text, second.Text);
        Assert.Equal(first.Segments.Select(s => s.Tokens.ToArray()), second.Segments.Select(s => s.Tokens.ToArray()));
        Assert.All(first.Segments, s => Assert.True(s.End >= s.Start));

        // The same model saved and loaded transcribes identically.
        var dir = Path.Combine(Path.GetTempPath(), "mw-magnet-" + System.Guid.NewGuid().ToString("N"));
        try
        {
            model.Save(dir);
            using var loaded = MagnetWhisperModel.Load(dir, "cpu");
            Assert.Equal(first.Text, loaded.Transcribe(checkpoint.Jfk, Fast).Text);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
