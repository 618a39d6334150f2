module MagnetWhisper.Tests.Data.LibriSpeechCorpusTests

// A small LibriSpeech tree written by the test (two splits, three speakers, FLAC tones of known lengths) read as a
// root and as one split; bad entries are skipped with their reason and counted.

open System.IO
open Expecto
open MagnetWhisper.Core.Data
open MagnetWhisper.Tests.Audio.Tools
open MagnetWhisper.Tests.Data.CorpusFixtures

/// Writes the tree below `root` and returns it:
///   dev-clean/84/121123:   0000 (1 s), 0001 (2 s) listed; 0002 listed without audio
///   dev-clean/174/50561:   0000 (3 s) listed; 0001 audio without a line; 0002 listed with an empty transcript
///   train-clean-5/1088/134315: 0000 (0.5 s)
let private libriSpeech (root: string) : string =
    let chapter (split: string) (speaker: string) (chapterId: string) (lines: string list) (audio: (string * float) list) =
        let folder = Path.Combine(root, split, speaker, chapterId)
        Directory.CreateDirectory folder |> ignore
        for number, seconds in audio do
            tone (Path.Combine(folder, $"{speaker}-{chapterId}-{number}.flac")) seconds 16000 440.0 |> ignore
        File.WriteAllLines(Path.Combine(folder, $"{speaker}-{chapterId}.trans.txt"), lines)
    chapter "dev-clean" "84" "121123"
        [ "84-121123-0000 GO DO YOU HEAR"; "84-121123-0001 BUT IN LESS THAN FIVE MINUTES"; "84-121123-0002 NO AUDIO" ]
        [ "0000", 1.0; "0001", 2.0 ]
    chapter "dev-clean" "174" "50561" [ "174-50561-0000 FORGOTTEN TOO"; "174-50561-0002" ] [ "0000", 3.0; "0001", 1.0; "0002", 1.0 ]
    chapter "train-clean-5" "1088" "134315" [ "1088-134315-0000 AS YOU KNOW" ] [ "0000", 0.5 ]
    File.WriteAllText(Path.Combine(root, "README.TXT"), "LibriSpeech ASR corpus (test copy)")
    root

[<Tests>]
let tests =
    testList "data.librispeech" [
        test "the root: every split in name order, speakers and splits from the path, durations from the headers" {
            use dir = new TempDir()
            let root = libriSpeech (dir.File "LibriSpeech")
            Expect.isTrue (LibriSpeechCorpus.isLayout root) "recognised"
            let corpus = Corpora.read CorpusOptions.Default root
            Expect.equal (corpus.Utterances |> Array.map (fun u -> u.Id))
                [| "174-50561-0000"; "84-121123-0000"; "84-121123-0001"; "1088-134315-0000" |] "ordinal folder order"
            Expect.equal (corpus.Utterances |> Array.map (fun u -> u.Split)) 
                [| Some "dev-clean"; Some "dev-clean"; Some "dev-clean"; Some "train-clean-5" |] "splits"
            Expect.equal (corpus.Utterances |> Array.map (fun u -> u.Speaker)) [| Some "174"; Some "84"; Some "84"; Some "1088" |] "speakers"
            Expect.equal (corpus.Utterances |> Array.map (fun u -> u.Duration)) [| Some 3.0; Some 1.0; Some 2.0; Some 0.5 |] "durations"
            Expect.equal corpus.Utterances.[1].Transcript "GO DO YOU HEAR" "transcript as written"
            Expect.equal (AudioSource.name corpus.Utterances.[1].Audio) (Path.Combine(root, "dev-clean", "84", "121123", "84-121123-0000.flac")) "audio path"
            Expect.equal (Corpus.describe corpus) "4 utterances, 6.5 seconds, 3 skipped" "3 + 1 + 2 + 0.5 s"
        }

        test "bad entries are skipped with where and why: an empty transcript, a line without audio, audio without a line" {
            use dir = new TempDir()
            let root = libriSpeech (dir.File "LibriSpeech")
            let corpus = Corpora.read CorpusOptions.Default root
            let reasons = corpus.Skipped |> Array.map (fun s -> Path.GetFileName(s.Source.Split(' ').[0]), s.Reason)
            Expect.equal corpus.Skipped.Length 3 "three skipped"
            Expect.equal (fst reasons.[0]) "174-50561.trans.txt" "the empty transcript's file"
            Expect.stringContains corpus.Skipped.[0].Source "line 2" "and line"
            Expect.stringContains (snd reasons.[0]) "174-50561-0002 is empty" "why"
            Expect.equal (fst reasons.[1]) "174-50561-0001.flac" "the unlisted audio"
            Expect.stringContains (snd reasons.[1]) "has no line for it" "why"
            Expect.stringContains corpus.Skipped.[2].Source "84-121123.trans.txt line 3" "the line without audio"
            Expect.stringContains (snd reasons.[2]) "no audio file 84-121123-0002.flac" "why"
        }

        test "a split folder alone: its own name is the split; selection by split, duration and count" {
            use dir = new TempDir()
            let root = libriSpeech (dir.File "LibriSpeech")
            let dev = Corpora.read CorpusOptions.Default (Path.Combine(root, "dev-clean") + "/")
            Expect.equal dev.Utterances.Length 3 "dev-clean only"
            Expect.isTrue (dev.Utterances |> Array.forall (fun u -> u.Split = Some "dev-clean")) "named after the folder"
            let train = Corpora.read { CorpusOptions.Default with Splits = [ "train-clean-5" ] } root
            Expect.equal (train.Utterances |> Array.map (fun u -> u.Id)) [| "1088-134315-0000" |] "one split of the root"
            let short = Corpora.read { CorpusOptions.Default with MaxDuration = Some 2.5; Limit = Some 1 } root
            Expect.equal (short.Utterances |> Array.map (fun u -> u.Id)) [| "84-121123-0000" |] "3 s skipped, then the first"
            Expect.equal short.Skipped.Length 4 "three bad entries and the long one"
            Expect.stringContains short.Skipped.[3].Reason "3.00 s is longer than the maximum of 2.5 s" "why"
        }

        test "a folder that is not LibriSpeech is not taken for it" {
            use dir = new TempDir()
            tone (dir.File "a/b.flac") 0.5 16000 300.0 |> ignore
            File.WriteAllText(dir.File "a/b.txt", "hello")
            Expect.isFalse (LibriSpeechCorpus.isLayout (dir.File "")) "audio + txt folder"
            Expect.equal (Corpora.read CorpusOptions.Default (dir.File "")).Utterances.[0].Id "a/b" "read as a plain folder"
        }
    ]
