using System.IO;
using Tr = MagnetWhisper.Core.Training;

namespace MagnetWhisper
{
    /// <summary>How a training run (supervised or GRPO) ended.</summary>
    public enum TrainingOutcome
    {
        /// <summary>All steps ran; final/ holds the model.</summary>
        Completed,

        /// <summary>Cancelled, or <see cref="SupervisedTrainingOptions.StopAtStep"/> reached: a checkpoint holds the state to resume from.</summary>
        Interrupted,

        /// <summary>The dev WER did not improve for <see cref="SupervisedTrainingOptions.EarlyStoppingPatience"/> evaluations; final/ holds the model.</summary>
        StoppedEarly,
    }

    /// <summary>The end of a training run (<see cref="SupervisedTrainer"/> or <see cref="GrpoTrainer"/>).</summary>
    public sealed class TrainingResult
    {
        internal TrainingResult(string runDirectory, Tr.SupervisedResult r)
        {
            RunDirectory = runDirectory;
            Outcome = r.Outcome.IsCompleted ? TrainingOutcome.Completed
                : r.Outcome.IsInterrupted ? TrainingOutcome.Interrupted
                : TrainingOutcome.StoppedEarly;
            Step = r.Step;
            CheckpointPath = r.Checkpoint?.Value;
            if (r.Best is { } best)
            {
                BestWordErrorRate = best.Value.Item1;
                BestStep = best.Value.Item2;
            }
            FinalModelPath = Outcome == TrainingOutcome.Interrupted ? null : Path.Combine(runDirectory, "final");
            if (r.Test is { } test)
            {
                TestModelPath = test.Value.Model;
                TestWordErrorRate = test.Value.Wer;
                TestCharacterErrorRate = test.Value.Cer;
            }
        }

        /// <summary>The run folder.</summary>
        public string RunDirectory { get; }

        /// <summary>How the run ended.</summary>
        public TrainingOutcome Outcome { get; }

        /// <summary>Updates applied in total.</summary>
        public int Step { get; }

        /// <summary>The newest checkpoint folder (resumable); null when none was written.</summary>
        public string? CheckpointPath { get; }

        /// <summary>The model at the end (final/, a MagnetWhisper folder); null for an interrupted run.</summary>
        public string? FinalModelPath { get; }

        /// <summary>The best dev word error rate (fraction; best/ holds its model); null without dev data.</summary>
        public double? BestWordErrorRate { get; }

        /// <summary>The step of <see cref="BestWordErrorRate"/>; null without dev data.</summary>
        public int? BestStep { get; }

        /// <summary>The model evaluated on the test data at the end (best/, or final/ without dev data); null without test data or for an interrupted run.</summary>
        public string? TestModelPath { get; }

        /// <summary>The word error rate (fraction) of <see cref="TestModelPath"/> on the test data; null without a test evaluation.</summary>
        public double? TestWordErrorRate { get; }

        /// <summary>The character error rate (fraction) of <see cref="TestModelPath"/> on the test data; null without a test evaluation.</summary>
        public double? TestCharacterErrorRate { get; }
    }
}
