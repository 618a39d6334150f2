using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
using System.Text.Json;
using Tr = MagnetWhisper.Core.Training;

namespace MagnetWhisper
{
    /// <summary>Which parameters a supervised run trains (the configuration key <c>trained_parts</c>).</summary>
    public enum TrainedParts
    {
        /// <summary>Every parameter: Whisper and the predictors jointly (<c>all</c>).</summary>
        All,

        /// <summary>The boundary predictors only (<c>predictors</c>).</summary>
        Predictors,

        /// <summary>The predictors and the extra convolutions (<c>predictors+convs</c>).</summary>
        PredictorsAndConvolutions,

        /// <summary>The predictors, the extra convolutions and the encoder from the first predictor on (<c>encoder-after-first-predictor</c>).</summary>
        EncoderAfterFirstPredictor,

        /// <summary>Everything except the text decoder and the output projection (<c>decoder-frozen</c>).</summary>
        DecoderFrozen,
    }

    /// <summary>The learning rate after the warmup (the configuration key <c>lr_decay</c>).</summary>
    public enum LearningRateDecay
    {
        /// <summary>Linearly down to 0 at the last step.</summary>
        Linear,

        /// <summary>Half a cosine down to 0 at the last step.</summary>
        Cosine,

        /// <summary>The peak rate to the end.</summary>
        Constant,
    }

    /// <summary>
    /// The configuration of a supervised run (the keys of <c>magnet train</c>'s configuration file, documented in
    /// docs/TRAINING.md) and how it is carried out. Every configuration property left null takes its value from
    /// <see cref="ConfigFile"/> when given, else the documented default; <see cref="Settings"/> are applied last.
    /// </summary>
    public sealed class SupervisedTrainingOptions
    {
        /// <summary>A configuration file (JSON) read before the properties are applied; null starts from the defaults.</summary>
        public string? ConfigFile { get; init; }

        /// <summary>The folder training starts from (<c>model</c>): a MagnetWhisper folder, a Hugging Face Whisper folder (with <see cref="Predictors"/>) or an original project's checkpoint.</summary>
        public string? Model { get; init; }

        /// <summary>A fresh model of this size instead of <see cref="Model"/>: "tiny", "base" or "small", initialised as Hugging Face does (<c>from_scratch</c>).</summary>
        public string? FromScratch { get; init; }

        /// <summary>Predictor slots added to a Hugging Face Whisper folder or a fresh model, as <c>magnet convert --predictor</c> takes them: "LAYER:TYPE[:PRIOR[:POOLING]]" (<c>predictors</c>).</summary>
        public IReadOnlyList<string>? Predictors { get; init; }

        /// <summary>A fresh model's width instead of its size's (<c>d_model</c>).</summary>
        public int? ModelWidth { get; init; }

        /// <summary>A fresh model's encoder layers instead of its size's (<c>encoder_layers</c>).</summary>
        public int? EncoderLayers { get; init; }

        /// <summary>A fresh model's decoder layers instead of its size's (<c>decoder_layers</c>).</summary>
        public int? DecoderLayers { get; init; }

        /// <summary>A fresh model's attention heads instead of its size's (<c>attention_heads</c>).</summary>
        public int? AttentionHeads { get; init; }

        /// <summary>Updates skipped in a row for a non-finite loss or gradient before the run stops (<c>max_nonfinite_steps</c>).</summary>
        public int? MaxNonFiniteSteps { get; init; }

        /// <summary>The training corpus: a folder of audio files with same-name .txt transcripts, or any corpus <c>magnet eval</c> reads (<c>data</c>).</summary>
        public string? Data { get; init; }

        /// <summary>The dev corpus evaluated every <see cref="EvalEvery"/> steps and at the end (<c>dev_data</c>); null = the file's or none.</summary>
        public string? DevData { get; init; }

        /// <summary>Splits of <see cref="Data"/> to train on, e.g. "train" of a synthesised manifest (<c>data_splits</c>); null = the file's or every utterance.</summary>
        public IReadOnlyList<string>? DataSplits { get; init; }

        /// <summary>Splits of <see cref="DevData"/> to evaluate, e.g. "dev" (<c>dev_splits</c>); null = the file's or every utterance.</summary>
        public IReadOnlyList<string>? DevSplits { get; init; }

        /// <summary>The test corpus on which best/ (or final/ without dev data) is evaluated at the end of a run (<c>test_data</c>); null = the file's or none.</summary>
        public string? TestData { get; init; }

        /// <summary>Splits of <see cref="TestData"/> to evaluate, e.g. "test" (<c>test_splits</c>); null = the file's or every utterance.</summary>
        public IReadOnlyList<string>? TestSplits { get; init; }

        /// <summary>Optimizer updates of the run (<c>max_steps</c>, default 1000).</summary>
        public int? MaxSteps { get; init; }

        /// <summary>Utterances per update (<c>batch_size</c>, default 16).</summary>
        public int? BatchSize { get; init; }

        /// <summary>Micro-batches an update is cut into, for gradient accumulation (<c>micro_batches</c>, default 1).</summary>
        public int? MicroBatches { get; init; }

        /// <summary>Peak learning rate of every trained parameter but the predictors (<c>lr</c>, default 1e-5).</summary>
        public double? LearningRate { get; init; }

        /// <summary>Peak learning rate of the predictors (<c>predictor_lr</c>, default 1e-3).</summary>
        public double? PredictorLearningRate { get; init; }

        /// <summary>Fraction of the run spent warming up, in [0, 1] (<c>warmup_ratio</c>, default 0.1).</summary>
        public double? WarmupRatio { get; init; }

        /// <summary>The learning rate after the warmup (<c>lr_decay</c>, default linear).</summary>
        public LearningRateDecay? Decay { get; init; }

        /// <summary>AdamW's decoupled weight decay (<c>weight_decay</c>, default 0.01).</summary>
        public double? WeightDecay { get; init; }

        /// <summary>Global gradient-norm clip (<c>max_grad_norm</c>, default 2); see <see cref="NoGradientClipping"/>.</summary>
        public double? MaxGradientNorm { get; init; }

        /// <summary>True turns gradient clipping off (<c>max_grad_norm</c> null).</summary>
        public bool NoGradientClipping { get; init; }

        /// <summary>Which parameters train (<c>trained_parts</c>, default all).</summary>
        public TrainedParts? TrainedParts { get; init; }

        /// <summary>The target count of each predictor in layer order, e.g. "phonemes", "characters" (<c>targets</c>); null = the file's or the model's own choice.</summary>
        public IReadOnlyList<string>? Targets { get; init; }

        /// <summary>Boundary temperature at the start of the run (<c>temperature_start</c>, default 1).</summary>
        public double? TemperatureStart { get; init; }

        /// <summary>Boundary temperature at the end of the run, linear in between (<c>temperature_end</c>, default 0.1).</summary>
        public double? TemperatureEnd { get; init; }

        /// <summary>Metrics (and <see cref="Trainer{TProgress}.Logged"/>) every this many steps (<c>log_every</c>, default 10).</summary>
        public int? LogEvery { get; init; }

        /// <summary>Dev evaluation every this many steps; 0 = only at the end (<c>eval_every</c>, default 500).</summary>
        public int? EvalEvery { get; init; }

        /// <summary>A new run also evaluates the dev data before its first update, at step 0 (<c>eval_at_start</c>, default false).</summary>
        public bool? EvalAtStart { get; init; }

        /// <summary>Utterances decoded together during evaluation (<c>eval_batch_size</c>, default 16).</summary>
        public int? EvalBatchSize { get; init; }

        /// <summary>Evaluations without a better dev WER before the run stops; 0 = never (<c>early_stopping_patience</c>, default 0).</summary>
        public int? EarlyStoppingPatience { get; init; }

        /// <summary>A checkpoint every this many steps; 0 = only at the end (<c>checkpoint_every</c>, default 500).</summary>
        public int? CheckpointEvery { get; init; }

        /// <summary>Checkpoints kept, the newest (<c>keep_checkpoints</c>, default 3).</summary>
        public int? KeepCheckpoints { get; init; }

        /// <summary>The seed of the data order, the boundary sampling and the global generator (<c>seed</c>, default 0).</summary>
        public long? Seed { get; init; }

        /// <summary>The prompt language of multilingual models (<c>language</c>, default "en").</summary>
        public string? Language { get; init; }

        /// <summary>Background tasks loading audio (<c>workers</c>, default 2).</summary>
        public int? Workers { get; init; }

        /// <summary>Utterances longer than this are left out, at most 30 s (<c>max_duration</c>); null = the file's or up to 30 s.</summary>
        public TimeSpan? MaxDuration { get; init; }

        /// <summary><c>key=value</c> overrides applied last, as <c>magnet train --set</c> takes them; keys without a property set here,
        /// e.g. the per-predictor curves <c>schedules={"all":{"compression":{"linear":[0,1]}}}</c> (docs/TRAINING.md).</summary>
        public IReadOnlyList<string> Settings { get; init; } = Array.Empty<string>();

        /// <summary>"auto", "cpu", "cuda" or "cuda:N" (not part of the configuration: a resumed run may change it).</summary>
        public string Device { get; init; } = "auto";

        /// <summary>End the run after this step with a checkpoint, exactly as a cancellation would; null runs to the end.</summary>
        public int? StopAtStep { get; init; }

        static string PartsName(TrainedParts parts) => parts switch
        {
            MagnetWhisper.TrainedParts.All => "all",
            MagnetWhisper.TrainedParts.Predictors => "predictors",
            MagnetWhisper.TrainedParts.PredictorsAndConvolutions => "predictors+convs",
            MagnetWhisper.TrainedParts.EncoderAfterFirstPredictor => "encoder-after-first-predictor",
            MagnetWhisper.TrainedParts.DecoderFrozen => "decoder-frozen",
            _ => throw new ArgumentOutOfRangeException(nameof(TrainedParts), parts, "Not a TrainedParts value."),
        };

        static string DecayName(LearningRateDecay decay) => decay switch
        {
            LearningRateDecay.Linear => "linear",
            LearningRateDecay.Cosine => "cosine",
            LearningRateDecay.Constant => "constant",
            _ => throw new ArgumentOutOfRangeException(nameof(Decay), decay, "Not a LearningRateDecay value."),
        };

        /// <summary>The properties that are set, as a JSON object with the configuration's keys.</summary>
        string PropertiesJson()
        {
            using var stream = new MemoryStream();
            using (var w = new Utf8JsonWriter(stream))
            {
                w.WriteStartObject();
                void Str(string key, string? v) { if (v is not null) w.WriteString(key, v); }
                void Int(string key, long? v) { if (v is { } x) w.WriteNumber(key, x); }
                void Num(string key, double? v) { if (v is { } x) w.WriteNumber(key, x); }
                void Strs(string key, IReadOnlyList<string>? values, string property)
                {
                    if (values is null) return;
                    w.WriteStartArray(key);
                    foreach (var v in values) w.WriteStringValue(v ?? throw new ArgumentException($"{property} must not hold null.", property));
                    w.WriteEndArray();
                }
                Str("model", Model);
                Str("from_scratch", FromScratch);
                Strs("predictors", Predictors, nameof(Predictors));
                Int("d_model", ModelWidth);
                Int("encoder_layers", EncoderLayers);
                Int("decoder_layers", DecoderLayers);
                Int("attention_heads", AttentionHeads);
                Int("max_nonfinite_steps", MaxNonFiniteSteps);
                Str("data", Data);
                Str("dev_data", DevData);
                Strs("data_splits", DataSplits, nameof(DataSplits));
                Strs("dev_splits", DevSplits, nameof(DevSplits));
                Str("test_data", TestData);
                Strs("test_splits", TestSplits, nameof(TestSplits));
                Int("max_steps", MaxSteps);
                Int("batch_size", BatchSize);
                Int("micro_batches", MicroBatches);
                Num("lr", LearningRate);
                Num("predictor_lr", PredictorLearningRate);
                Num("warmup_ratio", WarmupRatio);
                Str("lr_decay", Decay is { } d ? DecayName(d) : null);
                Num("weight_decay", WeightDecay);
                if (NoGradientClipping)
                {
                    if (MaxGradientNorm is not null)
                        throw new ArgumentException("Give either MaxGradientNorm or NoGradientClipping, not both.", nameof(NoGradientClipping));
                    w.WriteNull("max_grad_norm");
                }
                else Num("max_grad_norm", MaxGradientNorm);
                Str("trained_parts", TrainedParts is { } p ? PartsName(p) : null);
                Strs("targets", Targets, nameof(Targets));
                Num("temperature_start", TemperatureStart);
                Num("temperature_end", TemperatureEnd);
                Int("log_every", LogEvery);
                Int("eval_every", EvalEvery);
                if (EvalAtStart is { } atStart) w.WriteBoolean("eval_at_start", atStart);
                Int("eval_batch_size", EvalBatchSize);
                Int("early_stopping_patience", EarlyStoppingPatience);
                Int("checkpoint_every", CheckpointEvery);
                Int("keep_checkpoints", KeepCheckpoints);
                Int("seed", Seed);
                Str("language", Language);
                Int("workers", Workers);
                Num("max_duration", MaxDuration?.TotalSeconds);
                w.WriteEndObject();
            }
            return Encoding.UTF8.GetString(stream.ToArray());
        }

        /// <summary>The configuration file, the properties and the settings, in that order (errors name the key).</summary>
        internal Tr.TrainConfig ToCore()
        {
            var config = ConfigFile is null ? Tr.TrainConfigModule.Default : Tr.TrainConfigModule.read(ConfigFile);
            config = Tr.TrainConfigModule.applyJson(nameof(SupervisedTrainingOptions), PropertiesJson(), config);
            foreach (var s in Settings ?? throw new ArgumentException("Settings must not be null.", nameof(Settings)))
                config = Tr.TrainConfigModule.set(s ?? throw new ArgumentException("Settings must not hold null.", nameof(Settings)), config);
            return config;
        }

        /// <summary>The resolved configuration as the run folder's config.json will hold it (every key).</summary>
        /// <exception cref="InvalidDataException">A value out of range, or a missing model or data; the message names the key.</exception>
        public string ToConfigJson() => Tr.TrainConfigModule.toJson(Tr.TrainConfigModule.validate(ToCore()));
    }
}
