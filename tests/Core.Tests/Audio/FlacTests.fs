/// FLAC decoding, bit-exact against the signals the tests generate, the `flac` encoder's output of them, the
/// reference decoder `flac -d` (and ffmpeg) on jfk.flac and on streams written here to exercise every coding tool.
module MagnetWhisper.Tests.Audio.FlacTests

open System
open System.IO
open Expecto
open FsCheck
open FsCheck.FSharp
open MagnetWhisper.Core.Audio
open MagnetWhisper.Tests
open MagnetWhisper.Tests.Audio.Tools

// ---------------------------------------------------------------------------------------------------------------
// A small FLAC writer for the tests: it forces each coding tool (subframe type, stereo mode, Rice/Rice2, escapes,
// wasted bits, header codes) regardless of efficiency. Its output is validated by the reference decoder `flac -d`,
// so it is an independent check of the product's decoder, not a mirror of it.

type private BitWriter() =
    let bytes = ResizeArray<byte>()
    let mutable cur = 0
    let mutable used = 0
    member _.Bit(b: bool) =
        cur <- (cur <<< 1) ||| (if b then 1 else 0)
        used <- used + 1
        if used = 8 then
            bytes.Add(byte cur)
            cur <- 0
            used <- 0
    member w.Bits(n: int, v: uint64) =
        for i in n - 1 .. -1 .. 0 do
            w.Bit((v >>> i) &&& 1UL = 1UL)
    member w.Signed(n: int, v: int64) =
        let lo = -(1L <<< (n - 1))
        let hi = (1L <<< (n - 1)) - 1L
        if v < lo || v > hi then failwithf "test writer: %d does not fit %d signed bits" v n
        w.Bits(n, uint64 v)
    member w.Unary(q: uint64) =
        for _ in 1UL .. q do
            w.Bit false
        w.Bit true
    member w.Align() =
        while used <> 0 do
            w.Bit false
    member _.Length = bytes.Count
    member _.ToArray() = bytes.ToArray()
    /// The bytes written since `start`.
    member _.Since(start: int) = bytes.GetRange(start, bytes.Count - start).ToArray()

/// Bitwise CRCs (deliberately not table-driven like the product's).
let private crcBits (width: int) (poly: int) (data: byte[]) (start: int) (stop: int) =
    let mask = (1 <<< width) - 1
    let mutable c = 0
    for i in start .. stop - 1 do
        c <- c ^^^ (int data.[i] <<< (width - 8))
        for _ in 1 .. 8 do
            c <- if c &&& (1 <<< (width - 1)) <> 0 then ((c <<< 1) ^^^ poly) &&& mask else (c <<< 1) &&& mask
    c

type private Kind =
    | Constant
    | Verbatim
    | Fixed of order: int
    | Lpc of order: int * precision: int * shift: int

type private FrameSpec =
    { Signal: int64[][]
      /// Channel assignment: below 8 independent (coded as channels − 1), 8 left/side, 9 right/side, 10 mid/side.
      Mode: int
      Kind: Kind
      Rice2: bool
      PartitionOrder: int
      Escape: bool
      Wasted: bool
      ExplicitBlockSize: bool }

type private StreamSpec =
    { Rate: int
      Bps: int
      Channels: int
      RateCode: int
      SizeFromStreamInfo: bool
      Variable: bool
      Frames: FrameSpec list }

let private bitsFor (v: int64) = if v >= 0L then 65 - Numerics.BitOperations.LeadingZeroCount(uint64 v) else 65 - Numerics.BitOperations.LeadingZeroCount(uint64 (~~~v))

let private writeResidual (w: BitWriter) (f: FrameSpec) (residual: int64[]) (n: int) (order: int) =
    w.Bits(2, (if f.Rice2 then 1UL else 0UL))
    let mutable po = f.PartitionOrder
    while po > 0 && (n % (1 <<< po) <> 0 || (n >>> po) < order) do
        po <- po - 1
    w.Bits(4, uint64 po)
    let per = n >>> po
    let mutable i = 0
    for p in 0 .. (1 <<< po) - 1 do
        let count = if p = 0 then per - order else per
        let values = residual.[i .. i + count - 1]
        i <- i + count
        let need = if values.Length = 0 then 0 elif Array.forall ((=) 0L) values then 0 else values |> Array.map bitsFor |> Array.max
        let escape = f.Escape && (p % 2 = 1 || need = 0) && need <= 31
        if escape then
            w.Bits((if f.Rice2 then 5 else 4), (if f.Rice2 then 31UL else 15UL))
            w.Bits(5, uint64 need)
            for v in values do
                if need > 0 then w.Signed(need, v)
        else
            let zig (v: int64) = uint64 ((v <<< 1) ^^^ (v >>> 63))
            let mean = if values.Length = 0 then 0.0 else values |> Array.averageBy (zig >> float)
            let mutable k = 0
            while float (1UL <<< (k + 1)) <= mean do
                k <- k + 1
            let k = min k (if f.Rice2 then 30 else 14)
            w.Bits((if f.Rice2 then 5 else 4), uint64 k)
            for v in values do
                let u = zig v
                w.Unary(u >>> k)
                w.Bits(k, u &&& ((1UL <<< k) - 1UL))

let private writeSubframe (w: BitWriter) (f: FrameSpec) (x: int64[]) (bps: int) =
    let n = x.Length
    let wasted =
        if f.Wasted && Array.exists ((<>) 0L) x then
            x |> Array.filter ((<>) 0L) |> Array.map (fun v -> Numerics.BitOperations.TrailingZeroCount v) |> Array.min |> min (bps - 1)
        else 0
    let y = x |> Array.map (fun v -> v >>> wasted)
    let b = bps - wasted
    let typeCode =
        match f.Kind with
        | Constant -> 0
        | Verbatim -> 1
        | Fixed o -> 8 + o
        | Lpc(o, _, _) -> 31 + o
    w.Bit false
    w.Bits(6, uint64 typeCode)
    if wasted > 0 then
        w.Bit true
        w.Unary(uint64 (wasted - 1))
    else w.Bit false
    match f.Kind with
    | Constant ->
        if Array.exists ((<>) y.[0]) y then failwith "test writer: CONSTANT subframe of a non-constant signal"
        w.Signed(b, y.[0])
    | Verbatim -> for v in y do w.Signed(b, v)
    | Fixed order ->
        let c = [| [||]; [| 1L |]; [| 2L; -1L |]; [| 3L; -3L; 1L |]; [| 4L; -6L; 4L; -1L |] |].[order]
        for i in 0 .. order - 1 do
            w.Signed(b, y.[i])
        let r = Array.init (n - order) (fun k -> let i = k + order in y.[i] - Array.sum (Array.init order (fun j -> c.[j] * y.[i - 1 - j])))
        writeResidual w f r n order
    | Lpc(order, precision, shift) ->
        if shift > precision - (if order = 1 then 2 else 3) then failwith "test writer: shift too large for the precision"
        let rng = Random(order * 31 + precision)
        let coefs =
            Array.init order (fun j ->
                match order, j with
                | 1, 0 -> 1L <<< shift
                | _, 0 -> 2L <<< shift
                | _, 1 -> -(1L <<< shift)
                | _ -> if shift >= 4 then int64 (rng.Next(-(1 <<< (shift - 4)), (1 <<< (shift - 4)) + 1)) else 0L)
        for i in 0 .. order - 1 do
            w.Signed(b, y.[i])
        w.Bits(4, uint64 (precision - 1))
        w.Signed(5, int64 shift)
        for c in coefs do
            w.Signed(precision, c)
        let r =
            Array.init (n - order) (fun k ->
                let i = k + order
                let mutable s = 0L
                for j in 0 .. order - 1 do
                    s <- s + coefs.[j] * y.[i - 1 - j]
                y.[i] - (s >>> shift))
        writeResidual w f r n order

let private utf8 (w: BitWriter) (v: uint64) =
    if v < 0x80UL then w.Bits(8, v)
    else
        let n = if v < 0x800UL then 2 elif v < 0x10000UL then 3 elif v < 0x200000UL then 4 elif v < 0x4000000UL then 5 elif v < 0x80000000UL then 6 else 7
        let firstBits = if n = 7 then 0 else 7 - n
        let lead = (0xFF00 >>> n) &&& 0xFF
        w.Bits(8, uint64 lead ||| ((v >>> (6 * (n - 1))) &&& ((1UL <<< firstBits) - 1UL)))
        for k in n - 2 .. -1 .. 0 do
            w.Bits(8, 0x80UL ||| ((v >>> (6 * k)) &&& 0x3FUL))

let private sizeCode =
    function
    | 8 -> 1
    | 12 -> 2
    | 16 -> 4
    | 20 -> 5
    | 24 -> 6
    | 32 -> 7
    | b -> failwithf "no sample size code for %d bits" b

let private writeStream (s: StreamSpec) : byte[] =
    let w = BitWriter()
    let blockSizes = s.Frames |> List.map (fun f -> f.Signal.[0].Length)
    let total = List.sum blockSizes
    for c in "fLaC" do
        w.Bits(8, uint64 c)
    w.Bits(8, 0x80UL) // last metadata block, STREAMINFO
    w.Bits(24, 34UL)
    w.Bits(16, uint64 (List.min blockSizes))
    w.Bits(16, uint64 (List.max blockSizes))
    w.Bits(24, 0UL)
    w.Bits(24, 0UL)
    w.Bits(20, uint64 s.Rate)
    w.Bits(3, uint64 (s.Channels - 1))
    w.Bits(5, uint64 (s.Bps - 1))
    w.Bits(36, uint64 total)
    let width = (s.Bps + 7) / 8
    use md5 = Security.Cryptography.IncrementalHash.CreateHash Security.Cryptography.HashAlgorithmName.MD5
    for f in s.Frames do
        let n = f.Signal.[0].Length
        for i in 0 .. n - 1 do
            for c in 0 .. s.Channels - 1 do
                md5.AppendData(Array.init width (fun k -> byte (f.Signal.[c].[i] >>> (8 * k))))
    for b in md5.GetHashAndReset() do
        w.Bits(8, uint64 b)
    let mutable sample = 0L
    s.Frames
    |> List.iteri (fun index f ->
        let n = f.Signal.[0].Length
        let start = w.Length
        w.Bits(15, 0x7FFCUL)
        w.Bit s.Variable
        let table = [ 192, 1; 576, 2; 1152, 3; 2304, 4; 4608, 5 ] @ [ for k in 0..7 -> 256 <<< k, 8 + k ]
        let bsCode =
            match List.tryFind (fun (size, _) -> size = n) table with
            | Some(_, code) when not f.ExplicitBlockSize -> code
            | _ -> if n <= 256 then 6 else 7
        w.Bits(4, uint64 bsCode)
        w.Bits(4, uint64 s.RateCode)
        w.Bits(4, uint64 (if f.Mode < 8 then s.Channels - 1 else f.Mode))
        w.Bits(3, uint64 (if s.SizeFromStreamInfo then 0 else sizeCode s.Bps))
        w.Bit false
        utf8 w (if s.Variable then uint64 sample else uint64 index)
        if bsCode = 6 then w.Bits(8, uint64 (n - 1))
        if bsCode = 7 then w.Bits(16, uint64 (n - 1))
        match s.RateCode with
        | 12 -> w.Bits(8, uint64 (s.Rate / 1000))
        | 13 -> w.Bits(16, uint64 s.Rate)
        | 14 -> w.Bits(16, uint64 (s.Rate / 10))
        | _ -> ()
        w.Bits(8, uint64 (let h = w.Since start in crcBits 8 0x07 h 0 h.Length))
        let channels =
            match f.Mode with
            | 8 -> [| f.Signal.[0], 0; Array.map2 (-) f.Signal.[0] f.Signal.[1], 1 |]
            | 9 -> [| Array.map2 (-) f.Signal.[0] f.Signal.[1], 1; f.Signal.[1], 0 |]
            | 10 -> [| Array.map2 (fun l r -> (l + r) >>> 1) f.Signal.[0] f.Signal.[1], 0; Array.map2 (-) f.Signal.[0] f.Signal.[1], 1 |]
            | _ -> f.Signal |> Array.map (fun x -> x, 0)
        for x, extra in channels do
            writeSubframe w f x (s.Bps + extra)
        w.Align()
        w.Bits(16, uint64 (let h = w.Since start in crcBits 16 0x8005 h 0 h.Length))
        sample <- sample + int64 n)
    w.ToArray()

// ---------------------------------------------------------------------------------------------------------------
// Signals

/// One channel of n samples of the given character at `bits` resolution.
let private signal (rng: Random) (bits: int) (n: int) (character: string) : int64[] =
    let full = float (1L <<< (bits - 1))
    let noise (amp: float) = (rng.NextDouble() * 2.0 - 1.0) * amp
    let f1, f2 = 0.001 + rng.NextDouble() * 0.02, 0.03 + rng.NextDouble() * 0.1
    let smooth i = 0.3 * full * sin (2.0 * Math.PI * f1 * float i) + 0.2 * full * sin (2.0 * Math.PI * f2 * float i + 1.0)
    match character with
    | "silence" -> Array.zeroCreate n
    | "dc" -> Array.create n (clampBits bits (noise full))
    | "noise" -> Array.init n (fun _ -> clampBits bits (noise full))
    | "ramp" ->
        let a, b = int64 (noise (full / 4.0)), int64 (noise (full / 4.0 / float n))
        Array.init n (fun i -> a + b * int64 i)
    | "wasted" -> Array.init n (fun i -> (clampBits bits (smooth i + noise (full / 64.0)) >>> 4) <<< 4)
    | _ -> Array.init n (fun i -> clampBits bits (smooth i + noise (full / 1000.0 + 1.0)))

// ---------------------------------------------------------------------------------------------------------------
// Checks

/// The reference decoder's output: `flac -d` to a WAV file (raw output only exists for 8/16/24/32 bits), whose
/// data chunk holds the samples left-justified in (bits + 7) / 8-byte containers.
let private flacReference (flac: string) (path: string) (bps: int) (channels: int) : int64[][] =
    let wav = path + ".ref.wav"
    run flac [ "-d"; "-s"; "-f"; "-o"; wav; path ] |> ignore
    let bytes = File.ReadAllBytes wav
    let mutable pos = 12
    while Text.Encoding.ASCII.GetString(bytes, pos, 4) <> "data" do
        pos <- pos + 8 + BitConverter.ToInt32(bytes, pos + 4)
    let size = BitConverter.ToInt32(bytes, pos + 4)
    let width = (bps + 7) / 8
    readRawInts width bytes.[pos + 8 .. pos + 8 + size - 1]
    |> Array.map (fun v -> if width = 1 then ((v + 256L) % 256L) - 128L else v >>> (8 * width - bps))
    |> deinterleave channels

let private expectSamples (what: string) (actual: int32[][]) (expected: int64[][]) =
    Expect.equal actual.Length expected.Length $"{what}: channel count"
    for c in 0 .. expected.Length - 1 do
        Expect.equal actual.[c].Length expected.[c].Length $"{what}: channel {c} length"
        match Seq.zip actual.[c] expected.[c] |> Seq.tryFindIndex (fun (a, b) -> int64 a <> b) with
        | Some i -> failtestf "%s: channel %d differs first at sample %d: %d, expected %d" what c i actual.[c].[i] expected.[c].[i]
        | None -> ()

let private unionStats (stats: Flac.DecodeStats list) =
    let sum f = stats |> List.sumBy f
    {| Independent = sum _.Independent; LeftSide = sum _.LeftSide; RightSide = sum _.RightSide; MidSide = sum _.MidSide
       Constant = sum _.Constant; Verbatim = sum _.Verbatim
       Fixed = Array.init 5 (fun o -> stats |> List.sumBy (fun s -> s.Fixed.[o])); Lpc = sum _.Lpc
       MaxLpcOrder = stats |> List.map _.MaxLpcOrder |> List.max; Wasted = sum _.WastedBits; Rice = sum _.RicePartitions
       Rice2 = sum _.Rice2Partitions; Escaped = sum _.EscapedPartitions
       BlockCodes = stats |> List.map _.BlockSizeCodes |> Set.unionMany; RateCodes = stats |> List.map _.SampleRateCodes |> Set.unionMany
       SizeCodes = stats |> List.map _.SampleSizeCodes |> Set.unionMany; NumberBytes = stats |> List.map _.MaxNumberBytes |> List.max
       Variable = stats |> List.exists _.VariableBlockSize |}

// ---------------------------------------------------------------------------------------------------------------
// Streams from the `flac` encoder

/// A stereo (or mono / multichannel) test signal in segments of 3 blocks, each shaped to make the encoder pick a
/// particular tool: silence (CONSTANT), full-scale noise (VERBATIM), left/side, right/side and mid/side
/// correlations, samples with zero low bits (wasted bits), smooth tones (LPC).
let private encoderSignal (seed: int) (bits: int) (channels: int) (block: int) : int64[][] =
    let rng = Random seed
    let n = 3 * block
    let full = float (1L <<< (bits - 1))
    let noise amp = Array.init n (fun _ -> (rng.NextDouble() * 2.0 - 1.0) * amp)
    let sine amp = let f = 0.002 + rng.NextDouble() * 0.01 in Array.init n (fun i -> amp * sin (2.0 * Math.PI * f * float i))
    let q (x: float[]) = x |> Array.map (clampBits bits)
    let segments =
        [ Array.init channels (fun _ -> signal rng bits n "silence")
          Array.init channels (fun _ -> signal rng bits n "noise")
          // left/side: L = a; R = a + b, b a loud tone with a little noise: side = −b is cheap, L beats R and mid.
          (let a = noise (full / 64.0)
           let b = Array.map2 (+) (sine (full / 4.0)) (noise (full / 256.0))
           Array.init channels (fun c -> if c = 0 then q a else q (Array.map2 (+) a b)))
          // right/side: mirrored.
          (let a = noise (full / 64.0)
           let b = Array.map2 (+) (sine (full / 4.0)) (noise (full / 256.0))
           Array.init channels (fun c -> if c = 1 then q a else q (Array.map2 (+) a b)))
          // mid/side: L = x + d, R = x − d, x loud noise, d quieter noise: mid = x is cheaper than L or R.
          (let x = noise (full / 4.0)
           let d = noise (full / 32.0)
           Array.init channels (fun c -> if c = 0 then q (Array.map2 (+) x d) elif c = 1 then q (Array.map2 (-) x d) else q x))
          Array.init channels (fun _ -> signal rng bits n "wasted")
          Array.init channels (fun _ -> signal rng bits n "tone") ]
    Array.init channels (fun c -> segments |> List.map (fun s -> s.[c]) |> Array.concat)

let private encoderCases =
    [ 8, 1, 8000, [ "-0"; "-b"; "1152" ]
      8, 2, 16000, [ "-8"; "-b"; "4096" ]
      16, 1, 16000, [ "-5"; "-b"; "576" ]
      16, 2, 44100, [ "-0"; "-b"; "1152" ]
      16, 2, 44100, [ "-8"; "-b"; "4608" ]
      16, 2, 22050, [ "-3"; "-b"; "2048" ]
      16, 2, 11025, [ "-6"; "-b"; "192" ]
      16, 1, 37800, [ "-2"; "-b"; "4096" ]
      16, 1, 12000, [ "-4"; "-b"; "4096" ]
      16, 6, 48000, [ "-5"; "-b"; "4096" ]
      24, 2, 44100, [ "-5"; "-b"; "4096" ]
      24, 1, 48000, [ "-8"; "-b"; "1024" ]
      24, 2, 96000, [ "--lax"; "-l"; "32"; "-b"; "8192" ]
      32, 2, 16000, [ "-5"; "-b"; "4096" ] ]

let private encoderTests =
    test "bit-exact on flac-encoded streams: 8/16/24/32-bit, 1/2/6 channels, 8–96 kHz, levels 0–8, block sizes 192–8192" {
        let flac = requireTool "flac"
        use dir = new TempDir()
        let stats =
            encoderCases
            |> List.mapi (fun i (bits, channels, rate, args) ->
                let block = args |> List.tryFindIndex ((=) "-b") |> Option.map (fun k -> int args.[k + 1]) |> Option.defaultValue 4096
                let x = encoderSignal (100 + i) bits channels block
                let raw = dir.File $"case{i}.raw"
                let path = dir.File $"case{i}.flac"
                writeRawInts raw (bits / 8) (interleave x)
                run flac ([ "-s"; "-f"; "--force-raw-format"; "--endian=little"; "--sign=signed"; $"--channels={channels}"
                            $"--bps={bits}"; $"--sample-rate={rate}"; "-o"; path ] @ args @ [ raw ]) |> ignore
                let decoded = Flac.decodeFile path
                let what = $"case {i} ({bits}-bit, {channels} ch, {rate} Hz, {String.Join(' ', args)})"
                expectSamples what decoded.Samples x
                Expect.equal decoded.Info.SampleRate rate $"{what}: sample rate"
                Expect.equal decoded.Info.BitsPerSample bits $"{what}: bits"
                Expect.isTrue decoded.Stats.Md5Checked $"{what}: MD5 verified"
                decoded.Stats)
        let u = unionStats stats
        // The encoder chose these tools for the shaped segments; the assertions keep the test from passing on
        // streams that never exercised them.
        Expect.isGreaterThan u.Constant 0 "CONSTANT subframes decoded"
        Expect.isGreaterThan u.Verbatim 0 "VERBATIM subframes decoded"
        Expect.isGreaterThan u.Lpc 0 "LPC subframes decoded"
        Expect.isGreaterThan (Array.sum u.Fixed) 0 "FIXED subframes decoded"
        Expect.isGreaterThanOrEqual u.MaxLpcOrder 13 "high LPC orders (--lax -l 32) decoded"
        Expect.isGreaterThan u.Wasted 0 "wasted-bits subframes decoded"
        Expect.isGreaterThan u.Rice 0 "Rice partitions decoded"
        Expect.isGreaterThan u.Rice2 0 "Rice2 partitions decoded"
        Expect.isGreaterThan u.LeftSide 0 "left/side frames decoded"
        Expect.isGreaterThan u.RightSide 0 "right/side frames decoded"
        Expect.isGreaterThan u.MidSide 0 "mid/side frames decoded"
        Expect.isGreaterThan u.Independent 0 "independent frames decoded"
        Expect.containsAll u.RateCodes [ 4; 5; 9; 10; 11; 12; 13; 14 ] "sample rate codes (table, kHz, Hz, tens of Hz)"
    }

// ---------------------------------------------------------------------------------------------------------------
// Streams from the test writer

let private frame (rng: Random) bits channels n mode kind character (f: FrameSpec -> FrameSpec) =
    f { Signal = Array.init channels (fun _ -> signal rng bits n character); Mode = mode; Kind = kind; Rice2 = false
        PartitionOrder = 0; Escape = false; Wasted = false; ExplicitBlockSize = false }

/// Streams that together use every tool of the format; each is decoded by `flac -d` and by the product.
let private writerStreams () : (string * StreamSpec) list =
    let rng = Random 7
    let kinds =
        [ Constant, "dc"; Verbatim, "noise"; Fixed 0, "tone"; Fixed 1, "tone"; Fixed 2, "ramp"; Fixed 3, "tone"; Fixed 4, "tone"
          Lpc(1, 2, 0), "tone"; Lpc(2, 3, 0), "tone"; Lpc(8, 12, 9), "tone"; Lpc(12, 15, 12), "wasted"; Lpc(32, 15, 10), "tone" ]
    let allTools bits channels modes block =
        [ for mode in modes do
              for i, (kind, character) in List.indexed kinds do
                  frame rng bits channels block mode kind character (fun f ->
                      { f with Rice2 = i % 2 = 1 || bits > 24; PartitionOrder = i % 5; Escape = i % 3 = 0 || kind = Fixed 2
                               Wasted = character = "wasted" || i % 4 = 0 }) ]
    let simple bits channels n count =
        [ for i in 1..count -> frame rng bits channels n (if channels = 2 then 8 + i % 3 else channels - 1) (Lpc(4, 14, 11)) "tone" (fun f -> { f with Rice2 = true; PartitionOrder = 2; Escape = i % 2 = 0 }) ]
    let stream rate bits channels rateCode frames =
        { Rate = rate; Bps = bits; Channels = channels; RateCode = rateCode; SizeFromStreamInfo = false; Variable = false; Frames = frames }
    [ "16-bit stereo, every subframe type in every stereo mode", stream 44100 16 2 9 (allTools 16 2 [ 0; 8; 9; 10 ] 1152)
      "12-bit mono 8 kHz", stream 8000 12 1 4 (allTools 12 1 [ 0 ] 576)
      "20-bit stereo 96 kHz", stream 96000 20 2 11 (allTools 20 2 [ 1; 8; 10 ] 4608)
      "32-bit stereo 192 kHz (33-bit side channels)",
      stream 192000 32 2 3
          (allTools 32 2 [ 8; 9; 10 ] 2304
           // Rice (4-bit parameters) on 33-bit residuals: unary runs of thousands of zeros across the bit cache.
           @ [ frame rng 32 2 192 8 (Fixed 1) "tone" (fun f -> { f with PartitionOrder = 1 }) ])
      "24-bit 3 channels 88.2 kHz", stream 88200 24 3 1 (allTools 24 3 [ 2 ] 2048)
      "8-bit mono 176.4 kHz", stream 176400 8 1 2 (allTools 8 1 [ 0 ] 512)
      "16-bit mono 22.05 kHz, sample size from STREAMINFO", { stream 22050 16 1 6 (simple 16 1 4096 2) with SizeFromStreamInfo = true }
      "24 kHz", stream 24000 16 2 7 (simple 16 2 256 3)
      "32 kHz", stream 32000 16 2 8 (simple 16 2 1024 3)
      "48 kHz", stream 48000 16 1 10 (simple 16 1 8192 2)
      "16 kHz", stream 16000 16 1 5 (simple 16 1 16384 2)
      "12 kHz coded in kHz", stream 12000 16 1 12 (simple 16 1 32768 2)
      "11025 Hz coded in Hz", stream 11025 16 1 13 (simple 16 1 2304 2)
      "37800 Hz coded in tens of Hz", stream 37800 16 1 14 (simple 16 1 4608 2)
      "37800 Hz from STREAMINFO", stream 37800 16 1 0 (simple 16 1 192 2)
      "variable block sizes with 5-byte sample numbers",
      { stream 44100 16 1 9
            ([ for n in [ 192; 576; 1152; 2304; 4608; 256; 512; 1024; 2048; 4096; 8192; 16384; 32768; 100; 5000 ] ->
                   frame rng 16 1 n 0 (Fixed 2) "tone" (fun f -> { f with ExplicitBlockSize = n = 100 || n = 5000; PartitionOrder = 1 }) ]
             @ [ for _ in 1..33 -> frame rng 16 1 65535 0 Constant "dc" id ]
             @ [ frame rng 16 1 4000 0 (Lpc(3, 13, 10)) "tone" id ])
        with Variable = true }
      "fixed block size 16 with 4-byte frame numbers",
      stream 24000 16 1 7
          [ for i in 0..65600 -> if i % 5000 = 0 then frame rng 16 1 16 0 Verbatim "noise" id else frame rng 16 1 16 0 Constant "dc" id ] ]

let private writerTests =
    test "bit-exact with flac -d on written streams covering every coding tool, header code and bit depth" {
        let flac = requireTool "flac"
        use dir = new TempDir()
        let stats =
            writerStreams ()
            |> List.mapi (fun i (what, s) ->
                let path = dir.File $"written{i}.flac"
                File.WriteAllBytes(path, writeStream s)
                let truth = Array.init s.Channels (fun c -> s.Frames |> List.map (fun f -> f.Signal.[c]) |> Array.concat)
                // The reference decoder accepts the stream (CRCs, MD5) and agrees with the generated samples …
                expectSamples $"flac -d of {what}" (flacReference flac path s.Bps s.Channels |> Array.map (Array.map int32)) truth
                // … and so does the product.
                let decoded = Flac.decodeFile path
                expectSamples what decoded.Samples truth
                Expect.isTrue decoded.Stats.Md5Checked $"{what}: MD5 verified"
                decoded.Stats)
        let u = unionStats stats
        Expect.isGreaterThan u.Independent 0 "independent"
        Expect.isGreaterThan u.LeftSide 0 "left/side"
        Expect.isGreaterThan u.RightSide 0 "right/side"
        Expect.isGreaterThan u.MidSide 0 "mid/side"
        Expect.isGreaterThan u.Constant 0 "CONSTANT"
        Expect.isGreaterThan u.Verbatim 0 "VERBATIM"
        for o in 0..4 do
            Expect.isGreaterThan u.Fixed.[o] 0 $"FIXED order {o}"
        Expect.equal u.MaxLpcOrder 32 "LPC order 32"
        Expect.isGreaterThan u.Wasted 0 "wasted bits"
        Expect.isGreaterThan u.Rice 0 "Rice"
        Expect.isGreaterThan u.Rice2 0 "Rice2"
        Expect.isGreaterThan u.Escaped 0 "escape-coded partitions"
        Expect.equal u.BlockCodes (set [ 1..15 ]) "every block size code"
        Expect.equal u.RateCodes (set [ 0..14 ]) "every sample rate code"
        Expect.equal u.SizeCodes (set [ 0; 1; 2; 4; 5; 6; 7 ]) "every sample size code"
        Expect.isGreaterThanOrEqual u.NumberBytes 5 "multi-byte UTF-8 numbers"
        Expect.isTrue u.Variable "variable block size"
    }

// ---------------------------------------------------------------------------------------------------------------
// jfk.flac and errors

let private jfkTests =
    [ test "jfk.flac equals flac -d" {
          let flac = requireTool "flac"
          let decoded = Flac.decodeFile (data "jfk.flac")
          Expect.equal (decoded.Info.SampleRate, decoded.Info.Channels, decoded.Info.BitsPerSample) (44100, 2, 24) "format"
          use dir = new TempDir()
          File.Copy(data "jfk.flac", dir.File "jfk.flac")
          expectSamples "jfk.flac" decoded.Samples (flacReference flac (dir.File "jfk.flac") 24 2)
          Expect.isTrue decoded.Stats.Md5Checked "MD5 verified"
      }
      test "jfk.flac equals ffmpeg's decode" {
          let ffmpeg = requireTool "ffmpeg"
          let decoded = Flac.decodeFile (data "jfk.flac")
          let raw = run ffmpeg [ "-nostdin"; "-v"; "error"; "-i"; data "jfk.flac"; "-f"; "s32le"; "-" ]
          // ffmpeg left-justifies 24-bit samples in 32 bits.
          let expected = readRawInts 4 raw |> Array.map (fun v -> v >>> 8) |> deinterleave 2
          expectSamples "jfk.flac (ffmpeg)" decoded.Samples expected
      } ]

/// Offset of the first frame: after "fLaC" and the metadata blocks.
let private firstFrame (bytes: byte[]) =
    let mutable pos = 4
    let mutable last = false
    while not last do
        last <- bytes.[pos] &&& 0x80uy <> 0uy
        pos <- pos + 4 + ((int bytes.[pos + 1] <<< 16) ||| (int bytes.[pos + 2] <<< 8) ||| int bytes.[pos + 3])
    pos

let private small =
    lazy
        (let flac = requireTool "flac"
         use dir = new TempDir()
         let x = encoderSignal 5 16 2 1024
         writeRawInts (dir.File "s.raw") 2 (interleave x)
         run flac [ "-s"; "-f"; "--force-raw-format"; "--endian=little"; "--sign=signed"; "--channels=2"; "--bps=16"
                    "--sample-rate=16000"; "-b"; "1024"; "-o"; dir.File "s.flac"; dir.File "s.raw" ] |> ignore
         File.ReadAllBytes(dir.File "s.flac"))

let private errorTests =
    [ test "a missing file raises FileNotFoundException naming it" {
          raisesWith<FileNotFoundException> [ "no-such.flac" ] (fun () -> Flac.decodeFile "no-such.flac" |> ignore) |> ignore
      }
      test "a non-FLAC file is named and rejected" {
          raisesWith<InvalidDataException> [ "x.flac"; "not a FLAC file" ] (fun () -> Flac.decodeBytes "x.flac" (Text.Encoding.ASCII.GetBytes "RIFF....WAVEfmt ") |> ignore) |> ignore
      }
      test "a corrupted frame byte is reported with the file and its offset" {
          let bytes = Array.copy small.Value
          let at = firstFrame bytes + 40
          bytes.[at] <- bytes.[at] ^^^ 0x10uy
          raisesWith<InvalidDataException> [ "s.flac"; "byte" ] (fun () -> Flac.decodeBytes "s.flac" bytes |> ignore) |> ignore
      }
      test "a file cut inside a frame is reported as truncated" {
          let bytes = small.Value.[0 .. small.Value.Length - 100]
          raisesWith<InvalidDataException> [ "s.flac"; "truncated" ] (fun () -> Flac.decodeBytes "s.flac" bytes |> ignore) |> ignore
      }
      test "a file cut inside the metadata is reported as truncated" {
          let bytes = small.Value.[0..20]
          raisesWith<InvalidDataException> [ "s.flac"; "truncated" ] (fun () -> Flac.decodeBytes "s.flac" bytes |> ignore) |> ignore
      }
      test "a missing frame is detected from the frame numbers" {
          // Drop the first frame. Its successor starts at one of the later 0xFFF8 sync codes; at that one the decoder
          // must name the gap (at the others it finds bad headers or CRCs).
          let bytes = small.Value
          let start = firstFrame bytes
          let candidates = [ start + 2 .. bytes.Length - 2 ] |> List.filter (fun i -> bytes.[i] = 0xFFuy && bytes.[i + 1] = 0xF8uy)
          let withoutFirst i = Array.append bytes.[0 .. start - 1] bytes.[i..]
          let rejected =
              candidates
              |> List.map (fun i ->
                  try
                      Flac.decodeBytes "s.flac" (withoutFirst i) |> ignore
                      None
                  with :? InvalidDataException as e -> Some e.Message)
          Expect.exists rejected (fun m -> m.IsSome && m.Value.Contains "missing or reordered frames") "a dropped frame is named as such"
      }
      Generators.prop "any flipped byte in the audio frames raises InvalidDataException (never another exception)" (fun (DoNotSize(a: uint32), PositiveInt b) ->
          let bytes = Array.copy small.Value
          let start = firstFrame bytes
          let at = start + int (a % uint32 (bytes.Length - start))
          bytes.[at] <- bytes.[at] ^^^ byte (1 + b % 255)
          raisesWith<InvalidDataException> [ "s.flac" ] (fun () -> Flac.decodeBytes "s.flac" bytes |> ignore) |> ignore)
      Generators.prop "any truncation raises InvalidDataException naming the file" (fun (DoNotSize(a: uint32)) ->
          let bytes = small.Value
          let cut = int (a % uint32 (bytes.Length - 1))
          raisesWith<InvalidDataException> [ "s.flac" ] (fun () -> Flac.decodeBytes "s.flac" bytes.[0 .. cut - 1] |> ignore) |> ignore) ]

/// The FLAC tests.
let tests = testList "flac" ([ encoderTests; writerTests ] @ jfkTests @ errorTests)
