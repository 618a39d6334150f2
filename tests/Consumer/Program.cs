// A C# program that uses the MagnetWhisper NuGet package as an outside project would (tests/Consumer/run builds it
// in a temporary folder). It prints the segment means of a known input and whether the libstdc++ remedy is active;
// given the repository's data/demo folder and a scratch folder, it also loads the built-in base model, transcribes a
// test utterance, fine-tunes it with a boundary predictor for two updates, saves and reloads the result and
// transcribes again through the compressed encoder.
using System;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text.Json;
using MagnetWhisper;
using MagnetWhisper.Diagnostics;
using static TorchSharp.torch;

// Frames 0-1 form segment 0, frames 2-4 segment 1; frame 5 is padding (masked out).
using (var hidden = tensor(new float[] { 1, 3, 2, 4, 6, 100 }).reshape(1, 6, 1))
using (var boundaries = tensor(new float[] { 0, 1, 0, 0, 1, 0 }).reshape(1, 6))
using (var mask = tensor(new float[] { 1, 1, 1, 1, 1, 0 }).reshape(1, 6))
using (var pooled = SegmentPooling.Downsample(boundaries, hidden, mask))
{
    var means = pooled.data<float>().ToArray().Select(v => v.ToString("0.###", CultureInfo.InvariantCulture));
    Console.WriteLine("segment means: " + string.Join(" ", means));
}

var report = RuntimeReport.Collect();
Console.WriteLine("remedy active: " + report.RemedyActive);
Console.WriteLine("binding: " + report.LoadedBindingPath);

if (args.Length < 2) return 0;
var demo = args[0];
var scratch = args[1];
var corpus = Path.Combine(demo, "corpus");
var manifest = Path.Combine(corpus, "manifest.jsonl");
// The first test utterance and its transcript, from the manifest.
var first = File.ReadLines(manifest).Select(l => JsonDocument.Parse(l).RootElement)
    .First(e => e.GetProperty("split").GetString() == "test");
var audio = Path.Combine(corpus, first.GetProperty("audio").GetString()!);
var reference = first.GetProperty("text").GetString()!;
Console.WriteLine("reference: " + reference);

// The built-in model was trained on text without timestamp tokens, in English (data/demo/base-model/PROVENANCE.md).
var textOnly = new TranscribeOptions { Language = "en", WithoutTimestamps = true };
using (var model = MagnetWhisperModel.Load(Path.Combine(demo, "base-model"), "cpu"))
    Console.WriteLine("base model: " + model.Transcribe(audio, textOnly).Text.Trim());

var options = new SupervisedTrainingOptions
{
    Model = Path.Combine(demo, "base-model"),
    Predictors = new[] { "3:bp2:0.25:mean" },
    Data = manifest,
    DataSplits = new[] { "train" },
    Targets = new[] { "phonemes" },
    MaxSteps = 2,
    BatchSize = 2,
    LogEvery = 1,
    CheckpointEvery = 0,
    Workers = 1,
};
var result = await new SupervisedTrainer(options).TrainAsync(Path.Combine(scratch, "run"));
Console.WriteLine($"trained: {result.Outcome}, step {result.Step}");
var saved = Path.Combine(scratch, "saved");
using (var trained = MagnetWhisperModel.Load(result.FinalModelPath!, "cpu"))
    trained.Save(saved);
using (var reloaded = MagnetWhisperModel.Load(saved, "cpu"))
    Console.WriteLine("magnet model: " + reloaded.Transcribe(audio, textOnly).Text.Trim());
return 0;
