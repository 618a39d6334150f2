using System;
using TorchSharp;
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

        /// <summary>The core input on <paramref name="device"/>; <paramref name="generator"/> is null unless <see cref="Seed"/> is set.</summary>
        internal Mg.ForwardInput ToCore(Mg.MagnetOptions options, Device device, Generator? generator)
        {
            if (TargetProgress is < 0.0 or > 1.0 || double.IsNaN(TargetProgress))
                throw new ArgumentOutOfRangeException(nameof(TargetProgress), TargetProgress, "TargetProgress must be in [0, 1].");
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
                schedules: Mg.PredictorSchedules.withTargetProgress(options, TargetProgress),
                replay: Microsoft.FSharp.Collections.MapModule.Empty<int, Tensor>(),
                rlBoundaryLossWeight: RlBoundaryLossWeight);
        }
    }
}
