/// Independent float64 reference computations and comparison helpers for the tests.
module MagnetWhisper.Tests.Reference

open TorchSharp
open Expecto

type Tensor = torch.Tensor

/// Maximum absolute difference of two tensors, computed in float64.
let maxAbsDiff (a: Tensor) (b: Tensor) : float =
    use d = (a.detach().to_type(torch.float64).cpu() - b.detach().to_type(torch.float64).cpu()).abs()
    if d.numel() = 0L then 0.0 else d.max().item<float>()

/// Asserts that two tensors have the same shape and agree within tol.
let close (tol: float) (message: string) (actual: Tensor) (expected: Tensor) =
    Expect.sequenceEqual actual.shape expected.shape $"{message}: shape"
    let diff = maxAbsDiff actual expected
    Expect.isLessThanOrEqual diff tol $"{message}: max |diff| = {diff}"
