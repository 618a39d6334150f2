using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Text.Json;
using Tr = MagnetWhisper.Core.Training;

namespace MagnetWhisper
{
    /// <summary>How GRPO normalises the advantages of a group of samples (the configuration key <c>advantage_normalization</c>).</summary>
    public enum AdvantageNormalization
    {
        /// <summary>Within each group: (r − mean) / (std + 1e-8); a group without spread gets zero advantage (<c>group</c>).</summary>
        Group,

        /// <summary>The original's: the group mean subtracted, then normalised over the whole batch (<c>global</c>).</summary>
        Global,

        /// <summary>The group mean subtracted, nothing else (<c>none</c>).</summary>
        None,
    }

    /// <summary>
    /// The configuration of a GRPO run (the keys of <c>magnet grpo</c>'s configuration file, docs/GRPO.md, and the
    /// common keys of docs/TRAINING.md) and how it is carried out. Every configuration property left null takes its
    /// value from <see cref="ConfigFile"/> when given, else the documented default; <see cref="Settings"/> are
    /// applied last.
    /// </summary>
    public sealed class GrpoTrainingOptions
    {
        /// <summary>A configuration file (JSON) read before the properties are applied; null starts from the defaults.</summary>
        public string? ConfigFile { get; init; }

        /// <summary>The MagnetWhisper folder GRPO starts from, e.g. a supervised run's best/ (<c>model</c>).</summary>
        public string? Model { get; init; }

        /// <summary>The training corpus (<c>data</c>).</summary>
        public string? Data { get; init; }

        /// <summary>The dev corpus evaluated every <see cref="EvalEvery"/> steps and at the end (<c>dev_data</c>).</summary>
        public string? DevData { get; init; }

        /// <summary>The test corpus on which best/ (or final/ without dev data) is evaluated at the end of a run (<c>test_data</c>).</summary>
        public string? TestData { get; init; }

        /// <summary>GRPO updates of the run (<c>max_steps</c>, default 1000).</summary>
        public int? MaxSteps { get; init; }

        /// <summary>Audios per update, each sampled <see cref="GroupSize"/> times (<c>batch_size</c>, default 4).</summary>
        public int? BatchSize { get; init; }

        /// <summary>Peak learning rate of the predictors (<c>predictor_lr</c>, default 1e-5).</summary>
        public double? PredictorLearningRate { get; init; }

        /// <summary>K, boundary sets sampled per audio, at least 2 (<c>group_size</c>, default 4).</summary>
        public int? GroupSize { get; init; }

        /// <summary>μ, optimizer steps per rollout (<c>inner_epochs</c>, default 2).</summary>
        public int? InnerEpochs { get; init; }

        /// <summary>PPO's clip ε in (0, 1) (<c>clip_epsilon</c>, default 0.2); no clipping: <c>Settings["clip_epsilon"] = "null"</c>.</summary>
        public double? ClipEpsilon { get; init; }

        /// <summary>β of the k3 KL penalty to the starting policy (<c>kl_coef</c>, default 0).</summary>
        public double? KlCoefficient { get; init; }

        /// <summary>Weight of the entropy bonus (<c>entropy_coef</c>, default 0).</summary>
        public double? EntropyCoefficient { get; init; }

        /// <summary>λ: the reward loses λ × the sample's kept fraction (<c>kept_fraction_weight</c>, default 0).</summary>
        public double? KeptFractionWeight { get; init; }

        /// <summary>
        /// μ: the reward loses μ × the WER of a greedy decode of the sample's own pooled encoder output against its
        /// transcript (<c>wer_reward_weight</c>, at least 0, default 0 = off; slower: one decode per sample).
        /// </summary>
        public double? WerRewardWeight { get; init; }

        /// <summary>w: the reward loses w × the utterance's own boundary loss (<c>boundary_loss_weight</c>, default 1).</summary>
        public double? BoundaryLossWeight { get; init; }

        /// <summary>How advantages are normalised (<c>advantage_normalization</c>, default <see cref="MagnetWhisper.AdvantageNormalization.Group"/>).</summary>
        public AdvantageNormalization? AdvantageNormalization { get; init; }

        /// <summary>Metrics every this many steps (<c>log_every</c>, default 10).</summary>
        public int? LogEvery { get; init; }

        /// <summary>Dev evaluation every this many steps; 0 = at the end only (<c>eval_every</c>, default 500).</summary>
        public int? EvalEvery { get; init; }

        /// <summary>A new run also evaluates the dev data before its first update, at step 0 (<c>eval_at_start</c>, default false).</summary>
        public bool? EvalAtStart { get; init; }

        /// <summary>A checkpoint every this many steps; 0 = at the end only (<c>checkpoint_every</c>, default 500).</summary>
        public int? CheckpointEvery { get; init; }

        /// <summary>Seed of the data order and the boundary sampling (<c>seed</c>, default 0).</summary>
        public long? Seed { get; init; }

        /// <summary>Background tasks loading audio (<c>workers</c>, default 2).</summary>
        public int? Workers { get; init; }

        /// <summary>Any other key (docs/GRPO.md, docs/TRAINING.md) → its value as JSON text (strings quoted) or plain text.</summary>
        public IReadOnlyDictionary<string, string>? Settings { get; init; }

        /// <summary>auto (default), cpu, cuda or cuda:N.</summary>
        public string Device { get; init; } = "auto";

        /// <summary>End the run after this step with a checkpoint, as an interruption would; null runs to the end.</summary>
        public int? StopAtStep { get; init; }

        /// <summary>The core configuration: the file or the defaults, the properties, then <see cref="Settings"/>.</summary>
        /// <exception cref="InvalidDataException">A value out of range or an unknown key (the message names it).</exception>
        internal Tr.GrpoConfig ToCore()
        {
            var config = ConfigFile is { } file ? Tr.GrpoConfigModule.read(file) : Tr.GrpoConfigModule.Default;
            string Text(string s) => JsonSerializer.Serialize(s);
            string Number(double x) => x.ToString("R", CultureInfo.InvariantCulture);
            var values = new List<(string Key, string? Json)>
            {
                ("model", Model is null ? null : Text(Model)),
                ("data", Data is null ? null : Text(Data)),
                ("dev_data", DevData is null ? null : Text(DevData)),
                ("test_data", TestData is null ? null : Text(TestData)),
                ("max_steps", MaxSteps?.ToString(CultureInfo.InvariantCulture)),
                ("batch_size", BatchSize?.ToString(CultureInfo.InvariantCulture)),
                ("predictor_lr", PredictorLearningRate is { } lr ? Number(lr) : null),
                ("group_size", GroupSize?.ToString(CultureInfo.InvariantCulture)),
                ("inner_epochs", InnerEpochs?.ToString(CultureInfo.InvariantCulture)),
                ("clip_epsilon", ClipEpsilon is { } eps ? Number(eps) : null),
                ("kl_coef", KlCoefficient is { } kl ? Number(kl) : null),
                ("entropy_coef", EntropyCoefficient is { } ent ? Number(ent) : null),
                ("kept_fraction_weight", KeptFractionWeight is { } lambda ? Number(lambda) : null),
                ("wer_reward_weight", WerRewardWeight is { } mu ? Number(mu) : null),
                ("boundary_loss_weight", BoundaryLossWeight is { } w ? Number(w) : null),
                ("advantage_normalization", AdvantageNormalization is { } n ? Text(n.ToString().ToLowerInvariant()) : null),
                ("log_every", LogEvery?.ToString(CultureInfo.InvariantCulture)),
                ("eval_every", EvalEvery?.ToString(CultureInfo.InvariantCulture)),
                ("eval_at_start", EvalAtStart is { } atStart ? (atStart ? "true" : "false") : null),
                ("checkpoint_every", CheckpointEvery?.ToString(CultureInfo.InvariantCulture)),
                ("seed", Seed?.ToString(CultureInfo.InvariantCulture)),
                ("workers", Workers?.ToString(CultureInfo.InvariantCulture)),
            };
            foreach (var (key, json) in values)
                if (json is not null) config = Tr.GrpoConfigModule.set($"{key}={json}", config);
            if (Settings is not null)
                foreach (var (key, value) in Settings) config = Tr.GrpoConfigModule.set($"{key}={value}", config);
            return Tr.GrpoConfigModule.validate(config);
        }
    }
}
