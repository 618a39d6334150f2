namespace MagnetWhisper.Core.Training

// SpecAugment (Park et al. 2019, "SpecAugment: a simple data augmentation method for ASR") on a training batch of
// log-mel features: per utterance, FrequencyMasks bands of f ~ U{0..FrequencyWidth} consecutive mel bins and
// TimeMasks spans of t ~ U{0..min(TimeWidth, ⌊TimeRatio·τ⌋)} consecutive frames (τ = the utterance's valid frames),
// each placed uniformly where it fits. Time warping is left out (Park et al. found it the least useful part and the
// most expensive). Masks touch valid frames only: padding stays what the encoder expects for silence.
//
// Masked values become the utterance's mean log-mel (over its valid frames and all bins). Park et al. set them to 0,
// which in their mean-normalised features is the mean; Whisper's features are not mean-normalised ((log10 + 4) / 4
// after clamping, so 0 is a loud level, not an average one), so the mean is what "no information" is here.
//
// Every random number comes from one CPU generator (seeded; part of the trainer's generators that checkpoints
// capture), drawn as a fixed count per batch, so a resumed run masks exactly as the uninterrupted one.

open TorchSharp
open MagnetWhisper.Core

/// SpecAugment's policy.
type SpecAugmentSettings =
    { /// Frequency masks per utterance (m_F).
      FrequencyMasks: int
      /// Largest frequency mask, in mel bins (F).
      FrequencyWidth: int
      /// Time masks per utterance (m_T).
      TimeMasks: int
      /// Largest time mask, in frames (T).
      TimeWidth: int
      /// Largest time mask as a fraction of the utterance's valid frames (p).
      TimeRatio: float }

    /// Park et al.'s LibriSpeech "LD" policy for 80 mel bins (m_F = 2, F = 27, m_T = 2, T = 100) with the
    /// upper bound p = 0.2 of their Switchboard policies instead of 1.0: the synthetic utterances are short (1–4 s,
    /// 100–400 frames), and two masks of up to 100 frames would hide most of a 1 s utterance.
    static member Default = { FrequencyMasks = 2; FrequencyWidth = 27; TimeMasks = 2; TimeWidth = 100; TimeRatio = 0.2 }

/// Applying SpecAugment.
[<RequireQualifiedAccess>]
module SpecAugment =
    /// Fails on a setting out of range, naming it.
    let validate (s: SpecAugmentSettings) : SpecAugmentSettings =
        if s.FrequencyMasks < 0 then invalidArg "freq_masks" $"must be at least 0, got {s.FrequencyMasks}"
        if s.FrequencyWidth < 0 then invalidArg "freq_width" $"must be at least 0, got {s.FrequencyWidth}"
        if s.TimeMasks < 0 then invalidArg "time_masks" $"must be at least 0, got {s.TimeMasks}"
        if s.TimeWidth < 0 then invalidArg "time_width" $"must be at least 0, got {s.TimeWidth}"
        if not (s.TimeRatio >= 0.0 && s.TimeRatio <= 1.0) then invalidArg "time_ratio" $"must be in [0, 1], got {s.TimeRatio}"
        s

    /// A CPU generator for SpecAugment's draws.
    let generator (seed: int64) : torch.Generator = new torch.Generator(uint64 seed, torch.CPU)

    /// The masks of a batch as (row, first, width) bands: frequency bands over mel bins and time spans over frames,
    /// drawn from `generator` for rows of `valid` frames each with `bins` mel bins. Every row draws
    /// 2·(FrequencyMasks + TimeMasks) uniforms, whatever its length.
    let draw (settings: SpecAugmentSettings) (generator: torch.Generator) (bins: int) (valid: int[]) : (int * int * int)[] * (int * int * int)[] =
        let perRow = 2 * (settings.FrequencyMasks + settings.TimeMasks)
        if perRow = 0 || valid.Length = 0 then [||], [||]
        else
            use u = torch.rand([| int64 valid.Length; int64 perRow |], dtype = torch.float64, generator = generator)
            let u = Tensors.toFloatArray (u.flatten())
            let at (row: int) (i: int) = u.[row * perRow + i]
            // A width in 0..limit, then a start where the band fits in 0..size−width.
            let band (row: int) (i: int) (limit: int) (size: int) =
                let limit = max 0 (min limit size)
                let width = min limit (int (at row i * float (limit + 1)))
                let first = min (size - width) (int (at row (i + 1) * float (size - width + 1)))
                row, first, width
            let frequency =
                [| for row in 0 .. valid.Length - 1 do
                       for m in 0 .. settings.FrequencyMasks - 1 do
                           yield band row (2 * m) settings.FrequencyWidth bins |]
            let time =
                [| for row in 0 .. valid.Length - 1 do
                       let limit = min settings.TimeWidth (int (settings.TimeRatio * float valid.[row]))
                       for m in 0 .. settings.TimeMasks - 1 do
                           yield band row (2 * (settings.FrequencyMasks + m)) limit valid.[row] |]
            frequency, time

    /// The batch mel (B, n_mels, F) with SpecAugment's masks: masked (bin, frame) cells of valid frames (frameMask
    /// (B, F), 1 = valid; valid frames come first) take the row's mean over its valid cells. Returns a new tensor
    /// (in the caller's dispose scope); mel is not changed.
    let apply (settings: SpecAugmentSettings) (generator: torch.Generator) (mel: torch.Tensor) (frameMask: torch.Tensor) : torch.Tensor =
        let rows, bins, frames = int mel.shape.[0], int mel.shape.[1], int mel.shape.[2]
        let valid =
            use counts = frameMask.sum(1L).``to``(torch.float64).cpu()
            Tensors.toFloatArray counts |> Array.map (fun v -> int (System.Math.Round v))
        let frequency, time = draw settings generator bins valid
        let binMask = Array.zeroCreate<float32> (rows * bins)
        for row, first, width in frequency do
            for b in first .. first + width - 1 do binMask.[row * bins + b] <- 1.0f
        let frameHit = Array.zeroCreate<float32> (rows * frames)
        for row, first, width in time do
            for f in first .. first + width - 1 do frameHit.[row * frames + f] <- 1.0f
        use scope = torch.NewDisposeScope()
        let dtype = mel.dtype
        let validFrames = frameMask.``to``(dtype).unsqueeze(1L) // (B, 1, F)
        let bin = torch.tensor(binMask, System.ReadOnlySpan<int64>([| int64 rows; int64 bins; 1L |]), device = mel.device).``to``(dtype)
        let hit = torch.tensor(frameHit, System.ReadOnlySpan<int64>([| int64 rows; 1L; int64 frames |]), device = mel.device).``to``(dtype)
        // A cell is masked when its bin or its frame is, and its frame is valid.
        let masked = (bin + hit).gt((0.5).ToScalar()).logical_and(validFrames.gt((0.5).ToScalar()))
        let cells = (validFrames.sum([| 1L; 2L |], keepdim = true) * float bins).clamp_min(1.0)
        let mean = (mel * validFrames).sum([| 1L; 2L |], keepdim = true) / cells
        let out = torch.where(masked, mean.expand_as(mel), mel)
        out.MoveToOuterDisposeScope()
