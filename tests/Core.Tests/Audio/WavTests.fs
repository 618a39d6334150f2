/// WAV decoding against files written by sox and ffmpeg from samples the tests generate.
module MagnetWhisper.Tests.Audio.WavTests

open System
open System.IO
open Expecto
open FsCheck
open MagnetWhisper.Core.Audio
open MagnetWhisper.Tests
open MagnetWhisper.Tests.Audio.Tools

type private Source =
    | Ints of bits: int
    | Floats of bits: int

/// Generated interleaved samples: integers over the full signed range (including both extremes) or floats in ±1.
let private samples (rng: Random) (source: Source) (count: int) : int64[] * float[] =
    match source with
    | Ints bits ->
        let lo, hi = -(1L <<< (bits - 1)), (1L <<< (bits - 1)) - 1L
        let ints = Array.init count (fun i -> if i = 0 then lo elif i = 1 then hi else lo + int64 (rng.NextDouble() * float (hi - lo + 1L)))
        ints, ints |> Array.map (fun v -> float v / float (1L <<< (bits - 1)))
    | Floats bits ->
        // Multiples of 2^-23 (float32) or 2^-31 (float64) in [-1, 1): exact in the file's format and through sox's
        // 32-bit integer pipeline.
        let steps = if bits = 32 then 1L <<< 23 else 1L <<< 31
        let f = Array.init count (fun _ -> float (rng.NextInt64(-steps, steps)) / float steps)
        [||], f

let private writeSource (path: string) (source: Source) (ints: int64[]) (floats: float[]) =
    match source with
    | Ints bits -> writeRawInts path (bits / 8) ints
    | Floats 32 -> writeRawFloat32 path (floats |> Array.map float32)
    | Floats _ -> File.WriteAllBytes(path, floats |> Array.collect BitConverter.GetBytes)

let private rawArgs (source: Source) =
    match source with
    | Ints bits -> [ "-e"; "signed"; "-b"; string bits ]
    | Floats bits -> [ "-e"; "floating-point"; "-b"; string bits ]

let private ffmpegRaw (source: Source) =
    match source with
    | Ints 16 -> "s16le"
    | Ints 24 -> "s24le"
    | Ints 32 -> "s32le"
    | Floats 32 -> "f32le"
    | _ -> "f64le"

/// (description, tool, source, channels, rate, output arguments)
let private cases =
    [ "sox unsigned 8-bit mono", "sox", Ints 8, 1, 8000, [ "-e"; "unsigned"; "-b"; "8" ]
      "sox 16-bit stereo", "sox", Ints 16, 2, 22050, [ "-e"; "signed"; "-b"; "16" ]
      "sox 24-bit stereo (extensible)", "sox", Ints 24, 2, 44100, [ "-e"; "signed"; "-b"; "24" ]
      "sox 32-bit mono (extensible)", "sox", Ints 32, 1, 16000, [ "-e"; "signed"; "-b"; "32" ]
      "sox 16-bit 3 channels (extensible)", "sox", Ints 16, 3, 16000, [ "-e"; "signed"; "-b"; "16" ]
      "sox 24-bit 6 channels (extensible)", "sox", Ints 24, 6, 96000, [ "-e"; "signed"; "-b"; "24" ]
      "ffmpeg 16-bit stereo to a pipe (unknown data size)", "ffmpeg", Ints 16, 2, 44100, [ "-c:a"; "pcm_s16le"; "-f"; "wav"; "pipe:1" ]
      "ffmpeg RF64 24-bit stereo", "ffmpeg", Ints 24, 2, 32000, [ "-c:a"; "pcm_s24le"; "-rf64"; "always" ]
      "sox float 32 stereo", "sox", Floats 32, 2, 48000, [ "-e"; "floating-point"; "-b"; "32" ]
      "sox float 64 mono", "sox", Floats 64, 1, 11025, [ "-e"; "floating-point"; "-b"; "64" ]
      "ffmpeg float 32 stereo", "ffmpeg", Floats 32, 2, 48000, [ "-c:a"; "pcm_f32le" ]
      "ffmpeg float 64 mono", "ffmpeg", Floats 64, 1, 11025, [ "-c:a"; "pcm_f64le" ]
      "ffmpeg float 32 3 channels (extensible float)", "ffmpeg", Floats 32, 3, 16000, [ "-c:a"; "pcm_f32le" ] ]

let private formatTests =
    test "decodes sox and ffmpeg WAVs exactly: PCM 8/16/24/32, float 32/64, extensible, RF64, streaming, 1–6 channels" {
        let sox = requireTool "sox"
        let ffmpeg = requireTool "ffmpeg"
        use dir = new TempDir()
        let formats =
            cases
            |> List.mapi (fun i (what, tool, source, channels, rate, args) ->
                let rng = Random(i + 1)
                let ints, floats = samples rng source (channels * 3001)
                let raw = dir.File $"w{i}.raw"
                let wav = dir.File $"w{i}.wav"
                writeSource raw source ints floats
                match tool with
                | "sox" ->
                    run sox ([ "-t"; "raw"; "-r"; string rate; "-c"; string channels ] @ rawArgs source @ [ raw ] @ args @ [ wav ]) |> ignore
                | _ ->
                    let args = if List.last args = "pipe:1" then args else args @ [ wav ]
                    let out =
                        run ffmpeg ([ "-nostdin"; "-v"; "error"; "-y"; "-f"; ffmpegRaw source; "-ar"; string rate; "-ac"; string channels
                                      "-i"; raw ] @ args)
                    if List.last args = "pipe:1" then File.WriteAllBytes(wav, out)
                let w = Wav.read wav
                Expect.equal w.SampleRate rate $"{what}: rate"
                Expect.equal w.Channels.Length channels $"{what}: channels"
                let expected = deinterleave channels floats
                for c in 0 .. channels - 1 do
                    Expect.equal w.Channels.[c].Length expected.[c].Length $"{what}: length of channel {c}"
                    for k in 0 .. expected.[c].Length - 1 do
                        if w.Channels.[c].[k] <> float32 expected.[c].[k] then
                            failtestf "%s: channel %d sample %d is %g, expected %g" what c k w.Channels.[c].[k] expected.[c].[k]
                Wav.formatOfBytes wav (File.ReadAllBytes wav))
        Expect.exists formats (fun f -> f.Extensible && f.Encoding = Wav.Pcm) "WAVE_FORMAT_EXTENSIBLE PCM was exercised"
        Expect.exists formats (fun f -> f.Extensible && f.Encoding = Wav.Float) "WAVE_FORMAT_EXTENSIBLE float was exercised"
        Expect.exists formats (fun f -> not f.Extensible && f.Encoding = Wav.Float) "WAVE_FORMAT_IEEE_FLOAT was exercised"
        Expect.exists formats (fun f -> not f.Extensible && f.Encoding = Wav.Pcm) "WAVE_FORMAT_PCM was exercised"
    }

let private sixteenBitStereo =
    lazy
        (let sox = requireTool "sox"
         use dir = new TempDir()
         let ints, _ = samples (Random 3) (Ints 16) 2000
         writeRawInts (dir.File "s.raw") 2 ints
         run sox [ "-t"; "raw"; "-r"; "16000"; "-c"; "2"; "-e"; "signed"; "-b"; "16"; dir.File "s.raw"; dir.File "s.wav" ] |> ignore
         File.ReadAllBytes(dir.File "s.wav"))

let private errorTests =
    [ test "a missing file raises FileNotFoundException naming it" {
          raisesWith<FileNotFoundException> [ "absent.wav" ] (fun () -> Wav.read "absent.wav" |> ignore) |> ignore
      }
      test "a file that is not RIFF/WAVE is named and rejected" {
          raisesWith<InvalidDataException> [ "x.wav"; "not a RIFF" ] (fun () -> Wav.decodeBytes "x.wav" (Text.Encoding.ASCII.GetBytes "fLaC and then some bytes") |> ignore) |> ignore
      }
      test "a data chunk cut inside a sample frame is reported as truncated" {
          let bytes = sixteenBitStereo.Value
          raisesWith<InvalidDataException> [ "s.wav"; "truncated" ] (fun () -> Wav.decodeBytes "s.wav" bytes.[0 .. bytes.Length - 2] |> ignore) |> ignore
      }
      test "a data chunk shorter than declared is reported as truncated" {
          let bytes = sixteenBitStereo.Value
          raisesWith<InvalidDataException> [ "s.wav"; "truncated"; "declares" ] (fun () -> Wav.decodeBytes "s.wav" bytes.[0 .. bytes.Length - 401] |> ignore) |> ignore
      }
      test "IMA ADPCM is named as unsupported" {
          let sox = requireTool "sox"
          use dir = new TempDir()
          let ints, _ = samples (Random 4) (Ints 16) 4000
          writeRawInts (dir.File "a.raw") 2 ints
          run sox [ "-t"; "raw"; "-r"; "8000"; "-c"; "1"; "-e"; "signed"; "-b"; "16"; dir.File "a.raw"; "-e"; "ima-adpcm"; dir.File "a.wav" ] |> ignore
          raisesWith<NotSupportedException> [ "a.wav"; "IMA ADPCM" ] (fun () -> Wav.read (dir.File "a.wav") |> ignore) |> ignore
      }
      Generators.prop "any truncation raises InvalidDataException naming the file" (fun (DoNotSize(a: uint32)) ->
          let bytes = sixteenBitStereo.Value
          let cut = int (a % uint32 (bytes.Length - 1))
          raisesWith<InvalidDataException> [ "s.wav" ] (fun () -> Wav.decodeBytes "s.wav" bytes.[0 .. cut - 1] |> ignore) |> ignore) ]

/// The WAV tests.
let tests = testList "wav" (formatTests :: errorTests)
