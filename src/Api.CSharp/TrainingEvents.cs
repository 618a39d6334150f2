using System;
using System.Collections.Generic;
using System.Linq;
using Tr = MagnetWhisper.Core.Training;

namespace MagnetWhisper
{
    /// <summary>A metrics line the trainer logged (to metrics.jsonl and TensorBoard): every log interval and at the last step.</summary>
    public sealed class TrainingLoggedEventArgs : EventArgs
    {
        internal TrainingLoggedEventArgs(Tr.SupervisedLog log)
        {
            Step = log.Step;
            Metrics = log.Values.ToDictionary(kv => kv.Item1, kv => kv.Item2);
        }

        /// <summary>The step of the line.</summary>
        public int Step { get; }

        /// <summary>The line's values by metric key: train/loss, train/asr_loss, train/boundary_loss, train/learning_rate, train/grad_norm, ...</summary>
        public IReadOnlyDictionary<string, double> Metrics { get; }

        /// <summary>train/loss, the step's loss.</summary>
        public double Loss => Metrics["train/loss"];
    }

    /// <summary>A dev evaluation of the run (every evaluation interval and at the end, when the run has dev data).</summary>
    public sealed class TrainingEvaluatedEventArgs : EventArgs
    {
        internal TrainingEvaluatedEventArgs(Tr.SupervisedEvaluation e)
        {
            Step = e.Step;
            WordErrorRate = e.Wer;
            CharacterErrorRate = e.Cer;
            Compression = e.Compression;
            IsBest = e.IsBest;
        }

        /// <summary>The step evaluated.</summary>
        public int Step { get; }

        /// <summary>Corpus word error rate after normalisation (fraction).</summary>
        public double WordErrorRate { get; }

        /// <summary>Corpus character error rate (fraction).</summary>
        public double CharacterErrorRate { get; }

        /// <summary>Mean kept fraction over the predictors; NaN for a model without predictors.</summary>
        public double Compression { get; }

        /// <summary>The best dev WER so far: best/ was just written.</summary>
        public bool IsBest { get; }
    }

    /// <summary>A checkpoint the trainer has just written, complete and resumable.</summary>
    public sealed class CheckpointWrittenEventArgs : EventArgs
    {
        internal CheckpointWrittenEventArgs(Tr.SupervisedCheckpoint c)
        {
            Step = c.Step;
            Folder = c.Folder;
        }

        /// <summary>The step the checkpoint holds.</summary>
        public int Step { get; }

        /// <summary>The checkpoint folder (checkpoints/step-NNNNNNNN of the run).</summary>
        public string Folder { get; }
    }
}
