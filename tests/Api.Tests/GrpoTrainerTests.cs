using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Threading.Tasks;
using Xunit;

namespace MagnetWhisper.Api.Tests;

/// <summary>
/// GrpoTrainer as a C# caller uses it: a converted tiny MagnetWhisper on two tones stops at step 1 with a checkpoint,
/// resumes to step 2 (progress after every step, metrics with the GRPO keys, final/); configuration errors name the key.
/// </summary>
public class GrpoTrainerTests : IClassFixture<TinyCheckpoint>
{
    readonly TinyCheckpoint checkpoint;

    public GrpoTrainerTests(TinyCheckpoint checkpoint) => this.checkpoint = checkpoint;

    /// <summary>Reports synchronously (Progress&lt;T&gt; would post to the thread pool and arrive late).</summary>
    sealed class Collect<T> : IProgress<T>
    {
        public List<T> Items { get; } = new();
        public void Report(T value) { lock (Items) Items.Add(value); }
    }

    static void WriteTone(string path, double seconds, double hz)
    {
        var n = (int)(seconds * 16000);
        using var w = new BinaryWriter(File.Create(path));
        w.Write("RIFF"u8.ToArray()); w.Write(36 + n * 2); w.Write("WAVE"u8.ToArray());
        w.Write("fmt "u8.ToArray()); w.Write(16); w.Write((short)1); w.Write((short)1); w.Write(16000); w.Write(32000); w.Write((short)2); w.Write((short)16);
        w.Write("data"u8.ToArray()); w.Write(n * 2);
        for (var i = 0; i < n; i++) w.Write((short)Math.Round(0.3 * Math.Sin(2 * Math.PI * hz * i / 16000.0) * 32767.0));
    }

    /// <summary>A folder with `magnet` (the tiny checkpoint with a BP1 before layer 1) and `corpus` (two tones).</summary>
    string Setup()
    {
        var dir = Path.Combine(Path.GetTempPath(), "mw-grpo-" + Guid.NewGuid().ToString("N"));
        var corpus = Path.Combine(dir, "corpus");
        Directory.CreateDirectory(corpus);
        WriteTone(Path.Combine(corpus, "a.wav"), 0.8, 220);
        File.WriteAllText(Path.Combine(corpus, "a.txt"), "one two");
        WriteTone(Path.Combine(corpus, "b.wav"), 0.6, 330);
        File.WriteAllText(Path.Combine(corpus, "b.txt"), "three");
        using var model = MagnetWhisperModel.FromWhisper(checkpoint.Folder, MagnetOptions.Default.WithPredictor(1, PredictorType.Bp1, 0.3), "cpu");
        model.Save(Path.Combine(dir, "magnet"));
        return dir;
    }

    [Fact]
    public async Task ARunStopsAtStepOneResumesToTheEndAndLogsTheGrpoKeys()
    {
        var dir = Setup();
        try
        {
            var options = new GrpoTrainingOptions
            {
                Model = Path.Combine(dir, "magnet"), Data = Path.Combine(dir, "corpus"), MaxSteps = 2, BatchSize = 2, GroupSize = 2,
                LogEvery = 1, Workers = 1, Device = "cpu", StopAtStep = 1, WerRewardWeight = 0.25,
                Settings = new Dictionary<string, string> { ["kept_fraction_weight"] = "0.5" },
            };
            var run = Path.Combine(dir, "run");
            var progress = new Collect<GrpoTrainingProgress>();
            var first = await new GrpoTrainer(options).TrainAsync(run, progress);
            Assert.Equal((TrainingOutcome.Interrupted, 1), (first.Outcome, first.Step));
            Assert.NotNull(first.CheckpointPath);
            Assert.Null(first.FinalModelPath);
            var second = await new GrpoTrainer(new GrpoTrainingOptions { Device = "cpu" }).ResumeAsync(run, progress);
            Assert.Equal((TrainingOutcome.Completed, 2), (second.Outcome, second.Step));
            Assert.Equal(new[] { 1, 2 }, progress.Items.Select(p => p.Step));
            Assert.All(progress.Items, p => Assert.InRange(p.KeptFraction, 0.0, 1.0));
            Assert.True(File.Exists(Path.Combine(second.FinalModelPath!, "magnet.json")));
            var lines = File.ReadAllLines(Path.Combine(run, "metrics.jsonl"));
            Assert.Equal(2, lines.Length);
            Assert.All(lines, l => Assert.Contains("\"train/grpo_reward_mean\"", l));
            Assert.All(lines, l => Assert.Contains("\"train/grpo_wer\"", l));
            Assert.Contains("\"kept_fraction_weight\": 0.5", File.ReadAllText(Path.Combine(run, "config.json")));
            Assert.Contains("\"wer_reward_weight\": 0.25", File.ReadAllText(Path.Combine(run, "config.json")));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public async Task TestDataIsEvaluatedAtTheEndAndReportedThroughTheSharedEventsAndResult()
    {
        var dir = Setup();
        try
        {
            var options = new GrpoTrainingOptions
            {
                Model = Path.Combine(dir, "magnet"), Data = Path.Combine(dir, "corpus"), TestData = Path.Combine(dir, "corpus"),
                MaxSteps = 1, BatchSize = 2, GroupSize = 2, Workers = 1, Device = "cpu",
            };
            var trainer = new GrpoTrainer(options);
            var logged = new List<TrainingLoggedEventArgs>();
            var checkpoints = new List<CheckpointWrittenEventArgs>();
            trainer.Logged += (_, e) => logged.Add(e);
            trainer.CheckpointWritten += (_, e) => checkpoints.Add(e);
            var result = await trainer.TrainAsync(Path.Combine(dir, "run"));
            Assert.Equal((TrainingOutcome.Completed, 1), (result.Outcome, result.Step));
            Assert.Equal(result.FinalModelPath, result.TestModelPath);
            var test = Assert.Single(logged, l => l.Metrics.ContainsKey("test/wer"));
            // Logged in percent as the original logged WERs; the result holds fractions.
            Assert.Equal(test.Metrics["test/wer"], 100 * result.TestWordErrorRate);
            Assert.Equal(test.Metrics["test/cer"], 100 * result.TestCharacterErrorRate);
            Assert.Equal(2.0, test.Metrics["test/num_samples"]);
            Assert.Equal(new[] { 1 }, checkpoints.Select(c => c.Step));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public async Task ConfigurationErrorsNameTheKey()
    {
        var bad = new GrpoTrainer(new GrpoTrainingOptions { Model = "m", Data = "d", GroupSize = 1 });
        var e = await Assert.ThrowsAsync<InvalidDataException>(() => bad.TrainAsync(Path.Combine(Path.GetTempPath(), "never")));
        Assert.Contains("key 'group_size'", e.Message);
        var unknown = new GrpoTrainer(new GrpoTrainingOptions { Model = "m", Data = "d", Settings = new Dictionary<string, string> { ["group_sise"] = "3" } });
        var u = await Assert.ThrowsAsync<InvalidDataException>(() => unknown.TrainAsync(Path.Combine(Path.GetTempPath(), "never")));
        Assert.Contains("unknown key 'group_sise'", u.Message);
    }
}
