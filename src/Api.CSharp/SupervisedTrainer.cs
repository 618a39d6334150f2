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

        /// <summary>
        /// Starts a new run in <paramref name="runDirectory"/> (which must not hold a run yet; config.json is written
        /// there first) and trains until the last step, early stopping, <see cref="SupervisedTrainingOptions.StopAtStep"/>
        /// or cancellation.
        /// </summary>
        /// <param name="runDirectory">The run folder: config.json, metrics.jsonl, TensorBoard events, checkpoints/, best/, final/.</param>
        /// <param name="progress">Told after every step, on the training thread.</param>
        /// <param name="cancellationToken">Ends the run after the current step with a checkpoint.</param>
        /// <exception cref="InvalidDataException">A configuration value out of range, a missing model or data (the message names the key), or an unusable corpus.</exception>
        /// <exception cref="IOException">The folder already holds a run.</exception>
        /// <exception cref="InvalidOperationException">Another run is going on in this process.</exception>
        public Task<TrainingResult> TrainAsync(string runDirectory, IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
        {
            ArgumentException.ThrowIfNullOrEmpty(runDirectory);
            var config = Options.ToCore();
            return Start(config, runDirectory, false, progress, cancellationToken);
        }

        /// <summary>
        /// Continues the run in <paramref name="runDirectory"/> from its newest checkpoint with the run's own
        /// configuration (only <see cref="SupervisedTrainingOptions.Device"/> and
        /// <see cref="SupervisedTrainingOptions.StopAtStep"/> of <see cref="Options"/> apply).
        /// </summary>
        /// <param name="runDirectory">A run folder written by <see cref="TrainAsync"/> or <c>magnet train</c>.</param>
        /// <param name="progress">Told after every step, on the training thread.</param>
        /// <param name="cancellationToken">Ends the run after the current step with a checkpoint.</param>
        /// <exception cref="FileNotFoundException">The folder holds no run or no checkpoint.</exception>
        /// <exception cref="InvalidOperationException">Another run is going on in this process.</exception>
        public Task<TrainingResult> ResumeAsync(string runDirectory, IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
        {
            ArgumentException.ThrowIfNullOrEmpty(runDirectory);
            return Start(Tr.TrainConfigModule.Default, runDirectory, true, progress, cancellationToken);
        }

        Task<TrainingResult> Start(Tr.TrainConfig config, string runDirectory, bool resume, IProgress<TrainingProgress>? progress, CancellationToken cancellationToken) =>
            Start<Tr.SupervisedProgress>(
                runDirectory, Options.Device, Options.StopAtStep, progress, p => new TrainingProgress(p),
                "A training run is already going on in this process; wait for it to end.",
                (options, events) => Tr.Supervised.run(config, runDirectory, resume, options, events, cancellationToken));
    }
}
