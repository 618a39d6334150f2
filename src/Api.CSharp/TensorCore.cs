using MagnetWhisper.Core.Segments;
using Microsoft.FSharp.Core;
using TorchSharp;
using static TorchSharp.torch;

namespace MagnetWhisper
{
    /// <summary>What happens to the frames after a row's last boundary when downsampling.</summary>
    public enum TailRule
    {
        /// <summary>They are not pooled, so a row's result never depends on the rest of the batch (the default).</summary>
        DropAfterLastBoundary,

        /// <summary>The original's rule: they form one extra segment in rows with fewer boundaries than the batch maximum.</summary>
        Original,
    }

    /// <summary>
    /// Segment pooling: the frames of each segment averaged into one vector. A boundary of 1 at position l marks l as
    /// the last frame of its segment. Shapes are batch-first unless the name says otherwise.
    /// </summary>
    public static class SegmentPooling
    {
        internal static FSharpOption<Tensor> Option(Tensor? t) => t is null ? FSharpOption<Tensor>.None : FSharpOption<Tensor>.Some(t);

        static Core.Segments.Downsample.DownsampleOptions Options(TailRule tail) =>
            tail == TailRule.Original ? Core.Segments.Downsample.originalOptions : Core.Segments.Downsample.defaultOptions;

        /// <summary>
        /// Segment means of <paramref name="hidden"/> (B, L, D) under <paramref name="boundaries"/> (B, L) with an optional
        /// validity mask (B, L): returns (B, S, D) with S the largest boundary count of the batch; empty segments are zero.
        /// The boundaries receive the original's gradient (each later frame moved one segment further, linearised).
        /// </summary>
        public static Tensor Downsample(Tensor boundaries, Tensor hidden, Tensor? mask = null, TailRule tail = TailRule.DropAfterLastBoundary) =>
            Core.Segments.Downsample.downsample(Options(tail), boundaries, hidden, Option(mask));

        /// <summary>As <see cref="Downsample"/> with the original's sequence-first layout: hidden (L, B, D) → (S, B, D).</summary>
        public static Tensor DownsampleSequenceFirst(Tensor boundaries, Tensor hidden, Tensor? mask = null, TailRule tail = TailRule.DropAfterLastBoundary) =>
            Core.Segments.Downsample.downsampleSeqFirst(Options(tail), boundaries, hidden, Option(mask));

        /// <summary>
        /// Forward as <see cref="Downsample"/> (no mask); the boundary gradient adds the original's finite-difference
        /// estimate of moving each boundary one frame left or right (weight 0.1) to the analytic one, times <paramref name="scale"/>.
        /// </summary>
        public static Tensor DownsampleFiniteDifference(Tensor boundaries, Tensor hidden, double scale = 1.0, TailRule tail = TailRule.DropAfterLastBoundary) =>
            Core.Segments.Downsample.finiteDifference(Options(tail), scale, boundaries, hidden);

        /// <summary>Forward as <see cref="Downsample"/>; the hidden-state gradient is smoothed by a box filter of odd width <paramref name="kernel"/>.</summary>
        public static Tensor DownsampleSmoothed(Tensor boundaries, Tensor hidden, Tensor? mask = null, int kernel = 3, TailRule tail = TailRule.DropAfterLastBoundary) =>
            Core.Segments.Downsample.smoothed(Options(tail), kernel, boundaries, hidden, Option(mask));
    }

    /// <summary>Sampling of hard boundaries from per-frame probabilities, and the masks that go with them. Shapes (B, L).</summary>
    public static class BoundarySampling
    {
        /// <summary>A seeded random generator on a device, so that sampling is reproducible.</summary>
        public static Generator CreateGenerator(long seed, Device? device = null) =>
            Core.Segments.Boundaries.generator(seed, device ?? CPU);

        /// <summary>Relaxed-Bernoulli (Gumbel-sigmoid) sample of probabilities p (B, L) at a temperature.</summary>
        public static Tensor RelaxedSample(Tensor probabilities, double temperature, Generator generator) =>
            Core.Segments.Boundaries.relaxedSample(generator, temperature, probabilities);

        /// <summary>1 where <paramref name="values"/> exceed <paramref name="threshold"/>, else 0 (no gradient).</summary>
        public static Tensor Threshold(Tensor values, double threshold = 0.5) =>
            Core.Segments.Boundaries.hard(threshold, values);

        /// <summary>Straight-through estimator: the value of <paramref name="hard"/>, the gradient of <paramref name="relaxed"/>.</summary>
        public static Tensor StraightThrough(Tensor hard, Tensor relaxed) =>
            Core.Segments.Boundaries.straightThrough(hard, relaxed);

        /// <summary>Zeroes boundaries outside the mask and forces one at the last valid frame of every row.</summary>
        public static Tensor MaskAndForceLast(Tensor boundaries, Tensor? mask = null) =>
            Core.Segments.Boundaries.maskAndForce(SegmentPooling.Option(mask), boundaries);

        /// <summary>The mask of the pooled sequence (B, S): ones for each row's segments, zeros after.</summary>
        public static Tensor ShortenedMask(Tensor boundaries) =>
            Core.Segments.Boundaries.shortenedMask(boundaries);

        /// <summary>Log-probability (B,) of hard boundaries h under per-frame probabilities p, over valid frames.</summary>
        public static Tensor LogProbability(Tensor probabilities, Tensor hard, Tensor? mask = null) =>
            Core.Segments.Boundaries.logProb(SegmentPooling.Option(mask), probabilities, hard);
    }

    /// <summary>Boundary-rate losses: they pull the number of boundaries toward a prior rate or a target count.</summary>
    public static class BoundaryLosses
    {
        /// <summary>Binomial negative log-likelihood of k boundaries among n frames at rate <paramref name="prior"/>, divided by n; (B,).</summary>
        public static Tensor Binomial(Tensor counts, Tensor totals, double prior) =>
            Core.Segments.Losses.binomialPerUtterance(prior, counts, totals);

        /// <summary>Binomial negative log-likelihood of k boundaries when the target count is t (rate t/n), divided by n; (B,).</summary>
        public static Tensor BinomialFromTargets(Tensor counts, Tensor totals, Tensor targets) =>
            Core.Segments.Losses.binomialFromTargets(counts, totals, targets);

        /// <summary>Boundaries with other boundaries within two frames, per valid frame (a batch scalar).</summary>
        public static Tensor Repulsion(Tensor boundaries, Tensor? mask = null) =>
            Core.Segments.Losses.repulsion(boundaries, SegmentPooling.Option(mask));

        /// <summary>Pairs of adjacent boundaries per row (B,).</summary>
        public static Tensor Adjacency(Tensor boundaries, Tensor? mask = null) =>
            Core.Segments.Losses.adjacencyPerUtterance(boundaries, SegmentPooling.Option(mask));
    }
}
