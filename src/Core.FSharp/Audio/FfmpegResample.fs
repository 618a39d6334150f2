/// Sample-rate conversion that reproduces ffmpeg's default resampler: libswresample's "swr" engine with its
/// default options (filter_size 32, phase_shift 10 → 1024 phases, linear_interp on, exact_rational on,
/// cutoff 0.97, Kaiser window β 9). openai/whisper loads audio through `ffmpeg … -ar 16000`, so the model was
/// trained on this filter's output; reproducing it keeps the log-mel features equal to openai/whisper's.
///
/// The algorithm (written from libswresample's description and source, not copied):
/// * factor = min(0.97 · out/in, 1); the filter spans ⌈32/factor⌉ input samples, rounded up to even;
/// * phases: the reduced numerator L of out/in when L ≤ 1024 (every output position is then exact), else 1024
///   phases with linear interpolation between neighbouring phases;
/// * phase p, tap i: sinc(π·factor·t) · I0(β·√(1 − (2t/taps)²)) at t = i − centre − p/phases, every phase divided
///   by the sum of phase 0's taps (so DC gain is 1 at phase 0); phases past the middle are the mirror images of
///   the first half; for 16-bit audio the coefficients are rounded to Q15 integers and the sums are integer;
/// * output n is the input at time n·in/out (no delay); the input is mirrored at both ends (x[−k] = x[k] before
///   the start; after the end, x[N−1−k] for half the samples still buffered), which fixes the output length.
/// On 8/16-bit input this is bit-exact with ffmpeg 5.1 (checked by the tests on speech, chirps and noise at
/// 8–48 kHz); on float input it agrees to the float rounding of a different summation order. Inputs shorter
/// than the filter (a few milliseconds) may get a few samples more or fewer than ffmpeg gives.
module MagnetWhisper.Core.Audio.FfmpegResample

open System
open System.Numerics

/// libswresample's defaults (options.c).
[<RequireQualifiedAccess>]
module Defaults =
    /// Filter length in output-rate samples ("filter_size").
    let FilterSize = 32
    /// log2 of the phase count when the ratio is not exact ("phase_shift").
    let PhaseShift = 10
    /// Passband edge as a fraction of the lower Nyquist frequency ("cutoff" 0 means 0.97).
    let Cutoff = 0.97
    /// Kaiser window β ("kaiser_beta").
    let KaiserBeta = 9.0

/// A precomputed filter bank for one rate pair, in Q15 integers (for 16-bit audio) and in float32.
type Filter =
    private
        { From: int
          To: int
          /// Taps of one phase (even, or 1).
          Length: int
          /// Row length of the banks: Length rounded up to the SIMD width (the extra coefficients are zero).
          Stride: int
          /// Number of phases (L for exact ratios).
          Phases: int
          /// Position step per output, in 1/Phases input samples: DstDiv + DstMod/SrcIncr.
          DstDiv: int
          DstMod: int64
          SrcIncr: int64
          /// (Phases + 1) rows of Stride coefficients; row Phases is row 0 delayed by one tap (for interpolation).
          IntBank: int[]
          FloatBank: float32[] }

    /// Input sample rate.
    member f.InputRate = f.From
    /// Output sample rate.
    member f.OutputRate = f.To
    /// Taps per phase (input samples per output sample).
    member f.TapsPerPhase = f.Length
    /// Number of filter phases.
    member f.PhaseCount = f.Phases

/// Zeroth-order modified Bessel function of the first kind (power series to full double precision).
let private besselI0 (x: float) =
    let q = x * x / 4.0
    let mutable sum = 1.0
    let mutable term = 1.0
    let mutable k = 1.0
    let mutable go = true
    while go do
        term <- term * q / (k * k)
        let next = sum + term
        go <- next <> sum
        sum <- next
        k <- k + 1.0
    sum

let rec private gcd (a: int64) (b: int64) = if b = 0L then a else gcd b (a % b)

/// Designs the filter bank for `fromRate` → `toRate` Hz (both positive).
let create (fromRate: int) (toRate: int) : Filter =
    if fromRate <= 0 then invalidArg "fromRate" $"sample rate must be positive, got {fromRate}"
    if toRate <= 0 then invalidArg "toRate" $"sample rate must be positive, got {toRate}"
    let factor = min (float toRate * Defaults.Cutoff / float fromRate) 1.0
    let length =
        let l = max (int (Math.Ceiling(float Defaults.FilterSize / factor))) 1
        if l > 1 then (l + 1) / 2 * 2 else l
    let phases =
        let exact = int64 toRate / gcd (int64 toRate) (int64 fromRate)
        let p = 1 <<< Defaults.PhaseShift
        if exact <= int64 p then int exact else p
    let width = Vector<int>.Count
    let stride = (length + width - 1) / width * width
    let center = (length - 1) / 2
    let intBank = Array.zeroCreate<int> ((phases + 1) * stride)
    let floatBank = Array.zeroCreate<float32> ((phases + 1) * stride)
    // With an even phase count only phases 0 … Phases/2 are computed; the rest are their mirror images, as in
    // libswresample (the rounding of the mirrored phases then matches too).
    let computed = if phases % 2 = 1 then phases else phases / 2 + 1
    let tab = Array.zeroCreate<float> length
    let mutable norm = 0.0
    for ph in 0 .. computed - 1 do
        // At factor 1 the sine is taken from one value with alternating sign, as libswresample does.
        let mutable s = sin (Math.PI * float ph / float phases) * (if center &&& 1 = 1 then 1.0 else -1.0)
        for i in 0 .. length - 1 do
            let x = Math.PI * (float (i - center) - float ph / float phases) * factor
            let sinc = if x = 0.0 then 1.0 elif factor = 1.0 then s / x else sin x / x
            let w = 2.0 * x / (factor * float length * Math.PI)
            tab.[i] <- sinc * besselI0 (Defaults.KaiserBeta * sqrt (max (1.0 - w * w) 0.0))
            s <- -s
            if ph = 0 then norm <- norm + tab.[i]
        for i in 0 .. length - 1 do
            let q15 = MathF.Round(float32 (tab.[i] * 32768.0 / norm)) // lrintf: to float, then to nearest even
            intBank.[ph * stride + i] <- int (max -32768.0f (min 32767.0f q15))
            floatBank.[ph * stride + i] <- float32 (tab.[i] / norm)
        if phases % 2 = 0 then
            for i in 0 .. length - 1 do
                intBank.[(phases - ph) * stride + length - 1 - i] <- intBank.[ph * stride + i]
                floatBank.[(phases - ph) * stride + length - 1 - i] <- floatBank.[ph * stride + i]
    // Row Phases: row 0 one tap later; its first tap is what libswresample's 8-aligned row holds at the end
    // (zero padding, or the last tap when the length is a multiple of 8).
    let last = phases * stride
    let wrap = if length % 8 = 0 then length - 1 else -1
    intBank.[last] <- if wrap >= 0 then intBank.[wrap] else 0
    floatBank.[last] <- if wrap >= 0 then floatBank.[wrap] else 0.0f
    for i in 1 .. length - 1 do
        intBank.[last + i] <- intBank.[i - 1]
        floatBank.[last + i] <- floatBank.[i - 1]
    // Step per output in 1/phases input samples, as the exact fraction dst/src, scaled up like libswresample
    // (the scaling changes nothing in exact arithmetic but fixes the interpolation weights' denominators).
    let num, den = int64 toRate, int64 fromRate * int64 phases
    let g = gcd num den
    let mutable srcIncr, dstIncr = num / g, den / g
    while dstIncr < (1L <<< 20) && srcIncr < (1L <<< 20) do
        srcIncr <- srcIncr * 2L
        dstIncr <- dstIncr * 2L
    { From = fromRate; To = toRate; Length = length; Stride = stride; Phases = phases
      DstDiv = int (dstIncr / srcIncr); DstMod = dstIncr % srcIncr; SrcIncr = srcIncr
      IntBank = intBank; FloatBank = floatBank }

/// How many outputs an input gives, and the input's length once mirrored at the tail.
type private Plan = { Count: int; Extended: int }

/// Steps through the output positions: outputs are made while all taps lie inside the input; then the tail is
/// mirrored by half the samples still buffered (at most half the filter) and outputs continue.
let private plan (f: Filter) (n: int) : Plan =
    let center = (f.Length - 1) / 2
    let count (limit: int) (start: int) (s0: int64) (ph0: int) (fr0: int64) =
        let mutable s, ph, frac, k = s0, ph0, fr0, start
        while s + int64 f.Length <= int64 limit do
            k <- k + 1
            frac <- frac + f.DstMod
            ph <- ph + f.DstDiv
            if frac >= f.SrcIncr then
                frac <- frac - f.SrcIncr
                ph <- ph + 1
            s <- s + int64 (ph / f.Phases)
            ph <- ph % f.Phases
        k, s, ph, frac
    if n = 0 then { Count = 0; Extended = 0 }
    else
        let k, s, ph, frac = count n 0 (int64 -center) 0 0L
        let remaining = int64 n - s
        let reflection = int ((min remaining (int64 f.Length) + 1L) / 2L)
        let total, _, _, _ = count (n + reflection) k s ph frac
        { Count = total; Extended = n + reflection }

/// The input with the mirrored edges and zero padding for the SIMD reads: element j is x[j − centre].
let private extend (f: Filter) (p: Plan) (x: 'a[]) : 'a[] =
    let center = (f.Length - 1) / 2
    let n = x.Length
    let buffer = Array.zeroCreate<'a> (center + p.Extended + f.Stride + 1)
    for k in 1 .. center do
        if k < n then buffer.[center - k] <- x.[k]
    Array.blit x 0 buffer center n
    for j in 0 .. p.Extended - n - 1 do
        if n - 1 - j >= 0 then buffer.[center + n + j] <- x.[n - 1 - j]
    buffer

/// Walks the output positions of a resampling as libswresample does: for output k, the buffer index s of its first
/// tap, its phase and the fractional phase position (frac / SrcIncr, for linear interpolation between phases).
let private walk (f: Filter) (count: int) (emit: int -> int -> int -> int64 -> unit) =
    let mutable s, ph, frac = 0, 0, 0L // s indexes the buffer (input index + centre)
    for k in 0 .. count - 1 do
        emit k s ph frac
        frac <- frac + f.DstMod
        ph <- ph + f.DstDiv
        if frac >= f.SrcIncr then
            frac <- frac - f.SrcIncr
            ph <- ph + 1
        s <- s + ph / f.Phases
        ph <- ph % f.Phases

/// Σ buffer[start + j] · bank[row + j] over the stride taps of one phase (a multiple of the SIMD width: buffer and bank
/// are zero-padded for it), in the arithmetic of 'T: int32 for 16-bit audio, float32 otherwise. One generic method that
/// the JIT specialises per 'T, as fast as the two hand-written loops it replaced (same summation order, so bit-exact).
let private dot<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType> (buffer: 'T[]) (bank: 'T[]) (stride: int) (start: int) (row: int) : 'T =
    let width = Vector<'T>.Count
    let mutable acc = Vector<'T>.Zero
    let mutable j = 0
    while j < stride do
        acc <- acc + Vector<'T>(buffer, start + j) * Vector<'T>(bank, row + j)
        j <- j + width
    Vector.Sum acc

/// Resamples 16-bit samples with integer arithmetic (Q15 coefficients, 32-bit sums, rounding by +2^14 and an
/// arithmetic shift, saturation to 16 bits), as libswresample does for 8/16-bit audio.
let applyInt16 (f: Filter) (input: int16[]) : int16[] =
    let p = plan f input.Length
    let buffer = extend f p (Array.map int input)
    let output = Array.zeroCreate<int16> p.Count
    let dot = dot buffer f.IntBank f.Stride
    walk f p.Count (fun k s ph frac ->
        let mutable v = dot s (ph * f.Stride)
        if frac <> 0L then
            let v2 = dot s ((ph + 1) * f.Stride)
            v <- int (int64 v + int64 (v2 - v) * frac / f.SrcIncr)
        let r = (v + 16384) >>> 15
        output.[k] <- int16 (max -32768 (min 32767 r)))
    output

/// Resamples float32 samples (float32 coefficients and sums), as libswresample does for 24/32-bit and float audio.
let applyFloat (f: Filter) (input: float32[]) : float32[] =
    let p = plan f input.Length
    let buffer = extend f p input
    let output = Array.zeroCreate<float32> p.Count
    let inv = 1.0 / float f.SrcIncr
    let dot = dot buffer f.FloatBank f.Stride
    walk f p.Count (fun k s ph frac ->
        let mutable v = dot s (ph * f.Stride)
        if frac <> 0L then
            let v2 = dot s ((ph + 1) * f.Stride)
            v <- float32 (float v + float (v2 - v) * inv * float frac)
        output.[k] <- v)
    output
