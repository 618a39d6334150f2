/// RIFF/RF64 WAVE decoding: PCM 8 (unsigned), 16, 24 and 32-bit, IEEE float 32/64-bit and WAVE_FORMAT_EXTENSIBLE
/// with a PCM or float sub-format; any channel count and sample rate.
module MagnetWhisper.Core.Audio.Wav

open System
open System.Buffers.Binary
open MagnetWhisper.Core.Audio.AudioErrors

/// Sample encoding of a WAVE file.
type Encoding =
    /// Two's-complement integers (unsigned for 8-bit containers), left-justified in the container.
    | Pcm
    /// IEEE floating point.
    | Float

/// What the `fmt ` chunk says.
type Format =
    { Encoding: Encoding
      Channels: int
      SampleRate: int
      /// Bytes per sample in the container (1, 2, 3, 4 or 8).
      ContainerBytes: int
      /// Significant bits (wValidBitsPerSample for WAVE_FORMAT_EXTENSIBLE, else the container width).
      ValidBits: int
      /// True when the file uses WAVE_FORMAT_EXTENSIBLE.
      Extensible: bool }

let private formatName =
    function
    | 0x0002 -> "Microsoft ADPCM"
    | 0x0006 -> "A-law"
    | 0x0007 -> "µ-law"
    | 0x0011 -> "IMA ADPCM"
    | 0x0031 -> "GSM 6.10"
    | 0x0055 -> "MPEG layer 3"
    | 0x2000 -> "AC-3"
    | _ -> "compressed"

/// The KSDATAFORMAT_SUBTYPE GUID suffix shared by the PCM and IEEE-float sub-formats.
let private guidTail = [| 0x00uy; 0x00uy; 0x00uy; 0x00uy; 0x10uy; 0x00uy; 0x80uy; 0x00uy; 0x00uy; 0xAAuy; 0x00uy; 0x38uy; 0x9Buy; 0x71uy |]

let private parseFormat (name: string) (fmt: ReadOnlySpan<byte>) : Format =
    if fmt.Length < 16 then invalid name $"fmt chunk of {fmt.Length} bytes is too short (needs 16)"
    let tag0 = int (BinaryPrimitives.ReadUInt16LittleEndian(fmt))
    let channels = int (BinaryPrimitives.ReadUInt16LittleEndian(fmt.Slice 2))
    let rate = BinaryPrimitives.ReadUInt32LittleEndian(fmt.Slice 4)
    let blockAlign = int (BinaryPrimitives.ReadUInt16LittleEndian(fmt.Slice 12))
    let bits = int (BinaryPrimitives.ReadUInt16LittleEndian(fmt.Slice 14))
    let extensible = tag0 = 0xFFFE
    let tag, validBits =
        if extensible then
            if fmt.Length < 40 then invalid name $"WAVE_FORMAT_EXTENSIBLE fmt chunk of {fmt.Length} bytes is too short (needs 40)"
            let sub = fmt.Slice(24, 16)
            if not (sub.Slice(2).SequenceEqual(ReadOnlySpan<byte>(guidTail))) then
                unsupported name "WAVE_FORMAT_EXTENSIBLE sub-format is not a standard KSDATAFORMAT GUID (only PCM and IEEE float are supported)"
            let valid = int (BinaryPrimitives.ReadUInt16LittleEndian(fmt.Slice 18))
            int (BinaryPrimitives.ReadUInt16LittleEndian sub), (if valid = 0 then bits else valid)
        else tag0, bits
    if channels = 0 then invalid name "fmt chunk declares 0 channels"
    if rate = 0u || rate > uint32 Int32.MaxValue then invalid name $"fmt chunk declares sample rate {rate}"
    let encoding =
        match tag with
        | 1 -> Pcm
        | 3 -> Float
        | t -> unsupported name $"WAV format 0x%04X{t} ({formatName t}) is not supported: only PCM and IEEE float"
    if blockAlign = 0 || blockAlign % channels <> 0 then
        invalid name $"fmt chunk block align {blockAlign} is not a multiple of {channels} channels"
    let container = blockAlign / channels
    let ok =
        match encoding with
        | Pcm -> container >= 1 && container <= 4 && bits <= 8 * container && bits > 0
        | Float -> (container = 4 && bits = 32) || (container = 8 && bits = 64)
    if not ok then
        unsupported name $"WAV {encoding} with {bits} bits per sample in {container}-byte containers is not supported"
    if validBits > bits then invalid name $"valid bits {validBits} exceed the {bits} bits per sample"
    { Encoding = encoding; Channels = channels; SampleRate = int rate; ContainerBytes = container
      ValidBits = validBits; Extensible = extensible }

/// Locates the fmt and data chunks; returns the format and the data's offset and length (clipped to the file when the
/// header declares an unknown (streaming) length).
let private parse (name: string) (bytes: byte[]) : Format * int * int =
    let span = ReadOnlySpan<byte>(bytes)
    if bytes.Length < 12 then invalid name $"file of {bytes.Length} bytes is too short to be a WAV file"
    let riff = Text.Encoding.ASCII.GetString(bytes, 0, 4)
    let wave = Text.Encoding.ASCII.GetString(bytes, 8, 4)
    if (riff <> "RIFF" && riff <> "RF64") || wave <> "WAVE" then invalid name "not a RIFF/RF64 WAVE file"
    let mutable pos = 12
    let mutable fmt = None
    let mutable data = None
    let mutable ds64Data = -1L
    while data.IsNone && pos + 8 <= bytes.Length do
        let id = Text.Encoding.ASCII.GetString(bytes, pos, 4)
        let size = int64 (BinaryPrimitives.ReadUInt32LittleEndian(span.Slice(pos + 4)))
        let body = pos + 8
        let available = int64 (bytes.Length - body)
        match id with
        | "ds64" ->
            if size < 16L || size > available then invalid name "truncated ds64 chunk"
            ds64Data <- BinaryPrimitives.ReadInt64LittleEndian(span.Slice(body + 8))
        | "fmt " ->
            if size > available then invalid name $"fmt chunk of {size} bytes runs past the end of the file"
            fmt <- Some(parseFormat name (span.Slice(body, int size)))
        | "data" ->
            let declared = if riff = "RF64" && size = 0xFFFFFFFFL && ds64Data >= 0L then ds64Data else size
            // 0xFFFFFFFF and 0 are what streaming writers (e.g. ffmpeg to a pipe) leave: read to the end of the file.
            let length =
                if declared = 0xFFFFFFFFL || (declared = 0L && available > 0L) then available
                elif declared > available then
                    invalid name $"truncated file: data chunk declares {declared} bytes but only {available} follow (byte {body})"
                else declared
            data <- Some(body, int length)
        | _ -> ()
        if data.IsNone then
            if size > available then invalid name $"'{id}' chunk of {size} bytes runs past the end of the file (byte {pos})"
            pos <- body + int size + int (size &&& 1L)
    match fmt, data with
    | None, _ -> invalid name "no fmt chunk before the data"
    | _, None -> invalid name "no data chunk"
    | Some f, Some(offset, length) -> f, offset, length

/// Reads the format of WAVE bytes without decoding (name labels errors).
let formatOfBytes (name: string) (bytes: byte[]) : Format =
    let f, _, _ = parse name bytes
    f

/// Decodes WAVE bytes (name labels errors) to a Waveform. A data chunk that ends inside a sample frame, a
/// truncated chunk or a malformed header raise InvalidDataException; other encodings (ADPCM, µ-law …) raise
/// NotSupportedException; both messages start with name.
let decodeBytes (name: string) (bytes: byte[]) : Waveform =
    let f, offset, length = parse name bytes
    let frameBytes = f.ContainerBytes * f.Channels
    if length % frameBytes <> 0 then
        invalid name $"truncated file: data chunk of {length} bytes is not a whole number of {frameBytes}-byte sample frames"
    let n = length / frameBytes
    let channels = Array.init f.Channels (fun _ -> Array.zeroCreate<float32> n)
    let span = ReadOnlySpan<byte>(bytes, offset, length)
    let scale = 1.0 / float (1L <<< (8 * f.ContainerBytes - 1))
    for c in 0 .. f.Channels - 1 do
        let out = channels.[c]
        let mutable p = c * f.ContainerBytes
        match f.Encoding, f.ContainerBytes with
        | Pcm, 1 ->
            for i in 0 .. n - 1 do
                out.[i] <- float32 (float (int span.[p] - 128) * scale)
                p <- p + frameBytes
        | Pcm, 2 ->
            for i in 0 .. n - 1 do
                out.[i] <- float32 (float (BinaryPrimitives.ReadInt16LittleEndian(span.Slice p)) * scale)
                p <- p + frameBytes
        | Pcm, 3 ->
            for i in 0 .. n - 1 do
                let v = (int span.[p] <<< 8) ||| (int span.[p + 1] <<< 16) ||| (int span.[p + 2] <<< 24)
                out.[i] <- float32 (float (v >>> 8) * scale)
                p <- p + frameBytes
        | Pcm, _ ->
            for i in 0 .. n - 1 do
                out.[i] <- float32 (float (BinaryPrimitives.ReadInt32LittleEndian(span.Slice p)) * scale)
                p <- p + frameBytes
        | Float, 4 ->
            for i in 0 .. n - 1 do
                out.[i] <- BinaryPrimitives.ReadSingleLittleEndian(span.Slice p)
                p <- p + frameBytes
        | Float, _ ->
            for i in 0 .. n - 1 do
                out.[i] <- float32 (BinaryPrimitives.ReadDoubleLittleEndian(span.Slice p))
                p <- p + frameBytes
    { SampleRate = f.SampleRate; Channels = channels }

/// Decodes a WAVE file (see decodeBytes); a missing file raises FileNotFoundException naming it.
let read (path: string) : Waveform = decodeBytes path (readAllBytes path)
