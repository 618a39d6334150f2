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
    public sealed class SupervisedTrainer
    {
        static int running;

        /// <summary>A trainer with the run's configuration and device.</summary>
        public SupervisedTrainer(SupervisedTrainingOptions options) =>
            Options = options ?? throw new ArgumentNullException(nameof(options));

        /// <summary>The configuration of new runs and how runs are carried out.</summary>
        public SupervisedTrainingOptions Options { get; }

        /// <summary>After each metrics line written (every <see cref="SupervisedTrainingOptions.LogEvery"/> steps and at the last).</summary>
        public event EventHandler<TrainingLoggedEventArgs>? Logged;

        /// <summary>After each dev evaluation.</summary>
        public event EventHandler<TrainingEvaluatedEventArgs>? Evaluated;

        /// <summary>After each checkpoint written.</summary>
        public event EventHandler<CheckpointWrittenEventArgs>? CheckpointWritten;

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

        Task<TrainingResult> Start(Tr.TrainConfig config, string runDirectory, bool resume, IProgress<TrainingProgress>? progress, CancellationToken cancellationToken)
        {
            if (Options.StopAtStep is < 1)
                throw new ArgumentOutOfRangeException(nameof(Options.StopAtStep), Options.StopAtStep, "StopAtStep must be at least 1 (null runs to the end).");
            var device = Core.Device.parse(Options.Device ?? throw new ArgumentException("Device must not be null.", nameof(Options.Device)));
            var options = new Tr.SupervisedOptions(
                device,
                Options.StopAtStep is { } stop ? FSharpOption<int>.Some(stop) : FSharpOption<int>.None,
                Core.Audio.Audio.findFfmpeg());
            var events = new Tr.RunEvents<Tr.SupervisedProgress>(
                FuncConvert.FromAction<Tr.SupervisedProgress>(p => progress?.Report(new TrainingProgress(p))),
                FuncConvert.FromAction<Tr.SupervisedLog>(l => Logged?.Invoke(this, new TrainingLoggedEventArgs(l))),
                FuncConvert.FromAction<Tr.SupervisedEvaluation>(e => Evaluated?.Invoke(this, new TrainingEvaluatedEventArgs(e))),
                FuncConvert.FromAction<Tr.SupervisedCheckpoint>(c => CheckpointWritten?.Invoke(this, new CheckpointWrittenEventArgs(c))));
            if (Interlocked.Exchange(ref running, 1) == 1)
                throw new InvalidOperationException("A training run is already going on in this process; wait for it to end.");
            // Not started with the token: a token cancelled before the start still gives a run that stops after one
            // step with a checkpoint, as the core does, instead of a cancelled task.
            return Task.Factory.StartNew(() =>
            {
                try
                {
                    var result = Tr.Supervised.run(config, runDirectory, resume, options, events, cancellationToken);
                    return new TrainingResult(runDirectory, result);
                }
                finally
                {
                    Volatile.Write(ref running, 0);
                }
            }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        }
    }
}
