// A C# program that uses the MagnetWhisper NuGet package as an outside project would (tests/Consumer/run builds it
// in a temporary folder). It prints the segment means of a known input and whether the libstdc++ remedy is active.
using System;
using System.Globalization;
using System.Linq;
using MagnetWhisper;
using MagnetWhisper.Diagnostics;
using static TorchSharp.torch;

// Frames 0-1 form segment 0, frames 2-4 segment 1; frame 5 is padding (masked out).
using var hidden = tensor(new float[] { 1, 3, 2, 4, 6, 100 }).reshape(1, 6, 1);
using var boundaries = tensor(new float[] { 0, 1, 0, 0, 1, 0 }).reshape(1, 6);
using var mask = tensor(new float[] { 1, 1, 1, 1, 1, 0 }).reshape(1, 6);
using var pooled = SegmentPooling.Downsample(boundaries, hidden, mask);
var means = pooled.data<float>().ToArray().Select(v => v.ToString("0.###", CultureInfo.InvariantCulture));
Console.WriteLine("segment means: " + string.Join(" ", means));

var report = RuntimeReport.Collect();
Console.WriteLine("remedy active: " + report.RemedyActive);
Console.WriteLine("binding: " + report.LoadedBindingPath);
