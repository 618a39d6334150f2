/// `magnet bench train` run as a process on the mini configuration with few updates: its lines exist and parse,
/// samples/s is the batch over the median, PyTorch's reference computes the same first cross-entropy, the memory check
/// reports RSS and live tensors at a tenth and at the end, and usage errors exit 2 naming the flag. No timing is
/// asserted.
module MagnetWhisper.Cli.Tests.BenchTrainTests

open System
open System.Diagnostics
open System.Globalization
open System.Text.RegularExpressions
open Expecto
open MagnetWhisper.Cli.Tests.Harness

let private number (s: string) = Double.Parse(s, CultureInfo.InvariantCulture)

/// The groups of the first match of pattern in text, failing with the text when there is none.
let private groups (pattern: string) (text: string) : string list =
    let m = Regex.Match(text, pattern, RegexOptions.Multiline)
    if not m.Success then failtestf "no line matches %s in:\n%s" pattern text
    [ for i in 1 .. m.Groups.Count - 1 -> m.Groups.[i].Value ]

/// Milliseconds of a printed duration ("3.06e+03 ms", "812 ms").
let private msPattern = @"([0-9.e+\-]+) ms"

let private small = [ "bench"; "train"; "--config"; "mini"; "--batch"; "2"; "--seconds"; "1"; "--tokens"; "4"; "--threads"; "1"; "--quiet" ]

/// True when /usr/bin/python3 imports torch and numpy.
let private pytorchAvailable =
    lazy
        (try
            let info = ProcessStartInfo("/usr/bin/python3", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
            for a in [ "-c"; "import torch, numpy" ] do info.ArgumentList.Add a
            use p = Process.Start info
            p.WaitForExit()
            p.ExitCode = 0
         with _ -> false)

[<Tests>]
let tests =
    testList "cli bench train" [
        test "one predictor, two updates: model, batch and time lines; samples/s is the batch over the median" {
            let r = magnet (small @ [ "-p"; "1:bp1"; "--repeats"; "2"; "--warmup"; "0" ])
            Expect.equal r.Code 0 (string r)
            Expect.stringContains r.Out "mini: d_model 64, 2+2 layers" "the model line"
            Expect.stringContains r.Out "Bp1 before layer 1" "the predictor"
            Expect.stringContains r.Out "2 utterances, 1 s valid audio each, 4 label tokens; 1 threads" "the batch line"
            match groups (@"^ours\s+median " + msPattern + @" \(min " + msPattern + ", max " + msPattern + @"\) over 2 updates, ([0-9.e+\-]+) samples/s") r.Out with
            | [ median; low; high; rate ] ->
                let median, low, high, rate = number median, number low, number high, number rate
                Expect.isTrue (low <= median && median <= high) $"min {low} ≤ median {median} ≤ max {high}"
                // Printed with 3 significant digits each.
                Expect.floatClose { absolute = 0.0; relative = 0.01 } rate (2.0 * 1000.0 / median) "samples/s = batch / median"
            | g -> failtestf "unexpected groups %A" g
            Expect.isFalse (r.Out.Contains "ratio") "no ratio without --pytorch"
        }

        test "--pytorch: the same first cross-entropy as the plain-PyTorch reference, and the ratio line last" {
            if not pytorchAvailable.Value then skiptest "/usr/bin/python3 cannot import torch"
            let r = magnet (small @ [ "--repeats"; "1"; "--warmup"; "0"; "--pytorch" ])
            Expect.equal r.Code 0 (string r)
            match groups @"^check\s+first update's cross-entropy: ours ([0-9.]+), PyTorch ([0-9.]+)" r.Out with
            | [ ours; theirs ] ->
                // No predictor: the same weights and inputs give the same loss (float32, different kernels).
                Expect.floatClose { absolute = 1e-4; relative = 1e-5 } (number ours) (number theirs) "cross-entropy of PyTorch's reference"
                Expect.isGreaterThan (number ours) 5.0 "a random model's cross-entropy over a 51865-token vocabulary is large"
            | g -> failtestf "unexpected groups %A" g
            let last = r.Out.Trim().Split('\n') |> Array.last
            match groups @"^ratio ours / PyTorch = ([0-9.]+) \(median per update, batch 2\)$" last with
            | [ ratio ] -> Expect.isGreaterThan (number ratio) 0.0 "a positive ratio"
            | g -> failtestf "unexpected groups %A" g
            groups (@"^pytorch\s+\S+, 1 threads: median " + msPattern) r.Out |> ignore
        }

        test "--memory --steps 20: RSS and live tensors at steps 2 and 20, the verdict follows the 5 % rule" {
            let r = magnet (small @ [ "--memory"; "--steps"; "20" ])
            Expect.isTrue (r.Code = 0 || r.Code = 1) (string r)
            groups @"^updates\s+20 \(0 skipped\), median " r.Out |> ignore
            let rss = groups @"^RSS\s+\(after GC and malloc_trim\) step 2 ([0-9.]+) MiB, step 20 ([0-9.]+) MiB: ([+\-][0-9.]+)%" r.Out |> List.map number
            let tensors = groups @"^live tensors step 2 ([0-9]+), step 20 ([0-9]+): ([+\-][0-9.]+)%" r.Out |> List.map number
            let change (xs: float list) = 100.0 * (xs.[1] - xs.[0]) / xs.[0]
            Expect.floatClose { absolute = 0.1; relative = 0.0 } rss.[2] (change rss) "RSS change as printed"
            Expect.floatClose { absolute = 0.01; relative = 0.0 } tensors.[2] (change tensors) "tensor change as printed"
            // Every update disposes what it made: the live tensors after step 2 are those after step 20.
            Expect.equal tensors.[1] tensors.[0] "live tensors do not grow"
            let flat = abs (change rss) <= 5.0 && abs (change tensors) <= 5.0
            Expect.equal (r.Out.Contains "flat         yes") flat "the verdict"
            Expect.equal r.Code (if flat then 0 else 1) "exit 1 when memory grew"
        }

        test "usage errors exit 2 naming the flag" {
            for args, flag in
                [ [ "--config"; "huge" ], "--config"
                  [ "--config"; "mini"; "--batch"; "0" ], "--batch"
                  [ "--config"; "mini"; "-p"; "7:bp1" ], "--predictor"
                  [ "--config"; "mini"; "-p"; "1:bp9" ], "bp9"
                  [ "--config"; "mini"; "--seconds"; "31" ], "--seconds"
                  [ "--memory"; "--steps"; "5" ], "--steps"
                  [ "--memory"; "--pytorch" ], "--pytorch"
                  [ "--config"; "mini"; "--batchsize"; "2" ], "--batchsize" ] do
                let r = magnet ([ "bench"; "train" ] @ args)
                Expect.equal r.Code 2 (string r)
                Expect.stringContains r.Err flag $"names {flag}"
                Expect.isFalse (r.Out.Contains "median") "nothing was timed"
        }
    ]
