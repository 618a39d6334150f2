/// `magnet eval` run as a process on a small real-speech corpus (jfk.flac plus two espeak-ng sentences and a corrupt
/// file): the printed WER equals the WER recomputed here from its utterances.tsv with an edit distance written in
/// this file; the corrupt file is skipped and counted; batch sizes 1 and 3 give the same hypotheses; a MagnetWhisper
/// folder prints its compression; usage errors exit 2 naming the flag before the model is loaded.
module MagnetWhisper.Cli.Tests.EvalTests

open System
open System.Diagnostics
open System.Globalization
open System.IO
open System.Text.Json
open System.Text.RegularExpressions
open Expecto
open MagnetWhisper.Cli.Tests.Harness

let private espeak =
    [ "/usr/bin/espeak-ng"; "/usr/local/bin/espeak-ng" ] |> List.tryFind File.Exists

/// Writes `text` spoken by espeak-ng to a WAV file.
let private speak (path: string) (text: string) =
    let info = ProcessStartInfo(Option.get espeak, RedirectStandardError = true, UseShellExecute = false)
    for a in [ "-w"; path; text ] do info.ArgumentList.Add a
    use p = Process.Start info
    p.WaitForExit()
    if p.ExitCode <> 0 then failwithf "espeak-ng failed: %s" (p.StandardError.ReadToEnd())

/// A corpus folder: jfk.flac, two espeak-ng sentences and a file that is not audio, each with its transcript.
let private corpus () =
    let dir = tempDir "eval"
    let data = Path.Combine(dir, "corpus")
    Directory.CreateDirectory data |> ignore
    File.Copy(Harness.data "jfk.flac", Path.Combine(data, "jfk.flac"))
    File.WriteAllText(Path.Combine(data, "jfk.txt"), "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.")
    speak (Path.Combine(data, "one.wav")) "The quick brown fox jumps over the lazy dog."
    File.WriteAllText(Path.Combine(data, "one.txt"), "The quick brown fox jumps over the lazy dog.")
    speak (Path.Combine(data, "two.wav")) "She sells twenty sea shells by the sea shore."
    File.WriteAllText(Path.Combine(data, "two.txt"), "She sells 20 sea shells by the seashore!")
    File.WriteAllText(Path.Combine(data, "broken.wav"), "RIFF but nothing a decoder could use")
    File.WriteAllText(Path.Combine(data, "broken.txt"), "never heard")
    dir

/// Word-level Levenshtein distance (unit costs), written out independently of the product's aligner.
let private distance (a: string[]) (b: string[]) =
    let d = Array2D.init (a.Length + 1) (b.Length + 1) (fun i j -> if i = 0 then j elif j = 0 then i else 0)
    for i in 1 .. a.Length do
        for j in 1 .. b.Length do
            let substitution = d.[i - 1, j - 1] + (if a.[i - 1] = b.[j - 1] then 0 else 1)
            d.[i, j] <- min substitution (min (d.[i - 1, j] + 1) (d.[i, j - 1] + 1))
    d.[a.Length, b.Length]

let private words (s: string) = s.Split(' ', StringSplitOptions.RemoveEmptyEntries)

/// The rows of utterances.tsv as column name → value maps.
let private readTsv (path: string) =
    let lines = File.ReadAllLines path
    let header = lines.[0].Split('\t')
    [ for line in lines.[1..] ->
          let cells = line.Split('\t')
          Expect.equal cells.Length header.Length $"every row has the {header.Length} columns: {line}"
          Map [ for i in 0 .. header.Length - 1 -> header.[i], cells.[i] ] ]

/// The WER printed on stdout ("WER 12.34%").
let private printedWer (out: string) =
    let m = Regex.Match(out, @"^WER (\d+\.\d\d)%", RegexOptions.Multiline)
    Expect.isTrue m.Success $"a WER line in\n{out}"
    m.Groups.[1].Value

let private evalIn (dir: string) (args: string list) = magnetIn dir ([ "eval"; "--data"; "corpus" ] @ args)

/// Keeps a random model's decoding short.
let private short = [ "--sample-len"; "12" ]

[<Tests>]
let tests =
    testList "cli eval" [
        test "the printed WER equals the WER recomputed from utterances.tsv; the corrupt file is skipped and counted" {
            if espeak.IsNone then skiptest "espeak-ng is not installed"
            let dir = corpus ()
            let r = evalIn dir ([ "--model"; tinyWhisper.Value; "--batch-size"; "3"; "-o"; "out" ] @ short)
            Expect.equal r.Code 0 (string r)
            let rows = readTsv (Path.Combine(dir, "out", "utterances.tsv"))
            Expect.equal (rows |> List.map (fun row -> row.["id"])) [ "jfk"; "one"; "two" ] "the three readable utterances, in corpus order"
            let mutable errors = 0
            let mutable referenceWords = 0
            for row in rows do
                let reference = words row.["normalized_reference"]
                let hypothesis = words row.["normalized_hypothesis"]
                let d = distance reference hypothesis
                let sdi = int row.["substitutions"] + int row.["deletions"] + int row.["insertions"]
                Expect.equal sdi d ("S + D + I is the edit distance for " + row.["id"])
                Expect.equal (int row.["reference_words"]) reference.Length "reference words"
                errors <- errors + d
                referenceWords <- referenceWords + reference.Length
            Expect.equal (words rows.[2].["normalized_reference"]) [| "she"; "sells"; "20"; "sea"; "shells"; "by"; "the"; "seashore" |] "the English normaliser ran on the reference"
            let recomputed = (100.0 * float errors / float referenceWords).ToString("F2", CultureInfo.InvariantCulture)
            Expect.equal (printedWer r.Out) recomputed (string r)
            use summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "out", "summary.json")))
            let root = summary.RootElement
            Expect.floatClose Accuracy.veryHigh (root.GetProperty("wer").GetDouble()) (float errors / float referenceWords) "summary.json wer"
            Expect.equal (root.GetProperty("utterances").GetInt32()) 3 "three evaluated"
            // The same evaluation in the run-folder metrics (the original's key, WER in percent), read as plain JSON.
            let metricsLines = File.ReadAllLines(Path.Combine(dir, "out", "metrics.jsonl"))
            Expect.equal metricsLines.Length 1 "one metrics line"
            use metrics = JsonDocument.Parse metricsLines.[0]
            Expect.floatClose Accuracy.veryHigh (metrics.RootElement.GetProperty("evaluation/wer").GetDouble())
                (100.0 * float errors / float referenceWords) "metrics.jsonl evaluation/wer"
            Expect.equal (metrics.RootElement.GetProperty("evaluation/compression_ratio").GetDouble()) 1.0 "stock Whisper keeps every position"
            Expect.isNonEmpty (Directory.GetFiles(Path.Combine(dir, "out"), "events.out.tfevents.*")) "TensorBoard events beside it"
            Expect.equal (root.GetProperty("skipped").GetInt32()) 1 "one skipped"
            Expect.stringContains (root.GetProperty("skipped_entries").[0].GetProperty("source").GetString()) "broken.wav" "names the file"
            Expect.stringContains r.Err "skipped" (string r)
            Expect.stringContains r.Err "broken.wav" (string r)
            Expect.stringContains r.Out "compression: none" "stock Whisper compresses nothing"
            Expect.stringContains r.Out "real-time factor" "timing printed"
            Expect.stringContains r.Err "4/4 utterances" "plain progress lines when stderr is not a terminal (the corrupt file counts as done)"
            let one = evalIn dir ([ "--model"; tinyWhisper.Value; "--batch-size"; "1"; "-o"; "out1" ] @ short)
            Expect.equal one.Code 0 (string one)
            let rowsOne = readTsv (Path.Combine(dir, "out1", "utterances.tsv"))
            Expect.equal (rowsOne |> List.map (fun row -> row.["hypothesis"])) (rows |> List.map (fun row -> row.["hypothesis"])) "batch size 1 and 3 decode the same"
        }

        test "a MagnetWhisper folder prints the compression of its predictor" {
            if espeak.IsNone then skiptest "espeak-ng is not installed"
            let dir = corpus ()
            let converted = magnetIn dir [ "convert"; "--whisper"; tinyWhisper.Value; "-p"; "1:bp1"; "-o"; "magnet"; "--no-check" ]
            Expect.equal converted.Code 0 (string converted)
            // A phone alignment for jfk only: a phone every 0.5 s to 10 s → 19 boundaries (the last end is none).
            File.WriteAllLines(Path.Combine(dir, "corpus", "jfk.phones"), [ for k in 1 .. 20 -> (0.5 * float k).ToString("0.0", CultureInfo.InvariantCulture) + " p" ])
            let r = evalIn dir ([ "--model"; "magnet"; "--limit"; "3"; "-o"; "out" ] @ short)
            Expect.equal r.Code 0 (string r)
            let m = Regex.Match(r.Out, @"compression layer 1: kept (\d+\.\d)%")
            Expect.isTrue m.Success (string r)
            use summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "out", "summary.json")))
            let layer = summary.RootElement.GetProperty("compression").[0]
            let kept = float (layer.GetProperty("boundaries").GetInt64()) / float (layer.GetProperty("positions").GetInt64())
            Expect.equal (m.Groups.[1].Value) ((100.0 * kept).ToString("F1", CultureInfo.InvariantCulture)) "printed = Σ boundaries / Σ positions"
            Expect.equal (summary.RootElement.GetProperty("utterances").GetInt32()) 2 "--limit 3: broken, jfk and one, the first in id order"
            let boundaries = summary.RootElement.GetProperty("boundaries").[0]
            Expect.equal (boundaries.GetProperty("utterances").GetInt32(), boundaries.GetProperty("reference").GetInt32()) (1, 19) "jfk's 19 phone boundaries"
            let f1 = Regex.Match(r.Out, @"boundaries layer 1 vs phone alignments \(±20 ms, 1 utterances\): precision \S+, recall \S+, F1 (\d\.\d{3}) \(random at the same rate \d\.\d{3}\)")
            Expect.isTrue f1.Success (string r)
            Expect.equal f1.Groups.[1].Value (boundaries.GetProperty("f1").GetDouble().ToString("F3", CultureInfo.InvariantCulture)) "printed F1 = summary.json's"
        }

        testList "usage errors (exit 2, flag named as typed, before loading)" [
            let expectUsage (args: string list) (mentions: string list) =
                let dir = tempDir "eval-usage"
                Directory.CreateDirectory(Path.Combine(dir, "corpus")) |> ignore
                let r = evalIn dir ([ "--model"; tinyWhisper.Value ] @ args)
                Expect.equal r.Code 2 (string r)
                for m in mentions do Expect.stringContains r.Err m (string r)
                Expect.isFalse (r.Err.Contains "loading") $"the model was not loaded\n{r}"
            test "an unknown flag" { expectUsage [ "--batchsize"; "3" ] [ "'--batchsize'"; "did you mean --batch-size?" ] }
            test "--batch-size 0" { expectUsage [ "--batch-size"; "0" ] [ "--batch-size"; "at least 1" ] }
            test "--sample-len beyond half the decoder positions" { expectUsage [ "--sample-len"; "100000" ] [ "--sample-len"; "100000" ] }
            test "--max-duration beyond the 30 s window" { expectUsage [ "--max-duration"; "45" ] [ "--max-duration"; "30" ] }
            test "a missing corpus" {
                let dir = tempDir "eval-usage"
                let r = magnetIn dir [ "eval"; "--model"; tinyWhisper.Value; "--data"; "no-such-corpus" ]
                Expect.equal r.Code 2 (string r)
                Expect.stringContains r.Err "--data no-such-corpus" (string r)
            }
            test "a missing model" {
                let dir = tempDir "eval-usage"
                Directory.CreateDirectory(Path.Combine(dir, "corpus")) |> ignore
                let r = evalIn dir [ "--model"; "no-such-model" ]
                Expect.equal r.Code 2 (string r)
                Expect.stringContains r.Err "--model no-such-model" (string r)
            }
        ]
    ]
