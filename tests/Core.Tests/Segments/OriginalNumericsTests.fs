/// The original's numerics that the `Original` options reproduce (DECISIONS #1, #11): the float32 clamp of the
/// target probability in the target-count losses, and the 50/50 tie gradient of the forced boundary's maximum.
/// Expected values come from formulas written out here (explicit System.Single arithmetic for the float32 clamp).
module MagnetWhisper.Tests.Segments.OriginalNumericsTests

open System
open Expecto
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Segments
open MagnetWhisper.Tests.Reference

type Tensor = torch.Tensor

/// ln p and ln(1 − p) of the target probability as the original's float32 tensors hold them:
/// p = clamp(min(t, n')/n', 1e-6, 1 − 1e-6) with every operation in float32 (the bounds rounded to float32, so
/// 1 − 1e-6 is 0.99999899), then ln p and ln(1 − p) of that float32 p, rounded to float32. 1 − p is exact in float64.
let private float32Logs (t: float) (n: float) : float * float =
    let n' = float32 (max n 1.0)
    let ratio = (min (float32 t) n') / n'
    let lower, upper = float32 1e-6, float32 (1.0 - 1e-6)
    let p = max lower (min upper ratio)
    float (MathF.Log p), float (float32 (Math.Log(1.0 - float p)))

/// ln C(n, k) for integers 0 ≤ k ≤ n, as Σ ln of the factors.
let private logChoose (n: int) (k: int) =
    let lnFact m = Seq.sum [ for i in 1 .. m -> log (float i) ]
    lnFact n - lnFact k - lnFact (n - k)

/// −[ln C(n, k) + k ln p + (n − k) ln(1 − p)]/n for integer k, n (n ≥ 1), with the logits formed from given logs in
/// float32 (logit = ln p − ln(1 − p) in float32, as torch's probs_to_logits) and the rest in float64 through the
/// logit form k·logit − n·softplus(logit).
let private binomialFromLogs (k: int) (n: int) (lp: float, lq: float) =
    let logit = float (float32 lp - float32 lq)
    let softplus x = max x 0.0 + log (1.0 + exp (-(abs x)))
    -(logChoose n k + float k * logit - float n * softplus logit) / float n

let private vector (dtype: torch.ScalarType) (xs: float[]) = torch.tensor(xs, dtype = dtype)

[<Tests>]
let tests =
    testSequenced <| testList "original numerics" [
        test "the float32 target clamp: −ln Bin(k; n, p)/n with p clamped in float32 (1 − 1e-6 → 0.99999899)" {
            use _ = torch.NewDisposeScope()
            // Targets at or above the valid frames (the schedule-0 case), inside, and at the lower clamp.
            let ks = [| 7; 3; 10; 4; 0 |]
            let ns = [| 10; 10; 10; 9; 12 |]
            let ts = [| 10.0; 14.0; 10.0; 2.5; 1e-9 |]
            let expected = Array.init ks.Length (fun i -> binomialFromLogs ks.[i] ns.[i] (float32Logs ts.[i] (float ns.[i])))
            // Tolerances: one float32 ulp of ln(1 − p) ≈ 1e-6 (torch's log1p), and float32 loss arithmetic.
            for dtype, tol in [ torch.float32, 2e-5; torch.float64, 3e-6 ] do
                let k = vector dtype (Array.map float ks)
                let n = vector dtype (Array.map float ns)
                let t = vector dtype ts
                let actual = Losses.binomialFromTargetsWith Losses.ClampInFloat32 k n t
                close tol $"float32 clamp ({dtype})" actual (vector dtype expected)
            // The default (float64 clamp) differs by (n − k)/n · 1.3e-2 where the target reaches n: the test can tell.
            let default64 = Losses.binomialFromTargets (vector torch.float64 (Array.map float ks)) (vector torch.float64 (Array.map float ns)) (vector torch.float64 ts)
            let d = Tensors.toFloatArray default64
            let gap = abs (d.[0] - expected.[0])
            Expect.isGreaterThan gap 3e-3 "row 0 (k 7, n 10, t = n): the float64 clamp differs by about 0.3 · 1.3e-2"
            Expect.isLessThan gap 5e-3 "…and by no more"
        }

        test "the float32 clamp of the soft-count loss: −(E ln p + (n' − E) ln(1 − p))/n' with float32 logs" {
            use _ = torch.NewDisposeScope()
            let rows = [| [| 0.9; 0.2; 0.7; 1.0; 0.4; 0.0 |]; [| 0.3; 0.3; 0.8; 0.1; 0.0; 0.6 |] |]
            let lengths = [| 6; 4 |]
            let ts = [| 6.0; 1.5 |]
            let expected =
                Array.init 2 (fun i ->
                    let n = float lengths.[i]
                    let e = Array.sum rows.[i].[.. lengths.[i] - 1]
                    let lp, lq = float32Logs ts.[i] n
                    -(e * lp + (n - e) * lq) / n)
            let b = torch.tensor(Array.concat rows, dtype = torch.float64).reshape(2L, 6L)
            let mask = torch.arange(6L).unsqueeze(0L).lt(torch.tensor([| 6L; 4L |]).unsqueeze(1L)).to_type(torch.float64)
            let actual = Losses.binomialFlexibleWith Losses.ClampInFloat32 b (Some mask) (vector torch.float64 ts)
            close 3e-6 "soft counts, float32 clamp" actual (vector torch.float64 expected)
        }

        test "the original's forcing splits the gradient of ties 50/50 on a padded batch (torch.maximum)" {
            use _ = torch.NewDisposeScope()
            // Row 0 full (6 frames), row 1 padded after 4: the forced frame of row 1 is frame 3.
            let values = [| 1.0; 0.0; 0.0; 1.0; 0.0; 1.0
                            0.0; 1.0; 0.0; 0.0; 0.0; 0.0 |]
            let forced = [| 0.0; 0.0; 0.0; 0.0; 0.0; 0.0
                            0.0; 0.0; 0.0; 1.0; 0.0; 0.0 |]
            let weights = [| 0.3; -1.2; 0.7; 2.0; -0.4; 1.1
                             0.9; 0.5; -0.8; 1.7; 0.6; -1.5 |]
            let mask = torch.arange(6L).unsqueeze(0L).lt(torch.tensor([| 6L; 4L |]).unsqueeze(1L)).to_type(torch.float64)
            let b = torch.tensor(values, dtype = torch.float64).reshape(2L, 6L).requires_grad_(true)
            let w = torch.tensor(weights, dtype = torch.float64).reshape(2L, 6L)
            let forcedB = Boundaries.forceOriginal (Some mask) b
            close 0.0 "value: max(b, forced)" forcedB (torch.tensor(Array.map2 max values forced, dtype = torch.float64).reshape(2L, 6L))
            (forcedB * w).sum().backward()
            // ∂max(b, f)/∂b: 1 where b > f, ½ where b = f, 0 where b < f.
            let expected =
                Array.init values.Length (fun i ->
                    if values.[i] > forced.[i] then weights.[i]
                    elif values.[i] = forced.[i] then weights.[i] / 2.0
                    else 0.0)
            close 1e-15 "tie gradient" b.grad (torch.tensor(expected, dtype = torch.float64).reshape(2L, 6L))
            // Without padding nothing is forced and the gradient passes in full.
            let full = torch.ones([| 2L; 6L |], dtype = torch.float64)
            let b2 = torch.tensor(values, dtype = torch.float64).reshape(2L, 6L).requires_grad_(true)
            (Boundaries.forceOriginal (Some full) b2 * w).sum().backward()
            close 1e-15 "unpadded batch: full gradient" b2.grad w
            // The batch-independent rule: the forced frame carries none, every other frame the full gradient.
            let b3 = torch.tensor(values, dtype = torch.float64).reshape(2L, 6L).requires_grad_(true)
            (Boundaries.forceLast (Some mask) b3 * w).sum().backward()
            let last = [| 0.0; 0.0; 0.0; 0.0; 0.0; 1.0; 0.0; 0.0; 0.0; 1.0; 0.0; 0.0 |]
            close 1e-15 "forceLast" b3.grad (torch.tensor(Array.map2 (fun wi f -> wi * (1.0 - f)) weights last, dtype = torch.float64).reshape(2L, 6L))
        }
    ]
