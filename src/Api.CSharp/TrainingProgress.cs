using System;
using Tr = MagnetWhisper.Core.Training;

namespace MagnetWhisper
{
    /// <summary>Where a supervised run is, reported after every step.</summary>
    public sealed class TrainingProgress
    {
        internal TrainingProgress(Tr.SupervisedProgress p)
        {
            Step = p.Step;
            FirstStep = p.FirstStep;
            MaxSteps = p.MaxSteps;
            Loss = p.Loss;
            Compression = p.Compression;
            SamplesPerSecond = p.SamplesPerSecond;
            Elapsed = TimeSpan.FromSeconds(p.ElapsedSeconds);
            var ran = p.Step - p.FirstStep;
            Remaining = ran <= 0 ? null : TimeSpan.FromSeconds((p.MaxSteps - p.Step) * p.ElapsedSeconds / ran);
        }

        /// <summary>Updates applied in total.</summary>
        public int Step { get; }

        /// <summary>The step this session started from (0, or the resumed checkpoint's).</summary>
        public int FirstStep { get; }

        /// <summary>Updates of the whole run.</summary>
        public int MaxSteps { get; }

        /// <summary>The step's loss (cross-entropy plus the boundary losses).</summary>
        public double Loss { get; }

        /// <summary>Kept positions / valid positions of the step; NaN for a model without predictors.</summary>
        public double Compression { get; }

        /// <summary>Utterances per second of the step.</summary>
        public double SamplesPerSecond { get; }

        /// <summary>Time since this session started.</summary>
        public TimeSpan Elapsed { get; }

        /// <summary>Time left at the rate of this session's steps; null before the first step.</summary>
        public TimeSpan? Remaining { get; }
    }
}
