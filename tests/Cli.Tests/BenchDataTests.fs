/// `magnet bench data`: figures for each worker count and the encoder on stdout, a bad utterance named on stderr
/// with exit 1, a misspelt flag a usage error (2).
module MagnetWhisper.Cli.Tests.BenchDataTests

open System.IO
open Expecto
open MagnetWhisper.Cli.Tests.Harness

[<Tests>]
let tests =
    testList "cli bench data" [
        test "the built-in corpus: a loader line per worker count, the encoder's rate and the margin" {
            let r = magnet [ "bench"; "data"; "--utterances"; "4"; "--batch-size"; "2"; "--workers"; "1,2"; "--quiet" ]
            Expect.equal r.Code 0 (string r)
            Expect.stringContains r.Out "corpus       4 utterances" (string r)
            Expect.stringContains r.Out "loader       1 worker(s):" (string r)
            Expect.stringContains r.Out "loader       2 worker(s):" (string r)
            Expect.stringContains r.Out "utterances/s" (string r)
            Expect.stringContains r.Out "encoder      whisper-tiny (random weights) as MagnetWhisper forward:" (string r)
            Expect.stringContains r.Out "margin" (string r)
        }

        test "a corpus with a corrupt file: figures for the rest, the file named on stderr, exit 1" {
            let dir = tempDir "bench-data"
            toneWav dir "good.wav" |> ignore
            File.WriteAllText(Path.Combine(dir, "good.txt"), "ask not")
            File.WriteAllBytes(Path.Combine(dir, "bad.wav"), [| 0uy; 1uy; 2uy |])
            File.WriteAllText(Path.Combine(dir, "bad.txt"), "broken")
            let r = magnet [ "bench"; "data"; "--data"; dir; "--workers"; "1"; "--model"; tinyWhisper.Value; "--quiet" ]
            Expect.equal r.Code 1 (string r)
            Expect.stringContains r.Out "corpus       1 utterances" (string r)
            Expect.stringContains r.Out "1 skipped" (string r)
            Expect.stringContains r.Err "bad.wav" (string r)
        }

        test "a misspelt flag is a usage error naming the flag and its nearest spelling" {
            let r = magnet [ "bench"; "data"; "--wokers"; "2" ]
            Expect.equal r.Code 2 (string r)
            Expect.stringContains r.Err "--wokers" (string r)
            Expect.stringContains r.Err "--workers" (string r)
        }

        test "a missing corpus folder and a bad worker count are usage errors naming the flag" {
            let r = magnet [ "bench"; "data"; "--data"; "/no/such/corpus" ]
            Expect.equal r.Code 2 (string r)
            Expect.stringContains r.Err "--data /no/such/corpus" (string r)
            let r = magnet [ "bench"; "data"; "--workers"; "0" ]
            Expect.equal r.Code 2 (string r)
            Expect.stringContains r.Err "--workers" (string r)
        }
    ]
