/// Small helpers that make TorchSharp pleasant from F#: shapes, checks, scopes and scalars on a tensor's device.
module MagnetWhisper.Core.Tensors

open System
open TorchSharp

type Tensor = torch.Tensor

/// The shape of a tensor as an int64 array.
let shape (t: Tensor) : int64[] = t.shape

/// Renders a shape as "(2, 3, 4)" for error messages.
let showShape (s: int64[]) = "(" + String.Join(", ", s) + ")"

/// Fails with an ArgumentException naming the argument when the tensor does not have the expected rank.
let requireRank (name: string) (rank: int) (t: Tensor) =
    if int t.Dimensions <> rank then
        invalidArg name $"{name} must have rank {rank}, but has shape {showShape t.shape}"

/// Fails with an ArgumentException naming the argument when a dimension differs from the expected size.
let requireDim (name: string) (dim: int) (size: int64) (t: Tensor) =
    if t.shape.[dim] <> size then
        invalidArg name $"{name} must have size {size} in dimension {dim}, but has shape {showShape t.shape}"

/// Fails when the tensor holds NaN or infinity (one host sync).
let requireFinite (name: string) (t: Tensor) =
    use bad = t.isfinite().logical_not().any()
    if bad.item<bool>() then invalidArg name $"{name} contains NaN or infinite values"

/// Runs f in a fresh dispose scope and moves its result to the caller's scope: every temporary f creates is
/// disposed when f returns.
let inline scoped ([<InlineIfLambda>] f: unit -> Tensor) : Tensor =
    use _ = torch.NewDisposeScope()
    f().MoveToOuterDisposeScope()

/// Moves the tensors that were created in scope (results, new cache entries) to the caller's scope, so that disposing
/// scope frees only the temporaries. Tensors from outer scopes are left where they are.
let keep (scope: DisposeScope) (tensors: Tensor seq) =
    for t in tensors do
        if scope.Contains t then t.MoveToOuterDisposeScope() |> ignore

/// A 0-d tensor holding value, with the device and dtype of like.
let scalarLike (like: Tensor) (value: float) : Tensor =
    torch.tensor(value, dtype = like.dtype, device = like.device)

/// Reads a scalar tensor as float (one host sync).
let toFloat (t: Tensor) : float = t.to_type(torch.float64).item<float>()

/// Reads any tensor into a flat float array (host copy; for tests, statistics and I/O).
let toFloatArray (t: Tensor) : float[] =
    if t.numel() = 0L then Array.empty
    else
        use c = t.detach().to_type(torch.float64).cpu().contiguous()
        c.data<float>().ToArray()

/// The dtype in which to compute with t: float64 stays float64, every other type (float16, bfloat16, float32,
/// integers) computes in float32, so half-precision inputs keep a float32 accumulation.
let computeType (t: Tensor) : torch.ScalarType =
    if t.dtype = torch.float64 then torch.float64 else torch.float32
