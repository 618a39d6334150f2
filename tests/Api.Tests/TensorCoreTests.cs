using System;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MagnetWhisper.Api.Tests;

public class TensorCoreTests
{
    [Fact]
    public void EveryFrameABoundaryIsTheIdentity()
    {
        using var scope = NewDisposeScope();
        var hidden = randn(2, 7, 5);
        var boundaries = ones(2, 7);
        var pooled = SegmentPooling.Downsample(boundaries, hidden);
        Assert.Equal(new long[] { 2, 7, 5 }, pooled.shape);
        Assert.True(pooled.allclose(hidden, rtol: 0, atol: 1e-6));
    }

    [Fact]
    public void SegmentsAreAveragedAndPaddingIgnored()
    {
        using var scope = NewDisposeScope();
        // One row: frames 0-1 form segment 0, frames 2-4 segment 1; frame 5 is padding.
        var hidden = tensor(new float[] { 1, 3, 2, 4, 6, 100 }).reshape(1, 6, 1);
        var boundaries = tensor(new float[] { 0, 1, 0, 0, 1, 0 }).reshape(1, 6);
        var mask = tensor(new float[] { 1, 1, 1, 1, 1, 0 }).reshape(1, 6);
        var pooled = SegmentPooling.Downsample(boundaries, hidden, mask);
        Assert.Equal(new long[] { 1, 2, 1 }, pooled.shape);
        Assert.Equal(2f, pooled[0, 0, 0].item<float>(), 5);
        Assert.Equal(4f, pooled[0, 1, 0].item<float>(), 5);
    }

    [Fact]
    public void BoundariesReceiveAGradientThroughTheStraightThroughEstimator()
    {
        using var scope = NewDisposeScope();
        var logits = randn(3, 12, requires_grad: true);
        var generator = BoundarySampling.CreateGenerator(7);
        var relaxed = BoundarySampling.RelaxedSample(logits.sigmoid(), 1.0, generator);
        var hard = BoundarySampling.StraightThrough(BoundarySampling.Threshold(relaxed), relaxed);
        var forced = BoundarySampling.MaskAndForceLast(hard);
        var pooled = SegmentPooling.Downsample(forced, randn(3, 12, 4));
        pooled.square().sum().backward();
        Assert.NotNull(logits.grad);
        Assert.True(logits.grad!.abs().sum().item<float>() > 0f);
    }

    [Fact]
    public void SamplingIsReproducibleFromASeed()
    {
        using var scope = NewDisposeScope();
        var p = full(4, 50, 0.3f);
        var a = BoundarySampling.RelaxedSample(p, 0.5, BoundarySampling.CreateGenerator(42));
        var b = BoundarySampling.RelaxedSample(p, 0.5, BoundarySampling.CreateGenerator(42));
        var c = BoundarySampling.RelaxedSample(p, 0.5, BoundarySampling.CreateGenerator(43));
        Assert.True(a.allclose(b, rtol: 0, atol: 0));
        Assert.False(a.allclose(c, rtol: 0, atol: 0));
    }

    [Fact]
    public void BinomialLossIsSmallestNearTheTargetCount()
    {
        using var scope = NewDisposeScope();
        var totals = full(5, 100f);
        var targets = full(5, 20f);
        var counts = tensor(new float[] { 5, 12, 20, 28, 40 });
        var loss = BoundaryLosses.BinomialFromTargets(counts, totals, targets);
        Assert.Equal(new long[] { 5 }, loss.shape);
        Assert.Equal(2L, loss.argmin().item<long>());
    }

    [Fact]
    public void WrongShapesAreRejectedWithTheArgumentsName()
    {
        using var scope = NewDisposeScope();
        var e = Assert.ThrowsAny<ArgumentException>(() => SegmentPooling.Downsample(ones(2, 7), randn(2, 6, 3)));
        Assert.Contains("hidden", e.Message);
    }
}
