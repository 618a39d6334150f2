using System;
using System.IO;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.FSharp.Core;
using Tr = MagnetWhisper.Core.Training;

namespace MagnetWhisper
{
    /// <summary>What a GRPO run reports after each step.</summary>
    public sealed class GrpoTrainingProgress
    {
        internal GrpoTrainingProgress(Tr.GrpoProgress p)
        {
            Step = p.Step;
            FirstStep = p.FirstStep;
            MaxSteps = p.MaxSteps;
            RewardMean = p.RewardMean;
            KeptFraction = p.KeptFraction;
            ElapsedSeconds = p.ElapsedSeconds;
        }

        /// <summary>Updates applied in total.</summary>
        public int Step { get; }

        /// <summary>The step this session started from (0, or the resumed checkpoint's).</summary>
        public int FirstStep { get; }

        /// <summary>The run's last step.</summary>
        public int MaxSteps { get; }

        /// <summary>Mean reward of the step's K·B samples.</summary>
        public double RewardMean { get; }

        /// <summary>Mean kept fraction (final segments / valid encoder positions) of the step's samples.</summary>
        public double KeptFraction { get; }

        /// <summary>Seconds since this session started.</summary>
        public double ElapsedSeconds { get; }
    }

    /// <summary>
    /// GRPO of a MagnetWhisper's boundary predictors, as <c>magnet grpo</c> runs it (docs/GRPO.md): K sampled
    /// boundary sets per audio, rewards from the sampled pooling, group advantages, PPO clipping against the sampling
    /// policy, an optional KL penalty to the starting policy; the supervised run folder (metrics, checkpoints that
    /// resume bit-identically on CPU, best/ by dev WER, final/). Training runs on a background thread; cancellation
    /// finishes the current step, writes a checkpoint and returns <see cref="TrainingOutcome.Interrupted"/> (it does not
    /// throw). One GRPO run at a time per process (the run seeds TorchSharp's global generator).
    /// </summary>
    public sealed class GrpoTrainer : Trainer<GrpoTrainingProgress>
    {
        /// <summary>A trainer with the run's configuration and device.</summary>
        public GrpoTrainer(GrpoTrainingOptions options) =>
            Options = options ?? throw new ArgumentNullException(nameof(options));

        /// <summary>The configuration of new runs and how runs are carried out.</summary>
        public GrpoTrainingOptions Options { get; }

        /// <inheritdoc/>
        private protected override Task<TrainingResult> Run(string runDirectory, bool resume, IProgress<GrpoTrainingProgress>? progress, CancellationToken cancellationToken)
        {
            var config = resume ? Tr.GrpoConfigModule.Default : Options.ToCore();
            return Start<Tr.GrpoProgress>(
                runDirectory, Options.Device, Options.StopAtStep, progress, p => new GrpoTrainingProgress(p),
                "A GRPO run is already going on in this process; wait for it to end.",
                (options, events) => Tr.Grpo.run(config, runDirectory, resume, options, events, cancellationToken));
        }
    }
}
