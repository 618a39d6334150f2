/// A FLAC decoder (RFC 9639), written because .NET has no managed one: STREAMINFO, frame headers with UTF-8 coded
/// frame/sample numbers, CRC-8 and CRC-16 checks, CONSTANT, VERBATIM, FIXED (orders 0–4) and LPC (orders 1–32)
/// subframes, wasted bits, Rice and Rice2 partitioned residuals with escape codes, independent and left/side,
/// right/side, mid/side stereo, 4–32 bits per sample, fixed and variable block sizes, the STREAMINFO MD5 signature.
/// Every inconsistency raises InvalidDataException naming the file, the problem and the byte offset.
module MagnetWhisper.Core.Audio.Flac

open System
open System.Numerics
open System.Security.Cryptography
open MagnetWhisper.Core.Audio.AudioErrors

/// The STREAMINFO metadata block.
type StreamInfo =
    { /// Smallest block size in samples (the last block may be shorter).
      MinBlockSize: int
      /// Largest block size in samples.
      MaxBlockSize: int
      /// Smallest frame in bytes; 0 means unknown.
      MinFrameSize: int
      /// Largest frame in bytes; 0 means unknown.
      MaxFrameSize: int
      /// Samples per second.
      SampleRate: int
      /// 1–8 channels.
      Channels: int
      /// 4–32 bits per sample.
      BitsPerSample: int
      /// Samples per channel; 0 means unknown.
      TotalSamples: int64
      /// MD5 of the decoded samples; all zero when the encoder did not compute it.
      Md5: byte[] }

/// How often each coding tool occurred while decoding: lets callers (and tests) see what a stream exercised.
type DecodeStats =
    { /// Frames decoded.
      Frames: int
      /// True for a variable-block-size stream (frames carry sample numbers).
      VariableBlockSize: bool
      /// Frames per channel assignment: independent, left/side, right/side, mid/side.
      Independent: int
      LeftSide: int
      RightSide: int
      MidSide: int
      /// CONSTANT subframes.
      Constant: int
      /// VERBATIM subframes.
      Verbatim: int
      /// Subframes per FIXED order 0–4.
      Fixed: int[]
      /// LPC subframes.
      Lpc: int
      /// Highest LPC order seen.
      MaxLpcOrder: int
      /// Subframes with wasted bits.
      WastedBits: int
      /// Residual partitions with 4-bit Rice parameters.
      RicePartitions: int
      /// Residual partitions with 5-bit (Rice2) parameters.
      Rice2Partitions: int
      /// Partitions coded with the escape code (raw binary samples).
      EscapedPartitions: int
      /// Block size codes (1–15) seen in frame headers.
      BlockSizeCodes: Set<int>
      /// Sample rate codes (0–14) seen in frame headers.
      SampleRateCodes: Set<int>
      /// Sample size codes (0–7) seen in frame headers.
      SampleSizeCodes: Set<int>
      /// Longest UTF-8 coded frame/sample number, in bytes.
      MaxNumberBytes: int
      /// True when the STREAMINFO MD5 signature was present and matched.
      Md5Checked: bool }

/// A decoded FLAC stream: integer samples per channel, as the encoder received them.
type FlacAudio =
    { Info: StreamInfo
      /// Channels × samples.
      Samples: int32[][]
      Stats: DecodeStats }

// ---------------------------------------------------------------------------------------------------------------
// CRCs

let private crc8Table =
    Array.init 256 (fun i ->
        let mutable c = byte i
        for _ in 0 .. 7 do
            c <- if c &&& 0x80uy <> 0uy then (c <<< 1) ^^^ 0x07uy else c <<< 1
        c)

let private crc16Table =
    Array.init 256 (fun i ->
        let mutable c = uint16 (i <<< 8)
        for _ in 0 .. 7 do
            c <- if c &&& 0x8000us <> 0us then (c <<< 1) ^^^ 0x8005us else c <<< 1
        c)

/// CRC-8 (polynomial x^8+x^2+x+1, initial 0) of bytes[start .. stop-1], as in the frame header.
let internal crc8 (bytes: byte[]) (start: int) (stop: int) : byte =
    let mutable c = 0uy
    for i in start .. stop - 1 do
        c <- crc8Table.[int (c ^^^ bytes.[i])]
    c

/// CRC-16 (polynomial x^16+x^15+x^2+1, initial 0) of bytes[start .. stop-1], as at the end of a frame.
let internal crc16 (bytes: byte[]) (start: int) (stop: int) : uint16 =
    let mutable c = 0us
    for i in start .. stop - 1 do
        c <- (c <<< 8) ^^^ crc16Table.[int ((c >>> 8) ^^^ uint16 bytes.[i])]
    c

// ---------------------------------------------------------------------------------------------------------------
// Bit reader

/// Raised by the bit reader when the data ends; turned into an InvalidDataException with context by the decoder.
exception private EndOfData

/// MSB-first bit reader over a byte array with a 64-bit cache.
type private BitReader(data: byte[], start: int) =
    let mutable next = start // next byte to load into the cache
    let mutable cache = 0UL // valid bits left-aligned
    let mutable bits = 0

    member inline private _.Refill() =
        while bits <= 56 && next < data.Length do
            cache <- cache ||| (uint64 data.[next] <<< (56 - bits))
            bits <- bits + 8
            next <- next + 1

    /// Byte offset of the next unread bit (rounded down).
    member _.BytePosition = next - bits / 8

    /// Skips to the next byte boundary.
    member _.AlignToByte() =
        let drop = bits % 8
        cache <- cache <<< drop
        bits <- bits - drop

    /// Reads n ≤ 32 bits as an unsigned number.
    member r.Bits(n: int) : uint32 =
        if n = 0 then 0u
        else
            if bits < n then
                r.Refill()
                if bits < n then raise EndOfData
            let v = cache >>> (64 - n)
            cache <- cache <<< n
            bits <- bits - n
            uint32 v

    /// Reads n ≤ 64 bits as an unsigned number.
    member r.Bits64(n: int) : uint64 =
        if n <= 32 then uint64 (r.Bits n)
        else
            let hi = uint64 (r.Bits(n - 32))
            (hi <<< 32) ||| uint64 (r.Bits 32)

    /// Reads n ≤ 33 bits as a two's-complement signed number.
    member r.Signed(n: int) : int64 =
        if n = 0 then 0L
        else
            let v = r.Bits64 n
            (int64 (v <<< (64 - n))) >>> (64 - n)

    /// Counts zero bits up to (and consumes) the next one bit.
    member r.Unary() : uint32 =
        let mutable count = 0u
        let mutable fin = false
        while not fin do
            if bits = 0 then
                r.Refill()
                if bits = 0 then raise EndOfData
            let lz = BitOperations.LeadingZeroCount cache
            if lz < bits then
                count <- count + uint32 lz
                cache <- (cache <<< lz) <<< 1 // in two steps: lz + 1 may be 64, and .NET takes shift counts modulo 64
                bits <- bits - lz - 1
                fin <- true
            else
                count <- count + uint32 bits
                cache <- 0UL
                bits <- 0
                if count > 0x7FFFFFFFu then raise EndOfData
        count

// ---------------------------------------------------------------------------------------------------------------
// Stream decoding

type private Counters() =
    member val Frames = 0 with get, set
    member val Variable = false with get, set
    member val Modes = Array.zeroCreate<int> 4
    member val Constant = 0 with get, set
    member val Verbatim = 0 with get, set
    member val Fixed = Array.zeroCreate<int> 5
    member val Lpc = 0 with get, set
    member val MaxLpcOrder = 0 with get, set
    member val Wasted = 0 with get, set
    member val Rice = 0 with get, set
    member val Rice2 = 0 with get, set
    member val Escaped = 0 with get, set
    member val BlockCodes = Set.empty<int> with get, set
    member val RateCodes = Set.empty<int> with get, set
    member val SizeCodes = Set.empty<int> with get, set
    member val NumberBytes = 0 with get, set

let private fixedCoefficients =
    [| [||]; [| 1L |]; [| 2L; -1L |]; [| 3L; -3L; 1L |]; [| 4L; -6L; 4L; -1L |] |]

/// Parses the metadata blocks; returns STREAMINFO and the offset of the first frame.
let private readMetadata (name: string) (bytes: byte[]) : StreamInfo * int =
    let mutable pos = 0
    // An ID3v2 tag may precede the stream.
    if bytes.Length >= 10 && bytes.[0] = byte 'I' && bytes.[1] = byte 'D' && bytes.[2] = byte '3' then
        let size = (int bytes.[6] <<< 21) ||| (int bytes.[7] <<< 14) ||| (int bytes.[8] <<< 7) ||| int bytes.[9]
        let footer = if bytes.[5] &&& 0x10uy <> 0uy then 10 else 0
        pos <- 10 + size + footer
    if bytes.Length < pos + 4 || Text.Encoding.ASCII.GetString(bytes, pos, 4) <> "fLaC" then
        invalid name "not a FLAC file (no 'fLaC' marker)"
    pos <- pos + 4
    let mutable info = None
    let mutable last = false
    while not last do
        if pos + 4 > bytes.Length then invalid name $"truncated metadata block header at byte {pos}"
        let header = bytes.[pos]
        last <- header &&& 0x80uy <> 0uy
        let kind = int (header &&& 0x7Fuy)
        let length = (int bytes.[pos + 1] <<< 16) ||| (int bytes.[pos + 2] <<< 8) ||| int bytes.[pos + 3]
        let body = pos + 4
        if body + length > bytes.Length then
            invalid name $"truncated file: metadata block (type {kind}) of {length} bytes at byte {pos} runs past the end"
        if kind = 127 then invalid name $"invalid metadata block type 127 at byte {pos}"
        if info.IsNone && kind <> 0 then invalid name $"the first metadata block (byte {pos}) is type {kind}, not STREAMINFO"
        if kind = 0 then
            if info.IsSome then invalid name $"second STREAMINFO block at byte {pos}"
            if length < 34 then invalid name $"STREAMINFO block of {length} bytes is too short (needs 34)"
            let r = BitReader(bytes, body)
            let minBlock = int (r.Bits 16)
            let maxBlock = int (r.Bits 16)
            let minFrame = int (r.Bits 24)
            let maxFrame = int (r.Bits 24)
            let rate = int (r.Bits 20)
            let channels = int (r.Bits 3) + 1
            let bps = int (r.Bits 5) + 1
            let total = int64 (r.Bits64 36)
            let md5 = bytes.[body + 18 .. body + 33]
            if maxBlock < minBlock then invalid name $"STREAMINFO maximum block size {maxBlock} is below the minimum {minBlock}"
            if rate = 0 then invalid name "STREAMINFO sample rate is 0"
            if bps < 4 then invalid name $"STREAMINFO declares {bps} bits per sample (minimum 4)"
            info <-
                Some
                    { MinBlockSize = minBlock; MaxBlockSize = maxBlock; MinFrameSize = minFrame; MaxFrameSize = maxFrame
                      SampleRate = rate; Channels = channels; BitsPerSample = bps; TotalSamples = total; Md5 = md5 }
        pos <- body + length
    match info with
    | Some i -> i, pos
    | None -> invalid name "no STREAMINFO block"

/// The decoder state for one stream.
type private Decoder(name: string, bytes: byte[], info: StreamInfo) =
    let stats = Counters()
    let channels = info.Channels
    let out = Array.init channels (fun _ -> ResizeArray<int32>(if info.TotalSamples > 0L && info.TotalSamples < (1L <<< 30) then int info.TotalSamples else 4096))
    let mutable buffers = Array.init channels (fun _ -> Array.zeroCreate<int64> (max 16 info.MaxBlockSize))
    let md5 = if Array.exists ((<>) 0uy) info.Md5 then Some(IncrementalHash.CreateHash HashAlgorithmName.MD5) else None
    let mutable decoded = 0L
    let mutable fixedBlockSize = 0

    let fail (problem: string) : 'a = invalid name problem

    /// Decodes the partitioned residual of a FIXED/LPC subframe into buf[order .. blockSize-1].
    member private _.Residual(r: BitReader, buf: int64[], blockSize: int, order: int) =
        let method = int (r.Bits 2)
        if method > 1 then fail $"reserved residual coding method {method} at byte {r.BytePosition}"
        let paramBits, escape = if method = 0 then 4, 15u else 5, 31u
        let partitionOrder = int (r.Bits 4)
        let partitions = 1 <<< partitionOrder
        if blockSize % partitions <> 0 || (blockSize >>> partitionOrder) < order then
            fail $"residual partition order {partitionOrder} does not fit block size {blockSize} and predictor order {order} at byte {r.BytePosition}"
        let perPartition = blockSize >>> partitionOrder
        let mutable i = order
        for p in 0 .. partitions - 1 do
            let count = if p = 0 then perPartition - order else perPartition
            let k = r.Bits paramBits
            if method = 0 then stats.Rice <- stats.Rice + 1 else stats.Rice2 <- stats.Rice2 + 1
            if k = escape then
                stats.Escaped <- stats.Escaped + 1
                let n = int (r.Bits 5)
                for _ in 1 .. count do
                    buf.[i] <- r.Signed n
                    i <- i + 1
            else
                let k = int k
                for _ in 1 .. count do
                    let q = uint64 (r.Unary())
                    let u = (q <<< k) ||| uint64 (r.Bits k)
                    buf.[i] <- int64 (u >>> 1) ^^^ -(int64 (u &&& 1UL))
                    i <- i + 1

    /// Decodes one subframe of the given sample size into buf[0 .. blockSize-1].
    member private d.Subframe(r: BitReader, buf: int64[], blockSize: int, bps: int) =
        let at = r.BytePosition
        if r.Bits 1 <> 0u then fail $"subframe padding bit is set at byte {at}"
        let kind = int (r.Bits 6)
        let wasted = if r.Bits 1 = 1u then int (r.Unary()) + 1 else 0
        if wasted > 0 then stats.Wasted <- stats.Wasted + 1
        if wasted >= bps then fail $"subframe at byte {at} has {wasted} wasted bits of {bps}"
        let bps = bps - wasted
        let warmUp (order: int) =
            if order > blockSize then fail $"predictor order {order} exceeds the block size {blockSize} at byte {at}"
            for i in 0 .. order - 1 do
                buf.[i] <- r.Signed bps
        // Adds the prediction Σ_j coefs[j]·s[i-1-j] >> shift to each residual, in order.
        let restore (order: int) (coefs: int64[]) (shift: int) =
            match order with
            | 0 -> ()
            | 1 when shift = 0 && coefs.[0] = 1L ->
                for i in 1 .. blockSize - 1 do
                    buf.[i] <- buf.[i] + buf.[i - 1]
            | _ ->
                for i in order .. blockSize - 1 do
                    let mutable s = 0L
                    for j in 0 .. order - 1 do
                        s <- s + coefs.[j] * buf.[i - 1 - j]
                    buf.[i] <- buf.[i] + (s >>> shift)
        match kind with
        | 0 ->
            stats.Constant <- stats.Constant + 1
            let v = r.Signed bps
            Array.Fill(buf, v, 0, blockSize)
        | 1 ->
            stats.Verbatim <- stats.Verbatim + 1
            for i in 0 .. blockSize - 1 do
                buf.[i] <- r.Signed bps
        | k when k >= 8 && k <= 12 ->
            let order = k - 8
            stats.Fixed.[order] <- stats.Fixed.[order] + 1
            warmUp order
            d.Residual(r, buf, blockSize, order)
            restore order fixedCoefficients.[order] 0
        | k when k >= 32 ->
            let order = k - 31
            stats.Lpc <- stats.Lpc + 1
            stats.MaxLpcOrder <- max stats.MaxLpcOrder order
            warmUp order
            let precision = int (r.Bits 4) + 1
            if precision = 16 then fail $"invalid LPC coefficient precision code 15 at byte {at}"
            let shift = int (r.Signed 5)
            if shift < 0 then fail $"negative LPC shift {shift} at byte {at}"
            let coefs = Array.init order (fun _ -> r.Signed precision)
            d.Residual(r, buf, blockSize, order)
            restore order coefs shift
        | k -> fail $"reserved subframe type {k} at byte {at}"
        if wasted > 0 then
            for i in 0 .. blockSize - 1 do
                buf.[i] <- buf.[i] <<< wasted

    /// Decodes the frame starting at byte pos; returns the offset after it.
    member d.Frame(pos: int) : int =
        let r = BitReader(bytes, pos)
        let frameNo = stats.Frames
        let where = $"frame {frameNo} (byte {pos})"
        try
            let sync = r.Bits 15
            if sync <> 0x7FFCu then fail $"lost frame sync at byte {pos} ({where})"
            let variable = r.Bits 1 = 1u
            let bsCode = int (r.Bits 4)
            let rateCode = int (r.Bits 4)
            let chCode = int (r.Bits 4)
            let sizeCode = int (r.Bits 3)
            if r.Bits 1 <> 0u then fail $"reserved frame header bit set in {where}"
            // UTF-8-style coded frame number (fixed block size) or sample number (variable block size).
            let first = r.Bits 8
            let mutable number = 0UL
            let mutable numberBytes = 1
            if first &&& 0x80u = 0u then number <- uint64 first
            else
                let ones = BitOperations.LeadingZeroCount(~~~(first <<< 24))
                if ones < 2 || ones > 7 then fail $"invalid UTF-8 coded number in {where}"
                number <- uint64 (first &&& (0x7Fu >>> ones))
                for _ in 2 .. ones do
                    let b = r.Bits 8
                    if b &&& 0xC0u <> 0x80u then fail $"invalid UTF-8 coded number in {where}"
                    number <- (number <<< 6) ||| uint64 (b &&& 0x3Fu)
                numberBytes <- ones
            let blockSize =
                match bsCode with
                | 0 -> fail $"reserved block size code in {where}"
                | 1 -> 192
                | c when c <= 5 -> 576 <<< (c - 2)
                | 6 -> int (r.Bits 8) + 1
                | 7 -> int (r.Bits 16) + 1
                | c -> 256 <<< (c - 8)
            let rate =
                match rateCode with
                | 0 -> info.SampleRate
                | 1 -> 88200
                | 2 -> 176400
                | 3 -> 192000
                | 4 -> 8000
                | 5 -> 16000
                | 6 -> 22050
                | 7 -> 24000
                | 8 -> 32000
                | 9 -> 44100
                | 10 -> 48000
                | 11 -> 96000
                | 12 -> int (r.Bits 8) * 1000
                | 13 -> int (r.Bits 16)
                | 14 -> int (r.Bits 16) * 10
                | _ -> fail $"invalid sample rate code 15 in {where}"
            let bps =
                match sizeCode with
                | 0 -> info.BitsPerSample
                | 1 -> 8
                | 2 -> 12
                | 4 -> 16
                | 5 -> 20
                | 6 -> 24
                | 7 -> 32
                | _ -> fail $"reserved sample size code 3 in {where}"
            let frameChannels = if chCode < 8 then chCode + 1 elif chCode <= 10 then 2 else fail $"reserved channel assignment {chCode} in {where}"
            let headerEnd = r.BytePosition
            let crc = byte (r.Bits 8)
            let expectedCrc = crc8 bytes pos headerEnd
            if crc <> expectedCrc then fail $"bad frame header CRC-8 in {where}: stored 0x%02X{crc}, computed 0x%02X{expectedCrc}"
            if frameChannels <> channels then fail $"{where} has {frameChannels} channels, STREAMINFO {channels}"
            if rate <> info.SampleRate then fail $"{where} has sample rate {rate}, STREAMINFO {info.SampleRate}"
            if bps <> info.BitsPerSample then fail $"{where} has {bps} bits per sample, STREAMINFO {info.BitsPerSample}"
            // The frame's position in the stream must follow the frames decoded so far.
            if frameNo = 0 && not variable then fixedBlockSize <- blockSize
            let startSample = if variable then number else number * uint64 fixedBlockSize
            if startSample <> uint64 decoded then
                fail $"{where} starts at sample {startSample} but {decoded} samples precede it (missing or reordered frames)"
            stats.Variable <- stats.Variable || variable
            stats.BlockCodes <- stats.BlockCodes.Add bsCode
            stats.RateCodes <- stats.RateCodes.Add rateCode
            stats.SizeCodes <- stats.SizeCodes.Add sizeCode
            stats.NumberBytes <- max stats.NumberBytes numberBytes
            if buffers.[0].Length < blockSize then buffers <- Array.init channels (fun _ -> Array.zeroCreate<int64> blockSize)
            for c in 0 .. channels - 1 do
                let side = (chCode = 8 && c = 1) || (chCode = 9 && c = 0) || (chCode = 10 && c = 1)
                d.Subframe(r, buffers.[c], blockSize, (if side then bps + 1 else bps))
            let mode = if chCode < 8 then 0 else chCode - 7
            stats.Modes.[mode] <- stats.Modes.[mode] + 1
            match chCode with
            | 8 ->
                let left, side = buffers.[0], buffers.[1]
                for i in 0 .. blockSize - 1 do
                    side.[i] <- left.[i] - side.[i]
            | 9 ->
                let side, right = buffers.[0], buffers.[1]
                for i in 0 .. blockSize - 1 do
                    side.[i] <- side.[i] + right.[i]
            | 10 ->
                let mid, side = buffers.[0], buffers.[1]
                for i in 0 .. blockSize - 1 do
                    let s = side.[i]
                    let m = (mid.[i] <<< 1) ||| (s &&& 1L)
                    mid.[i] <- (m + s) >>> 1
                    side.[i] <- (m - s) >>> 1
            | _ -> ()
            r.AlignToByte()
            let footerAt = r.BytePosition
            let stored = uint16 (r.Bits 16)
            let computed = crc16 bytes pos footerAt
            if stored <> computed then
                fail $"bad FLAC frame CRC-16 at byte {footerAt} ({where}): stored 0x%04X{stored}, computed 0x%04X{computed}"
            // Keep only what STREAMINFO says exists (a final frame may not be longer, but be lenient).
            let keep =
                if info.TotalSamples > 0L then int (min (int64 blockSize) (max 0L (info.TotalSamples - decoded))) else blockSize
            let limit = if bps = 32 then Int64.MaxValue else 1L <<< (bps - 1)
            for c in 0 .. channels - 1 do
                let b = buffers.[c]
                let o = out.[c]
                for i in 0 .. keep - 1 do
                    let v = b.[i]
                    if v >= limit || v < -limit || v > int64 Int32.MaxValue || v < int64 Int32.MinValue then
                        fail $"decoded sample {v} does not fit {bps} bits in {where}"
                    o.Add(int32 v)
            match md5 with
            | Some h ->
                let width = (bps + 7) / 8
                let chunk = Array.zeroCreate<byte> (keep * channels * width)
                let mutable p = 0
                for i in 0 .. keep - 1 do
                    for c in 0 .. channels - 1 do
                        let v = buffers.[c].[i]
                        for k in 0 .. width - 1 do
                            chunk.[p] <- byte (v >>> (8 * k))
                            p <- p + 1
                h.AppendData chunk
            | None -> ()
            decoded <- decoded + int64 keep
            stats.Frames <- stats.Frames + 1
            r.BytePosition
        with EndOfData -> fail $"truncated file: the data ends inside {where}"

    /// Decodes every frame from the given offset.
    member d.Run(start: int) : FlacAudio =
        let mutable pos = start
        let mutable fin = false
        while not fin do
            let complete = info.TotalSamples > 0L && decoded >= info.TotalSamples
            if pos >= bytes.Length then fin <- true
            elif complete then fin <- true // trailing bytes after the last frame (e.g. an ID3v1 tag) are ignored
            elif info.TotalSamples = 0L && bytes.Length - pos = 128 && bytes.[pos] = byte 'T' && bytes.[pos + 1] = byte 'A'
                 && bytes.[pos + 2] = byte 'G' then fin <- true
            else pos <- d.Frame pos
        if info.TotalSamples > 0L && decoded < info.TotalSamples then
            fail $"truncated file: {decoded} of {info.TotalSamples} samples decoded before the data ends (byte {bytes.Length})"
        let checkedMd5 =
            match md5 with
            | Some h ->
                let digest = h.GetHashAndReset()
                if digest <> info.Md5 then
                    fail "MD5 signature mismatch: the decoded samples differ from what the encoder recorded"
                true
            | None -> false
        let s = stats
        { Info = info
          Samples = out |> Array.map (fun o -> o.ToArray())
          Stats =
            { Frames = s.Frames; VariableBlockSize = s.Variable; Independent = s.Modes.[0]; LeftSide = s.Modes.[1]
              RightSide = s.Modes.[2]; MidSide = s.Modes.[3]; Constant = s.Constant; Verbatim = s.Verbatim
              Fixed = Array.copy s.Fixed; Lpc = s.Lpc; MaxLpcOrder = s.MaxLpcOrder; WastedBits = s.Wasted
              RicePartitions = s.Rice; Rice2Partitions = s.Rice2; EscapedPartitions = s.Escaped
              BlockSizeCodes = s.BlockCodes; SampleRateCodes = s.RateCodes; SampleSizeCodes = s.SizeCodes
              MaxNumberBytes = s.NumberBytes; Md5Checked = checkedMd5 } }

/// Decodes FLAC bytes (name labels errors) to integer samples. Corrupt or truncated data raises
/// InvalidDataException("name: problem at byte N"); the MD5 signature is verified when present.
let decodeBytes (name: string) (bytes: byte[]) : FlacAudio =
    let info, start = readMetadata name bytes
    Decoder(name, bytes, info).Run start

/// Decodes a FLAC file to integer samples (see decodeBytes); a missing file raises FileNotFoundException.
let decodeFile (path: string) : FlacAudio = decodeBytes path (readAllBytes path)

/// Scales integer samples by 1/2^(bits−1) to a Waveform (exact in float32 up to 24 bits).
let toWaveform (audio: FlacAudio) : Waveform =
    let scale = 1.0 / float (1L <<< (audio.Info.BitsPerSample - 1))
    { SampleRate = audio.Info.SampleRate
      Channels = audio.Samples |> Array.map (Array.map (fun v -> float32 (float v * scale))) }

/// Decodes a FLAC file to a Waveform.
let read (path: string) : Waveform = decodeFile path |> toWaveform
