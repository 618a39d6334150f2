module MagnetWhisper.Tests.Data.FolderCorpusTests

// The folder reader pairs audio with same-name transcripts and reports what it skips; selection keeps splits,
// skips over-long utterances with a reason and limits the count; embedded bytes decode as the file they came from.

open System.IO
open Expecto
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Data
open MagnetWhisper.Tests.Audio.Tools

let private utterance id split duration =
    { Id = id; Audio = AudioFile $"{id}.wav"; Transcript = "t"; Duration = duration; Speaker = None; Split = split; Phones = None }

[<Tests>]
let tests =
    testList "data.folder" [
        test "audio files pair with same-name transcripts; missing and empty transcripts are skipped with a reason" {
            use dir = new TempDir()
            Directory.CreateDirectory(dir.File "sub") |> ignore
            File.Copy(data "jfk.flac", dir.File "b.flac")
            File.WriteAllText(dir.File "b.txt", "  And so my fellow Americans \n")
            File.Copy(data "jfk.flac", dir.File "sub/a.flac")
            File.WriteAllText(dir.File "sub/a.txt", "ask not")
            File.Copy(data "jfk.flac", dir.File "c.flac") // no transcript
            File.Copy(data "jfk.flac", dir.File "d.flac")
            File.WriteAllText(dir.File "d.txt", " \n ")
            File.WriteAllText(dir.File "notes.md", "not audio")
            let corpus = Corpora.read CorpusOptions.Default (dir.File "")
            Expect.equal (corpus.Utterances |> Array.map (fun u -> u.Id)) [| "b"; "sub/a" |] "ids sorted, sub-folders included"
            Expect.equal corpus.Utterances.[0].Transcript "And so my fellow Americans" "transcript trimmed, not normalised"
            Expect.equal (corpus.Skipped |> Array.map (fun s -> Path.GetFileName s.Source)) [| "c.flac"; "d.txt" |] "the two skipped"
            Expect.stringContains corpus.Skipped.[0].Reason "c.txt is missing" "names the missing transcript"
            Expect.stringContains corpus.Skipped.[1].Reason "empty" "says the transcript is empty"
        }

        test "selection: splits, then over-long utterances skipped with the limit, then the first N" {
            let corpus =
                { Name = "mem"
                  Utterances =
                    [| utterance "a" (Some "dev") (Some 3.0); utterance "b" (Some "train") (Some 1.0)
                       utterance "c" (Some "dev") (Some 31.0); utterance "d" (Some "dev") None
                       utterance "e" (Some "dev") (Some 2.0) |]
                  Skipped = [||] }
            let selected =
                Corpora.select { Splits = [ "dev" ]; MaxDuration = Some 30.0; Limit = Some 2 } corpus
            Expect.equal (selected.Utterances |> Array.map (fun u -> u.Id)) [| "a"; "d" |] "dev only, c too long, first two"
            Expect.equal selected.Skipped.Length 1 "c reported"
            Expect.stringContains selected.Skipped.[0].Reason "31.00 s is longer than the maximum of 30 s" "says why"
        }

        test "a missing corpus path is an error naming it" {
            let e = Expect.throwsC (fun () -> Corpora.read CorpusOptions.Default "/no/such/corpus" |> ignore) id
            Expect.stringContains e.Message "/no/such/corpus" "names the path"
        }

        test "embedded bytes decode like the file: FLAC in-process, Ogg through ffmpeg's standard input" {
            let ffmpeg = requireTool "ffmpeg"
            use dir = new TempDir()
            run ffmpeg [ "-nostdin"; "-loglevel"; "error"; "-i"; data "jfk.flac"; "-t"; "2"; "-c:a"; "libvorbis"; dir.File "x.ogg" ] |> ignore
            for file in [ data "jfk.flac"; dir.File "x.ogg" ] do
                let fromFile = Audio.loadUsing (Some ffmpeg) file
                let embedded =
                    { Id = "x"; Audio = EmbeddedAudio ("shard row 0", fun () -> File.ReadAllBytes file); Transcript = "t"
                      Duration = None; Speaker = None; Split = None; Phones = None }
                let fromBytes = UtteranceAudio.loadUsing (Some ffmpeg) embedded
                Expect.equal fromBytes fromFile $"{Path.GetFileName file}: same samples from bytes as from the file"
            let empty = { Id = "e"; Audio = EmbeddedAudio ("shard row 9", fun () -> [||]); Transcript = "t"
                          Duration = None; Speaker = None; Split = None; Phones = None }
            let e = Expect.throwsC (fun () -> UtteranceAudio.loadUsing (Some ffmpeg) empty |> ignore) id
            Expect.stringContains e.Message "shard row 9" "names the embedded source"
        }
    ]
