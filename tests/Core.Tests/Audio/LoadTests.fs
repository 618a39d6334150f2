/// Audio.load: format detection, mono mixing, resampling to 16 kHz, ffmpeg for other formats, errors.
module MagnetWhisper.Tests.Audio.LoadTests

open System
open System.IO
open Expecto
open MagnetWhisper.Core.Audio
open MagnetWhisper.Tests
open MagnetWhisper.Tests.Audio.Tools

/// A 44.1 kHz stereo 16-bit WAV of 2 s: 440 Hz left, 1000 Hz right (amplitude 0.4 each), written by sox.
let private stereoWav (dir: TempDir) =
    let sox = requireTool "sox"
    let n = 88200
    let left = Array.init n (fun i -> clampBits 16 (0.4 * 32768.0 * sin (2.0 * Math.PI * 440.0 * float i / 44100.0)))
    let right = Array.init n (fun i -> clampBits 16 (0.4 * 32768.0 * sin (2.0 * Math.PI * 1000.0 * float i / 44100.0)))
    writeRawInts (dir.File "st.raw") 2 (interleave [| left; right |])
    run sox [ "-t"; "raw"; "-r"; "44100"; "-c"; "2"; "-e"; "signed"; "-b"; "16"; dir.File "st.raw"; dir.File "st.wav" ] |> ignore
    dir.File "st.wav"

let tests =
    testList "load" [
        test "jfk.flac loads as 16 kHz mono close to sox's conversion (SNR > 40 dB)" {
            let sox = requireTool "sox"
            let audio = Audio.load (data "jfk.flac")
            Expect.equal audio.Length 176000 "485100 samples at 44.1 kHz → 176000 at 16 kHz"
            // sox: average the two channels (remix with 0.5 gains), then rate -v.
            let out =
                run sox [ data "jfk.flac"; "-t"; "raw"; "-e"; "floating-point"; "-b"; "32"; "-"; "remix"; "1v0.5,2v0.5"; "rate"; "-v"; "16000" ]
            let reference = readRawFloat32 out
            let n = min reference.Length audio.Length - 400
            let mutable s, d = 0.0, 0.0
            for i in 200 .. n do
                s <- s + float reference.[i] * float reference.[i]
                d <- d + (float reference.[i] - float audio.[i]) ** 2.0
            let snr = 10.0 * log10 (s / d)
            Expect.isGreaterThan snr 40.0 $"SNR against sox {snr:F1} dB"
        }
        test "a stereo WAV is averaged to mono and resampled: both tones keep amplitude 0.2" {
            use dir = new TempDir()
            let audio = Audio.load (stereoWav dir)
            Expect.equal audio.Length 32000 "2 s at 16 kHz"
            for f in [ 440.0; 1000.0 ] do
                let a = toneAmplitude 16000.0 f audio 500 31500
                Expect.floatClose { absolute = 1e-3; relative = 1e-3 } a 0.2 $"{f} Hz amplitude"
        }
        test "toMono averages channels; a mono waveform is returned as is" {
            let w = { SampleRate = 8000; Channels = [| [| 1.0f; 0.5f |]; [| 0.0f; -0.5f |]; [| 0.5f; 0.0f |] |] }
            Expect.sequenceEqual (Audio.toMono w) [| 0.5f; 0.0f |] "average of three channels"
            let m = [| 0.25f; -0.25f |]
            Expect.sequenceEqual (Audio.toMono { SampleRate = 8000; Channels = [| m |] }) m "mono"
        }
        test "formats are detected by content, including FLAC behind an ID3v2 tag" {
            let flac = requireTool "flac"
            use dir = new TempDir()
            let tagged = dir.File "tagged.mp3" // a misleading extension on purpose
            let id3 = Array.concat [ Text.Encoding.ASCII.GetBytes "ID3"; [| 3uy; 0uy; 0uy; 0uy; 0uy; 0uy; 20uy |]; Array.zeroCreate 20 ]
            File.WriteAllBytes(tagged, Array.append id3 (File.ReadAllBytes(data "jfk.flac")))
            Expect.equal (Audio.detect (File.ReadAllBytes tagged)) Audio.FlacFile "ID3v2 + fLaC"
            // The reference decoder accepts the tagged file too, and both agree.
            let viaFlac = run flac [ "-d"; "-s"; "-c"; "--force-raw-format"; "--endian=little"; "--sign=signed"; tagged ]
            let decoded = Flac.decodeFile tagged
            Expect.equal (readRawInts 3 viaFlac).Length (2 * decoded.Samples.[0].Length) "same length as flac -d"
            Expect.equal (Audio.load tagged).Length 176000 "loads"
        }
        test "other formats go through ffmpeg: an AAC (.m4a) tone loads at 16 kHz with its amplitude" {
            let ffmpeg = requireTool "ffmpeg"
            use dir = new TempDir()
            let m4a = dir.File "tone.m4a"
            run ffmpeg [ "-nostdin"; "-v"; "error"; "-y"; "-i"; stereoWav dir; "-c:a"; "aac"; "-b:a"; "192k"; m4a ] |> ignore
            Expect.equal (Audio.detect (File.ReadAllBytes m4a)) Audio.OtherFile "m4a is neither WAV nor FLAC"
            let audio = Audio.load m4a
            Expect.isLessThan (abs (audio.Length - 32000)) 1200 $"about 2 s at 16 kHz (got {audio.Length}; AAC adds priming)"
            let mid = audio.Length / 2
            // The priming delay shifts the phase, not the amplitude.
            let a = toneAmplitude 16000.0 440.0 audio (mid - 8000) (mid + 8000)
            Expect.floatClose { absolute = 0.01; relative = 0.05 } a 0.2 "440 Hz amplitude 0.2: channels averaged (not ffmpeg's −3 dB down-mix)"
        }
        test "without ffmpeg, other formats raise NotSupportedException naming the file and ffmpeg" {
            use dir = new TempDir()
            let path = dir.File "song.ogg"
            File.WriteAllBytes(path, Text.Encoding.ASCII.GetBytes "OggS and some bytes that no native decoder reads")
            raisesWith<NotSupportedException> [ "song.ogg"; "ffmpeg"; "install" ] (fun () -> Audio.decodeUsing None path |> ignore) |> ignore
        }
        test "a file ffmpeg cannot decode raises InvalidDataException naming it" {
            let ffmpeg = requireTool "ffmpeg"
            use dir = new TempDir()
            let path = dir.File "garbage.mp3"
            File.WriteAllBytes(path, Array.init 4000 (fun i -> byte (i * 7919 % 251)))
            raisesWith<InvalidDataException> [ "garbage.mp3"; "ffmpeg" ] (fun () -> Audio.decodeUsing (Some ffmpeg) path |> ignore) |> ignore
        }
        test "missing files and directories are named" {
            raisesWith<FileNotFoundException> [ "nowhere.wav" ] (fun () -> Audio.load "nowhere.wav" |> ignore) |> ignore
            use dir = new TempDir()
            let sub = dir.File "folder"
            Directory.CreateDirectory sub |> ignore
            raisesWith<InvalidDataException> [ "folder"; "directory" ] (fun () -> Audio.load sub |> ignore) |> ignore
        }
    ]
