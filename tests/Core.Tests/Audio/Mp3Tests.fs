module MagnetWhisper.Tests.Audio.Mp3Tests

// MP3 decoded in-process (NLayer) against ffmpeg's own decoder on MP3s that ffmpeg's libmp3lame makes from the JFK
// clip: same rate, channels, length and alignment (gapless trimming), samples within float32 rounding.

open System
open System.IO
open Expecto
open MagnetWhisper.Core.Audio
open MagnetWhisper.Tests.Audio.Tools

/// Encodes the first `seconds` of jfk.flac at the given rate, channels and bitrate with libmp3lame.
let private encode (ffmpeg: string) (dir: TempDir) (name: string) (seconds: int) (rate: int) (channels: int) (extra: string list) =
    let mp3 = dir.File name
    run ffmpeg ([ "-nostdin"; "-loglevel"; "error"; "-y"; "-i"; data "jfk.flac"; "-t"; string seconds; "-ar"; string rate
                  "-ac"; string channels; "-c:a"; "libmp3lame" ] @ extra @ [ mp3 ]) |> ignore
    mp3

/// ffmpeg's decode at the stream's own rate and channels, interleaved float32.
let private ffmpegDecode (ffmpeg: string) (mp3: string) : float32[] =
    let bytes = run ffmpeg [ "-nostdin"; "-loglevel"; "error"; "-i"; mp3; "-f"; "f32le"; "-c:a"; "pcm_f32le"; "-" ]
    Array.init (bytes.Length / 4) (fun i -> BitConverter.ToSingle(bytes, 4 * i))

[<Tests>]
let tests =
    testList "audio.mp3" [
        test "NLayer decodes like ffmpeg: same length and alignment, samples within 1e-5, at MPEG-1 and MPEG-2 rates" {
            let ffmpeg = requireTool "ffmpeg"
            use dir = new TempDir()
            // (name, rate, channels, encoder options): CBR with the Info tag ffmpeg writes (encoder "Lavc", delay
            // 576, padding stated), the same without any tag (nothing may be trimmed), Common Voice's 48 kHz mono,
            // and MPEG-2 at 16 kHz (576-sample frames).
            let cases =
                [ "cbr.mp3", 44100, 2, [ "-b:a"; "64k" ]
                  "untagged.mp3", 44100, 2, [ "-b:a"; "64k"; "-write_xing"; "0" ]
                  "cv.mp3", 48000, 1, [ "-b:a"; "64k" ]
                  "mpeg2.mp3", 16000, 1, [ "-b:a"; "24k" ] ]
            for name, rate, channels, options in cases do
                let mp3 = encode ffmpeg dir name 3 rate channels options
                let reference = ffmpegDecode ffmpeg mp3
                let w = Mp3.decodeBytes mp3 (File.ReadAllBytes mp3)
                Expect.equal w.SampleRate rate $"{name}: rate"
                Expect.equal w.Channels.Length channels $"{name}: channels"
                Expect.equal (w.Length * channels) reference.Length $"{name}: as many samples as ffmpeg (same trimming)"
                // Both decoders synthesise in float32 with different operation orders; the measured gap is ≤ 2.4e-6
                // (a few float32 ulps summed over the IMDCT and polyphase filter bank). 1e-5 leaves 4× room and is a
                // third of one 16-bit step, while a shift by one sample moves speech by ~1e-2: alignment is checked.
                let worst =
                    Seq.init reference.Length (fun i -> abs (float w.Channels.[i % channels].[i / channels] - float reference.[i]))
                    |> Seq.max
                Expect.isLessThan worst 1e-5 $"{name}: largest difference from ffmpeg's samples"
                let peak = reference |> Array.map abs |> Array.max
                Expect.isGreaterThan peak 0.3f $"{name}: the clip is speech, not silence"
        }

        test "the Info tag's delay decides the start: its frame is not audio and delay + 529 samples are skipped" {
            let ffmpeg = requireTool "ffmpeg"
            use dir = new TempDir()
            let tagged = encode ffmpeg dir "t.mp3" 3 44100 1 [ "-b:a"; "64k" ]
            let untagged = encode ffmpeg dir "u.mp3" 3 44100 1 [ "-b:a"; "64k"; "-write_xing"; "0" ]
            let a = Mp3.decodeBytes tagged (File.ReadAllBytes tagged)
            let b = Mp3.decodeBytes untagged (File.ReadAllBytes untagged)
            // Same encoder, same frames: the tagged decode is the untagged one from sample 576 + 529 on, and it
            // is exactly the 3 s = 132300 samples that went in.
            Expect.equal a.Length 132300 "3 s at 44.1 kHz"
            Expect.equal a.Channels.[0] b.Channels.[0].[1105 .. 1105 + 132300 - 1] "shifted by the encoder and decoder delays"
        }

        test "detect: MP3 by its frame header, also behind an ID3v2 tag; ADTS AAC and Ogg are not MP3" {
            let ffmpeg = requireTool "ffmpeg"
            use dir = new TempDir()
            let withId3 = encode ffmpeg dir "a.mp3" 1 16000 1 [ "-b:a"; "32k" ]
            let bare = encode ffmpeg dir "b.mp3" 1 16000 1 [ "-b:a"; "32k"; "-id3v2_version"; "0"; "-write_xing"; "0" ]
            let adts = dir.File "c.aac"
            run ffmpeg [ "-nostdin"; "-loglevel"; "error"; "-i"; data "jfk.flac"; "-t"; "1"; "-c:a"; "aac"; "-f"; "adts"; adts ] |> ignore
            let first (file: string) = (File.ReadAllBytes file).[0..2]
            Expect.equal (first withId3) "ID3"B "ffmpeg tags its MP3s"
            Expect.equal (first bare).[0] 0xFFuy "the bare one starts with a frame sync"
            Expect.equal (first adts).[0] 0xFFuy "ADTS starts with a sync too (layer bits 00)"
            Expect.equal (Audio.detect (File.ReadAllBytes withId3)) Audio.Mp3File "ID3v2 + frame"
            Expect.equal (Audio.detect (File.ReadAllBytes bare)) Audio.Mp3File "frame at byte 0"
            Expect.equal (Audio.detect (File.ReadAllBytes adts)) Audio.OtherFile "ADTS AAC"
            Expect.equal (Audio.detect "OggS\000\002"B) Audio.OtherFile "Ogg"
        }

        test "without ffmpeg an MP3 loads in-process to 16 kHz within one 16-bit step of openai/whisper's ffmpeg load" {
            let ffmpeg = requireTool "ffmpeg"
            use dir = new TempDir()
            let mp3 = encode ffmpeg dir "cv.mp3" 3 48000 1 [ "-b:a"; "64k" ]
            let ours = Audio.loadUsing None mp3
            let pcm = run ffmpeg [ "-nostdin"; "-loglevel"; "error"; "-i"; mp3; "-ac"; "1"; "-ar"; "16000"; "-f"; "s16le"; "-" ]
            let whisper = Array.init (pcm.Length / 2) (fun i -> float32 (BitConverter.ToInt16(pcm, 2 * i)) / 32768.0f)
            Expect.equal ours.Length whisper.Length "same length"
            // The decoders differ by ≤ 2.4e-6 before ffmpeg's resampler (reproduced in-process) and 16-bit rounding,
            // so a sample can round the other way only when it lies that close to a rounding boundary.
            let steps = Array.map2 (fun (a: float32) b -> abs (a - b) * 32768.0f) ours whisper
            Expect.isLessThanOrEqual (Array.max steps) 1.0f "at most one 16-bit step apart"
            Expect.isLessThan (steps |> Array.filter (fun s -> s > 0.0f) |> Array.length) (ours.Length / 100) "under 1% differ"
        }

        test "8 kHz (MPEG-2.5) MP3s go to ffmpeg when it is there, since NLayer departs from it at that rate" {
            let ffmpeg = requireTool "ffmpeg"
            use dir = new TempDir()
            let low = encode ffmpeg dir "low.mp3" 2 8000 1 [ "-b:a"; "16k" ]
            let wide = encode ffmpeg dir "wide.mp3" 2 16000 1 [ "-b:a"; "24k" ]
            Expect.isFalse (Mp3.decodesLikeFfmpeg (File.ReadAllBytes low)) "8 kHz"
            Expect.isTrue (Mp3.decodesLikeFfmpeg (File.ReadAllBytes wide)) "16 kHz"
            let viaFfmpeg = Audio.decodeWithFfmpeg ffmpeg low
            let w = Audio.decodeUsing (Some ffmpeg) low
            Expect.equal w.SampleRate viaFfmpeg.SampleRate "ffmpeg's 16 kHz"
            Expect.equal w.Channels viaFfmpeg.Channels "ffmpeg's samples"
            // Bytes go to ffmpeg through a pipe, where it cannot find the stream's end to trim the encoder's padding:
            // the same samples, then the padding (under two 576-sample frames, twice that at 16 kHz). The last 32
            // output samples before the cut differ: ffmpeg's resampler (filter length 32) sees the padding after them.
            let embedded = Audio.decodeBytesUsing (Some ffmpeg) "row 3" (File.ReadAllBytes low)
            let kept = viaFfmpeg.Length - 32
            Expect.equal embedded.Channels.[0].[.. kept - 1] viaFfmpeg.Channels.[0].[.. kept - 1] "bytes too"
            Expect.isLessThan (embedded.Length - viaFfmpeg.Length) (4 * 576) "then at most the padding"
            Expect.equal (Audio.decodeUsing None low).SampleRate 8000 "without ffmpeg, NLayer still decodes it"
        }

        test "unreadable MP3 data raises InvalidDataException naming the source" {
            let ffmpeg = requireTool "ffmpeg"
            use dir = new TempDir()
            let good = File.ReadAllBytes(encode ffmpeg dir "g.mp3" 1 48000 1 [ "-b:a"; "64k" ])
            let header = Mp3.id3v2Length good 0
            // A frame header followed by noise: no second frame confirms the stream.
            let noise = Array.append good.[0 .. header + 3] (Array.init 5000 (fun i -> byte (i * 7919 % 251)))
            Expect.equal (Audio.detect noise) Audio.Mp3File "looks like MP3 by its first bytes"
            raisesWith<InvalidDataException> [ "shard row 5"; "MP3" ] (fun () -> Audio.decodeBytesUsing None "shard row 5" noise |> ignore) |> ignore
            let path = dir.File "header-only.mp3"
            File.WriteAllBytes(path, good.[0 .. header + 3])
            raisesWith<InvalidDataException> [ path ] (fun () -> Audio.decodeUsing (Some ffmpeg) path |> ignore) |> ignore
        }
    ]
