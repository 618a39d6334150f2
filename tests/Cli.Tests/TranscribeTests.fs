/// `magnet transcribe` run as a process: unknown flags and bad values are usage errors (exit 2) that name the flag
/// as typed and come before the model is loaded; output folders are checked before decoding; an empty WAV fails by
/// name (exit 1); segments are printed as they are decoded, with plain progress lines when stderr is not a terminal.
module MagnetWhisper.Cli.Tests.TranscribeTests

open System
open System.IO
open System.Text.Json
open Expecto
open MagnetWhisper.Cli.Tests.Harness

/// A folder with tone.wav and an empty out/ folder; returns the folder.
let private workspace () =
    let dir = tempDir "transcribe"
    toneWav dir "tone.wav" |> ignore
    Directory.CreateDirectory(Path.Combine(dir, "out")) |> ignore
    dir

let private transcribeIn (dir: string) (args: string list) =
    magnetIn dir ([ "transcribe"; "--model"; tinyWhisper.Value ] @ args)

/// The run is a usage error that names each of `mentions`, without .NET's parameter suffix, before the model is
/// loaded and with nothing written.
let private expectUsageError (args: string list) (mentions: string list) =
    let dir = workspace ()
    let r = transcribeIn dir ([ "tone.wav"; "-o"; "out" ] @ fast @ args)
    Expect.equal r.Code 2 (string r)
    for m in mentions do
        Expect.stringContains r.Err m (string r)
    Expect.isFalse (r.Err.Contains "(Parameter") (string r)
    Expect.isFalse (r.Err.Contains "loading") $"the model was not loaded\n{r}"
    Expect.isEmpty (Directory.GetFileSystemEntries(Path.Combine(dir, "out"))) "nothing written"
    Expect.isEmpty (Directory.GetFiles(dir, "*.txt")) "nothing written in the working folder"

/// whisper's format_timestamp without hours: mm:ss.mmm from rounded milliseconds (written out here).
let private timestamp (seconds: float) =
    let ms = int64 (Math.Round(seconds * 1000.0, MidpointRounding.ToEven))
    let minutes = ms / 60000L
    let secs = (ms % 60000L) / 1000L
    let millis = ms % 1000L
    sprintf "%02d:%02d.%03d" minutes secs millis

[<Tests>]
let tests =
    testList "cli transcribe" [
        testList "usage errors (exit 2, flag named as typed, before loading)" [
            test "a misspelt flag is not an audio path" { expectUsageError [ "--outptu-dir"; "X" ] [ "'--outptu-dir'"; "did you mean --output-dir?" ] }
            test "an unknown flag is not an audio path" { expectUsageError [ "--fp16" ] [ "'--fp16'" ] }
            test "--beam-size -1" { expectUsageError [ "--beam-size"; "-1" ] [ "--beam-size"; "-1" ] }
            test "--sample-len beyond half the decoder positions" {
                expectUsageError [ "--sample-len"; "100000" ] [ "--sample-len"; "100000"; string (tinyConfig.MaxTargetPositions / 2) ]
            }
            test "--sample-len 0" { expectUsageError [ "--sample-len"; "0" ] [ "--sample-len" ] }
            test "an out-of-vocabulary --suppress-tokens id" {
                expectUsageError [ "--suppress-tokens"; "1,999999" ] [ "--suppress-tokens"; "999999"; string (tinyConfig.VocabSize - 1) ]
            }
            test "a --suppress-tokens entry that is not a number" { expectUsageError [ "--suppress-tokens"; "1,x" ] [ "--suppress-tokens"; "'x'" ] }
            test "--length-penalty outside [0, 1]" { expectUsageError [ "--length-penalty"; "2" ] [ "--length-penalty" ] }
            test "--temperature above the fallback schedule's end" { expectUsageError [ "--temperature"; "1.5"; "--temperature-increment-on-fallback"; "0.2" ] [ "--temperature"; "--temperature-increment-on-fallback none" ] }
            test "--best-of 0" { expectUsageError [ "--best-of"; "0" ] [ "--best-of" ] }
            test "--device names the flag" { expectUsageError [ "--device"; "gpu" ] [ "--device"; "'gpu'" ] }
            test "-f names the short flag it was given" { expectUsageError [ "-f"; "docx" ] [ "-f:"; "'docx'" ] }
            test "--output-format names the long flag it was given" { expectUsageError [ "--output-format"; "docx" ] [ "--output-format:"; "'docx'" ] }
            test "a missing --model folder" {
                let dir = workspace ()
                let r = magnetIn dir ([ "transcribe"; "tone.wav"; "--model"; "no-such-model"; "-o"; "out" ] @ fast)
                Expect.equal r.Code 2 (string r)
                Expect.stringContains r.Err "--model no-such-model" (string r)
            }
        ]

        testList "output folder checked before decoding" [
            test "-o naming a file" {
                let dir = workspace ()
                File.WriteAllText(Path.Combine(dir, "taken"), "")
                let r = transcribeIn dir ([ "tone.wav"; "-o"; "taken" ] @ fast)
                Expect.equal r.Code 2 (string r)
                Expect.stringContains r.Err "-o taken" (string r)
                Expect.isFalse (r.Err.Contains "loading") $"no model loaded, nothing decoded\n{r}"
            }
            test "--output-dir below a file" {
                let dir = workspace ()
                File.WriteAllText(Path.Combine(dir, "taken"), "")
                let r = transcribeIn dir ([ "tone.wav"; "--output-dir"; "taken/sub" ] @ fast)
                Expect.equal r.Code 2 (string r)
                Expect.stringContains r.Err "--output-dir taken/sub" (string r)
                Expect.isFalse (r.Err.Contains "loading") $"no model loaded, nothing decoded\n{r}"
            }
            test "a missing nested folder is created" {
                let dir = workspace ()
                let r = transcribeIn dir ([ "tone.wav"; "-o"; "a/b"; "-f"; "txt" ] @ fast)
                Expect.equal r.Code 0 (string r)
                Expect.isTrue (File.Exists(Path.Combine(dir, "a", "b", "tone.txt"))) (string r)
            }
        ]

        testList "inputs that fail (exit 1)" [
            test "a WAV with no samples fails by name and writes nothing" {
                let dir = workspace ()
                writeWav (Path.Combine(dir, "empty.wav")) [||]
                let r = transcribeIn dir ([ "empty.wav"; "-o"; "out" ] @ fast)
                Expect.equal r.Code 1 (string r)
                Expect.stringContains r.Err "empty.wav: the file holds no audio samples" (string r)
                Expect.isEmpty (Directory.GetFileSystemEntries(Path.Combine(dir, "out"))) "nothing written"
            }
            test "a missing file among good ones: the others are written, the error names it once, exit 1" {
                let dir = workspace ()
                let r = transcribeIn dir ([ "missing.wav"; "tone.wav"; "-o"; "out"; "-f"; "txt" ] @ fast)
                Expect.equal r.Code 1 (string r)
                Expect.isTrue (File.Exists(Path.Combine(dir, "out", "tone.txt"))) (string r)
                let line = r.Err.Split('\n') |> Array.find (fun l -> l.Contains "missing.wav")
                Expect.equal (line.Split("missing.wav").Length - 1) 1 $"the path once in '{line}'"
                Expect.stringContains r.Err "1 of 2 files failed" (string r)
            }
        ]

        test "segments are printed as decoded ([mm:ss.mmm --> mm:ss.mmm] text) and progress lines are plain with an ETA" {
            let dir = workspace ()
            let r = transcribeIn dir ([ data "jfk.flac"; "-o"; "out"; "-f"; "json" ] @ fast)
            Expect.equal r.Code 0 (string r)
            use json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "out", "jfk.json")))
            let segments =
                [ for s in json.RootElement.GetProperty("segments").EnumerateArray() ->
                      s.GetProperty("start").GetDouble(), s.GetProperty("end").GetDouble(), s.GetProperty("text").GetString().Trim() ]
                |> List.filter (fun (_, _, text) -> text <> "")
            Expect.isNonEmpty segments "the random model writes some text"
            let lines = r.Err.Split('\n') |> Array.map _.TrimEnd('\r')
            for start, stop, text in segments do
                let expected = $"[{timestamp start} --> {timestamp stop}] {text}"
                Expect.contains lines expected $"live segment line\n{r}"
            Expect.isTrue (lines |> Array.exists (fun l -> l.StartsWith "jfk.flac: 11.0/11.0 s (100%)" && l.Contains "ETA")) $"a progress line with ETA\n{r}"
            Expect.isFalse (r.Err.Contains "\r" || r.Err.Contains "\u001b") $"no terminal control characters when stderr is redirected\n{r}"
        }
    ]
