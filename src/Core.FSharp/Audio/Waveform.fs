namespace MagnetWhisper.Core.Audio

open System
open System.IO

/// Decoded audio at its native sample rate: one array per channel (planar), full scale ±1.
type Waveform =
    { /// Samples per second per channel.
      SampleRate: int
      /// Channels × samples; every channel has the same length. Integer formats are scaled by 1/2^(bits−1), so
      /// 8–24-bit samples are exact in float32.
      Channels: float32[][] }

    /// Number of samples per channel.
    member w.Length = if w.Channels.Length = 0 then 0 else w.Channels.[0].Length

    /// Duration in seconds.
    member w.Duration = float w.Length / float w.SampleRate

/// The exceptions the decoders raise: each names the file and the problem.
module internal AudioErrors =
    /// A corrupt or truncated file.
    let invalid (name: string) (problem: string) : 'a = raise (InvalidDataException $"{name}: {problem}")

    /// A well-formed file using a feature the decoder does not implement.
    let unsupported (name: string) (problem: string) : 'a = raise (NotSupportedException $"{name}: {problem}")

    /// Reads a whole file, raising FileNotFoundException naming it when it does not exist.
    let readAllBytes (path: string) : byte[] =
        if Directory.Exists path then invalid path "is a directory, not an audio file"
        if not (File.Exists path) then raise (FileNotFoundException($"{path}: file not found", path))
        // The opened file's length: FileInfo.Length of a symbolic link is the link's own length.
        use stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read)
        if stream.Length > int64 Array.MaxLength then
            unsupported path $"file of {stream.Length} bytes is larger than the 2 GB the in-memory decoders accept"
        let bytes = Array.zeroCreate<byte> (int stream.Length)
        stream.ReadExactly(bytes, 0, bytes.Length)
        bytes
