using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Mg = MagnetWhisper.Core.Magnet;

namespace MagnetWhisper
{
    /// <summary>The original project's four boundary predictors.</summary>
    public enum PredictorType
    {
        /// <summary>BoundaryPredictor1: per-frame MLP scorer (the original's primary predictor).</summary>
        Bp1,

        /// <summary>BoundaryPredictor2: dissimilarity of consecutive frames.</summary>
        Bp2,

        /// <summary>BoundaryPredictor3: BP2's idea on hidden states enhanced by a small U-Net.</summary>
        Bp3,

        /// <summary>BoundaryPredictor4: convolutional scorer; mean pooling only.</summary>
        Bp4,
    }

    /// <summary>How the frames of a segment are combined.</summary>
    public enum PoolingMethod
    {
        /// <summary>Learned-query attention over the segment (the default of BP1–BP3); the scorer learns from the count loss only.</summary>
        Attention,

        /// <summary>Segment mean; the scorer also receives the speech-recognition gradient.</summary>
        Mean,
    }

    /// <summary>Where a predictor's target boundary counts come from.</summary>
    public enum TargetSource
    {
        /// <summary>The next unused row of the target matrix, in layer order (default of BP1, BP2, BP4).</summary>
        NextRow,

        /// <summary>The fixed row <see cref="BoundaryPredictorOptions.TargetRow"/>.</summary>
        FixedRow,

        /// <summary>No targets: prior-based loss only (default of BP3).</summary>
        None,
    }

    /// <summary>Which padded positions encoder self-attention masks.</summary>
    public enum EncoderAttentionMasking
    {
        /// <summary>Padded queries and keys: a padded batch gives each utterance's own result (default).</summary>
        QueriesAndKeys,

        /// <summary>The original: padded queries only.</summary>
        QueriesOnly,
    }

    /// <summary>One boundary predictor placed before an encoder layer. Immutable; use <c>with</c> expressions to change it.</summary>
    /// <param name="Layer">The encoder layer (0-based) the predictor runs before.</param>
    /// <param name="Type">Which predictor.</param>
    /// <param name="Prior">Target boundary rate in (0, 1]; 1/prior is the intended compression.</param>
    public sealed record BoundaryPredictorOptions(int Layer, PredictorType Type, double Prior = 0.08)
    {
        /// <summary>Gumbel-sigmoid temperature (default 1).</summary>
        public double Temperature { get; init; } = 1.0;

        /// <summary>Decision threshold on the boundary probability (default 0.5).</summary>
        public double Threshold { get; init; } = 0.5;

        /// <summary>Segment pooling; null keeps the type's default (attention for BP1–BP3, mean for BP4).</summary>
        public PoolingMethod? Pooling { get; init; }

        /// <summary>Width of the scorer's hidden layer; null uses d_model (BP4: d_model/3).</summary>
        public int? HiddenDim { get; init; }

        /// <summary>Where the target counts come from; null keeps the type's default.</summary>
        public TargetSource? Targets { get; init; }

        /// <summary>The row of the target matrix when <see cref="Targets"/> is <see cref="TargetSource.FixedRow"/>.</summary>
        public int TargetRow { get; init; }

        /// <summary>The original's batch-dependent segmentation (forced boundary only for padded rows of padded batches,
        /// original tail rule); false (default) keeps every row independent of its batch.</summary>
        public bool OriginalBatching { get; init; }

        /// <summary>BP1 only: in RL mode pool all-ones boundaries as the original did (the sample only feeds the
        /// log-probability); false (default) pools the sampled boundaries.</summary>
        public bool OriginalRlPooling { get; init; }

        /// <summary>Threshold at inference when it differs from <see cref="Threshold"/>; null (default) uses
        /// <see cref="Threshold"/>. The original's BP1 and BP4 always thresholded at 0.5 at inference.</summary>
        public double? InferenceThreshold { get; init; }

        /// <summary>The original's float32 target probability in the target-count losses (1 − 1e-6 rounds to
        /// 0.99999899); false (default) forms it in float64.</summary>
        public bool OriginalTargetClamp { get; init; }

        internal Mg.PredictorSlot ToCore()
        {
            var kind = Type switch
            {
                PredictorType.Bp1 => Mg.PredictorKind.Bp1,
                PredictorType.Bp2 => Mg.PredictorKind.Bp2,
                PredictorType.Bp3 => Mg.PredictorKind.Bp3,
                PredictorType.Bp4 => Mg.PredictorKind.Bp4,
                _ => throw new ArgumentOutOfRangeException(nameof(Type), Type, "unknown predictor type"),
            };
            var slot = Mg.PredictorSlot.Create(Layer, kind, Prior);
            var d = slot.Predictor;
            var pooling = Pooling switch
            {
                null => d.Pooling,
                PoolingMethod.Attention => Mg.PoolingKind.AttentionPooling,
                _ => Mg.PoolingKind.MeanPooling,
            };
            var config = new Mg.PredictorConfig(
                d.Kind, d.Prior, Temperature, Threshold, pooling,
                HiddenDim is int h ? FSharpOption<int>.Some(h) : FSharpOption<int>.None,
                d.Dropout, d.InitialBoundaryBias, d.UNetAlignment, d.RlBinomialCap,
                OriginalBatching ? Mg.BatchingRule.OriginalBatching : Mg.BatchingRule.BatchIndependent,
                OriginalRlPooling ? Mg.RlPooling.PoolAllFrames : Mg.RlPooling.PoolSampled,
                InferenceThreshold is double t ? FSharpOption<double>.Some(t) : FSharpOption<double>.None,
                OriginalTargetClamp ? Core.Segments.Losses.TargetClamp.ClampInFloat32 : Core.Segments.Losses.TargetClamp.ClampInFloat64);
            var targets = Targets switch
            {
                null => slot.Targets,
                TargetSource.NextRow => Mg.TargetSource.NextRow,
                TargetSource.FixedRow => Mg.TargetSource.NewRow(TargetRow),
                _ => Mg.TargetSource.NoTargets,
            };
            return new Mg.PredictorSlot(Layer, config, targets);
        }

        internal static BoundaryPredictorOptions FromCore(Mg.PredictorSlot s)
        {
            var p = s.Predictor;
            var type = p.Kind.IsBp1 ? PredictorType.Bp1 : p.Kind.IsBp2 ? PredictorType.Bp2 : p.Kind.IsBp3 ? PredictorType.Bp3 : PredictorType.Bp4;
            return new BoundaryPredictorOptions(s.Layer, type, p.Prior)
            {
                Temperature = p.Temperature,
                Threshold = p.Threshold,
                Pooling = p.Pooling.IsAttentionPooling ? PoolingMethod.Attention : PoolingMethod.Mean,
                HiddenDim = p.HiddenDim is null ? null : p.HiddenDim.Value,
                Targets = s.Targets.IsNextRow ? TargetSource.NextRow : s.Targets.IsNoTargets ? TargetSource.None : TargetSource.FixedRow,
                TargetRow = s.Targets is Mg.TargetSource.Row r ? r.Item : 0,
                OriginalBatching = p.Batching.IsOriginalBatching,
                OriginalRlPooling = p.RlPooling.IsPoolAllFrames,
                InferenceThreshold = p.InferenceThreshold is null ? null : p.InferenceThreshold.Value,
                OriginalTargetClamp = p.TargetClamp.IsClampInFloat32,
            };
        }
    }

    /// <summary>One extra fixed-stride convolution after Whisper's conv2: Conv1d(kernel, stride, padding kernel/2) + GELU.</summary>
    /// <param name="Stride">Stride (the sequence shrinks by this factor).</param>
    /// <param name="Kernel">Kernel width (default 3).</param>
    /// <param name="OutChannels">Output channels; null uses the model's d_model (the last layer must output d_model).</param>
    public sealed record ConvLayer(int Stride, int Kernel = 3, int? OutChannels = null);

    /// <summary>The extra fixed-stride convolutions (the original's <c>ConvConfig</c>).</summary>
    public sealed class ConvConfig
    {
        /// <summary>Extra convolutions in order.</summary>
        public IReadOnlyList<ConvLayer> Layers { get; }

        /// <summary>Creates a configuration from its layers.</summary>
        public ConvConfig(IEnumerable<ConvLayer> layers)
        {
            if (layers is null) throw new ArgumentNullException(nameof(layers));
            Layers = layers.ToArray();
        }

        /// <summary>No extra convolutions.</summary>
        public static ConvConfig Empty { get; } = new(Array.Empty<ConvLayer>());

        /// <summary>One kernel-3 convolution with d_model channels per stride (the original's <c>from_strides</c>).</summary>
        public static ConvConfig FromStrides(params int[] strides) =>
            new((strides ?? throw new ArgumentNullException(nameof(strides))).Select(s => new ConvLayer(s)));

        /// <summary>The product of the strides (1 when empty).</summary>
        public int TotalStride => Layers.Aggregate(1, (a, l) => a * l.Stride);

        internal Mg.ConvConfig ToCore(int dModel) =>
            new(ListModule.OfSeq(Layers.Select(l => new Mg.ConvLayer(l.OutChannels ?? dModel, l.Kernel, l.Stride))));

        internal static ConvConfig FromCore(Mg.ConvConfig c) =>
            new(c.Layers.Select(l => new ConvLayer(l.Stride, l.Kernel, l.OutChannels)));
    }

    /// <summary>
    /// What a conversion adds to a Whisper checkpoint: predictors by encoder layer, extra convolutions and the compatibility
    /// options. Immutable: every <c>With…</c> method returns new options.
    /// <code>
    /// var options = MagnetOptions.Default
    ///     .WithPredictor(3, PredictorType.Bp1, prior: 0.08)
    ///     .WithConvStrides(2, 2);
    /// </code>
    /// </summary>
    public sealed class MagnetOptions
    {
        MagnetOptions(IReadOnlyList<BoundaryPredictorOptions> predictors, ConvConfig convs, EncoderAttentionMasking masking, bool originalScheduling, bool originalCrossEntropy)
        {
            Predictors = predictors;
            Convs = convs;
            EncoderMasking = masking;
            OriginalTargetScheduling = originalScheduling;
            OriginalPerUtteranceCrossEntropy = originalCrossEntropy;
        }

        /// <summary>No predictors, no extra convolutions, the project's behaviour.</summary>
        public static MagnetOptions Default { get; } = new(Array.Empty<BoundaryPredictorOptions>(), ConvConfig.Empty, EncoderAttentionMasking.QueriesAndKeys, false, false);

        /// <summary>The predictors in layer order.</summary>
        public IReadOnlyList<BoundaryPredictorOptions> Predictors { get; }

        /// <summary>The extra convolutions.</summary>
        public ConvConfig Convs { get; }

        /// <summary>Encoder self-attention masking (DECISIONS #2).</summary>
        public EncoderAttentionMasking EncoderMasking { get; }

        /// <summary>True for the original's double scheduling of BP1/BP4 targets (DECISIONS #3).</summary>
        public bool OriginalTargetScheduling { get; }

        /// <summary>True for the original's per-utterance CE over all label positions (DECISIONS #4).</summary>
        public bool OriginalPerUtteranceCrossEntropy { get; }

        /// <summary>These options with a predictor (replacing one at the same layer).</summary>
        public MagnetOptions WithPredictor(BoundaryPredictorOptions predictor)
        {
            if (predictor is null) throw new ArgumentNullException(nameof(predictor));
            var list = Predictors.Where(p => p.Layer != predictor.Layer).Append(predictor).OrderBy(p => p.Layer).ToArray();
            return new MagnetOptions(list, Convs, EncoderMasking, OriginalTargetScheduling, OriginalPerUtteranceCrossEntropy);
        }

        /// <summary>These options with a predictor of a type before an encoder layer.</summary>
        /// <param name="layer">The encoder layer (0-based).</param>
        /// <param name="type">The predictor.</param>
        /// <param name="prior">Target boundary rate in (0, 1].</param>
        /// <param name="pooling">Segment pooling; null keeps the type's default.</param>
        /// <param name="temperature">Gumbel-sigmoid temperature.</param>
        /// <param name="threshold">Decision threshold.</param>
        public MagnetOptions WithPredictor(int layer, PredictorType type, double prior = 0.08, PoolingMethod? pooling = null, double temperature = 1.0, double threshold = 0.5) =>
            WithPredictor(new BoundaryPredictorOptions(layer, type, prior) { Pooling = pooling, Temperature = temperature, Threshold = threshold });

        /// <summary>These options with extra kernel-3 convolutions of the given strides (d_model channels).</summary>
        public MagnetOptions WithConvStrides(params int[] strides) => WithConvs(ConvConfig.FromStrides(strides));

        /// <summary>These options with the given extra convolutions.</summary>
        public MagnetOptions WithConvs(ConvConfig convs) =>
            new(Predictors, convs ?? throw new ArgumentNullException(nameof(convs)), EncoderMasking, OriginalTargetScheduling, OriginalPerUtteranceCrossEntropy);

        /// <summary>These options reproducing the original's numbers: query-only encoder masks, double target scheduling, per-utterance CE over all positions, and on every predictor batch-dependent forcing and tail, the float32 target clamp (plus all-ones RL pooling for BP1 and the inference threshold 0.5 for BP1/BP4).</summary>
        public MagnetOptions WithOriginalCompatibility() =>
            new(Predictors.Select(p => p with
                {
                    OriginalBatching = true,
                    OriginalRlPooling = p.Type == PredictorType.Bp1,
                    OriginalTargetClamp = true,
                    InferenceThreshold = p.Type is PredictorType.Bp1 or PredictorType.Bp4 ? 0.5 : p.InferenceThreshold,
                }).ToArray(),
                Convs, EncoderAttentionMasking.QueriesOnly, true, true);

        /// <summary>These options with the project's behaviour (the default).</summary>
        public MagnetOptions WithProjectCompatibility() => new(Predictors, Convs, EncoderAttentionMasking.QueriesAndKeys, false, false);

        internal Mg.MagnetOptions ToCore(int dModel)
        {
            var compatibility = new Mg.Compatibility(
                EncoderMasking == EncoderAttentionMasking.QueriesOnly ? Mg.EncoderSelfAttentionMask.QueriesOnly : Mg.EncoderSelfAttentionMask.QueriesAndKeys,
                OriginalTargetScheduling ? Mg.TargetScheduling.ScheduleTwice : Mg.TargetScheduling.ScheduleOnce,
                OriginalPerUtteranceCrossEntropy ? Mg.CrossEntropyPerUtterance.MeanOverAllPositions : Mg.CrossEntropyPerUtterance.MeanOverRealTokens);
            return new Mg.MagnetOptions(
                ListModule.OfSeq(Predictors.Select(p => p.ToCore())),
                Convs.ToCore(dModel),
                compatibility,
                Mg.MagnetConstants.RopeTheta);
        }

        internal static MagnetOptions FromCore(Mg.MagnetOptions o) =>
            new(o.Predictors.Select(BoundaryPredictorOptions.FromCore).ToArray(),
                ConvConfig.FromCore(o.Convs),
                o.Compatibility.EncoderSelfAttentionMask.IsQueriesOnly ? EncoderAttentionMasking.QueriesOnly : EncoderAttentionMasking.QueriesAndKeys,
                o.Compatibility.TargetScheduling.IsScheduleTwice,
                o.Compatibility.CrossEntropyPerUtterance.IsMeanOverAllPositions);
    }
}
