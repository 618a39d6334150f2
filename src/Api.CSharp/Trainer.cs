using System;
using System.IO;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.FSharp.Core;
using Tr = MagnetWhisper.Core.Training;

namespace MagnetWhisper
{
    /// <summary>
    /// What <see cref="SupervisedTrainer"/> and <see cref="GrpoTrainer"/> share: the run goes on a background thread;
    /// cancellation finishes the current step, writes a checkpoint and returns <see cref="TrainingOutcome.Interrupted"/>
    /// (it does not throw); the events are raised on the training thread, between steps (an exception thrown by a
    /// handler ends the run with that exception); one run of a kind at a time per process (a run seeds TorchSharp's
    /// global generator).
    /// </summary>
    /// <typeparam name="TProgress">What the trainer reports after every step.</typeparam>
    public abstract class Trainer<TProgress>
    {
        // One per trainer kind (a static of a generic class is per constructed type).
        static int running;

        private protected Trainer()
        {
        }

        /// <summary>After each metrics line written (every log_every steps, at the last, and the test evaluation).</summary>
        public event EventHandler<TrainingLoggedEventArgs>? Logged;

        /// <summary>After each dev evaluation.</summary>
        public event EventHandler<TrainingEvaluatedEventArgs>? Evaluated;

        /// <summary>After each checkpoint written.</summary>
        public event EventHandler<CheckpointWrittenEventArgs>? CheckpointWritten;

        /// <summary>
        /// Starts a new run in <paramref name="runDirectory"/> (which must not hold a run yet; config.json is written
        /// there first) with the trainer's options and trains until the last step, early stopping, the options'
        /// StopAtStep or cancellation; with test data, best/ (or final/) is then evaluated on it.
        /// </summary>
        /// <param name="runDirectory">The run folder: config.json, metrics.jsonl, TensorBoard events, checkpoints/, best/, final/.</param>
        /// <param name="progress">Told after every step, on the training thread.</param>
        /// <param name="cancellationToken">Ends the run after the current step with a checkpoint.</param>
        /// <exception cref="InvalidDataException">A configuration value out of range, an unknown key, a missing model or data (the message names the key), or an unusable corpus.</exception>
        /// <exception cref="IOException">The folder already holds a run.</exception>
        /// <exception cref="InvalidOperationException">Another run of this kind is going on in this process.</exception>
        public Task<TrainingResult> TrainAsync(string runDirectory, IProgress<TProgress>? progress = null, CancellationToken cancellationToken = default)
        {
            ArgumentException.ThrowIfNullOrEmpty(runDirectory);
            return Run(runDirectory, false, progress, cancellationToken);
        }

        /// <summary>
        /// Continues the run in <paramref name="runDirectory"/> from its newest checkpoint with the run's own
        /// configuration (only the options' Device and StopAtStep apply).
        /// </summary>
        /// <param name="runDirectory">A run folder written by <see cref="TrainAsync"/> or the command line.</param>
        /// <param name="progress">Told after every step, on the training thread.</param>
        /// <param name="cancellationToken">Ends the run after the current step with a checkpoint.</param>
        /// <exception cref="FileNotFoundException">The folder holds no run or no checkpoint (raised by the task).</exception>
        /// <exception cref="InvalidOperationException">Another run of this kind is going on in this process.</exception>
        public Task<TrainingResult> ResumeAsync(string runDirectory, IProgress<TProgress>? progress = null, CancellationToken cancellationToken = default)
        {
            ArgumentException.ThrowIfNullOrEmpty(runDirectory);
            return Run(runDirectory, true, progress, cancellationToken);
        }

        /// <summary>The trainer's run: a new one from its options, or a resumed one from the folder's configuration.</summary>
        private protected abstract Task<TrainingResult> Run(string runDirectory, bool resume, IProgress<TProgress>? progress, CancellationToken cancellationToken);

        /// <summary>Runs <paramref name="run"/> on a background thread with the run options and the events.</summary>
        private protected Task<TrainingResult> Start<TCore>(
            string runDirectory, string? device, int? stopAtStep, IProgress<TProgress>? progress, Func<TCore, TProgress> report, string busy,
            Func<Tr.SupervisedOptions, Tr.RunEvents<TCore>, Tr.SupervisedResult> run)
        {
            if (stopAtStep is < 1)
                throw new ArgumentOutOfRangeException("StopAtStep", stopAtStep, "StopAtStep must be at least 1 (null runs to the end).");
            var parsed = Core.Device.parse(device ?? throw new ArgumentException("Device must not be null.", "Device"));
            var options = new Tr.SupervisedOptions(
                parsed,
                stopAtStep is { } stop ? FSharpOption<int>.Some(stop) : FSharpOption<int>.None,
                Core.Audio.Audio.findFfmpeg());
            var events = new Tr.RunEvents<TCore>(
                FuncConvert.FromAction<TCore>(p => progress?.Report(report(p))),
                FuncConvert.FromAction<Tr.SupervisedLog>(l => Logged?.Invoke(this, new TrainingLoggedEventArgs(l))),
                FuncConvert.FromAction<Tr.SupervisedEvaluation>(e => Evaluated?.Invoke(this, new TrainingEvaluatedEventArgs(e))),
                FuncConvert.FromAction<Tr.SupervisedCheckpoint>(c => CheckpointWritten?.Invoke(this, new CheckpointWrittenEventArgs(c))));
            if (Interlocked.Exchange(ref running, 1) == 1)
                throw new InvalidOperationException(busy);
            // Not started with the token: a token cancelled before the start still gives a run that stops after one
            // step with a checkpoint, as the core does, instead of a cancelled task.
            return Task.Factory.StartNew(() =>
            {
                try
                {
                    return new TrainingResult(runDirectory, run(options, events));
                }
                finally
                {
                    Volatile.Write(ref running, 0);
                }
            }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        }
    }
}
