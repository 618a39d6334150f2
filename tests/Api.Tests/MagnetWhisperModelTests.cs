using System;
using System.IO;
using System.Linq;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using WhisperCore = MagnetWhisper.Core.Whisper;

namespace MagnetWhisper.Api.Tests;

/// <summary>The MagnetWhisper facade used end to end as a C# caller would: convert, train step, save, load, generate.</summary>
public sealed class MagnetWhisperModelTests : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mw-api-" + Guid.NewGuid().ToString("N"));

    // A tiny Whisper: d_model 32, 4 heads, 2 + 2 layers, 16 mel bins, 24 encoder positions (48 frames), 97 tokens.
    const string TinyConfig = """
        {
          "model_type": "whisper", "vocab_size": 97, "num_mel_bins": 16, "d_model": 32,
          "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4, "decoder_attention_heads": 4,
          "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_source_positions": 24, "max_target_positions": 32,
          "pad_token_id": 96, "bos_token_id": 96, "eos_token_id": 96, "decoder_start_token_id": 95,
          "begin_suppress_tokens": [3], "suppress_tokens": [1, 2]
        }
        """;

    public MagnetWhisperModelTests() => Directory.CreateDirectory(root);

    public void Dispose()
    {
        if (Directory.Exists(root)) Directory.Delete(root, true);
    }

    /// <summary>Writes a random Hugging Face Whisper folder through the F# core API.</summary>
    string WriteWhisper()
    {
        var dir = Path.Combine(root, "whisper");
        var config = WhisperCore.WhisperConfigModule.parse("tiny config", TinyConfig);
        torch.manual_seed(1);
        using var whisper = new WhisperCore.WhisperModel(config);
        whisper.Save(dir);
        return dir;
    }

    [Fact]
    public void ConvertTrainSaveLoadAndGenerate()
    {
        using var scope = NewDisposeScope();
        var options = MagnetOptions.Default
            .WithPredictor(1, PredictorType.Bp1, prior: 0.25, pooling: PoolingMethod.Mean)
            .WithConvStrides(2);
        using var model = MagnetWhisperModel.FromWhisper(WriteWhisper(), options, "cpu");
        Assert.Equal(32, model.DModel);
        Assert.Single(model.Options.Predictors);
        Assert.Equal(PoolingMethod.Mean, model.Options.Predictors[0].Pooling);

        manual_seed(2);
        var mel = randn(2, 16, 48);
        var frameMask = ones(2, 48);
        frameMask[1, TensorIndex.Slice(30)] = tensor(0f);
        var labels = tensor(new long[] { 5, 6, 7, 96, 8, 9, -100, -100 }).reshape(2, 4);
        var targets = tensor(new float[] { 4, 3 }).reshape(1, 2);

        // A training step: sampled boundaries (seeded), count loss, gradients into the scorer through mean pooling.
        model.Train();
        using (var result = model.Forward(new MagnetForwardInput(mel, labels) { FrameMask = frameMask, Targets = targets, Seed = 3 }))
        {
            Assert.Equal(new long[] { 2, 4, 97 }, result.Logits.shape);
            var layer = Assert.Single(result.Layers);
            Assert.Equal(1, layer.Layer);
            Assert.Equal(PredictorType.Bp1, layer.Type);
            Assert.Equal(12, layer.InputLength);
            Assert.True(layer.KeptFraction > 0 && layer.KeptFraction <= 1);
            Assert.True(result.Loss.allclose(result.CrossEntropy + result.BoundaryLoss, rtol: 0, atol: 1e-5));
            result.Loss.backward();
        }
        var scorer = model.Module.named_parameters().First(p => p.name == "model.encoder.boundary_predictors.1.boundary_mlp.0.weight").parameter;
        Assert.NotNull(scorer.grad);
        model.Eval();

        var dir = Path.Combine(root, "magnet");
        model.Save(dir);
        Assert.True(File.Exists(Path.Combine(dir, "magnet.json")));
        using var loaded = MagnetWhisperModel.Load(dir, "cpu");
        Assert.Equal(0.25, loaded.Options.Predictors[0].Prior);
        Assert.Equal(2, loaded.Options.Convs.TotalStride);
        using var a = model.Encode(mel, frameMask);
        using var b = loaded.Encode(mel, frameMask);
        Assert.True(a.Hidden.eq(b.Hidden).all().item<bool>());
        Assert.Equal(new long[] { 12, b.Hidden.shape[1] }, b.LayerLengths.ToArray());

        // Greedy generation through the compressed encoder: a row alone equals the same row in the batch.
        var batch = loaded.GenerateTokens(mel, frameMask, maxTokens: 6);
        var alone = loaded.GenerateTokens(mel[TensorIndex.Slice(1, 2)], frameMask[TensorIndex.Slice(1, 2)], maxTokens: 6);
        Assert.Equal(batch[1], alone[0]);
        Assert.DoesNotContain(batch.SelectMany(t => t), t => t == 1 || t == 2);
    }

    [Fact]
    public void InvalidOptionsAndMissingFoldersGiveClearErrors()
    {
        var whisper = WriteWhisper();
        var e = Assert.Throws<ArgumentException>(() => MagnetWhisperModel.FromWhisper(whisper, MagnetOptions.Default.WithPredictor(5, PredictorType.Bp2), "cpu"));
        Assert.Contains("encoder layers 0 to 1", e.Message);
        var missing = Assert.Throws<FileNotFoundException>(() => MagnetWhisperModel.Load(whisper, "cpu"));
        Assert.Contains("magnet.json", missing.Message);
        var original = MagnetOptions.Default.WithOriginalCompatibility();
        Assert.Equal(EncoderAttentionMasking.QueriesOnly, original.EncoderMasking);
        Assert.True(original.OriginalTargetScheduling);
    }
}
