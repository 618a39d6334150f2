/// The resampler: passband flatness and stopband rejection on tones, and agreement with sox's `rate -v`.
module MagnetWhisper.Tests.Audio.ResampleTests

open System
open System.IO
open Expecto
open FsCheck
open FsCheck.FSharp
open MagnetWhisper.Core.Audio
open MagnetWhisper.Tests
open MagnetWhisper.Tests.Audio.Tools

let private resamplers = Collections.Concurrent.ConcurrentDictionary<int * int, Resample.Resampler>()
let private resampler a b = resamplers.GetOrAdd((a, b), fun (a, b) -> Resample.create a b)

let private tone (rate: int) (f: float) (seconds: float) (phase: float) =
    Array.init (int (seconds * float rate)) (fun i -> float32 (0.5 * sin (2.0 * Math.PI * f * float i / float rate + phase)))

/// Gain in dB of a tone of frequency f through rate → 16 kHz, measured away from the edges.
let private gainDb (rate: int) (f: float) (phase: float) =
    let x = tone rate f 0.3 phase
    let y = Resample.apply (resampler rate 16000) x
    let skip = 400
    20.0 * log10 (toneAmplitude 16000.0 f y skip (y.Length - skip) / 0.5)

/// Attenuation in dB of an out-of-band tone: RMS of the output relative to the input's.
let private rejectionDb (rate: int) (f: float) =
    let x = tone rate f 0.3 0.3
    let y = Resample.apply (resampler rate 16000) x
    let skip = 400
    20.0 * log10 (rms y skip (y.Length - skip) / (0.5 / sqrt 2.0))

type private InBand = { Rate: int; Freq: float; Phase: float }
type private OutOfBand = { Rate: int; Freq: float }

let private rates = [ 11025; 22050; 24000; 32000; 44100; 48000; 96000; 8000 ]

type private ToneArbs =
    static member InBand() : Arbitrary<InBand> =
        gen {
            let! rate = Gen.elements rates
            let top = min 7000.0 (0.9 * float (min rate 16000) / 2.0)
            let! u = Gen.choose (0, 1_000_000)
            let! p = Gen.choose (0, 628)
            return { Rate = rate; Freq = 20.0 + (top - 20.0) * float u / 1e6; Phase = float p / 100.0 }
        }
        |> Arb.fromGen

    static member OutOfBand() : Arbitrary<OutOfBand> =
        gen {
            let! rate = Gen.elements [ 22050; 24000; 32000; 44100; 48000; 96000 ]
            let! u = Gen.choose (0, 1_000_000)
            // 8.5 kHz up to just below the input's Nyquist frequency.
            let top = 0.49 * float rate
            return { Rate = rate; Freq = 8500.0 + (top - 8500.0) * float u / 1e6 }
        }
        |> Arb.fromGen

let private config = { Generators.configWith [ typeof<ToneArbs> ] with maxTest = 40 }

/// A test signal at `rate`: tones and band-limited noise (300 random sinusoids, 50 Hz – 7 kHz) in the passband,
/// plus strong tones above 8.5 kHz that a correct 16 kHz resampler removes.
let private mixture (rate: int) (seconds: float) =
    let rng = Random rate
    let n = int (seconds * float rate)
    let comps =
        [ yield 0.2, 440.0, 0.0
          yield 0.15, 3000.0, 1.0
          yield 0.1, 6500.0, 2.0
          for _ in 1..300 -> 0.002, 50.0 + rng.NextDouble() * 6950.0, rng.NextDouble() * 6.283
          for f in [ 9000.0; 12000.0; 20000.0 ] do
              if f < 0.45 * float rate then yield 0.08, f, 0.5 ]
        |> List.filter (fun (_, f, _) -> f < 0.45 * float rate)
    Array.init n (fun i -> float32 (comps |> List.sumBy (fun (a, f, p) -> a * sin (2.0 * Math.PI * f * float i / float rate + p))))

/// SNR (dB) of y against reference r after the best alignment within ±4 samples, away from the edges.
let private alignedSnr (r: float32[]) (y: float32[]) =
    let edge = 200
    let n = min r.Length y.Length - 2 * edge
    [ -4 .. 4 ]
    |> List.map (fun lag ->
        let mutable s, d = 0.0, 0.0
        for i in edge .. edge + n - 1 do
            let a = float r.[i]
            let b = float y.[i + lag]
            s <- s + a * a
            d <- d + (a - b) * (a - b)
        10.0 * log10 (s / d))
    |> List.max

let tests =
    testList "resample" [
        testPropertyWithConfig config "a tone below 7 kHz (and below 0.9 × half the lower rate) keeps its amplitude within 0.1 dB" (fun (t: InBand) ->
            let g = gainDb t.Rate t.Freq t.Phase
            Expect.isLessThan (abs g) 0.1 $"{t.Rate} Hz → 16 kHz, tone {t.Freq:F1} Hz: gain {g:F5} dB")
        testPropertyWithConfig config "a tone above 8.5 kHz is attenuated by more than 60 dB" (fun (t: OutOfBand) ->
            let a = rejectionDb t.Rate t.Freq
            Expect.isLessThan a -60.0 $"{t.Rate} Hz → 16 kHz, tone {t.Freq:F1} Hz: {a:F1} dB")
        test "the design meets its documented numbers: flat to 7.2 kHz, ≥ 105 dB from 8 kHz" {
            for rate in [ 44100; 48000; 22050 ] do
                for f in [ 100.0; 1000.0; 5000.0; 7000.0; 7200.0 ] do
                    let g = gainDb rate f 0.7
                    Expect.isLessThan (abs g) 0.0001 $"{rate} Hz, {f} Hz: passband gain {g} dB"
                for f in [ 8000.0; 8500.0; 10000.0; 0.45 * float rate ] do
                    let a = rejectionDb rate f
                    Expect.isLessThan a -105.0 $"{rate} Hz, {f} Hz: stopband {a} dB"
        }
        test "identity at 16 kHz, DC preserved, output length ⌈n·L/M⌉" {
            let x = tone 16000 440.0 0.1 0.0
            Expect.sequenceEqual (Resample.resample 16000 16000 x) x "same rate copies"
            let y = Resample.apply (resampler 44100 16000) (Array.create 44100 0.25f)
            Expect.equal y.Length 16000 "1 s at 44.1 kHz gives 16000 samples"
            for i in 500 .. 15500 do
                Expect.floatClose Accuracy.medium (float y.[i]) 0.25 $"DC at {i}"
            Expect.equal (Resample.outputLength (resampler 44100 16000) 485100) 176000 "jfk.flac's length"
            Expect.equal (Resample.outputLength (resampler 22050 16000) 1) 1 "one sample"
            Expect.equal (Resample.apply (resampler 22050 16000) [||]) [||] "empty"
        }
        test "agrees with sox rate -v (SNR of the difference > 80 dB) on tones, band-limited noise and out-of-band tones" {
            let sox = requireTool "sox"
            use dir = new TempDir()
            for rate in [ 44100; 48000; 22050; 8000 ] do
                let x = mixture rate 1.0
                writeRawFloat32 (dir.File "in.f32") x
                let out =
                    run sox [ "-t"; "raw"; "-e"; "floating-point"; "-b"; "32"; "-r"; string rate; "-c"; "1"; dir.File "in.f32"
                              "-t"; "raw"; "-e"; "floating-point"; "-b"; "32"; "-"; "rate"; "-v"; "16000" ]
                let reference = readRawFloat32 out
                let y = Resample.apply (resampler rate 16000) x
                let snr = alignedSnr reference y
                Expect.isGreaterThan snr 80.0 $"{rate} Hz → 16 kHz: SNR against sox {snr:F1} dB"
        }
        test "rejects non-positive rates" {
            Expect.throwsT<ArgumentException> (fun () -> Resample.create 0 16000 |> ignore) "rate 0"
            Expect.throwsT<ArgumentException> (fun () -> Resample.create 16000 -1 |> ignore) "negative rate"
        }
    ]
