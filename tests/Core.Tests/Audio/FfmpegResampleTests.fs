/// The ffmpeg-compatible resampler against ffmpeg itself: openai/whisper's `load_audio` command on speech
/// (espeak-ng, converted by sox), chirps and noise at 8–48 kHz; samples and log-mel features compared.
module MagnetWhisper.Tests.Audio.FfmpegResampleTests

open System
open System.Diagnostics
open Expecto
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Audio
open MagnetWhisper.Tests
open MagnetWhisper.Tests.Audio.Tools

/// openai/whisper's load_audio: `ffmpeg -nostdin -threads 0 -i FILE -f s16le -ac 1 -acodec pcm_s16le -ar 16000 -`,
/// divided by 32768.
let private whisperLoad (ffmpeg: string) (path: string) : float32[] =
    let out = run ffmpeg [ "-nostdin"; "-threads"; "0"; "-i"; path; "-f"; "s16le"; "-ac"; "1"; "-acodec"; "pcm_s16le"; "-ar"; "16000"; "-" ]
    readRawInts 2 out |> Array.map (fun v -> float32 v / 32768.0f)

/// Speech by espeak-ng (22.05 kHz), converted by sox to `rate` Hz, `bits`-bit, `channels` channels (a second
/// channel is the speech delayed by 3 ms, so the two differ).
let private speech (dir: TempDir) (rate: int) (bits: int) (channels: int) : string =
    let espeak = requireTool "espeak-ng"
    let sox = requireTool "sox"
    let raw = dir.File "speech22.wav"
    if not (IO.File.Exists raw) then
        run espeak [ "-w"; raw; "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore." ] |> ignore
    let out = dir.File $"speech{rate}_{bits}_{channels}.wav"
    let remix = if channels = 2 then [ "remix"; "1"; "1"; "delay"; "0"; "0.003" ] else []
    run sox ([ "-D"; raw; "-r"; string rate; "-b"; string bits; "-c"; string channels; out ] @ remix) |> ignore
    out

/// 3 s of a linear chirp 50 Hz → 0.45·rate plus white noise (amplitude 0.3 and 0.1), 16-bit mono via sox.
let private chirpAndNoise (dir: TempDir) (rate: int) : string =
    let sox = requireTool "sox"
    let rng = Random 7
    let n = 3 * rate
    let top = 0.45 * float rate
    let samples =
        Array.init n (fun i ->
            let t = float i / float rate
            let phase = 2.0 * Math.PI * (50.0 * t + (top - 50.0) * t * t / 6.0)
            clampBits 16 (32768.0 * (0.3 * sin phase + 0.1 * (2.0 * rng.NextDouble() - 1.0))))
    let raw = dir.File $"chirp{rate}.raw"
    writeRawInts raw 2 samples
    let wav = dir.File $"chirp{rate}.wav"
    run sox [ "-t"; "raw"; "-r"; string rate; "-e"; "signed"; "-b"; "16"; "-c"; "1"; raw; wav ] |> ignore
    wav

let private logMel (x: float32[]) : float32[] =
    use _ = torch.NewDisposeScope()
    use t = torch.tensor x
    use mel = LogMel.logMelSpectrogram 80 t
    Tensors.toFloatArray mel |> Array.map float32

let private maxDiff (a: float32[]) (b: float32[]) =
    Seq.zip a b |> Seq.fold (fun m (x, y) -> max m (abs (float x - float y))) 0.0

/// Max |diff| of samples (in 16-bit steps) and of log-mel features between `load path` and whisper's ffmpeg load.
let private compareWith (ffmpeg: string) (load: string -> float32[]) (path: string) =
    let reference = whisperLoad ffmpeg path
    let ours = load path
    maxDiff ours reference * 32768.0, maxDiff (logMel ours) (logMel reference), ours.Length - reference.Length

/// The same for Audio.load (the default, FfmpegCompatible), whose length must also be ffmpeg's.
let private compare (ffmpeg: string) (path: string) =
    let samples, mel, extra = compareWith ffmpeg Audio.load path
    Expect.equal extra 0 $"{IO.Path.GetFileName path}: as many samples as ffmpeg gives"
    samples, mel

let tests =
    testList "ffmpeg-compatible resampling" [
        test "the filter design follows libswresample's defaults (formulas written out)" {
            for rate, phases in [ 44100, 160; 48000, 1; 22050, 320; 8000, 2; 44056, 1024 ] do
                let f = FfmpegResample.create rate 16000
                let factor = min (16000.0 * 0.97 / float rate) 1.0
                let taps = int (ceil (32.0 / factor))
                Expect.equal f.TapsPerPhase (taps + taps % 2) $"{rate}: ⌈32/factor⌉ rounded up to even"
                Expect.equal f.PhaseCount phases $"{rate}: reduced numerator of 16000/{rate}, or 1024"
        }
        test "16-bit input: bit-exact with ffmpeg at 44.1, 48, 22.05, 8, 11.025 and 44.056 kHz, mono and stereo" {
            let ffmpeg = requireTool "ffmpeg"
            use dir = new TempDir()
            let files =
                [ for rate in [ 44100; 48000; 22050; 8000 ] do
                      yield speech dir rate 16 1
                      yield chirpAndNoise dir rate
                  yield chirpAndNoise dir 11025
                  yield chirpAndNoise dir 44056 // not an exact ratio: 1024 phases with linear interpolation
                  yield speech dir 44100 16 2
                  yield speech dir 48000 16 2 ]
            for path in files do
                let samples, mel = compare ffmpeg path
                printfn $"  {IO.Path.GetFileName path}: max sample diff {samples} LSB, max log-mel diff {mel:E2}"
                Expect.equal samples 0.0 $"{IO.Path.GetFileName path}: samples equal ffmpeg's"
        }
        test "log-mel of 44.1/48/22.05/8 kHz audio within 2e-3 of openai/whisper's (the high-quality resampler is not)" {
            let ffmpeg = requireTool "ffmpeg"
            use dir = new TempDir()
            let files =
                [ for rate in [ 44100; 48000; 22050; 8000 ] do
                      yield speech dir rate 16 1
                      yield chirpAndNoise dir rate
                  yield speech dir 44100 24 1 // 24-bit: ffmpeg resamples in float
                  yield speech dir 44100 16 2
                  yield data "jfk.flac" ] // 44.1 kHz stereo FLAC
            for path in files do
                let samples, mel = compare ffmpeg path
                let hqSamples, hqMel, _ = compareWith ffmpeg (Audio.loadWith Audio.HighQuality None) path
                printfn $"  {IO.Path.GetFileName path}: ffmpeg-compatible {samples} LSB, log-mel {mel:E2}; high quality {hqSamples:F1} LSB, log-mel {hqMel:E2}"
                Expect.isLessThanOrEqual mel 2e-3 $"{IO.Path.GetFileName path}: log-mel max |diff|"
                Expect.isLessThanOrEqual samples 1.0 $"{IO.Path.GetFileName path}: at most one 16-bit step"
                if path.EndsWith "jfk.flac" then
                    // The comparison is sensitive: the other filter's transition band shows in the top mel bins.
                    Expect.isGreaterThan hqMel 2e-3 "the high-quality resampler differs from ffmpeg's by more"
        }
        test "edges and lengths: empty input, short input, DC" {
            let f = FfmpegResample.create 44100 16000
            Expect.equal (FfmpegResample.applyInt16 f [||]) [||] "empty"
            Expect.equal (FfmpegResample.applyFloat f [||]) [||] "empty float"
            // Tiny inputs (shorter than the 92 taps) still give output without reading outside the input.
            for n in [ 1; 5; 46; 91; 200 ] do
                let y = FfmpegResample.applyFloat f (Array.create n 0.25f)
                Expect.isLessThanOrEqual y.Length (n * 16000 / 44100 + 2) $"{n} samples: at most ⌈n·L/M⌉ + 1 outputs"
            let y = FfmpegResample.applyFloat f (Array.create 44100 0.25f)
            Expect.equal y.Length 16000 "1 s gives 16000 samples"
            // Constant input is mirrored at the ends, so DC passes everywhere, up to the phases' normalisation
            // (each phase sums to phase 0's sum within the Kaiser design's ripple).
            for v in y do
                Expect.floatClose { absolute = 1e-4; relative = 1e-3 } (float v) 0.25 "DC gain 1"
            let yi = FfmpegResample.applyInt16 f (Array.create 44100 8192s)
            Expect.isTrue (yi |> Array.forall (fun v -> abs (int v - 8192) <= 2)) "DC in 16 bits"
        }
        test "speed: seconds of 44.1 kHz audio resampled per second" {
            let f = FfmpegResample.create 44100 16000
            let rng = Random 3
            let x = Array.init (44100 * 60) (fun _ -> int16 (rng.Next(-20000, 20000)))
            FfmpegResample.applyInt16 f x.[0 .. 44099] |> ignore
            let sw = Stopwatch.StartNew()
            let y = FfmpegResample.applyInt16 f x
            let intSpeed = 60.0 / sw.Elapsed.TotalSeconds
            let xf = x |> Array.map (fun v -> float32 v / 32768.0f)
            sw.Restart()
            FfmpegResample.applyFloat f xf |> ignore
            let floatSpeed = 60.0 / sw.Elapsed.TotalSeconds
            let hq = Resample.create 44100 16000
            sw.Restart()
            Resample.apply hq xf |> ignore
            let hqSpeed = 60.0 / sw.Elapsed.TotalSeconds
            printfn $"  44.1 → 16 kHz: ffmpeg-compatible 16-bit {intSpeed:F0}×, float {floatSpeed:F0}×; high quality {hqSpeed:F0}× real time"
            Expect.equal y.Length (60 * 16000) "one minute"
            Expect.isGreaterThan intSpeed 20.0 "well faster than real time"
        }
    ]
