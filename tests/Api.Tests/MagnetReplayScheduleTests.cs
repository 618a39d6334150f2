using System;
using System.Collections.Generic;
using System.Linq;
using Xunit;
using static TorchSharp.torch;

namespace MagnetWhisper.Api.Tests;

/// <summary>
/// MagnetForwardInput's replay and per-predictor schedules, and each predictor's actions and log-probability in the
/// result, used from C# as a trainer would (PPO ratios, per-predictor curricula).
/// </summary>
public class MagnetReplayScheduleTests : IClassFixture<TinyCheckpoint>
{
    readonly TinyCheckpoint checkpoint;

    public MagnetReplayScheduleTests(TinyCheckpoint checkpoint) => this.checkpoint = checkpoint;

    // Two count-trained predictors: layer 0 takes target row 0, layer 1 row 1.
    static readonly MagnetOptions TwoPredictors = MagnetOptions.Default
        .WithPredictor(0, PredictorType.Bp1, prior: 0.25, pooling: PoolingMethod.Mean)
        .WithPredictor(1, PredictorType.Bp1, prior: 0.5, pooling: PoolingMethod.Mean);

    static (Tensor Mel, Tensor Mask, Tensor Labels) Batch()
    {
        manual_seed(7);
        var mel = randn(2, 80, 3000);
        var mask = ones(2, 3000);
        mask[1, TensorIndex.Slice(2000)] = tensor(0f);
        var labels = tensor(new long[] { 50259, 50359, 50363, 50257, 50259, 50359, 50257, -100 }).reshape(2, 4);
        return (mel, mask, labels);
    }

    static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    [Fact]
    public void ReplayingASampleWithUnchangedWeightsGivesItsLogProbabilities()
    {
        using var scope = NewDisposeScope();
        using var model = MagnetWhisperModel.FromWhisper(checkpoint.Folder, TwoPredictors, "cpu");
        var (mel, mask, labels) = Batch();
        var targets = tensor(new float[] { 300, 200, 100, 60 }).reshape(2, 2);
        using var sampled = model.Forward(new MagnetForwardInput(mel, labels) { FrameMask = mask, Targets = targets, Seed = 3 });
        Assert.Equal(new[] { 0, 1 }, sampled.Encoder.Actions.Keys.OrderBy(k => k));
        Assert.All(sampled.Layers, l => Assert.NotNull(l.LogProbability));

        // No seed: without the replay the predictors would threshold and return no log-probability at all.
        using var replayed = model.Forward(new MagnetForwardInput(mel, labels) { FrameMask = mask, Targets = targets, Replay = sampled.Encoder.Actions });
        foreach (var (recorded, replay) in sampled.Layers.Zip(replayed.Layers))
        {
            Assert.NotNull(replay.LogProbability);
            Assert.True(replay.LogProbability!.allclose(recorded.LogProbability!, rtol: 0, atol: 1e-4), $"log-probability of layer {recorded.Layer}");
            Assert.True(Same(replay.Boundaries, recorded.Boundaries), $"boundaries of layer {recorded.Layer}");
        }
        Assert.True(replayed.Loss.allclose(sampled.Loss, rtol: 1e-6, atol: 1e-6), "loss");

        // Another seed samples other actions, with another log-probability: the replay above is not a coincidence.
        using var other = model.Forward(new MagnetForwardInput(mel, labels) { FrameMask = mask, Targets = targets, Seed = 4 });
        Assert.False(other.Layers[0].LogProbability!.allclose(sampled.Layers[0].LogProbability!, rtol: 0, atol: 1e-4));

        var e = Assert.Throws<ArgumentException>(() => model.Forward(new MagnetForwardInput(mel, labels)
        {
            FrameMask = mask, Targets = targets, Replay = new Dictionary<int, Tensor> { [1] = sampled.Layers[1].Actions, [2] = sampled.Layers[1].Actions },
        }));
        Assert.Contains("encoder layer 2, which has no predictor", e.Message);
    }

    [Fact]
    public void APerLayerScheduleChangesThatPredictorOnly()
    {
        using var scope = NewDisposeScope();
        using var model = MagnetWhisperModel.FromWhisper(checkpoint.Folder, TwoPredictors, "cpu");
        var (mel, mask, labels) = Batch();
        var targets = tensor(new float[] { 300, 200, 40, 30 }).reshape(2, 2);
        using var plain = model.Forward(new MagnetForwardInput(mel, labels) { FrameMask = mask, Targets = targets, Seed = 5 });

        // Target progress 0 for layer 1 only: its targets become the number of its valid input positions, which are
        // layer 0's boundary counts; layer 0 keeps its targets and schedule.
        var schedules = new Dictionary<int, PredictorSchedule> { [1] = new PredictorSchedule { TargetProgress = 0.0 } };
        using var scheduled = model.Forward(new MagnetForwardInput(mel, labels) { FrameMask = mask, Targets = targets, Seed = 5, Schedules = schedules });
        Assert.True(Same(scheduled.Layers[0].Loss, plain.Layers[0].Loss), "layer 0's loss is unchanged");
        Assert.True(Same(scheduled.Layers[0].Boundaries, plain.Layers[0].Boundaries), "layer 0's boundaries are unchanged");
        Assert.True(Same(scheduled.Layers[1].Boundaries, plain.Layers[1].Boundaries), "layer 1 samples the same boundaries");
        Assert.False(scheduled.Layers[1].Loss.allclose(plain.Layers[1].Loss, rtol: 0, atol: 1e-3), "layer 1's loss follows its schedule");

        // The same loss by another route: layer 1's target row replaced by those counts, no schedule.
        var everyPosition = stack(new[] { targets[0], plain.Layers[0].BoundaryCounts.to_type(ScalarType.Float32) });
        using var direct = model.Forward(new MagnetForwardInput(mel, labels) { FrameMask = mask, Targets = everyPosition, Seed = 5 });
        Assert.True(scheduled.Layers[1].Loss.allclose(direct.Layers[1].Loss, rtol: 1e-6, atol: 1e-6), "layer 1's loss equals the every-position target's");

        var bad = new Dictionary<int, PredictorSchedule> { [0] = new PredictorSchedule { CompressionSchedule = 1.5 } };
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(new MagnetForwardInput(mel, labels) { FrameMask = mask, Targets = targets, Seed = 5, Schedules = bad }));
        Assert.Contains("Schedules[0].CompressionSchedule must be in [0, 1]", e.Message);
    }
}
