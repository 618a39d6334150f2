/// Positions: the sinusoidal re-embedding of pooled segments (SPEC §4.6), rotary embeddings with the interleaved
/// pair layout (SPEC §5.1) and the frame-mask pooling by the convolution stride (SPEC §6.3 step 3).
module MagnetWhisper.Core.Segments.Positions

open System
open TorchSharp
open MagnetWhisper.Core.Tensors

type private F = torch.nn.functional

/// RoPE base θ of every MagnetAttention (SPEC §11).
[<Literal>]
let DefaultRopeTheta = 10000.0

/// Base of the sinusoidal re-embedding (SPEC §11).
[<Literal>]
let SinusoidalBase = 10000.0

/// The sinusoidal table PE (S, D): column j has frequency ω_j = 10000^(−2⌊j/2⌋/D); PE[s,j] = sin(s·ω_j) for even j
/// and cos(s·ω_j) for odd j (interleaved, SPEC §4.6). For odd D the last column is a sine without its cosine.
/// Angles are computed in float64, then the table is cast to dtype.
/// <param name="length">S ≥ 0, the number of segments.</param>
/// <param name="dim">D ≥ 1.</param>
/// <param name="dtype">Element type of the table.</param>
/// <param name="device">Device of the table.</param>
/// <returns>(S, D).</returns>
let sinusoidalTable (length: int64) (dim: int64) (dtype: torch.ScalarType) (device: torch.Device) : Tensor =
    if length < 0L then invalidArg "length" $"length must be ≥ 0, but is {length}"
    if dim < 1L then invalidArg "dim" $"dim must be ≥ 1, but is {dim}"
    scoped (fun () ->
        let position = torch.arange(length, dtype = torch.float64, device = device).unsqueeze(1)
        let column = torch.arange(dim, dtype = torch.float64, device = device)
        let pair = (column * 0.5).floor() * 2.0
        let frequency = (pair * (-Math.Log SinusoidalBase / float dim)).exp()
        let angle = position * frequency
        torch.where(column.eq(pair), angle.sin(), angle.cos()).to_type(dtype))

/// Adds the sinusoidal table of the segment ordinals to pooled segments (SPEC §4.6), padded rows included.
/// The sum is computed in float32 (float64 for float64 input) and cast back to pooled's dtype.
/// <param name="pooled">(B, S, D).</param>
/// <returns>(B, S, D) in pooled's dtype.</returns>
let addSinusoidal (pooled: Tensor) : Tensor =
    requireRank "pooled" 3 pooled
    if pooled.shape.[2] < 1L then invalidArg "pooled" $"pooled must have a width ≥ 1, but has shape {showShape pooled.shape}"
    scoped (fun () ->
        let ct = computeType pooled
        let table = sinusoidalTable pooled.shape.[1] pooled.shape.[2] ct pooled.device
        (pooled.to_type(ct) + table).to_type(pooled.dtype))

/// RoPE tables for given positions: angle[…, t, i] = positions[…, t]·θ^(−2i/headDim) for i &lt; headDim/2,
/// computed in float64 and returned as (cos, sin) in dtype.
/// <param name="theta">Base θ > 0 (usually <c>DefaultRopeTheta</c>).</param>
/// <param name="headDim">dh, even and ≥ 2.</param>
/// <param name="dtype">Element type of the tables.</param>
/// <param name="positions">(T) shared by the batch, or (B, T) per row (cache positions, compressed indices…).</param>
/// <returns>cos and sin, each (T, dh/2) or (B, T, dh/2), on positions' device; the caller disposes both.</returns>
let ropeTable (theta: float) (headDim: int) (dtype: torch.ScalarType) (positions: Tensor) : Tensor * Tensor =
    if not (theta > 0.0) then invalidArg "theta" $"theta must be positive, but is {theta}"
    if headDim < 2 || headDim % 2 <> 0 then invalidArg "headDim" $"headDim must be even and ≥ 2, but is {headDim}"
    if positions.Dimensions <> 1L && positions.Dimensions <> 2L then
        invalidArg "positions" $"positions must have shape (T) or (B, T), but has shape {showShape positions.shape}"
    use _ = torch.NewDisposeScope()
    let half = int64 (headDim / 2)
    let pair = torch.arange(half, dtype = torch.float64, device = positions.device) * 2.0
    let frequency = (pair * (-Math.Log theta / float headDim)).exp()
    let angle = positions.detach().to_type(torch.float64).unsqueeze(-1) * frequency
    angle.cos().to_type(dtype).MoveToOuterDisposeScope(), angle.sin().to_type(dtype).MoveToOuterDisposeScope()

/// Rotates each pair (2i, 2i+1) of every head by the table's angle (interleaved "GPT-J/LLaMA" layout, SPEC §5.1):
/// out[2i] = x[2i]·cos − x[2i+1]·sin, out[2i+1] = x[2i]·sin + x[2i+1]·cos. Computed in float32 (float64 for float64
/// input) and cast back.
/// <param name="table">(cos, sin) from <c>ropeTable</c>, each (T, dh/2) or (B, T, dh/2).</param>
/// <param name="x">(B, H, T, dh).</param>
/// <returns>(B, H, T, dh) in x's dtype.</returns>
let rotate (table: Tensor * Tensor) (x: Tensor) : Tensor =
    let cos, sin = table
    requireRank "x" 4 x
    let b, t, dh = x.shape.[0], x.shape.[2], x.shape.[3]
    if dh % 2L <> 0L then invalidArg "x" $"x must have an even head width, but has shape {showShape x.shape}"
    if not (Seq.forall2 (=) cos.shape sin.shape) then
        invalidArg "table" $"cos and sin must have equal shapes, but have {showShape cos.shape} and {showShape sin.shape}"
    let rank = int cos.Dimensions
    if rank <> 2 && rank <> 3 then invalidArg "table" $"the table must have rank 2 or 3, but has shape {showShape cos.shape}"
    requireDim "table" (rank - 2) t cos
    requireDim "table" (rank - 1) (dh / 2L) cos
    if rank = 3 && cos.shape.[0] <> b && cos.shape.[0] <> 1L then
        invalidArg "table" $"the table's batch size {cos.shape.[0]} does not match x's shape {showShape x.shape}"
    scoped (fun () ->
        let ct = computeType x
        // (T, dh/2) broadcasts over (B, H); (B, T, dh/2) needs a head axis.
        let c, s =
            if rank = 3 then cos.to_type(ct).unsqueeze(1), sin.to_type(ct).unsqueeze(1)
            else cos.to_type(ct), sin.to_type(ct)
        let pairs = x.to_type(ct).unflatten(3L, [| dh / 2L; 2L |])
        let even, odd = pairs.select(4L, 0L), pairs.select(4L, 1L)
        let rotated = torch.stack([ even * c - odd * s; even * s + odd * c ], 4L)
        rotated.flatten(3L).to_type(x.dtype))

/// Applies RoPE (interleaved layout, SPEC §5.1) at the given positions. Callers apply it to queries after the
/// query scaling, and to keys.
/// <param name="theta">Base θ > 0 (usually <c>DefaultRopeTheta</c>).</param>
/// <param name="positions">(T) or (B, T) integer positions.</param>
/// <param name="x">(B, H, T, dh) with dh even.</param>
/// <returns>(B, H, T, dh) in x's dtype.</returns>
let applyRope (theta: float) (positions: Tensor) (x: Tensor) : Tensor =
    requireRank "x" 4 x
    scoped (fun () ->
        let table = ropeTable theta (int x.shape.[3]) (computeType x) positions
        rotate table x)

/// Max-pools a frame validity mask by the total convolution stride (SPEC §6.3 step 3): pads with zeros to a multiple
/// of the stride, then a group is valid when any of its frames is.
/// <param name="stride">≥ 1.</param>
/// <param name="mask">(B, F), nonzero = valid.</param>
/// <returns>(B, ⌈F/stride⌉) float32 of 0/1.</returns>
let poolFrameMask (stride: int) (mask: Tensor) : Tensor =
    if stride < 1 then invalidArg "stride" $"stride must be ≥ 1, but is {stride}"
    requireRank "mask" 2 mask
    let frames = mask.shape.[1]
    let padding = (int64 stride - frames % int64 stride) % int64 stride
    scoped (fun () ->
        let valid = mask.detach().ne((0).ToScalar()).to_type(torch.float32)
        F.pad(valid, [| 0L; padding |]).reshape(mask.shape.[0], (frames + padding) / int64 stride, int64 stride).any(2L).to_type(torch.float32))
