module MagnetWhisper.Tests.Data.CorpusAudioFileTests

// Durations read from WAV and FLAC headers (no decode) agree with sox's `soxi -D` and with the lengths the files
// were made with; what a reader checks cheaply (missing, empty files); the one-line corpus summary.

open System
open System.IO
open Expecto
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Data
open MagnetWhisper.Tests.Audio.Tools
open MagnetWhisper.Tests.Data.CorpusFixtures

/// sox's own reading of the duration from the header.
let private soxi (path: string) : float =
    let text = Text.Encoding.ASCII.GetString(run (requireTool "soxi") [ "-D"; path ])
    Double.Parse(text.Trim(), Globalization.CultureInfo.InvariantCulture)

let private utterance (id: string) (duration: float option) =
    { Id = id; Audio = AudioFile $"{id}.flac"; Transcript = "t"; Duration = duration; Speaker = None; Split = None; Phones = None }

[<Tests>]
let tests =
    testList "data.duration" [
        test "WAV and FLAC headers give the duration sox reads and the files were made with" {
            let ffmpeg = requireTool "ffmpeg"
            use dir = new TempDir()
            let sox = requireTool "sox"
            // 1.5 s at 22.05 kHz = 33075 frames: 16-bit stereo WAV, 24-bit WAV, float WAV, FLAC.
            let base16 = tone (dir.File "a16.wav") 1.5 22050 440.0
            let stereo = dir.File "stereo.wav"
            run sox [ base16; "-c"; "2"; stereo ] |> ignore
            let b24 = dir.File "b24.wav"
            run sox [ base16; "-b"; "24"; b24 ] |> ignore
            let f32 = dir.File "f32.wav"
            run sox [ base16; "-e"; "floating-point"; "-b"; "32"; f32 ] |> ignore
            let flac = tone (dir.File "a.flac") 1.5 22050 440.0
            // ffmpeg writes a LIST chunk before the data, and WAVE_FORMAT_EXTENSIBLE for 6 channels.
            let listed = dir.File "listed.wav"
            run ffmpeg [ "-nostdin"; "-loglevel"; "error"; "-i"; base16; "-ac"; "6"; listed ] |> ignore
            // Written to a pipe, ffmpeg cannot go back to fill in the sizes: the data size is unknown (0xFFFFFFFF).
            let streamed = dir.File "streamed.wav"
            File.WriteAllBytes(streamed, run ffmpeg [ "-nostdin"; "-loglevel"; "error"; "-i"; base16; "-f"; "wav"; "-" ])
            for file in [ base16; stereo; b24; f32; flac; listed; streamed ] do
                let d = Audio.headerDuration file
                Expect.isSome d $"{Path.GetFileName file}: stated"
                Expect.floatClose Accuracy.veryHigh d.Value (33075.0 / 22050.0) $"{Path.GetFileName file}: 33075 frames"
                // sox takes a streaming WAV's unknown size (0xFFFFFFFF) literally, so it is no reference for that one.
                if file <> streamed then
                    Expect.floatClose Accuracy.veryHigh d.Value (soxi file) $"{Path.GetFileName file}: as soxi -D reads it"
            let jfk = data "jfk.flac"
            Expect.floatClose Accuracy.veryHigh (Audio.headerDuration jfk).Value (soxi jfk) "jfk.flac"
        }

        test "FLAC behind an ID3v2 tag; no duration where the header does not state it or cannot be read" {
            use dir = new TempDir()
            let flac = tone (dir.File "a.flac") 2.0 16000 300.0
            let tagged = dir.File "tagged.flac"
            let id3 = Array.concat [ "ID3"B; [| 3uy; 0uy; 0uy; 0uy; 0uy; 0uy; 20uy |]; Array.zeroCreate 20 ]
            File.WriteAllBytes(tagged, Array.append id3 (File.ReadAllBytes flac))
            Expect.equal (Audio.headerDuration tagged) (Some 2.0) "after the tag"
            // A STREAMINFO total of 0 means "unknown" (RFC 9639): the 36 bits end STREAMINFO's byte 17.
            let unknown = dir.File "unknown.flac"
            let bytes = File.ReadAllBytes flac
            bytes.[8 + 13] <- bytes.[8 + 13] &&& 0xF0uy
            for i in 14 .. 17 do
                bytes.[8 + i] <- 0uy
            File.WriteAllBytes(unknown, bytes)
            Expect.isNone (Audio.headerDuration unknown) "total samples 0"
            let short = dir.File "short.wav"
            File.WriteAllBytes(short, "RIFF\000\000\000\000WAVE"B)
            Expect.isNone (Audio.headerDuration short) "no chunks"
            let ogg = dir.File "x.ogg"
            File.WriteAllBytes(ogg, "OggS and more"B)
            Expect.isNone (Audio.headerDuration ogg) "not WAV or FLAC"
            Expect.isNone (Audio.headerDuration (dir.File "missing.wav")) "missing"
        }

        test "a reader's cheap checks: missing, empty and folder paths are reasons; a WAV of 0 samples too" {
            use dir = new TempDir()
            let wav = tone (dir.File "a.wav") 0.5 16000 300.0
            Expect.equal (CorpusAudioFile.inspect wav) (Ok(Some 0.5)) "a good file and its duration"
            File.WriteAllBytes(dir.File "empty.wav", [||])
            Expect.equal (CorpusAudioFile.inspect (dir.File "empty.wav")) (Error "the audio file is empty (0 bytes)") "empty"
            Expect.equal (CorpusAudioFile.inspect (dir.File "none.wav")) (Error "the audio file is missing") "missing"
            Directory.CreateDirectory(dir.File "folder.wav") |> ignore
            match CorpusAudioFile.inspect (dir.File "folder.wav") with
            | Error reason -> Expect.stringContains reason "folder" "a folder"
            | Ok d -> failtestf "expected an error for a folder, got %A" d
            // The 44-byte header of a WAV with no data.
            let header = (File.ReadAllBytes wav).[0..43]
            header.[40] <- 0uy; header.[41] <- 0uy; header.[42] <- 0uy; header.[43] <- 0uy
            File.WriteAllBytes(dir.File "silent.wav", header)
            match CorpusAudioFile.inspect (dir.File "silent.wav") with
            | Error reason -> Expect.stringContains reason "no samples" "0 s"
            | Ok d -> failtestf "expected an error, got %A" d
        }

        test "describe: utterances, hours or minutes when known, skipped" {
            let corpus utterances skipped =
                { Name = "c"; Utterances = utterances; Skipped = Array.create skipped { Source = "x"; Reason = "r" } }
            // 1800 s + 3600 s = 1.5 h; 90 s = 1.5 min.
            Expect.equal (Corpus.describe (corpus [| utterance "a" (Some 1800.0); utterance "b" (Some 3600.0) |] 1))
                "2 utterances, 1.5 hours, 1 skipped" "hours"
            Expect.equal (Corpus.describe (corpus [| utterance "a" (Some 90.0) |] 0)) "1 utterance, 1.5 minutes, 0 skipped" "minutes"
            Expect.equal (Corpus.describe (corpus [| utterance "a" None; utterance "b" None |] 3)) "2 utterances, 3 skipped" "unknown"
            Expect.equal (Corpus.describe (corpus [| utterance "a" (Some 7200.0); utterance "b" None |] 0))
                "2 utterances, 2.0 hours in the 1 whose duration is known, 0 skipped" "partly known"
        }

        test "ofResults keeps the order, the skipped entries, and skips a repeated id" {
            let results =
                [ Ok(utterance "a" None); Error { Source = "s"; Reason = "r" }; Ok(utterance "b" None)
                  Ok { utterance "a" None with Audio = AudioFile "other.flac" } ]
            let c = Corpus.ofResults "n" results
            Expect.equal (c.Utterances |> Array.map (fun u -> u.Id)) [| "a"; "b" |] "first a kept"
            Expect.equal c.Skipped.Length 2 "the error and the repeated id"
            Expect.equal c.Skipped.[1].Source "other.flac" "the repeat is named"
            Expect.stringContains c.Skipped.[1].Reason "a.flac" "with the file that has the id"
        }
    ]
