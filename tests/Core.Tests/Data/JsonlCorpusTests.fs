module MagnetWhisper.Tests.Data.JsonlCorpusTests

// A JSONL manifest written by the test, with good lines and one of each kind of bad line: every bad line is
// skipped and reported with its line number; the good ones keep their fields.

open System.IO
open Expecto
open MagnetWhisper.Core.Data
open MagnetWhisper.Tests.Audio.Tools
open MagnetWhisper.Tests.Data.CorpusFixtures

[<Tests>]
let tests =
    testList "data.jsonl" [
        test "good lines keep their fields; each bad line is skipped with its number and reason" {
            use dir = new TempDir()
            tone (dir.File "clips/a.wav") 1.0 16000 440.0 |> ignore
            tone (dir.File "clips/sub/b.flac") 0.75 16000 440.0 |> ignore
            let absolute = tone (dir.File "elsewhere/c.flac") 0.5 16000 440.0
            File.WriteAllBytes(dir.File "clips/empty.wav", [||])
            let manifest = dir.File "clips/manifest.jsonl"
            File.WriteAllLines(
                manifest,
                [ """{"audio": "a.wav", "text": " Hello world ", "duration": 1.25, "speaker": 7, "id": "u1", "lang": "en"}""" // 1
                  ""                                                                                          // 2
                  """{"audio": "sub/b.flac", "text": "second", "split": "dev"}"""                            // 3
                  """{"audio": "a.wav", "text": oops"""                                                        // 4
                  """{"text": "no audio"}"""                                                                   // 5
                  """{"audio": "missing.wav", "text": "x"}"""                                                  // 6
                  """{"audio": "a.wav", "text": "   "}"""                                                      // 7
                  """{"audio": "a.wav", "text": "again", "id": "u1"}"""                                        // 8
                  """{"audio": "empty.wav", "text": "x"}"""                                                    // 9
                  """[1, 2]"""                                                                                 // 10
                  """{"audio": "a.wav", "text": "t", "duration": "long"}"""                                    // 11
                  $"""{{"audio": "{absolute}", "text": "absolute", "speaker": "s9"}}"""                       // 12
                  """{"audio": "a.wav"}""" ])                                                                  // 13
            let corpus = Corpora.read CorpusOptions.Default manifest
            Expect.equal (corpus.Utterances |> Array.map (fun u -> u.Id)) [| "u1"; "sub/b"; Path.ChangeExtension(absolute, null) |] "ids"
            let u1, b, c = corpus.Utterances.[0], corpus.Utterances.[1], corpus.Utterances.[2]
            Expect.equal u1.Transcript "Hello world" "trimmed"
            Expect.equal u1.Duration (Some 1.25) "the manifest's duration is kept over the header's 1 s"
            Expect.equal u1.Speaker (Some "7") "a number speaker as text"
            Expect.equal (AudioSource.name u1.Audio) (dir.File "clips/a.wav") "relative to the manifest"
            Expect.equal b.Duration (Some 0.75) "from the FLAC header when not stated"
            Expect.equal b.Split (Some "dev") "split"
            Expect.equal (AudioSource.name c.Audio) absolute "absolute path"
            Expect.equal c.Speaker (Some "s9") "speaker"
            let expected =
                [ 4, "not valid JSON"; 5, "no \"audio\" path"; 6, "the audio file is missing: missing.wav"
                  7, "the \"text\" is empty"; 8, "the id u1 is already used on line 1"; 9, "empty (0 bytes): empty.wav"
                  10, "not a JSON object"; 11, "\"duration\" is \"long\", not a positive number"; 13, "no \"text\"" ]
            Expect.equal corpus.Skipped.Length expected.Length "every bad line counted"
            for (line, reason), skipped in List.zip expected (List.ofArray corpus.Skipped) do
                Expect.equal skipped.Source $"{manifest} line {line}" $"line {line} named"
                Expect.stringContains skipped.Reason reason $"line {line}: why"
            Expect.equal (Corpus.describe corpus) "3 utterances, 2.5 seconds, 9 skipped" "summary"
        }

        test "a missing manifest is an error naming it; other files are not corpora" {
            use dir = new TempDir()
            let e = Expect.throwsC (fun () -> Corpora.read CorpusOptions.Default (dir.File "none.jsonl") |> ignore) id
            Expect.stringContains e.Message "none.jsonl" "named"
            File.WriteAllText(dir.File "list.csv", "a,b")
            let e = Expect.throwsC (fun () -> Corpora.read CorpusOptions.Default (dir.File "list.csv") |> ignore) id
            Expect.stringContains e.Message "list.csv: not a corpus" "named"
            Expect.stringContains e.Message ".jsonl manifest" "says what is accepted"
        }
    ]
