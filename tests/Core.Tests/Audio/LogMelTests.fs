/// Whisper's log-mel features: the filterbank against the reference npz, the spectrogram against a float64 DFT,
/// the whole pipeline against a float64 reimplementation, the frame mask, batching, and jfk.flac.
module MagnetWhisper.Tests.Audio.LogMelTests

open System
open Expecto
open FsCheck
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Audio
open MagnetWhisper.Tests
open MagnetWhisper.Tests.Audio.Tools

/// |DFT|² of Whisper's frames in float64, written out: reflect-pad n_fft/2, periodic Hann, frames every 160
/// samples, bins 0..200, the last frame dropped. Only frames in `frames` are computed (others are left 0).
let private referencePower (x: float[]) (frames: int seq) : float[,] =
    let nFft, hop = 400, 160
    let n = x.Length
    let padded = Array.init (n + nFft) (fun i ->
        let j = i - nFft / 2
        if j < 0 then x.[-j] elif j >= n then x.[2 * (n - 1) - j] else x.[j])
    let count = n / hop
    let window = Array.init nFft (fun k -> 0.5 - 0.5 * cos (2.0 * Math.PI * float k / float nFft))
    let cosT = Array.init nFft (fun i -> cos (2.0 * Math.PI * float i / float nFft))
    let sinT = Array.init nFft (fun i -> sin (2.0 * Math.PI * float i / float nFft))
    let power = Array2D.zeroCreate 201 count
    for f in frames do
        if f < count then
            for k in 0..200 do
                let mutable re, im = 0.0, 0.0
                for t in 0 .. nFft - 1 do
                    let v = padded.[f * hop + t] * window.[t]
                    re <- re + v * cosT.[k * t % nFft]
                    im <- im - v * sinT.[k * t % nFft]
                power.[k, f] <- re * re + im * im
    power

let private referenceFilters (key: string) : float[,] =
    use t = Npy.readNpz (data "mel_filters.npz") key
    let rows, cols = int t.shape.[0], int t.shape.[1]
    let flat = Tensors.toFloatArray t
    Array2D.init rows cols (fun r c -> flat.[r * cols + c])

/// The whole pipeline in float64 on audio shorter than 30 s: zero-pad to 480000, power, reference filters, log10,
/// floor at max − 8, (x + 4) / 4.
let private referenceLogMel (filters: float[,]) (audio: float[]) : float[,] =
    let x = Array.append audio (Array.zeroCreate (480000 - audio.Length))
    // Frames touching the audio; the others see only zeros (their power is exactly 0).
    let live = [ 0 .. (audio.Length + 200) / 160 + 1 ]
    let power = referencePower x live
    let nMels = Array2D.length1 filters
    let logSpec =
        Array2D.init nMels 3000 (fun m f ->
            let mutable s = 0.0
            for k in 0..200 do
                s <- s + filters.[m, k] * power.[k, f]
            log10 (max s 1e-10))
    let peak = logSpec |> Seq.cast<float> |> Seq.max
    logSpec |> Array2D.map (fun v -> (max v (peak - 8.0) + 4.0) / 4.0)

let private toArray2D (t: torch.Tensor) =
    let rows, cols = int t.shape.[0], int t.shape.[1]
    let flat = Tensors.toFloatArray t
    Array2D.init rows cols (fun r c -> flat.[r * cols + c])

let private maxAbs (a: float[,]) (b: float[,]) =
    Seq.zip (Seq.cast<float> a) (Seq.cast<float> b) |> Seq.map (fun (x, y) -> abs (x - y)) |> Seq.max

let private randomAudio (seed: int) (n: int) =
    let rng = Random seed
    Array.init n (fun i -> 0.3 * sin (2.0 * Math.PI * 440.0 * float i / 16000.0) + 0.1 * (rng.NextDouble() * 2.0 - 1.0))

let tests =
    testList "logmel" [
        test "constants derive from each other as in whisper/audio.py" {
            Expect.equal (LogMel.SampleRate, LogMel.NFft, LogMel.HopLength, LogMel.ChunkSeconds) (16000, 400, 160, 30) "base constants"
            Expect.equal (LogMel.NSamples, LogMel.NFrames, LogMel.NFreqs, LogMel.FramesPerSecond) (480000, 3000, 201, 100) "derived constants"
        }
        test "the computed Slaney filterbanks equal whisper's mel_filters.npz to 1e-6" {
            for nMels in [ 80; 128 ] do
                use reference = Npy.readNpz (data "mel_filters.npz") $"mel_{nMels}"
                use computed = LogMel.melFilters nMels torch.CPU
                Expect.equal computed.dtype torch.float32 "float32"
                Reference.close 1e-6 $"mel_{nMels}" computed reference
        }
        test "the power spectrogram equals a float64 DFT (relative 1e-4), single and batched" {
            let x = randomAudio 1 1234
            let expected = referencePower x [ 0 .. 1233 / 160 ]
            use audio = torch.tensor(x |> Array.map float32)
            use power = LogMel.powerSpectrogram audio
            Expect.sequenceEqual power.shape [| 201L; 1234L / 160L |] "shape (201, N/160)"
            let scale = expected |> Seq.cast<float> |> Seq.max
            let err = maxAbs (toArray2D power) expected / scale
            Expect.isLessThan err 1e-4 $"relative error {err}"
            use batch = torch.stack([| audio; audio.flip(0L) |])
            use powers = LogMel.powerSpectrogram batch
            Expect.sequenceEqual powers.shape [| 2L; 201L; 7L |] "batched shape"
            use first = powers.[0]
            Reference.close 1e-3 "batch row 0 equals the single spectrogram" first power
        }
        test "the log-mel pipeline equals a float64 reimplementation with the reference filters" {
            for nMels in [ 80; 128 ] do
                let x = randomAudio nMels 16000
                let expected = referenceLogMel (referenceFilters $"mel_{nMels}") x
                use audio = torch.tensor(x |> Array.map float32)
                use mel = LogMel.logMelSpectrogram nMels audio
                Expect.sequenceEqual mel.shape [| int64 nMels; 3000L |] "shape"
                let err = maxAbs (toArray2D mel) expected
                Expect.isLessThan err 2e-4 $"{nMels} mels: max |diff| {err}"
        }
        test "batched extraction equals per-utterance features, with per-utterance floors and masks" {
            let a = randomAudio 3 24001 |> Array.map float32
            let b = randomAudio 4 5000 |> Array.map (fun v -> float32 (v * 0.01))
            let c = randomAudio 5 (LogMel.NSamples + 12345) |> Array.map float32
            use features = LogMel.extract 80 torch.CPU [ a; b; c ]
            Expect.sequenceEqual features.Mel.shape [| 3L; 80L; 3000L |] "mel shape"
            Expect.sequenceEqual features.Mask.shape [| 3L; 3000L |] "mask shape"
            [ a; b; c ]
            |> List.iteri (fun i w ->
                use single = LogMel.logMelSpectrogram 80 (torch.tensor w)
                use row = features.Mel.[i]
                Reference.close 1e-5 $"utterance {i}" row single
                use maskRow = features.Mask.[i]
                Expect.sequenceEqual (Tensors.toFloatArray maskRow) (LogMel.frameMaskArray (int64 w.Length) |> Array.map float) $"mask {i}")
            use sums = features.Mask.sum(1L)
            Expect.sequenceEqual (Tensors.toFloatArray sums) [| 151.0; 32.0; 3000.0 |] "valid frames: ⌈n/160⌉, capped at 3000"
        }
        test "audio longer than 30 s is trimmed: features equal those of its first 480000 samples" {
            let x = randomAudio 6 (LogMel.NSamples + 4000) |> Array.map float32
            use long = LogMel.logMelSpectrogram 80 (torch.tensor x)
            use trimmed = LogMel.logMelSpectrogram 80 (torch.tensor x.[0 .. LogMel.NSamples - 1])
            Reference.close 0.0 "trimmed" long trimmed
        }
        Generators.prop "frame f is valid iff 160·f < n" (fun (DoNotSize(n: uint32)) ->
            let n = int64 (n % 600_000u)
            let mask = LogMel.frameMaskArray n
            Expect.equal mask.Length 3000 "length"
            for f in 0..2999 do
                Expect.equal mask.[f] (if int64 f * 160L < n then 1.0f else 0.0f) $"frame {f} of n = {n}")
        test "jfk.flac: shape, value range and mask length for 80 and 128 mels" {
            let audio = Audio.load (data "jfk.flac")
            Expect.equal audio.Length 176000 "11 s at 16 kHz"
            for nMels in [ 80; 128 ] do
                use f = LogMel.extract nMels torch.CPU [ audio ]
                Expect.sequenceEqual f.Mel.shape [| 1L; int64 nMels; 3000L |] "shape"
                let values = Tensors.toFloatArray f.Mel
                let lo, hi = Array.min values, Array.max values
                Expect.isGreaterThanOrEqual lo -1.5 $"{nMels}: minimum {lo}"
                Expect.isLessThanOrEqual hi 2.0 $"{nMels}: maximum {hi}"
                // The floor is max − 8 in log10 units, i.e. 2 after (x + 4) / 4: the range is exactly 2 here.
                Expect.floatClose Accuracy.medium (hi - lo) 2.0 "range of a chunk with silence padding"
                Expect.equal (Tensors.toFloatArray f.Mask |> Array.sum) 1100.0 "11 s × 100 frames/s valid"
        }
        test "feature extraction leaves no live tensors behind once its results are disposed" {
            let audio = randomAudio 8 20000 |> Array.map float32
            let live () = DisposeScopeManager.Statistics.ThreadTotalLiveCount
            let before = live ()
            let run () =
                use f = LogMel.extract 80 torch.CPU [ audio; audio ]
                use input = torch.tensor audio
                use mel = LogMel.logMelSpectrogram 128 input
                use power = LogMel.powerSpectrogram input
                Expect.isGreaterThan (live ()) before "the results are live while in use"
            run ()
            Expect.equal (live ()) before "live tensors after extraction"
        }
        test "on CUDA the features equal the CPU's" {
            if not (torch.cuda.is_available ()) then skiptest "no CUDA device"
            let audio = randomAudio 7 20000 |> Array.map float32
            use cpu = LogMel.extract 80 torch.CPU [ audio ]
            use gpu = LogMel.extract 80 torch.CUDA [ audio ]
            Expect.equal gpu.Mel.device_type DeviceType.CUDA "on the GPU"
            Reference.close 1e-4 "cuda vs cpu" gpu.Mel cpu.Mel
        }
    ]
