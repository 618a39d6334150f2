/// Writing 16-bit PCM mono WAV (the canonical 44-byte header), the format the synthetic corpus stores.
[<RequireQualifiedAccess>]
module MagnetWhisper.Core.Audio.WavWriter

open System
open System.IO
open System.Text

/// Writes `samples` (full scale ±1) at `sampleRate` as 16-bit PCM mono WAV: each sample scaled by 2^15, rounded to
/// nearest (even) and saturated, so samples that were 16-bit already (Audio.load's output) are stored exactly.
let writeMono16 (stream: Stream) (sampleRate: int) (samples: float32[]) : unit =
    if sampleRate < 1 then invalidArg (nameof sampleRate) $"needs a positive sample rate, got {sampleRate}"
    use w = new BinaryWriter(stream, Encoding.ASCII, true)
    let ascii (s: string) = w.Write(Encoding.ASCII.GetBytes s)
    let dataBytes = 2 * samples.Length
    ascii "RIFF"
    w.Write(36 + dataBytes)
    ascii "WAVE"
    ascii "fmt "
    w.Write 16 // fmt chunk size
    w.Write 1s // PCM
    w.Write 1s // channels
    w.Write sampleRate
    w.Write(2 * sampleRate) // bytes per second
    w.Write 2s // block align
    w.Write 16s // bits per sample
    ascii "data"
    w.Write dataBytes
    for s in samples do
        w.Write(int16 (MathF.Max(-32768.0f, MathF.Min(32767.0f, MathF.Round(s * 32768.0f)))))
