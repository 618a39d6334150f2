/// `magnet report` run as a process on run folders whose metrics.jsonl the tests write through the project's own
/// writer (JsonlMetricsSink): the page is self-contained, names every run, carries the values it was given, shows
/// the Pareto view with several runs, reads runs still being written, and reports missing folders with exit 2.
module MagnetWhisper.Cli.Tests.ReportTests

open System.IO
open System.Text.RegularExpressions
open Expecto
open MagnetWhisper.Core.Training
open MagnetWhisper.Cli.Tests.Harness

/// Writes a run folder's metrics.jsonl: (step, values) lines in order.
let private writeRun (dir: string) (lines: (int64 * (string * float) list) list) =
    Directory.CreateDirectory dir |> ignore
    use sink = JsonlMetricsSink.Open(Path.Combine(dir, "metrics.jsonl")) :> IMetricsSink
    for step, values in lines do
        sink.Log(step, values)

/// Training lines of steps 1..n whose values are exact binary fractions (printed the same by every JSON writer).
let private trainLines (n: int) (loss0: float) (compression: float) =
    [ for s in 1 .. n ->
          int64 s,
          [ MetricKeys.TrainLoss, loss0 - 0.125 * float s
            MetricKeys.TrainAsrLoss, loss0 - 0.5 - 0.125 * float s
            MetricKeys.TrainBoundaryLoss, 0.5
            MetricKeys.TrainLearningRate, 0.000625 * float s
            MetricKeys.TrainCompressionRatio, compression
            MetricKeys.TrainBoundaryTemperature, 1.0 - 0.0625 * float s ] ]

let private expectSelfContained (html: string) =
    Expect.isFalse (Regex.IsMatch(html, @"<script[^>]*\bsrc\s*=", RegexOptions.IgnoreCase)) "no script is loaded from elsewhere"
    Expect.isFalse (Regex.IsMatch(html, @"<link[^>]*\bhref\s*=\s*[""']?https?:", RegexOptions.IgnoreCase)) "no http(s) stylesheet"
    Expect.stringContains html "Plotly.newPlot" "the figure is drawn by plotly.js"
    Expect.isGreaterThan html.Length 3_000_000 "plotly.js embedded"

[<Tests>]
let tests =
    testList "cli report" [
        test "two runs: one self-contained page naming both, with their values and the WER-against-compression view" {
            let dir = tempDir "report"
            writeRun (Path.Combine(dir, "fast-bp1"))
                (trainLines 4 9.75 0.3125
                 @ [ (2L, [ MetricKeys.EvalWer, 0.4375; MetricKeys.EvalCompressionRatio, 0.28125 ])
                     (4L, [ MetricKeys.EvalWer, 0.375; MetricKeys.EvalCompressionRatio, 0.296875 ]) ])
            writeRun (Path.Combine(dir, "slow-bp4"))
                (trainLines 4 7.25 0.15625 @ [ (4L, [ MetricKeys.EvalWer, 0.5625 ]) ])
            let r = magnetIn dir [ "report"; "fast-bp1"; "slow-bp4"; "-o"; "out/page.html" ]
            Expect.equal r.Code 0 (string r)
            let html = File.ReadAllText(Path.Combine(dir, "out", "page.html"))
            expectSelfContained html
            for name in [ "fast-bp1"; "slow-bp4" ] do
                Expect.stringContains html name $"the page names {name}"
            // Values as they were logged: losses, learning rate, temperature, WER, compression.
            for value in [ "9.625"; "7.125"; "9.125"; "0.00125"; "0.9375"; "0.4375"; "0.5625"; "0.296875"; "0.15625" ] do
                Expect.stringContains html value $"the page holds the logged value {value}"
            Expect.stringContains html "fast-bp1: final (step 4)" "the Pareto view's point of fast-bp1"
            Expect.stringContains html "slow-bp4: best (step 4)" "the Pareto view's best point of slow-bp4"
            for axis in [ "learning rate"; "temperature"; "dev WER, % (eval/wer)"; "compression (kept fraction of the dev evaluation)" ] do
                Expect.stringContains html axis $"the page has the panel '{axis}'"
            // fast-bp1's final evaluation is step 4 (WER 0.375 at its own compression 0.296875); slow-bp4 logged no
            // dev compression, so its point takes the training compression logged at step 4.
            Expect.stringContains r.Out "fast-bp1: 6 lines, last step 4, final dev WER 0.375 at compression 0.296875, best 0.375 (step 4)" r.Out
            Expect.stringContains r.Out "slow-bp4: 5 lines, last step 4, final dev WER 0.5625 at compression 0.15625" r.Out
        }

        test "runs without evaluations, being written, or empty: the page renders and says what it left out" {
            let dir = tempDir "report-partial"
            writeRun (Path.Combine(dir, "no-eval")) (trainLines 3 5.5 0.5)
            // A line torn by a run still writing it (no newline yet).
            File.AppendAllText(Path.Combine(dir, "no-eval", "metrics.jsonl"), "{\"step\": 4, \"train/lo")
            writeRun (Path.Combine(dir, "empty")) []
            let r = magnetIn dir [ "report"; "no-eval"; "empty"; "-o"; "p.html"; "--title"; "partial runs" ]
            Expect.equal r.Code 0 (string r)
            let html = File.ReadAllText(Path.Combine(dir, "p.html"))
            expectSelfContained html
            Expect.stringContains html "partial runs" "the title"
            Expect.stringContains html "5.375" "the first loss of no-eval"
            Expect.stringContains html "no-eval: the last line of metrics.jsonl is incomplete" "the torn line is reported"
            Expect.stringContains html "empty: metrics.jsonl holds no complete line yet" "the empty run is named"
            Expect.stringContains html "dev WER against compression (no evaluation with a compression)" "no Pareto points, and why"
            Expect.stringContains r.Out "no-eval: 3 lines, last step 3" r.Out
        }

        test "a missing folder, a folder without metrics.jsonl, a folder as -o and an unknown flag: exit 2, no page" {
            let dir = tempDir "report-errors"
            writeRun (Path.Combine(dir, "good")) (trainLines 2 3.0 0.5)
            Directory.CreateDirectory(Path.Combine(dir, "not-a-run")) |> ignore
            let missing = magnetIn dir [ "report"; "good"; "nowhere"; "-o"; "a.html" ]
            Expect.equal missing.Code 2 (string missing)
            Expect.stringContains missing.Err "nowhere" "names the missing folder"
            let noMetrics = magnetIn dir [ "report"; "not-a-run"; "-o"; "b.html" ]
            Expect.equal noMetrics.Code 2 (string noMetrics)
            Expect.stringContains noMetrics.Err "not-a-run" "names the folder"
            Expect.stringContains noMetrics.Err "metrics.jsonl" "says what is missing"
            let folderOut = magnetIn dir [ "report"; "good"; "-o"; "not-a-run" ]
            Expect.equal folderOut.Code 2 (string folderOut)
            Expect.stringContains folderOut.Err "-o not-a-run" "names the flag as typed"
            let unknown = magnetIn dir [ "report"; "good"; "-o"; "c.html"; "--titel"; "x" ]
            Expect.equal unknown.Code 2 (string unknown)
            Expect.stringContains unknown.Err "--titel" "names the unknown flag"
            for page in [ "a.html"; "b.html"; "c.html" ] do
                Expect.isFalse (File.Exists(Path.Combine(dir, page))) $"{page} is not written"
        }
    ]
