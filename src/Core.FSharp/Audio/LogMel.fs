/// Whisper's log-mel features, exactly as openai/whisper `audio.py` and Hugging Face's WhisperFeatureExtractor
/// compute them: 30-second chunks, periodic Hann window of 400, hop 160, centred STFT with reflect padding, power
/// spectrum without the last frame, Slaney mel filterbank (librosa `mel(sr=16000, n_fft=400, n_mels=N)`),
/// `log10(max(x, 1e-10))`, floor at the utterance's maximum − 8, then `(x + 4) / 4`.
module MagnetWhisper.Core.Audio.LogMel

open System
open TorchSharp
open MagnetWhisper.Core.Tensors

// The audio constants, once; everything else is derived from them.

/// Sample rate of the features' input, Hz.
let SampleRate = 16000
/// FFT size (and Hann window length) in samples: 25 ms.
let NFft = 400
/// Hop between frames in samples: 10 ms.
let HopLength = 160
/// Length of one chunk in seconds.
let ChunkSeconds = 30
/// Samples in a chunk: 480 000.
let NSamples = ChunkSeconds * SampleRate
/// Frames in a chunk: 3000.
let NFrames = NSamples / HopLength
/// Frequency bins of the one-sided spectrum: 201.
let NFreqs = NFft / 2 + 1
/// Frames per second: 100.
let FramesPerSecond = SampleRate / HopLength
/// Mel bins of Whisper v1/v2 models (v3 uses 128).
let DefaultMels = 80

/// Slaney mel scale (librosa htk=False): linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
let private hzToMel (hz: float) =
    let fSp = 200.0 / 3.0
    let minLogHz = 1000.0
    let minLogMel = minLogHz / fSp
    let logStep = log 6.4 / 27.0
    if hz >= minLogHz then minLogMel + log (hz / minLogHz) / logStep else hz / fSp

let private melToHz (mel: float) =
    let fSp = 200.0 / 3.0
    let minLogHz = 1000.0
    let minLogMel = minLogHz / fSp
    let logStep = log 6.4 / 27.0
    if mel >= minLogMel then minLogHz * exp (logStep * (mel - minLogMel)) else fSp * mel

/// The Slaney-normalised mel filterbank in float64, nMels × 201: triangles between nMels + 2 points equally spaced
/// on the Slaney mel scale from 0 Hz to 8 kHz, each scaled by 2 / (its bandwidth in Hz) — librosa
/// `filters.mel(sr=16000, n_fft=400, n_mels=nMels, htk=False, norm="slaney")`.
let melFilterbank64 (nMels: int) : float[][] =
    if nMels < 1 then invalidArg "nMels" $"nMels must be positive, got {nMels}"
    let fftFreqs = Array.init NFreqs (fun k -> float k * float SampleRate / float NFft)
    let maxMel = hzToMel (float SampleRate / 2.0)
    let melF = Array.init (nMels + 2) (fun i -> melToHz (maxMel * float i / float (nMels + 1)))
    Array.init nMels (fun i ->
        let lowerWidth = melF.[i + 1] - melF.[i]
        let upperWidth = melF.[i + 2] - melF.[i + 1]
        let enorm = 2.0 / (melF.[i + 2] - melF.[i])
        fftFreqs
        |> Array.map (fun f ->
            let lower = (f - melF.[i]) / lowerWidth
            let upper = (melF.[i + 2] - f) / upperWidth
            enorm * max 0.0 (min lower upper)))

let private filterCache = Collections.Concurrent.ConcurrentDictionary<int, float32[]>()

/// The mel filterbank as a float32 tensor (nMels, 201) on the given device (computed in float64, then cast).
let melFilters (nMels: int) (device: torch.Device) : torch.Tensor =
    let flat = filterCache.GetOrAdd(nMels, fun n -> melFilterbank64 n |> Array.concat |> Array.map float32)
    use cpu = torch.tensor(flat, ReadOnlySpan<int64>([| int64 nMels; int64 NFreqs |]))
    cpu.``to``(device)

/// Power spectrogram |STFT|² of float audio (N,) or (B, N) with N > 200: periodic Hann window of 400, hop 160,
/// centred frames with reflect padding, last frame dropped → (201, N/160) or (B, 201, N/160), on the input's device.
let powerSpectrogram (audio: torch.Tensor) : torch.Tensor =
    if audio.Dimensions < 1L || audio.Dimensions > 2L then
        invalidArg "audio" $"audio must be (N,) or (B, N), got {showShape audio.shape}"
    let n = audio.shape.[audio.shape.Length - 1]
    if n <= int64 (NFft / 2) then invalidArg "audio" $"audio needs more than {NFft / 2} samples for the reflect padding, got {n}"
    scoped (fun () ->
        let window = torch.hann_window(int64 NFft, periodic = true, dtype = audio.dtype, device = audio.device)
        let stft = torch.stft(audio, int64 NFft, int64 HopLength, window = window, center = true, return_complex = true)
        let frames = stft.shape.[stft.shape.Length - 1]
        stft.narrow(-1, 0L, frames - 1L).abs().square())

/// Pads with zeros or trims the last dimension of audio to 480 000 samples (30 s).
let padOrTrim (audio: torch.Tensor) : torch.Tensor =
    let n = audio.shape.[audio.shape.Length - 1]
    let target = int64 NSamples
    if n = target then audio.alias()
    elif n > target then audio.narrow(-1, 0L, target).contiguous()
    else torch.nn.functional.pad(audio, [| 0L; target - n |])

/// Log-mel features of audio already padded or trimmed as wanted: (N,) → (nMels, N/160) or (B, N) → (B, nMels, N/160),
/// float32 on the input's device; the log floor (max − 8) is per utterance.
let logMelOf (filters: torch.Tensor) (audio: torch.Tensor) : torch.Tensor =
    scoped (fun () ->
        let power = powerSpectrogram (audio.to_type torch.float32)
        let mel = filters.``to``(power.device).matmul power
        let logSpec = mel.clamp_min(1e-10).log10()
        let peak = logSpec.amax([| -2L; -1L |], keepdim = true)
        let floored = torch.maximum(logSpec, peak - 8.0)
        (floored + 4.0) / 4.0)

/// Whisper's log-mel features of 16 kHz mono audio (N,) or (B, N) on any device: padded/trimmed to 30 s, then
/// → (nMels, 3000) or (B, nMels, 3000) float32.
let logMelSpectrogram (nMels: int) (audio: torch.Tensor) : torch.Tensor =
    scoped (fun () ->
        let filters = melFilters nMels audio.device
        logMelOf filters (padOrTrim audio))

/// The frame mask of a chunk for audio of the given length (16 kHz samples): 3000 values, frame f is 1 iff
/// sample 160·f lies inside the audio (f < ⌈n/160⌉), else 0.
let frameMaskArray (samples: int64) : float32[] =
    Array.init NFrames (fun f -> if int64 f * int64 HopLength < samples then 1.0f else 0.0f)

/// Features of a batch: log-mel (B, nMels, 3000) and the frame mask (B, 3000), float32 on one device. Dispose it
/// (or move the tensors to a dispose scope) when done.
[<NoEquality; NoComparison>]
type Features =
    { /// (B, nMels, 3000) log-mel features.
      Mel: torch.Tensor
      /// (B, 3000) validity of each frame, 1 or 0.
      Mask: torch.Tensor }

    interface IDisposable with
        member f.Dispose() =
            f.Mel.Dispose()
            f.Mask.Dispose()

/// Extracts features of a batch of 16 kHz mono waveforms on a device: each is padded/trimmed to 30 s; the mask
/// marks the frames inside the real audio (3000 frames for ≥ 30 s).
let extract (nMels: int) (device: torch.Device) (waves: float32[] seq) : Features =
    let waves = Seq.toArray waves
    if waves.Length = 0 then invalidArg "waves" "the batch is empty"
    use _ = torch.NewDisposeScope()
    let padded = Array.zeroCreate<float32> (waves.Length * NSamples)
    waves |> Array.iteri (fun b w -> Array.blit w 0 padded (b * NSamples) (min w.Length NSamples))
    let audio = torch.tensor(padded, ReadOnlySpan<int64>([| int64 waves.Length; int64 NSamples |])).``to``(device)
    let mel = logMelOf (melFilters nMels device) audio
    let mask =
        torch.tensor(waves |> Array.collect (fun w -> frameMaskArray (int64 w.Length)), ReadOnlySpan<int64>([| int64 waves.Length; int64 NFrames |]))
            .``to``(device)
    { Mel = mel.MoveToOuterDisposeScope(); Mask = mask.MoveToOuterDisposeScope() }
