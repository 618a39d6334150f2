/// Expected values of the boundary predictors written out from SPEC §3, §4 and DECISIONS #1, #5 in float64 over plain
/// arrays (no call into the library under test): binomial losses and their schedules, repulsion and adjacency
/// penalties, statistics, log-probabilities, thresholded boundaries, the sinusoidal embedding, and BP3's U-Net from
/// libtorch's primitive convolutions.
module MagnetWhisper.Tests.Magnet.Formulas

open System
open Expecto
open TorchSharp
open MagnetWhisper.Core

type Tensor = torch.Tensor

/// The rows of a (B, L) tensor as float64 arrays.
let rows (t: Tensor) : float[][] =
    let b = int t.shape.[0]
    let flat = Tensors.toFloatArray t
    let l = if b = 0 then 0 else flat.Length / b
    Array.init b (fun r -> flat.[r * l .. (r + 1) * l - 1])

/// Expects two arrays to agree within tol·max(1, |expected|) elementwise.
let expectClose (tol: float) (what: string) (actual: float[]) (expected: float[]) =
    Expect.equal actual.Length expected.Length $"{what}: length"
    Array.iteri2 (fun i (a: float) (e: float) ->
        Expect.isTrue (abs (a - e) <= tol * max 1.0 (abs e)) $"{what}[{i}]: {a} vs expected {e}") actual expected

/// ln n! = lnΓ(n + 1) of a whole number (every count and total of the tests is one).
let lnFactorial (n: float) =
    let whole = Math.Round n
    if abs (n - whole) > 1e-6 || whole < 0.0 then failwith $"lnFactorial of {n}: a whole number ≥ 0 is expected"
    Seq.sum [ for i in 2 .. int whole -> Math.Log(float i) ]

/// −ln Bin(k; n, p) = −[ln n! − ln k! − ln (n−k)! + k ln p + (n − k) ln(1 − p)].
let binomialNll (k: float) (n: float) (p: float) =
    let term (count: float) (q: float) = if count = 0.0 then 0.0 else count * Math.Log q
    -(lnFactorial n - lnFactorial k - lnFactorial (n - k) + term k p + term (n - k) (1.0 - p))

/// Binomial loss from a target (SPEC §3): n' = max(n, 1), p = clamp(min(t, n')/n', 1e-6, 1 − 1e-6), NLL(k; n', p)/n'.
let binomialFromTarget (k: float) (n: float) (t: float) =
    let n' = max n 1.0
    let p = Math.Clamp(min t n' / n', 1e-6, 1.0 - 1e-6)
    binomialNll k n' p / n'

/// Binomial loss against a prior: NLL(k; n, prior)/max(n, 1).
let binomialFromPrior (prior: float) (k: float) (n: float) = binomialNll k n prior / max n 1.0

/// The scheduled prior p_t/(p_t + s(1 − p_t)) (1 when p_t = 1).
let scheduledPrior (pt: float) (s: float) = if abs (pt - 1.0) < 1e-8 then 1.0 else pt / (pt + s * (1.0 - pt))

/// BP1/BP4's compression schedule (SPEC §4.2 step 6): C_max = T/max(t, 1e-8), C = 1 + (C_max − 1)s, t_eff = T/C.
let compressionTarget (s: float) (total: float) (t: float) =
    let c = 1.0 + (total / max t 1e-8 - 1.0) * s
    total / c

/// The encoder's target-progress lerp (SPEC §6.4).
let progressTarget (rho: float) (total: float) (t: float) =
    let th = max total 1.0
    let tt = if t > 0.0 then t else th
    let r = max (th / tt) 1.0
    let c = 1.0 + Math.Clamp(rho, 0.0, 1.0) * (r - 1.0)
    max (min (th / c) total) 0.0

/// Repulsion per utterance (SPEC §3): Σ_l b_l·m_l·#(other boundaries within ±2) / max(Σ m, 1).
let repulsion (b: float[]) (m: float[]) =
    let near l = Seq.sum [ for j in max 0 (l - 2) .. min (b.Length - 1) (l + 2) do if j <> l then yield b.[j] ]
    Seq.sum [ for l in 0 .. b.Length - 1 -> b.[l] * m.[l] * near l ] / max (Array.sum m) 1.0

/// Adjacent-boundary penalty per utterance: Σ_l b_l·b_{l−1}·m_l with b_{−1} = 0.
let adjacentPenalty (b: float[]) (m: float[]) = Seq.sum [ for l in 1 .. b.Length - 1 -> b.[l] * b.[l - 1] * m.[l] ]

/// Σ|p − 0.5|·m / max(Σ m, 1).
let confidence (p: float[]) (m: float[]) = Array.fold2 (fun acc pl ml -> acc + abs (pl - 0.5) * ml) 0.0 p m / max (Array.sum m) 1.0

let private clampProbability (p: float) = Math.Clamp(p, 1e-8, 1.0 - 1e-8)

/// Σ m·H(p), p clamped to [1e-8, 1 − 1e-8].
let entropy (p: float[]) (m: float[]) =
    Array.fold2 (fun acc pl ml ->
        let q = clampProbability pl
        acc - ml * (q * Math.Log q + (1.0 - q) * Math.Log(1.0 - q))) 0.0 p m

/// Σ m[h ln p + (1 − h) ln(1 − p)], p clamped to [1e-8, 1 − 1e-8].
let logProb (p: float[]) (h: float[]) (m: float[]) =
    Seq.sum [ for l in 0 .. p.Length - 1 ->
                let q = clampProbability p.[l]
                m.[l] * (h.[l] * Math.Log q + (1.0 - h.[l]) * Math.Log(1.0 - q)) ]

/// Distances between consecutive boundaries inside the valid prefix of length len.
let gaps (b: float[]) (len: int) =
    let positions = [| for l in 0 .. len - 1 do if b.[l] = 1.0 then yield l |]
    positions |> Array.pairwise |> Array.map (fun (a, c) -> float (c - a))

/// Spacing CV (DECISIONS #5): std_unbiased/(mean + 1e-8) of a row's gaps when it has at least two, else 0.
let spacingCv (g: float[]) =
    if g.Length < 2 then 0.0
    else
        let mean = Array.average g
        let var = (g |> Array.sumBy (fun x -> (x - mean) ** 2.0)) / float (g.Length - 1)
        sqrt var / (mean + 1e-8)

/// Fraction of gaps equal to 1 (0 without gaps).
let adjacencyFraction (g: float[]) =
    if g.Length = 0 then 0.0 else float (g |> Array.filter ((=) 1.0) |> Array.length) / float g.Length

/// Threshold-mode boundaries of a row (DECISIONS #1, #5): 1[p > threshold] on the first len frames, the last valid
/// frame forced, 0 past it.
let thresholdBoundaries (threshold: float) (p: float[]) (len: int) =
    Array.init p.Length (fun l -> if l < len && (l = len - 1 || p.[l] > threshold) then 1.0 else 0.0)

/// The sinusoidal embedding of segment ordinal s (SPEC §4.6): PE[2i] = sin(s·10000^(−2i/D)), PE[2i+1] = cos(…).
let sinusoidal (s: int) (d: int) =
    Array.init d (fun j ->
        let angle = float s * Math.Pow(10000.0, -float (j - j % 2) / float d)
        if j % 2 = 0 then sin angle else cos angle)

/// (S, D) float64 tensor of the embeddings of ordinals 0..S−1.
let sinusoidalTable (s: int64) (d: int) =
    torch.tensor(Array.concat [ for i in 0 .. int s - 1 -> sinusoidal i d ], dtype = torch.float64).reshape(s, int64 d)

/// (B, S, L) float64 segment membership of hard boundaries (B, L) on valid frames: frame l belongs to segment
/// #(boundaries before l) if that is below its row's boundary count (frames after the last boundary are dropped).
let membership (boundaries: float[][]) (valid: int[]) : Tensor =
    let b = boundaries.Length
    let l = if b = 0 then 0 else boundaries.[0].Length
    let counts = boundaries |> Array.map (Array.sum >> int)
    let s = if b = 0 then 0 else Array.max counts
    let m = Array.zeroCreate<float> (b * s * l)
    for r in 0 .. b - 1 do
        let mutable before = 0
        for f in 0 .. l - 1 do
            if f < valid.[r] && before < counts.[r] then m.[(r * s + before) * l + f] <- 1.0
            if boundaries.[r].[f] = 1.0 then before <- before + 1
    torch.tensor(m, dtype = torch.float64).reshape(int64 b, int64 s, int64 l)

/// Segment means: membership (B, S, L), features (B, L, D) float64 → (B, S, D); empty segments 0.
let meanPool (member': Tensor) (features: Tensor) =
    member'.matmul(features) / member'.sum(2L, keepdim = true).clamp_min(Scalar.op_Implicit 1.0)

/// Learned-query attention pooling restricted to each segment with H heads: scores (B, H, L) and values
/// (B, L, H, dh) → (B, S, H·dh). A segment without frames gives 0.
let attentionPool (member': Tensor) (scores: Tensor) (values: Tensor) =
    let masked = scores.unsqueeze(2L).masked_fill(member'.unsqueeze(1L).eq(Scalar.op_Implicit 0.0), Double.NegativeInfinity)
    let weights = masked.softmax(-1L).nan_to_num(0.0)
    let pooled = weights.matmul(values.transpose(1L, 2L))
    pooled.transpose(1L, 2L).reshape(pooled.shape.[0], pooled.shape.[2], -1L)

/// Evaluation-mode BatchNorm over channels of (B, C, T): (x − running_mean)/√(running_var + 1e-5)·weight + bias.
let batchNorm (sd: Collections.Generic.IDictionary<string, Tensor>) (prefix: string) (x: Tensor) =
    let v (name: string) = sd.[prefix + name].to_type(torch.float64).reshape(1L, -1L, 1L)
    (x - v ".running_mean") / (v ".running_var" + 1e-5).sqrt() * v ".weight" + v ".bias"

/// BP3's U-Net in evaluation mode (SPEC §4.4, DECISIONS #6) in float64 from a state dict whose keys start with
/// prefix ("unet." or ""): aligned (padded frames zeroed before each convolution; the skip repeated to full
/// resolution, the transposed convolution fitted to L; concatenation [upsampled; skip]) or the original's crop (the
/// upsampled branch cut to ⌈L/2⌉, concatenated, linearly interpolated to L). x (B, L, D), lengths (B,) → (B, L, D).
let unet (sd: Collections.Generic.IDictionary<string, Tensor>) (prefix: string) (aligned: bool) (x: Tensor) (lengths: int64[]) =
    let w (name: string) = sd.[prefix + name].to_type(torch.float64)
    let conv (name: string) (stride: int64) (input: Tensor) =
        torch.nn.functional.conv1d(input, w (name + ".weight"), w (name + ".bias"), stride = stride, padding = 1L)
    let gelu (t: Tensor) = torch.nn.functional.gelu t
    let fit (length: int64) (t: Tensor) =
        let have = t.shape.[2]
        if have >= length then t.narrow(2L, 0L, length) else torch.nn.functional.pad(t, [| 0L; length - have |])
    let l = x.shape.[1]
    let c = x.to_type(torch.float64).transpose(1L, 2L)
    let up (bottleneck: Tensor) =
        torch.nn.functional.conv_transpose1d(bottleneck, w "decoder_conv.weight", w "decoder_conv.bias", stride = 2L, padding = 1L)
    let out =
        if aligned then
            let validity (steps: int64) (every: int64) =
                torch.tensor([| for b in lengths do for j in 0L .. steps - 1L -> if j * every < b then 1.0 else 0.0 |], dtype = torch.float64)
                    .reshape(int64 lengths.Length, 1L, steps)
            let half = (l + 1L) / 2L
            let full, halfMask = validity l 1L, validity half 2L
            let enc = gelu (batchNorm sd (prefix + "encoder_norm") (conv "encoder_conv" 2L (c * full))) * halfMask
            let bottle = gelu (batchNorm sd (prefix + "bottleneck_norm") (conv "bottleneck_conv" 1L enc)) * halfMask
            let skip = fit l (enc.repeat_interleave(2L, dim = 2L))
            let joined = gelu (batchNorm sd (prefix + "decoder_norm1") (torch.cat([| fit l (up bottle); skip |], 1L))) * full
            batchNorm sd (prefix + "decoder_norm2") (conv "refine_conv" 1L joined)
        else
            let enc = gelu (batchNorm sd (prefix + "encoder_norm") (conv "encoder_conv" 2L c))
            let bottle = gelu (batchNorm sd (prefix + "bottleneck_norm") (conv "bottleneck_conv" 1L enc))
            let joined = gelu (batchNorm sd (prefix + "decoder_norm1") (torch.cat([| fit enc.shape.[2] (up bottle); enc |], 1L)))
            let stretched =
                if joined.shape.[2] = l then joined
                else torch.nn.functional.interpolate(joined, [| l |], mode = torch.InterpolationMode.Linear, align_corners = false)
            batchNorm sd (prefix + "decoder_norm2") (conv "refine_conv" 1L stretched)
    out.transpose(1L, 2L)
