/// MP3 (MPEG-1/2/2.5 audio, layers I–III) decoded in-process with NLayer, a maintained managed decoder: Common Voice
/// is MP3, and a corpus of it should not need one ffmpeg process per clip. The samples are aligned as ffmpeg's
/// (gapless trimming from the LAME extension of the Info tag), so they equal what openai/whisper decodes.
module MagnetWhisper.Core.Audio.Mp3

open System
open System.IO
open MagnetWhisper.Core.Audio.AudioErrors

/// The length of an ID3v2 tag at `offset` (header, body and optional footer), or 0 when there is none.
let id3v2Length (bytes: byte[]) (offset: int) : int =
    if bytes.Length >= offset + 10 && bytes.[offset] = byte 'I' && bytes.[offset + 1] = byte 'D'
       && bytes.[offset + 2] = byte '3' then
        // The size is a 28-bit "synchsafe" integer: 7 bits per byte.
        let size =
            (int bytes.[offset + 6] <<< 21) ||| (int bytes.[offset + 7] <<< 14) ||| (int bytes.[offset + 8] <<< 7)
            ||| int bytes.[offset + 9]
        10 + size + (if bytes.[offset + 5] &&& 0x10uy <> 0uy then 10 else 0)
    else 0

/// True when the four bytes at `offset` are a plausible MPEG audio frame header: 11 sync bits, a version other than
/// the reserved one, a layer (not 00, which would be AAC's ADTS), a bitrate index other than 15 and a sample rate
/// index other than 3.
let isFrameHeader (bytes: byte[]) (offset: int) : bool =
    bytes.Length >= offset + 4
    && bytes.[offset] = 0xFFuy
    && bytes.[offset + 1] &&& 0xE0uy = 0xE0uy
    && (bytes.[offset + 1] >>> 3) &&& 0x3uy <> 0x1uy
    && (bytes.[offset + 1] >>> 1) &&& 0x3uy <> 0x0uy
    && bytes.[offset + 2] >>> 4 <> 0xFuy
    && (bytes.[offset + 2] >>> 2) &&& 0x3uy <> 0x3uy

/// True for MP3 content: an MPEG audio frame header at the start, or right after an ID3v2 tag.
let looksLikeMp3 (bytes: byte[]) : bool = isFrameHeader bytes (id3v2Length bytes 0)

/// The first frame's Xing/Info tag: a frame that holds no audio but the stream's gapless information.
type private InfoTag =
    { /// Bytes of the tag frame, which is left out of the decoded audio.
      FrameLength: int
      /// Samples the encoder put before the audio and after it (the LAME extension), when a known encoder wrote it.
      Delay: int
      Padding: int }

/// The sample rate a frame header at `offset` states (MPEG-1: 44.1, 48, 32 kHz; MPEG-2 half; MPEG-2.5 a quarter).
let private frameRate (bytes: byte[]) (offset: int) : int =
    let version = (bytes.[offset + 1] >>> 3) &&& 0x3uy // 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
    [| 44100; 48000; 32000 |].[int ((bytes.[offset + 2] >>> 2) &&& 0x3uy)] / (match version with 3uy -> 1 | 2uy -> 2 | _ -> 4)

/// True unless the stream is known to decode differently here than with ffmpeg: NLayer's 8 kHz (MPEG-2.5) output
/// departs from ffmpeg's in frames with short blocks (by up to 0.4 of full scale on speech, and ffmpeg's is the
/// closer to the encoder's input), so callers with ffmpeg prefer it there. Every other rate agrees within 1e-5.
let decodesLikeFfmpeg (bytes: byte[]) : bool =
    let first = id3v2Length bytes 0
    not (isFrameHeader bytes first && frameRate bytes first = 8000)

/// Layer III bitrates in kbit/s by index: MPEG-1, then MPEG-2 and 2.5.
let private bitratesV1 = [| 0; 32; 40; 48; 56; 64; 80; 96; 112; 128; 160; 192; 224; 256; 320 |]
let private bitratesV2 = [| 0; 8; 16; 24; 32; 40; 48; 56; 64; 80; 96; 112; 128; 144; 160 |]

/// Reads the Xing/Info tag of a Layer III frame at `offset`, if it is one (ISO 11172-3 header; tag layout of LAME's
/// "Info tag" specification: flags, optional frame count, byte count, 100-byte TOC and quality, then the LAME
/// extension with the 12-bit encoder delay and padding at its bytes 21–23).
let private infoTag (bytes: byte[]) (offset: int) : InfoTag option =
    if not (isFrameHeader bytes offset) then None
    else
        let mpeg1 = (bytes.[offset + 1] >>> 3) &&& 0x3uy = 3uy
        let layer = (bytes.[offset + 1] >>> 1) &&& 0x3uy // 1 = Layer III
        let bitrateIndex = int (bytes.[offset + 2] >>> 4)
        let padded = int ((bytes.[offset + 2] >>> 1) &&& 0x1uy)
        let mono = bytes.[offset + 3] >>> 6 = 0x3uy
        if layer <> 1uy || bitrateIndex = 0 then None
        else
            let rate = frameRate bytes offset
            let kbps = (if mpeg1 then bitratesV1 else bitratesV2).[bitrateIndex]
            let frameLength = (if mpeg1 then 144000 else 72000) * kbps / rate + padded
            // The tag follows the 4-byte header and the side information.
            let sideInfo = match mpeg1, mono with | true, false -> 32 | true, true -> 17 | false, false -> 17 | false, true -> 9
            let tag = offset + 4 + sideInfo
            let ascii (at: int) (text: string) =
                bytes.Length >= at + text.Length && Text.Encoding.ASCII.GetString(bytes, at, text.Length) = text
            if not (ascii tag "Xing" || ascii tag "Info") || bytes.Length < tag + 8 then None
            else
                let flags = int bytes.[tag + 7]
                let extension =
                    tag + 8 + (if flags &&& 1 <> 0 then 4 else 0) + (if flags &&& 2 <> 0 then 4 else 0)
                    + (if flags &&& 4 <> 0 then 100 else 0) + (if flags &&& 8 <> 0 then 4 else 0)
                // ffmpeg trusts the delays of these encoders only; so does this decoder, to decode as ffmpeg does.
                let known = [ "LAME"; "Lavf"; "Lavc" ] |> List.exists (ascii extension)
                let delay, padding =
                    if known && bytes.Length >= extension + 24 then
                        (int bytes.[extension + 21] <<< 4) ||| (int bytes.[extension + 22] >>> 4),
                        ((int bytes.[extension + 22] &&& 0x0F) <<< 8) ||| int bytes.[extension + 23]
                    else 0, 0
                Some { FrameLength = frameLength; Delay = delay; Padding = padding }

/// The delay of the MPEG Layer III synthesis (hybrid filter bank) in samples, which comes on top of the encoder's
/// delay: ffmpeg (and so openai/whisper's audio) starts the audio after both, and ends it that much later.
let decoderDelay = 529

/// Decodes MP3 bytes (`name` labels errors) to a Waveform at the stream's rate and channel count, aligned as
/// ffmpeg aligns it: a Xing/Info tag frame is not audio, and when the tag's LAME extension states the encoder delay
/// and padding, the first delay + 529 samples are dropped and the stream is cut to its stated length. Data NLayer
/// cannot read, or that holds no audio frame, raises InvalidDataException naming the source.
let decodeBytes (name: string) (bytes: byte[]) : Waveform =
    let first = id3v2Length bytes 0
    let tag = infoTag bytes first
    // NLayer gets the frames after the tag, so it trims nothing itself (it would, differently, for LAME's own tag).
    let start = first + (tag |> Option.map (fun t -> t.FrameLength) |> Option.defaultValue 0)
    let interleaved, channels, rate =
        try
            use file = new NLayer.MpegFile(new MemoryStream(bytes, min start bytes.Length, max 0 (bytes.Length - start), false))
            let channels = file.Channels
            let buffer = Array.zeroCreate<float32> (8192 * max 1 channels)
            let all = ResizeArray<float32>()
            let mutable read = file.ReadSamples(buffer, 0, buffer.Length)
            while read > 0 do
                all.AddRange(ArraySegment(buffer, 0, read))
                read <- file.ReadSamples(buffer, 0, buffer.Length)
            all.ToArray(), channels, file.SampleRate
        with
        | :? InvalidDataException | :? EndOfStreamException | :? InvalidOperationException
        | :? IndexOutOfRangeException | :? ArgumentException as e -> invalid name $"not a readable MP3 stream ({e.Message})"
    if channels < 1 || rate <= 0 || interleaved.Length = 0 then invalid name "holds no MPEG audio frames"
    let decoded = interleaved.Length / channels
    let skip, length =
        match tag with
        | Some t when t.Delay > 0 || t.Padding > 0 ->
            let skip = min decoded (t.Delay + decoderDelay)
            skip, max 0 (min (decoded - skip) (decoded - t.Delay - t.Padding))
        | _ -> 0, decoded
    if length = 0 then invalid name "holds no audio after the encoder's delay and padding"
    { SampleRate = rate
      Channels = Array.init channels (fun c -> Array.init length (fun i -> interleaved.[(skip + i) * channels + c])) }
