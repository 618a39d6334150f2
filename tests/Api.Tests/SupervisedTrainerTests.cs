using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.Json;
using System.Threading;
using System.Threading.Tasks;
using Xunit;

namespace MagnetWhisper.Api.Tests;

/// <summary>
/// Runs alone: training draws dropout from TorchSharp's global generator, which tests of other classes running in
/// parallel would reseed or draw from, and bit-identical resumption needs it undisturbed.
/// </summary>
[CollectionDefinition(nameof(GlobalGeneratorCollection), DisableParallelization = true)]
public sealed class GlobalGeneratorCollection { }

/// <summary>
/// SupervisedTrainer as a C# caller drives it: a tiny random MagnetWhisper (real vocabulary and 30 s window, dropout
/// on) and a folder corpus of sine tones written here; a run cancelled from its progress callback after step 2 and
/// resumed gives the uninterrupted run's losses bit for bit; events at log, evaluation and checkpoint; the options
/// map onto the documented configuration keys.
/// </summary>
[Collection(nameof(GlobalGeneratorCollection))]
public sealed class SupervisedTrainerTests : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "mw-trainer-" + Guid.NewGuid().ToString("N"));

    public SupervisedTrainerTests() => Directory.CreateDirectory(root);

    public void Dispose()
    {
        try { Directory.Delete(root, true); } catch (IOException) { }
    }

    const string TinyWhisper = """
        { "vocab_size": 51865, "num_mel_bins": 80, "d_model": 32, "encoder_layers": 2, "decoder_layers": 1,
          "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
          "max_source_positions": 1500, "max_target_positions": 448, "pad_token_id": 50257, "bos_token_id": 50257,
          "eos_token_id": 50257, "decoder_start_token_id": 50258, "dropout": 0.1 }
        """;

    /// <summary>A MagnetWhisper folder (a BP1 before encoder layer 1) and a corpus of 4 tones with transcripts.</summary>
    (string Model, string Corpus) Setup()
    {
        var whisperDir = Path.Combine(root, "whisper");
        TorchSharp.torch.manual_seed(7);
        using (var whisper = new Core.Whisper.WhisperModel(Core.Whisper.WhisperConfigModule.parse("tiny", TinyWhisper)))
            whisper.Save(whisperDir);
        var modelDir = Path.Combine(root, "model");
        using (var model = MagnetWhisperModel.FromWhisper(whisperDir, MagnetOptions.Default.WithPredictor(1, PredictorType.Bp1, prior: 0.3), "cpu"))
            model.Save(modelDir);
        var corpus = Path.Combine(root, "corpus");
        Directory.CreateDirectory(corpus);
        var texts = new[] { "one two", "three", "four five six", "seven" };
        for (var i = 0; i < texts.Length; i++)
        {
            var seconds = 0.4 + 0.2 * i;
            var hz = 200.0 + 150.0 * i;
            var samples = Enumerable.Range(0, (int)(seconds * 16000)).Select(n => (float)(0.5 * Math.Sin(2 * Math.PI * hz * n / 16000))).ToArray();
            WriteWav(Path.Combine(corpus, $"u{i}.wav"), samples);
            File.WriteAllText(Path.Combine(corpus, $"u{i}.txt"), texts[i]);
        }
        return (modelDir, corpus);
    }

    static void WriteWav(string path, float[] samples)
    {
        using var w = new BinaryWriter(File.Create(path));
        w.Write("RIFF"u8.ToArray()); w.Write(36 + samples.Length * 2); w.Write("WAVE"u8.ToArray());
        w.Write("fmt "u8.ToArray()); w.Write(16); w.Write((short)1); w.Write((short)1); w.Write(16000); w.Write(32000); w.Write((short)2); w.Write((short)16);
        w.Write("data"u8.ToArray()); w.Write(samples.Length * 2);
        foreach (var x in samples) w.Write((short)Math.Round(Math.Clamp(x, -1f, 1f) * 32767.0));
    }

    /// <summary>Reports synchronously on the training thread and runs an action with each report.</summary>
    sealed class OnReport<T> : IProgress<T>
    {
        readonly Action<T> action;
        public OnReport(Action<T> action) => this.action = action;
        public void Report(T value) => action(value);
    }

    static readonly string[] LossKeys = { "train/loss", "train/asr_loss", "train/boundary_loss", "train/grad_norm", "train/learning_rate" };

    /// <summary>(step, key, bits of the value) of the loss keys of the logged lines.</summary>
    static List<(int Step, string Key, long Bits)> Losses(IEnumerable<TrainingLoggedEventArgs> lines) =>
        lines.SelectMany(l => LossKeys.Select(k => (l.Step, k, BitConverter.DoubleToInt64Bits(l.Metrics[k])))).ToList();

    static SupervisedTrainingOptions Options(string model, string corpus) => new()
    {
        Model = model, Data = corpus, DevData = corpus, MaxSteps = 4, BatchSize = 2, MicroBatches = 2, LearningRate = 1e-3,
        PredictorLearningRate = 1e-2, LogEvery = 1, EvalEvery = 0, EvalBatchSize = 4, CheckpointEvery = 0, KeepCheckpoints = 2,
        Seed = 3, Targets = new[] { "characters" }, Workers = 1, Device = "cpu",
    };

    [Fact]
    public async Task EvalAtStartEvaluatesTheStartingModelAtStep0ThenAtTheEnd()
    {
        var (model, corpus) = Setup();
        var trainer = new SupervisedTrainer(new SupervisedTrainingOptions
        {
            Model = model, Data = corpus, DevData = corpus, MaxSteps = 1, BatchSize = 2, LearningRate = 1e-3, PredictorLearningRate = 1e-2,
            LogEvery = 1, EvalEvery = 0, EvalAtStart = true, EvalBatchSize = 4, CheckpointEvery = 0, Seed = 3,
            Targets = new[] { "characters" }, Workers = 1, Device = "cpu",
        });
        var evaluations = new List<TrainingEvaluatedEventArgs>();
        trainer.Evaluated += (_, e) => evaluations.Add(e);
        var result = await trainer.TrainAsync(Path.Combine(root, "at-start"));
        Assert.Equal(TrainingOutcome.Completed, result.Outcome);
        Assert.Equal(new[] { 0, 1 }, evaluations.Select(e => e.Step));
        // The starting model is the first best: a later evaluation replaces it only with a lower WER.
        Assert.True(evaluations[0].IsBest);
        Assert.Equal(evaluations[1].WordErrorRate < evaluations[0].WordErrorRate, evaluations[1].IsBest);
    }

    [Fact]
    public async Task ARunCancelledAfterStep2AndResumedHasTheUninterruptedRunsLossesBitForBit()
    {
        var (model, corpus) = Setup();
        var options = Options(model, corpus);

        var whole = new SupervisedTrainer(options);
        var wholeLines = new List<TrainingLoggedEventArgs>();
        var wholeEvaluations = new List<TrainingEvaluatedEventArgs>();
        var wholeSteps = new List<int>();
        whole.Logged += (sender, e) => { Assert.Same(whole, sender); wholeLines.Add(e); };
        whole.Evaluated += (_, e) => wholeEvaluations.Add(e);
        var wholeDir = Path.Combine(root, "whole");
        var wholeResult = await whole.TrainAsync(wholeDir, new OnReport<TrainingProgress>(p => wholeSteps.Add(p.Step)));
        Assert.Equal(TrainingOutcome.Completed, wholeResult.Outcome);
        Assert.Equal(4, wholeResult.Step);
        Assert.Equal(new[] { 1, 2, 3, 4 }, wholeSteps);
        Assert.Equal(new[] { 1, 2, 3, 4 }, wholeLines.Select(l => l.Step));
        Assert.True(File.Exists(Path.Combine(wholeResult.FinalModelPath!, "config.json")), "final/ holds the model");
        // The dev evaluation at the end: its event and the result agree, and best/ was written.
        var evaluation = Assert.Single(wholeEvaluations);
        Assert.Equal(4, evaluation.Step);
        Assert.True(evaluation.IsBest);
        Assert.True(evaluation.WordErrorRate >= 0 && double.IsFinite(evaluation.WordErrorRate));
        Assert.Equal(evaluation.WordErrorRate, wholeResult.BestWordErrorRate);
        Assert.Equal(4, wholeResult.BestStep);
        Assert.True(File.Exists(Path.Combine(wholeDir, "best", "config.json")));

        // The same run cancelled from the progress callback after step 2 ...
        var partedDir = Path.Combine(root, "parted");
        using var cancel = new CancellationTokenSource();
        var first = new SupervisedTrainer(options);
        var lines = new List<TrainingLoggedEventArgs>();
        var checkpoints = new List<CheckpointWrittenEventArgs>();
        first.Logged += (_, e) => lines.Add(e);
        first.CheckpointWritten += (_, e) => checkpoints.Add(e);
        var stopped = await first.TrainAsync(partedDir, new OnReport<TrainingProgress>(p => { if (p.Step == 2) cancel.Cancel(); }), cancel.Token);
        Assert.Equal(TrainingOutcome.Interrupted, stopped.Outcome);
        Assert.Equal(2, stopped.Step);
        Assert.Null(stopped.FinalModelPath);
        Assert.False(Directory.Exists(Path.Combine(partedDir, "final")), "no final/ for an interrupted run");
        var written = Assert.Single(checkpoints);
        Assert.Equal(2, written.Step);
        Assert.Equal(stopped.CheckpointPath, written.Folder);
        Assert.True(File.Exists(Path.Combine(written.Folder, "trainer.json")));

        // ... and resumed, with the global generator moved on in between as in a new process.
        TorchSharp.torch.manual_seed(999);
        var second = new SupervisedTrainer(new SupervisedTrainingOptions { Device = "cpu" });
        second.Logged += (_, e) => lines.Add(e);
        var resumedSteps = new List<TrainingProgress>();
        var resumed = await second.ResumeAsync(partedDir, new OnReport<TrainingProgress>(resumedSteps.Add));
        Assert.Equal(TrainingOutcome.Completed, resumed.Outcome);
        Assert.Equal(4, resumed.Step);
        Assert.Equal(new[] { 3, 4 }, resumedSteps.Select(p => p.Step));
        Assert.All(resumedSteps, p => Assert.Equal(2, p.FirstStep));

        var expected = Losses(wholeLines);
        // Training moves: the losses are not one constant (else equality would prove nothing).
        Assert.True(wholeLines.Select(l => l.Loss).Distinct().Count() > 1, "losses change");
        Assert.Equal(expected, Losses(lines));
        // The events carry what metrics.jsonl holds.
        var jsonl = File.ReadAllLines(Path.Combine(wholeDir, "metrics.jsonl"))
            .Select(l => JsonDocument.Parse(l).RootElement)
            .Where(e => e.TryGetProperty("train/loss", out _))
            .Select(e => (e.GetProperty("step").GetInt32(), e.GetProperty("train/loss").GetDouble()))
            .ToList();
        Assert.Equal(wholeLines.Select(l => (l.Step, l.Loss)), jsonl);

        // Another seed gives other losses: the comparison above sees the run's randomness.
        var other = new SupervisedTrainer(new SupervisedTrainingOptions
        {
            Model = model, Data = corpus, MaxSteps = 4, BatchSize = 2, MicroBatches = 2, LearningRate = 1e-3,
            PredictorLearningRate = 1e-2, LogEvery = 1, EvalEvery = 0, CheckpointEvery = 0, Seed = 4,
            Targets = new[] { "characters" }, Workers = 1, Device = "cpu",
        });
        var otherLines = new List<TrainingLoggedEventArgs>();
        other.Logged += (_, e) => otherLines.Add(e);
        await other.TrainAsync(Path.Combine(root, "other"));
        Assert.NotEqual(expected, Losses(otherLines));
    }

    [Fact]
    public async Task ACancelledTokenEndsTheRunAfterOneStepWithACheckpointInsteadOfThrowingAndRunsDoNotOverlap()
    {
        var (model, corpus) = Setup();
        using var cancel = new CancellationTokenSource();
        cancel.Cancel();
        var trainer = new SupervisedTrainer(Options(model, corpus));
        // A second run started while the first trains is refused (both would seed the global generator).
        Exception? overlap = null;
        var progress = new OnReport<TrainingProgress>(_ =>
            overlap = Record.Exception(() => { new SupervisedTrainer(Options(model, corpus)).TrainAsync(Path.Combine(root, "second")); }));
        var result = await trainer.TrainAsync(Path.Combine(root, "run"), progress, cancel.Token);
        Assert.IsType<InvalidOperationException>(overlap);
        Assert.False(Directory.Exists(Path.Combine(root, "second")));
        Assert.Equal(TrainingOutcome.Interrupted, result.Outcome);
        Assert.Equal(1, result.Step);
        Assert.Equal(Path.Combine(root, "run", "checkpoints", "step-00000001"), result.CheckpointPath);
        Assert.Null(result.BestWordErrorRate);
    }

    [Fact]
    public void TheOptionsMapOntoTheConfigurationKeys()
    {
        var options = new SupervisedTrainingOptions
        {
            Model = "m", Data = "d", MaxSteps = 7, TrainedParts = TrainedParts.PredictorsAndConvolutions, Decay = LearningRateDecay.Cosine,
            NoGradientClipping = true, MaxDuration = TimeSpan.FromSeconds(12.5), Targets = new[] { "phonemes" }, Seed = -3,
            Settings = new[] { "batch_size=5", "language=de" }, DataSplits = new[] { "train" }, DevSplits = new[] { "dev", "test" },
            MaxNonFiniteSteps = 4,
        };
        using var json = JsonDocument.Parse(options.ToConfigJson());
        var r = json.RootElement;
        Assert.Equal("m", r.GetProperty("model").GetString());
        Assert.Equal("d", r.GetProperty("data").GetString());
        Assert.Equal(7, r.GetProperty("max_steps").GetInt32());
        Assert.Equal("predictors+convs", r.GetProperty("trained_parts").GetString());
        Assert.Equal("cosine", r.GetProperty("lr_decay").GetString());
        Assert.Equal(JsonValueKind.Null, r.GetProperty("max_grad_norm").ValueKind);
        Assert.Equal(12.5, r.GetProperty("max_duration").GetDouble());
        Assert.Equal(new[] { "phonemes" }, r.GetProperty("targets").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(-3, r.GetProperty("seed").GetInt64());
        Assert.Equal(5, r.GetProperty("batch_size").GetInt32());
        Assert.Equal("de", r.GetProperty("language").GetString());
        Assert.Equal(new[] { "train" }, r.GetProperty("data_splits").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(new[] { "dev", "test" }, r.GetProperty("dev_splits").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(4, r.GetProperty("max_nonfinite_steps").GetInt32());
        // A fresh model instead of a folder.
        var fresh = new SupervisedTrainingOptions { FromScratch = "tiny", Predictors = new[] { "2:bp1:0.2" }, ModelWidth = 64, EncoderLayers = 3, Data = "d" };
        using var freshJson = JsonDocument.Parse(fresh.ToConfigJson());
        var f = freshJson.RootElement;
        Assert.Equal("tiny", f.GetProperty("from_scratch").GetString());
        Assert.Equal(new[] { "2:bp1:0.2" }, f.GetProperty("predictors").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(64, f.GetProperty("d_model").GetInt32());
        Assert.Equal(3, f.GetProperty("encoder_layers").GetInt32());
        // Unset properties keep the documented defaults (docs/TRAINING.md).
        Assert.Equal(1e-5, r.GetProperty("lr").GetDouble());
        Assert.Equal(10, r.GetProperty("log_every").GetInt32());

        // A configuration file under the properties: the properties win.
        var file = Path.Combine(root, "c.json");
        File.WriteAllText(file, """{ "model": "from-file", "data": "d", "eval_every": 3, "lr": 0.5 }""");
        using var merged = JsonDocument.Parse(new SupervisedTrainingOptions { ConfigFile = file, LearningRate = 0.25 }.ToConfigJson());
        Assert.Equal("from-file", merged.RootElement.GetProperty("model").GetString());
        Assert.Equal(3, merged.RootElement.GetProperty("eval_every").GetInt32());
        Assert.Equal(0.25, merged.RootElement.GetProperty("lr").GetDouble());

        // Errors name the key.
        var bad = Assert.Throws<InvalidDataException>(() => new SupervisedTrainingOptions { Model = "m", Data = "d", BatchSize = 0 }.ToConfigJson());
        Assert.Contains("batch_size", bad.Message);
        var missing = Assert.Throws<InvalidDataException>(() => new SupervisedTrainingOptions { Data = "d" }.ToConfigJson());
        Assert.Contains("model", missing.Message);
        Assert.Throws<ArgumentException>(() => new SupervisedTrainingOptions { MaxGradientNorm = 1, NoGradientClipping = true }.ToConfigJson());
    }
}
