using System;
using System.Collections.Generic;
using System.Linq;
using TorchSharp;
using Microsoft.FSharp.Collections;
using static TorchSharp.torch;
using Mg = MagnetWhisper.Core.Magnet;

namespace MagnetWhisper
{
    /// <summary>
    /// What a forward pass of <see cref="MagnetWhisperModel.Forward"/> needs. Only <see cref="Mel"/> and
    /// <see cref="Labels"/> are required; the rest default to an evaluation pass (thresholded boundaries, boundary loss 0).
    /// <code>
    /// using var result = model.Forward(new MagnetForwardInput(mel, labels) { FrameMask = mask, Targets = counts, Seed = 3 });
    /// </code>
    /// </summary>
    public sealed class MagnetForwardInput
    {
        /// <summary>Creates an input from its two required tensors.</summary>
        /// <param name="mel">(B, n_mels, 3000) log-mel features.</param>
        /// <param name="labels">(B, T) int64 labels, −100 = ignored.</param>
        public MagnetForwardInput(Tensor mel, Tensor labels)
        {
            Mel = mel ?? throw new ArgumentNullException(nameof(mel));
            Labels = labels ?? throw new ArgumentNullException(nameof(labels));
        }

        /// <summary>(B, n_mels, 3000) log-mel features.</summary>
        public Tensor Mel { get; }

        /// <summary>(B, T) int64 labels, −100 = ignored.</summary>
        public Tensor Labels { get; }

        /// <summary>(B, 3000) frame validity, or null when every frame is real audio.</summary>
        public Tensor? FrameMask { get; init; }

        /// <summary>(B, T) decoder inputs, or null for the labels shifted right after the decoder start token.</summary>
        public Tensor? DecoderInputs { get; init; }

        /// <summary>(B, T) real decoder tokens (false = padding), or null when every token is real.</summary>
        public Tensor? TokenMask { get; init; }

        /// <summary>(rows, B) target boundary counts, one row per count-trained predictor; needed when sampling.</summary>
        public Tensor? Targets { get; init; }

        /// <summary>Sampling seed: with one the predictors sample boundaries (training, reproducible for a seed); null thresholds them.</summary>
        public long? Seed { get; init; }

        /// <summary>RL mode: Bernoulli boundaries with log-probabilities and a prior-based boundary loss.</summary>
        public bool ReinforcementLearning { get; init; }

        /// <summary>Target-progress lerp in [0, 1]: 0 makes every frame a boundary, 1 (default) uses the targets.</summary>
        public double TargetProgress { get; init; } = 1.0;

        /// <summary>
        /// Weight w of each utterance's own boundary loss in the per-utterance loss CE + w · boundary loss (the negated
        /// reward of reinforcement learning); 1 by default.
        /// </summary>
        public double RlBoundaryLossWeight { get; init; } = 1.0;

        /// <summary>
        /// Schedules of single predictors by the encoder layer they run before; a predictor without an entry (or a null
        /// value of an entry) keeps its own. Null = every predictor its own.
        /// </summary>
        public IReadOnlyDictionary<int, PredictorSchedule>? Schedules { get; init; }

        /// <summary>
        /// Recorded actions to replay, by the encoder layer of the predictor: (B, L) tensors as
        /// <see cref="BoundaryLayerResult.Actions"/> (or <see cref="MagnetEncoderResult.Actions"/>) of an earlier pass on the
        /// same batch. Those predictors pool the recorded actions and return their log-probability under the current
        /// weights (PPO ratios, KL penalties); with unchanged weights and dropout off it equals the recording's. The
        /// others sample (with a <see cref="Seed"/>) or threshold. Null = nothing replayed.
        /// </summary>
        public IReadOnlyDictionary<int, Tensor>? Replay { get; init; }

        /// <summary>The core input on <paramref name="device"/>; <paramref name="generator"/> is null unless <see cref="Seed"/> is set.</summary>
        internal Mg.ForwardInput ToCore(Mg.MagnetOptions options, Device device, Generator? generator)
        {
            if (TargetProgress is < 0.0 or > 1.0 || double.IsNaN(TargetProgress))
                throw new ArgumentOutOfRangeException(nameof(TargetProgress), TargetProgress, "TargetProgress must be in [0, 1].");
            var layers = options.Predictors.Select(slot => slot.Layer).ToHashSet();
            void RequirePredictors<T>(IReadOnlyDictionary<int, T>? byLayer, string name)
            {
                foreach (var layer in byLayer?.Keys ?? Enumerable.Empty<int>())
                    if (!layers.Contains(layer))
                        throw new ArgumentException(
                            $"{name} has an entry for encoder layer {layer}, which has no predictor (predictor layers: {string.Join(", ", layers.OrderBy(l => l))}).", name);
            }
            RequirePredictors(Schedules, nameof(Schedules));
            RequirePredictors(Replay, nameof(Replay));
            var own = Mg.PredictorSchedules.withTargetProgress(options, TargetProgress);
            var schedules = MapModule.OfSeq(own.Select(entry =>
                Tuple.Create(entry.Key, Schedules is not null && Schedules.TryGetValue(entry.Key, out var given) && given is not null
                    ? given.Over(entry.Value, entry.Key)
                    : entry.Value)));
            var replay = MapModule.OfSeq((Replay ?? new Dictionary<int, Tensor>()).Select(entry =>
                Tuple.Create(entry.Key, (entry.Value ?? throw new ArgumentNullException(nameof(Replay), $"Replay[{entry.Key}] is null.")).to(device))));
            // Named arguments: a reordered or renamed core field is a compile error here, not a silent swap.
            return new Mg.ForwardInput(
                mel: Mel.to(device),
                frameMask: SegmentPooling.Option(FrameMask?.to(device)),
                labels: Labels.to(device),
                decoderInputs: SegmentPooling.Option(DecoderInputs?.to(device)),
                tokenMask: SegmentPooling.Option(TokenMask?.to(device)),
                targetMatrix: SegmentPooling.Option(Targets?.to(device)),
                mode: generator is null ? Mg.PredictorMode.Threshold : Mg.PredictorMode.NewSample(generator),
                rl: ReinforcementLearning,
                schedules: schedules,
                replay: replay,
                rlBoundaryLossWeight: RlBoundaryLossWeight);
        }
    }
}
