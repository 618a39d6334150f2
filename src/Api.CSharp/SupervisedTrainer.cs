using System;
using System.IO;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.FSharp.Core;
using Tr = MagnetWhisper.Core.Training;

namespace MagnetWhisper
{
    /// <summary>
    /// Supervised training of a MagnetWhisper model, as <c>magnet train</c> runs it: AdamW with warmup and decay,
    /// the predictors' schedules, metrics (metrics.jsonl, TensorBoard), dev evaluation with best/, checkpoints that
    /// keep everything needed to resume bit-identically on CPU, and final/ at the end. Training runs on a background
    /// thread; cancellation finishes the current step, writes a checkpoint and returns
    /// <see cref="TrainingOutcome.Interrupted"/> (it does not throw). The events are raised on the training thread,
    /// between steps; an exception thrown by a handler ends the run with that exception. One run at a time per
    /// process (the run seeds TorchSharp's global generator).
    /// </summary>
    public sealed class SupervisedTrainer : Trainer<TrainingProgress>
    {
        /// <summary>A trainer with the run's configuration and device.</summary>
        public SupervisedTrainer(SupervisedTrainingOptions options) =>
            Options = options ?? throw new ArgumentNullException(nameof(options));

        /// <summary>The configuration of new runs and how runs are carried out.</summary>
        public SupervisedTrainingOptions Options { get; }

        /// <inheritdoc/>
        private protected override Task<TrainingResult> Run(string runDirectory, bool resume, IProgress<TrainingProgress>? progress, CancellationToken cancellationToken)
        {
            var config = resume ? Tr.TrainConfigModule.Default : Options.ToCore();
            return Start<Tr.SupervisedProgress>(
                runDirectory, Options.Device, Options.StopAtStep, progress, p => new TrainingProgress(p),
                "A training run is already going on in this process; wait for it to end.",
                (options, events) => Tr.Supervised.run(config, runDirectory, resume, options, events, cancellationToken));
        }
    }
}
