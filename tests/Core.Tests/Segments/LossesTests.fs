/// Properties of the boundary-rate losses and schedules: values against direct float64 formulas written here
/// independently (log-factorial sums, a Lanczos lnΓ, an asymptotic ψ), gradients against central finite differences
/// and the digamma formula, and neighbour counts against brute force.
module MagnetWhisper.Tests.Segments.LossesTests

open System
open Expecto
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Segments
open MagnetWhisper.Tests
open MagnetWhisper.Tests.Segments.BoundariesTests

// ---------------------------------------------------------------------------------------------------------------
// Independent special functions

/// ln n! as a sum of logarithms.
let logFactorial (n: int) = Seq.sum (seq { for i in 2 .. n -> log (float i) })

let private lanczos =
    [| 0.99999999999980993; 676.5203681218851; -1259.1392167224028; 771.32342877765313; -176.61502916214059
       12.507343278686905; -0.13857109526572012; 9.9843695780195716e-6; 1.5056327351493116e-7 |]

/// lnΓ(x) for x > 0 (Lanczos, g = 7; relative error ~1e-15).
let rec lnGamma (x: float) : float =
    if x < 0.5 then log (Math.PI / abs (sin (Math.PI * x))) - lnGamma (1.0 - x)
    else
        let x = x - 1.0
        let t = x + 7.5
        let a = lanczos.[0] + Seq.sum (seq { for i in 1..8 -> lanczos.[i] / (x + float i) })
        0.5 * log (2.0 * Math.PI) + (x + 0.5) * log t - t + log a

/// ψ(x) for x > 0: recurrence up to 6, then the asymptotic series (error < 1e-11).
let digamma (x: float) : float =
    let mutable x = x
    let mutable acc = 0.0
    while x < 6.0 do
        acc <- acc - 1.0 / x
        x <- x + 1.0
    let f = 1.0 / (x * x)
    acc + log x - 0.5 / x - f * (1.0 / 12.0 - f * (1.0 / 120.0 - f * (1.0 / 252.0 - f * (1.0 / 240.0 - f / 132.0))))

/// −ln Bin(k; n, p) for real k, n.
let binomialNll (k: float) (n: float) (p: float) =
    -(lnGamma (n + 1.0) - lnGamma (k + 1.0) - lnGamma (n - k + 1.0) + k * log p + (n - k) * log (1.0 - p))

/// −ln Bin(k; n, p) for integer k ≤ n via log-factorial sums.
let binomialNllInt (k: int) (n: int) (p: float) =
    -(logFactorial n - logFactorial k - logFactorial (n - k) + float k * log p + float (n - k) * log (1.0 - p))

/// p = clamp(min(t, n')/n', 1e-6, 1 − 1e-6).
let targetP (n': float) (t: float) = min (max (min t n' / n') 1e-6) (1.0 - 1e-6)

/// Central finite differences of a scalar function of a (B,) or (B, L) float64 tensor, one entry at a time.
let finiteDifferences (f: Tensor -> Tensor) (x: Tensor) (step: float) : Tensor =
    let flat = Tensors.toFloatArray x
    let at (values: float[]) = torch.tensor(values, dtype = torch.float64).reshape(x.shape)
    let value (values: float[]) = Tensors.toFloat (f (at values))
    flat
    |> Array.mapi (fun i _ ->
        let plus, minus = Array.copy flat, Array.copy flat
        plus.[i] <- plus.[i] + step
        minus.[i] <- minus.[i] - step
        (value plus - value minus) / (2.0 * step))
    |> at

/// Totals n (0..maxN), integer counts k ≤ n, and their float arrays.
let countsOf (r: Random) (batch: int) (maxN: int) =
    let n = Array.init batch (fun _ -> if r.Next 8 = 0 then 0 else r.Next(maxN + 1))
    let k = n |> Array.map (fun total -> r.Next(total + 1))
    k, n

/// Real-valued counts 0.3 ≤ k ≤ n − 0.3 with n ≥ 1.
let realCountsOf (r: Random) (batch: int) =
    let n = Array.init batch (fun _ -> float (1 + r.Next 80))
    let k = n |> Array.map (fun total -> 0.3 + (total - 0.6) * r.NextDouble() |> max 0.3)
    k, n

let f64 = Array.map float

[<Tests>]
let tests =
    testList "losses" [
        caseProperty "binomial with a prior equals −ln Bin(k; n, p)/max(n, 1) (log-factorials); reduced = mean" (fun c ->
            let r = Random c.Seed
            let prior = 0.01 + 0.98 * r.NextDouble()
            let k, n = countsOf r c.Batch 300
            let expected = Array.init c.Batch (fun i -> binomialNllInt k.[i] n.[i] prior / max (float n.[i]) 1.0)
            let actual = Losses.binomialPerUtterance prior (tensor1 c.Dtype (f64 k)) (tensor1 c.Dtype (f64 n))
            Expect.equal actual.dtype c.Dtype "dtype of k"
            let tol = if c.Double then 1e-10 else 5e-5
            closeRel tol "per utterance" actual (tensor1 torch.float64 expected)
            let reduced = Losses.binomial prior (tensor1 c.Dtype (f64 k)) (tensor1 c.Dtype (f64 n))
            Expect.equal reduced.Dimensions 0L "scalar"
            Expect.floatClose { absolute = tol; relative = tol } (Tensors.toFloat reduced) (Array.average expected) "mean")

        caseProperty "binomial with a prior: real counts match lnΓ, ∂/∂k matches finite differences and [ψ(k+1) − ψ(n−k+1) − logit p]/n" (fun c ->
            let r = Random c.Seed
            let prior = 0.01 + 0.98 * r.NextDouble()
            let k, n = realCountsOf r c.Batch
            let nT = tensor1 torch.float64 n
            let loss kT = Losses.binomialPerUtterance prior kT nT
            closeRel 1e-11 "value" (loss (tensor1 torch.float64 k)) (tensor1 torch.float64 (Array.init c.Batch (fun i -> binomialNll k.[i] n.[i] prior / n.[i])))
            let kLeaf = (tensor1 torch.float64 k).detach().requires_grad_(true)
            (loss kLeaf).sum().backward()
            let fd = finiteDifferences (fun kT -> (loss kT).sum()) (tensor1 torch.float64 k) 1e-5
            Reference.close 1e-7 "autograd vs finite differences" kLeaf.grad fd
            let psi = Array.init c.Batch (fun i -> (digamma (k.[i] + 1.0) - digamma (n.[i] - k.[i] + 1.0) - logit prior) / n.[i])
            Reference.close 1e-9 "digamma formula" kLeaf.grad (tensor1 torch.float64 psi))

        caseProperty "binomial from targets equals −ln Bin(k; n', p)/n' with n' = max(n, 1), p = clamp(min(t, n')/n')" (fun c ->
            let r = Random c.Seed
            let k, n = countsOf r c.Batch 300
            let t = n |> Array.map (fun total -> match r.Next 5 with 0 -> 0.0 | 1 -> 1.5 * float total + 1.0 | _ -> 1.5 * float total * r.NextDouble())
            let expected =
                Array.init c.Batch (fun i ->
                    let n' = max n.[i] 1
                    binomialNllInt k.[i] n' (targetP (float n') t.[i]) / float n')
            let actual = Losses.binomialFromTargets (tensor1 c.Dtype (f64 k)) (tensor1 c.Dtype (f64 n)) (tensor1 c.Dtype t)
            closeRel (if c.Double then 1e-10 else 5e-5) "per utterance" actual (tensor1 torch.float64 expected))

        caseProperty "binomial from targets: ∂/∂k = [ψ(k+1) − ψ(n−k+1) − logit p]/n and matches finite differences" (fun c ->
            let r = Random c.Seed
            let k, n = realCountsOf r c.Batch
            let t = n |> Array.map (fun total -> 1.2 * total * r.NextDouble())
            let nT, tT = tensor1 torch.float64 n, tensor1 torch.float64 t
            let loss kT = Losses.binomialFromTargets kT nT tT
            let expectedValue = Array.init c.Batch (fun i -> binomialNll k.[i] n.[i] (targetP n.[i] t.[i]) / n.[i])
            closeRel 1e-11 "real-count value" (loss (tensor1 torch.float64 k)) (tensor1 torch.float64 expectedValue)
            let kLeaf = (tensor1 torch.float64 k).detach().requires_grad_(true)
            (loss kLeaf).sum().backward()
            let psi =
                Array.init c.Batch (fun i ->
                    (digamma (k.[i] + 1.0) - digamma (n.[i] - k.[i] + 1.0) - logit (targetP n.[i] t.[i])) / n.[i])
            Reference.close 1e-9 "digamma formula" kLeaf.grad (tensor1 torch.float64 psi)
            let fd = finiteDifferences (fun kT -> (loss kT).sum()) (tensor1 torch.float64 k) 1e-5
            Reference.close 1e-7 "finite differences" kLeaf.grad fd)

        caseProperty "flexible loss equals −(E ln p + (n' − E) ln(1 − p))/n'; its gradient in soft b matches finite differences" (fun c ->
            let r = Random c.Seed
            let bRows = Array.init c.Batch (fun _ -> Array.init c.Length (fun _ -> r.NextDouble()))
            let mask, mRows = maskOf c (prefixMaskRows r c.Batch c.Length)
            let t = Array.init c.Batch (fun _ -> match r.Next 4 with 0 -> 0.0 | _ -> float c.Length * 1.2 * r.NextDouble())
            let expected =
                Array.init c.Batch (fun i ->
                    let e = Array.fold2 (fun s b m -> s + b * m) 0.0 bRows.[i] mRows.[i]
                    let n' = max (Array.sum mRows.[i]) 1.0
                    let p = targetP n' t.[i]
                    -(e * log p + (n' - e) * log (1.0 - p)) / n')
            let actual = Losses.binomialFlexible (tensor2 c.Dtype bRows) mask (tensor1 c.Dtype t)
            closeRel (if c.Double then 1e-11 else 1e-5) "value" actual (tensor1 torch.float64 expected)
            // Gradients in float64.
            let mask64 = mask |> Option.map (fun m -> m.to_type torch.float64)
            let t64 = tensor1 torch.float64 t
            let loss (b: Tensor) = (Losses.binomialFlexible b mask64 t64).sum()
            let leaf = (tensor2 torch.float64 bRows).detach().requires_grad_(true)
            (loss leaf).backward()
            Reference.close 1e-8 "finite differences" leaf.grad (finiteDifferences loss (tensor2 torch.float64 bRows) 1e-5)
            let analytic =
                Array.init c.Batch (fun i ->
                    let n' = max (Array.sum mRows.[i]) 1.0
                    let p = targetP n' t.[i]
                    mRows.[i] |> Array.map (fun m -> -m * (log p - log (1.0 - p)) / n'))
            Reference.close 1e-10 "−m·logit(p)/n'" leaf.grad (tensor2 torch.float64 analytic))

        caseProperty "hinge loss equals relu(r − (μ + 3σ)) + relu((μ − 3σ) − r)" (fun c ->
            let r = Random c.Seed
            let k, n = countsOf r c.Batch 60
            let mu, sigma = 0.5 * r.NextDouble(), 0.1 * r.NextDouble()
            let expected =
                Array.init c.Batch (fun i ->
                    let rate = float k.[i] / max (float n.[i]) 1.0
                    max 0.0 (rate - (mu + 3.0 * sigma)) + max 0.0 ((mu - 3.0 * sigma) - rate))
            let actual = Losses.hinge mu sigma (tensor1 c.Dtype (f64 k)) (tensor1 c.Dtype (f64 n))
            Reference.close (if c.Double then 1e-12 else 1e-6) "hinge" actual (tensor1 torch.float64 expected))

        caseProperty "repulsion counts the other boundaries within ±2 exactly, with and without a mask" (fun c ->
            let r = Random c.Seed
            let bRows = boundaryRows r c.Batch c.Length
            let mask, mRows = maskOf c (prefixMaskRows r c.Batch c.Length)
            // Padded frames may hold boundaries too: near counts them, the mask only selects the centres.
            let b = tensor2 c.Dtype bRows
            for width in [ 5; 3 ] do
                let half = width / 2
                let violations i =
                    Seq.sum (seq {
                        for t in 0 .. c.Length - 1 do
                            let near =
                                Seq.sum (seq { for j in max 0 (t - half) .. min (c.Length - 1) (t + half) do if j <> t then bRows.[i].[j] })
                            near * bRows.[i].[t] * mRows.[i].[t] })
                let perRow = Array.init c.Batch (fun i -> violations i / max (Array.sum mRows.[i]) 1.0)
                let total = Seq.sum (seq { for i in 0 .. c.Batch - 1 -> violations i }) / max (Array.sumBy Array.sum mRows) 1.0
                let perUtterance, scalar =
                    if width = 5 then Losses.repulsionPerUtterance b mask, Losses.repulsion b mask
                    else Losses.repulsionPerUtteranceWith width b mask, Losses.repulsionWith width b mask
                Reference.close 1e-6 $"width {width}: per utterance" perUtterance (tensor1 torch.float64 perRow)
                Expect.floatClose { absolute = 1e-6; relative = 1e-6 } (Tensors.toFloat scalar) total $"width {width}: batch")

        caseProperty "adjacency penalty is Σ b_t·b_{t−1}·m_t exactly; reduced = mean" (fun c ->
            let r = Random c.Seed
            let bRows = boundaryRows r c.Batch c.Length
            let mask, mRows = maskOf c (prefixMaskRows r c.Batch c.Length)
            let expected =
                Array.init c.Batch (fun i ->
                    Seq.sum (seq { for t in 1 .. c.Length - 1 -> bRows.[i].[t] * bRows.[i].[t - 1] * mRows.[i].[t] }))
            let b = tensor2 c.Dtype bRows
            Reference.close 0.0 "per utterance" (Losses.adjacencyPerUtterance b mask) (tensor1 torch.float64 expected)
            Expect.floatClose { absolute = 1e-6; relative = 1e-6 } (Tensors.toFloat (Losses.adjacency b mask)) (Array.average expected) "mean")

        caseProperty "scheduled prior: 1/p(s) = 1 + s(1/p_t − 1); 1 for p_t = 1" (fun c ->
            let r = Random c.Seed
            let pt, s = 0.01 + 0.98 * r.NextDouble(), r.NextDouble()
            Expect.floatClose Accuracy.high (Losses.scheduledPrior pt s) (1.0 / (1.0 + s * (1.0 / pt - 1.0))) "lerp of 1/p"
            Expect.floatClose Accuracy.high (Losses.scheduledPrior pt 1.0) pt "s = 1 gives the target"
            Expect.equal (Losses.scheduledPrior pt 0.0) 1.0 "s = 0 gives 1"
            Expect.equal (Losses.scheduledPrior 1.0 s) 1.0 "p_t = 1 gives 1")

        caseProperty "BP1 compression schedule and the encoder's progress lerp equal their direct formulas" (fun c ->
            let r = Random c.Seed
            let mask, mRows = maskOf c (prefixMaskRows r c.Batch c.Length)
            let t = Array.init c.Batch (fun _ -> match r.Next 5 with 0 -> 0.0 | _ -> 1.5 * float c.Length * r.NextDouble())
            let tT = tensor1 c.Dtype t
            let totals = Losses.scheduleTotals mask tT
            let expectedTotals = Array.init c.Batch (fun i -> if c.Masked then Array.sum mRows.[i] else 12.0 * t.[i])
            closeRel 1e-6 "totals" totals (tensor1 torch.float64 expectedTotals)
            let tol = if c.Double then 1e-10 else 1e-5
            for s in [ 0.0; r.NextDouble(); 1.0 ] do
                let expected =
                    Array.init c.Batch (fun i ->
                        let total = expectedTotals.[i]
                        let cMax = total / max t.[i] 1e-8
                        total / (1.0 + (cMax - 1.0) * s))
                closeRel tol $"compression schedule {s}" (Losses.compressionScheduledTargets s totals tT) (tensor1 torch.float64 expected)
            let valid = Boundaries.validCounts mask (tensor2 c.Dtype mRows)
            for progress in [ -0.5; 0.0; r.NextDouble(); 1.0; 2.0 ] do
                let expected =
                    Array.init c.Batch (fun i ->
                        let total = Array.sum mRows.[i]
                        let totalHat = max total 1.0
                        let tTilde = if t.[i] > 0.0 then t.[i] else totalHat
                        let ratio = max (totalHat / tTilde) 1.0
                        let rho = min (max progress 0.0) 1.0
                        max (min (totalHat / (1.0 + rho * (ratio - 1.0))) total) 0.0)
                closeRel tol $"progress {progress}" (Losses.progressTargets progress valid tT) (tensor1 torch.float64 expected))

        test "temporaries are disposed: only the returned tensors stay alive" {
            use b = torch.rand(3L, 9L).gt(sc 0.5).to_type(torch.float32)
            use m = torch.ones(3L, 9L).tril(3L)
            use k = b.sum(1L)
            use n = m.sum(1L)
            use t = n * 0.5
            let mask = Some m
            let one (x: Tensor) = [ x :> IDisposable ]
            leavesNoTensors "binomial" (fun () -> one (Losses.binomial 0.1 k n))
            leavesNoTensors "binomialFromTargets" (fun () -> one (Losses.binomialFromTargets k n t))
            leavesNoTensors "binomialFlexible" (fun () -> one (Losses.binomialFlexible b mask t))
            leavesNoTensors "hinge" (fun () -> one (Losses.hinge 0.1 0.01 k n))
            leavesNoTensors "repulsion" (fun () -> one (Losses.repulsion b mask))
            leavesNoTensors "repulsionPerUtterance without a mask" (fun () -> one (Losses.repulsionPerUtterance b None))
            leavesNoTensors "adjacency" (fun () -> one (Losses.adjacency b mask))
            leavesNoTensors "schedules" (fun () ->
                let totals = Losses.scheduleTotals mask t
                [ totals; Losses.compressionScheduledTargets 0.5 totals t; Losses.progressTargets 0.5 n t ])
        }

        test "bad shapes and arguments are rejected with the argument's name" {
            use _ = torch.NewDisposeScope()
            let throwsNamed name (f: unit -> obj) =
                let e = Expect.throwsC (f >> ignore) id
                Expect.isTrue (e :? ArgumentException && (e :?> ArgumentException).ParamName = name) $"ArgumentException naming {name}: {e.Message}"
            let v = torch.ones(3L)
            throwsNamed "k" (fun () -> box (Losses.binomialPerUtterance 0.1 (torch.ones(3L, 2L)) v))
            throwsNamed "n" (fun () -> box (Losses.binomialFromTargets v (torch.ones(4L)) v))
            throwsNamed "t" (fun () -> box (Losses.binomialFromTargets v v (torch.ones(2L))))
            throwsNamed "prior" (fun () -> box (Losses.binomial 1.5 v v))
            throwsNamed "mask" (fun () -> box (Losses.repulsion (torch.ones(3L, 4L)) (Some(torch.ones(3L, 5L)))))
            throwsNamed "kernelSize" (fun () -> box (Losses.repulsionWith 4 (torch.ones(3L, 4L)) None))
            throwsNamed "b" (fun () -> box (Losses.adjacency v None))
        }
    ]
