/// Properties of boundary sampling, masking and statistics, checked against brute-force float64 recomputations
/// from plain arrays, autograd identities and sampling statistics with fixed seeds.
module MagnetWhisper.Tests.Segments.BoundariesTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Segments
open MagnetWhisper.Tests

type Tensor = torch.Tensor

/// One generated test case: a batch shape, the seed of its data, the dtype and whether a mask is used.
type Case =
    { Batch: int
      Length: int
      Seed: int
      Double: bool
      Masked: bool }

    member c.Dtype = if c.Double then torch.float64 else torch.float32
    /// Absolute tolerance of single-op results in the case's dtype.
    member c.Tol = if c.Double then 1e-10 else 1e-5

/// Generators of test cases (passed by config).
type Arbs =
    static member Case() : Arbitrary<Case> =
        gen {
            let! batch = Gen.choose (1, 4)
            let! length = Gen.choose (1, 24)
            let! seed = Gen.choose (0, Int32.MaxValue - 1)
            let! dbl = Gen.elements [ true; false ]
            let! masked = Gen.frequency [ 3, Gen.constant true; 1, Gen.constant false ]
            return { Batch = batch; Length = length; Seed = seed; Double = dbl; Masked = masked }
        }
        |> Arb.fromGen

let config = Generators.configWith [ typeof<Arbs> ]

/// A property over generated cases, run inside a dispose scope.
let caseProperty (name: string) (f: Case -> unit) =
    testPropertyWithConfig config name (fun (c: Case) ->
        use _ = torch.NewDisposeScope()
        f c)

// ---------------------------------------------------------------------------------------------------------------
// Arrays ⇄ tensors and random data

/// (B, L) tensor from rows.
let tensor2 (dtype: torch.ScalarType) (rows: float[][]) : Tensor =
    let l = if rows.Length = 0 then 0 else rows.[0].Length
    torch.tensor(Array.concat rows, dtype = dtype).reshape(int64 rows.Length, int64 l)

/// (n,) tensor.
let tensor1 (dtype: torch.ScalarType) (xs: float[]) : Tensor = torch.tensor(xs, dtype = dtype)

/// Rows of a (B, L) tensor as float64 arrays.
let rowsOf (t: Tensor) : float[][] =
    let b, l = int t.shape.[0], int t.shape.[1]
    let a = Tensors.toFloatArray t
    Array.init b (fun i -> Array.sub a (i * l) l)

/// Probabilities with some exact 0s and 1s.
let probsRows (r: Random) b l =
    Array.init b (fun _ ->
        Array.init l (fun _ ->
            match r.Next 20 with
            | 0 -> 0.0
            | 1 -> 1.0
            | _ -> r.NextDouble()))

/// Probabilities strictly inside (0.001, 0.999).
let interiorProbsRows (r: Random) b l =
    Array.init b (fun _ -> Array.init l (fun _ -> 0.001 + 0.998 * r.NextDouble()))

/// 0/1 boundaries with a random density per row (sparse to almost full).
let boundaryRows (r: Random) b l =
    Array.init b (fun _ ->
        let density = [| 0.05; 0.2; 0.4; 0.7; 0.95 |].[r.Next 5]
        Array.init l (fun _ -> if r.NextDouble() < density then 1.0 else 0.0))

/// Prefix masks with random valid lengths in 0..L (a third of the rows full).
let prefixMaskRows (r: Random) b l =
    Array.init b (fun _ ->
        let n = if r.Next 3 = 0 then l else r.Next(l + 1)
        Array.init l (fun j -> if j < n then 1.0 else 0.0))

/// Arbitrary (non-prefix) masks, some rows empty.
let scatteredMaskRows (r: Random) b l =
    Array.init b (fun _ ->
        if r.Next 5 = 0 then Array.zeroCreate l
        else Array.init l (fun _ -> if r.NextDouble() < 0.7 then 1.0 else 0.0))

/// The mask tensor of a case (or None) and its rows (ones without a mask).
let maskOf (c: Case) (rows: float[][]) : Tensor option * float[][] =
    if c.Masked then Some(tensor2 c.Dtype rows), rows
    else None, Array.init c.Batch (fun _ -> Array.create c.Length 1.0)

/// Asserts |actual − expected| ≤ tol·(1 + |expected|) elementwise (shapes equal).
let closeRel (tol: float) (message: string) (actual: Tensor) (expected: Tensor) =
    Expect.sequenceEqual actual.shape expected.shape $"{message}: shape"
    let a, e = Tensors.toFloatArray actual, Tensors.toFloatArray expected
    let worst = Array.fold2 (fun w x y -> max w (abs (x - y) / (1.0 + abs y))) 0.0 a e
    Expect.isLessThanOrEqual worst tol $"{message}: max relative |diff| = {worst}"

/// A TorchSharp Scalar.
let sc (x: float) : Scalar = Scalar.op_Implicit x

/// Asserts that f leaves no live tensor behind once the tensors it returns are disposed (it runs outside any
/// dispose scope, so an undisposed temporary would stay alive).
let leavesNoTensors (name: string) (f: unit -> IDisposable list) =
    let live () = DisposeScopeManager.Statistics.ThreadTotalLiveCount
    let before = live ()
    for d in f () do d.Dispose()
    Expect.equal (live ()) before $"{name}: live tensors after disposing its results"

let sigmoid x = 1.0 / (1.0 + exp (-x))
let logit p = log p - log (1.0 - p)

// ---------------------------------------------------------------------------------------------------------------
// Brute-force statistics

/// Index of the last non-zero entry.
let lastValid (m: float[]) = Array.tryFindIndexBack (fun v -> v <> 0.0) m

/// Gaps between consecutive boundaries within the first Σm frames of a row.
let rowGaps (b: float[]) (m: float[]) =
    let n = int (Array.sum m)
    let positions = [| for j in 0 .. n - 1 do if b.[j] > 0.5 then j |]
    Array.pairwise positions |> Array.map (fun (a, c) -> float (c - a))

/// std_unbiased / (mean + 1e-8) of at least two gaps.
let cvOf (gaps: float[]) =
    let mean = Array.average gaps
    let var = (gaps |> Array.sumBy (fun g -> (g - mean) ** 2.0)) / float (gaps.Length - 1)
    sqrt var / (mean + 1e-8)

let clampP p = min (max p 1e-8) (1.0 - 1e-8)

// ---------------------------------------------------------------------------------------------------------------
// Tests

[<Tests>]
let tests =
    testList "boundaries" [
        caseProperty "relaxed sample equals σ((logit p + ln u − ln(1 − u))/τ) with the dtype's clamps" (fun c ->
            let r = Random c.Seed
            let tau = [| 0.1; 0.5; 1.0; 3.0 |].[r.Next 4]
            let p = tensor2 c.Dtype (probsRows r c.Batch c.Length)
            let u = tensor2 c.Dtype (Array.init c.Batch (fun _ -> Array.init c.Length (fun _ -> r.NextDouble())))
            let z = Boundaries.relaxedFromNoise tau u (Boundaries.probsToLogits p)
            let eps = if c.Double then 2.220446049250313e-16 else 1.1920928955078125e-07
            let clampE x = min (max x eps) (1.0 - eps)
            let expected =
                Array.map2 (Array.map2 (fun pv uv ->
                    let pc, uc = clampE pv, clampE uv
                    clampE (sigmoid ((logit pc + logit uc) / tau)))) (rowsOf p) (rowsOf u)
            // Float32 logits of p near 0 or 1 are accurate only relative to their size: compare relatively.
            closeRel (if c.Double then 1e-9 else 2e-4) "z" z (tensor2 torch.float64 expected)
            Expect.isTrue (z.ge(sc eps).all().item<bool>() && z.le(sc (1.0 - eps)).all().item<bool>()) "z in [ε, 1 − ε]")

        test "relaxed sample thresholded at 0.5 is Bernoulli(p) for any τ, and P(z > x) = σ(logit p − τ logit x)" {
            use _ = torch.NewDisposeScope()
            let ps = [| 0.02; 0.1; 0.3; 0.5; 0.77; 0.95 |]
            let n = 200_000
            use g = Boundaries.generator 20240601L torch.CPU
            let probs = torch.tensor(ps, dtype = torch.float32).unsqueeze(1L).expand(int64 ps.Length, int64 n).contiguous()
            let pRead = Tensors.toFloatArray (probs.select(1L, 0L))
            for tau in [ 0.1; 1.0; 3.0 ] do
                let z = Boundaries.relaxedSample g tau probs
                let check (what: string) (expectedOf: float -> float) (freq: Tensor) =
                    Array.iteri2 (fun i f p ->
                        let q = expectedOf p
                        let sd = sqrt (q * (1.0 - q) / float n) + 1.0 / float n
                        Expect.isLessThan (abs (f - q)) (6.0 * sd) $"τ={tau}, p={ps.[i]}: {what} frequency {f} vs {q}")
                        (Tensors.toFloatArray freq) pRead
                check "z > 0.5" id ((Boundaries.hard 0.5 z).mean([| 1L |]))
                for x in [ 0.25; 0.75 ] do
                    let expected p = sigmoid (logit p - tau * logit x)
                    check $"z > {x}" expected ((Boundaries.hard x z).mean([| 1L |]))
        }

        caseProperty "the same seed gives the same sample; the next seed another" (fun c ->
            let r = Random c.Seed
            let p = tensor2 c.Dtype (interiorProbsRows r c.Batch c.Length)
            let draw seed =
                use g = Boundaries.generator seed torch.CPU
                Boundaries.relaxedSample g 1.0 p
            let a, b, other = draw (int64 c.Seed), draw (int64 c.Seed), draw (int64 c.Seed + 1L)
            Expect.equal (Reference.maxAbsDiff a b) 0.0 "same seed, same sample"
            Expect.isGreaterThan (Reference.maxAbsDiff a other) 0.0 "another seed, another sample")

        caseProperty "inference threshold is 1[p > threshold]" (fun c ->
            let r = Random c.Seed
            let rows = probsRows r c.Batch c.Length
            let threshold = [| 0.5; r.NextDouble(); rows.[0].[0] |].[r.Next 3]
            let p = tensor2 c.Dtype rows
            // The comparison happens in p's dtype: round the threshold as torch does.
            let thresholdRead = if c.Double then threshold else float (float32 threshold)
            let expected = rowsOf p |> Array.map (Array.map (fun v -> if v > thresholdRead then 1.0 else 0.0))
            let h = Boundaries.hard threshold p
            Expect.equal h.dtype c.Dtype "dtype kept"
            Expect.equal (Reference.maxAbsDiff h (tensor2 torch.float64 expected)) 0.0 "exact")

        caseProperty "straight-through: value is the hard sample, gradient is the relaxed sample's" (fun c ->
            let r = Random c.Seed
            let tau = [| 0.1; 1.0; 3.0 |].[r.Next 3]
            let logitRows = Array.init c.Batch (fun _ -> Array.init c.Length (fun _ -> 8.0 * r.NextDouble() - 4.0))
            let weights = tensor2 c.Dtype (Array.init c.Batch (fun _ -> Array.init c.Length (fun _ -> r.NextDouble() - 0.5)))
            use g = Boundaries.generator (int64 c.Seed) torch.CPU
            let u = Boundaries.uniformLike g (tensor2 c.Dtype logitRows)
            let leaf () = (tensor2 c.Dtype logitRows).detach().requires_grad_(true)
            let a = leaf ()
            let z = Boundaries.relaxedFromNoise tau u a
            let h = Boundaries.hard 0.5 z
            let hb = Boundaries.straightThrough h z
            Expect.equal (Reference.maxAbsDiff hb h) 0.0 "value is exactly h"
            (hb * weights).sum().backward()
            let b = leaf ()
            let zb = Boundaries.relaxedFromNoise tau u b
            (zb * weights).sum().backward()
            Reference.close c.Tol "gradient of the relaxed sample" a.grad b.grad
            // And that gradient is z(1 − z)/τ · w.
            let expected =
                Array.map2 (Array.map2 (fun zv wv -> zv * (1.0 - zv) / tau * wv)) (rowsOf z) (rowsOf weights)
            Reference.close (if c.Double then 1e-12 else 1e-5) "∂z/∂logit" a.grad (tensor2 torch.float64 expected))

        caseProperty "masking forces exactly the last valid frame of every row with a valid frame" (fun c ->
            let r = Random c.Seed
            let bRows = Array.init c.Batch (fun _ -> Array.init c.Length (fun _ -> r.NextDouble()))
            let mask, mRows = maskOf c (scatteredMaskRows r c.Batch c.Length)
            let b = tensor2 c.Dtype bRows
            let result = Boundaries.maskAndForce mask b
            let expected =
                Array.map2 (fun (bRow: float[]) (mRow: float[]) ->
                    let last = lastValid mRow
                    Array.init c.Length (fun j -> if Some j = last then 1.0 else bRow.[j] * mRow.[j])) (rowsOf b) mRows
            Expect.equal (Reference.maxAbsDiff result (tensor2 torch.float64 expected)) 0.0 "masked and forced"
            let oneHot = Boundaries.lastValidFrame mask b |> rowsOf
            for i in 0 .. c.Batch - 1 do
                let expectedRow = Array.init c.Length (fun j -> if Some j = lastValid mRows.[i] then 1.0 else 0.0)
                Expect.sequenceEqual oneHot.[i] expectedRow $"row {i}: one-hot of the last valid frame")

        caseProperty "STE-then-mask and mask-then-STE: value h·m with the forced frame, gradient z's off the forced frame" (fun c ->
            let r = Random c.Seed
            let tau = [| 0.3; 1.0 |].[r.Next 2]
            let logitRows = Array.init c.Batch (fun _ -> Array.init c.Length (fun _ -> 6.0 * r.NextDouble() - 3.0))
            let mask, mRows = maskOf c (prefixMaskRows r c.Batch c.Length)
            let weights = Array.init c.Batch (fun _ -> Array.init c.Length (fun _ -> r.NextDouble() - 0.5))
            use g = Boundaries.generator (int64 c.Seed) torch.CPU
            let u = Boundaries.uniformLike g (tensor2 c.Dtype logitRows)
            for name, compose in [ "STE then mask", Boundaries.steThenMask; "mask then STE", Boundaries.maskThenSte ] do
                let a = (tensor2 c.Dtype logitRows).detach().requires_grad_(true)
                let z = Boundaries.relaxedFromNoise tau u a
                let h = Boundaries.hard 0.5 z
                let hb = compose mask h z
                let zRows, hRows = rowsOf z, rowsOf h
                let expectedValue =
                    Array.init c.Batch (fun i ->
                        Array.init c.Length (fun j ->
                            if Some j = lastValid mRows.[i] then 1.0 else hRows.[i].[j] * mRows.[i].[j]))
                Expect.equal (Reference.maxAbsDiff hb (tensor2 torch.float64 expectedValue)) 0.0 $"{name}: value"
                (hb * tensor2 c.Dtype weights).sum().backward()
                let expectedGrad =
                    Array.init c.Batch (fun i ->
                        Array.init c.Length (fun j ->
                            if Some j = lastValid mRows.[i] then 0.0
                            else
                                let zv = zRows.[i].[j]
                                mRows.[i].[j] * weights.[i].[j] * zv * (1.0 - zv) / tau))
                Reference.close (if c.Double then 1e-12 else 1e-6) $"{name}: gradient" a.grad (tensor2 torch.float64 expectedGrad))

        caseProperty "shortened mask is [1]*n + [0]*(S − n) with S the largest count" (fun c ->
            let r = Random c.Seed
            let mask, _ = maskOf c (prefixMaskRows r c.Batch c.Length)
            let b = Boundaries.maskAndForce mask (tensor2 c.Dtype (boundaryRows r c.Batch c.Length))
            let counts = rowsOf b |> Array.map (Array.sum >> int)
            let s = Array.max counts
            let expected = counts |> Array.map (fun n -> Array.init s (fun j -> if j < n then 1.0 else 0.0))
            let shortened = Boundaries.shortenedMask b
            Expect.sequenceEqual shortened.shape [| int64 c.Batch; int64 s |] "(B, S)"
            Expect.equal shortened.dtype c.Dtype "dtype of b"
            if s > 0 then Expect.equal (Reference.maxAbsDiff shortened (tensor2 torch.float64 expected)) 0.0 "values"
            let fromCounts =
                Boundaries.shortenedMaskOfCounts torch.float32 (torch.tensor(counts |> Array.map int64))
            Expect.sequenceEqual fromCounts.shape shortened.shape "from integer counts: (B, S)"
            // (Tensors.toFloatArray cannot read an empty tensor.)
            if s > 0 then Expect.sequenceEqual (Tensors.toFloatArray fromCounts) (Array.concat expected) "from integer counts")

        caseProperty "statistics equal brute-force float64 recomputations; CV is never NaN" (fun c ->
            let r = Random c.Seed
            let pRowsRaw = probsRows r c.Batch c.Length
            let mask, mRows = maskOf c (prefixMaskRows r c.Batch c.Length)
            let p = tensor2 c.Dtype pRowsRaw
            let b = Boundaries.maskAndForce mask (tensor2 c.Dtype (boundaryRows r c.Batch c.Length))
            use stats = Boundaries.stats mask p b
            let pRows, bRows = rowsOf p, rowsOf b
            let vec (xs: float[]) = tensor1 torch.float64 xs
            let perRow f = Array.init c.Batch f |> vec
            let tol = if c.Double then 1e-9 else 1e-4
            Reference.close 0.0 "counts" stats.Counts (perRow (fun i -> Array.fold2 (fun s x m -> s + x * m) 0.0 bRows.[i] mRows.[i]))
            Reference.close 0.0 "valid positions" stats.ValidPositions (perRow (fun i -> Array.sum mRows.[i]))
            Reference.close 0.0 "positions" stats.Positions (tensor2 torch.float64 (Array.map2 (Array.map2 (*)) bRows mRows))
            let confidence i =
                Array.fold2 (fun s x m -> s + abs (x - 0.5) * m) 0.0 pRows.[i] mRows.[i] / max (Array.sum mRows.[i]) 1.0
            Reference.close tol "confidence" stats.Confidence (perRow confidence)
            Expect.isFalse stats.Confidence.requires_grad "confidence detached"
            let entropy i =
                Array.fold2 (fun s x m ->
                    let q = clampP x
                    s - m * (q * log q + (1.0 - q) * log (1.0 - q))) 0.0 pRows.[i] mRows.[i]
            Reference.close tol "entropy" stats.Entropy (perRow entropy)
            let logProb i =
                Array.fold2 (fun s (x, h) m ->
                    let q = clampP x
                    s + m * (h * log q + (1.0 - h) * log (1.0 - q))) 0.0 (Array.zip pRows.[i] bRows.[i]) mRows.[i]
            closeRel tol "log-prob" stats.LogProb (perRow logProb)
            let gaps = Array.init c.Batch (fun i -> rowGaps bRows.[i] mRows.[i])
            Reference.close 0.0 "gap counts" stats.GapCounts (perRow (fun i -> float gaps.[i].Length))
            let cv i = if gaps.[i].Length >= 2 then cvOf gaps.[i] else 0.0
            Reference.close tol "spacing CV" stats.SpacingCv (perRow cv)
            Expect.sequenceEqual (Tensors.toFloatArray stats.CvDefined) (Array.init c.Batch (fun i -> if gaps.[i].Length >= 2 then 1.0 else 0.0)) "CV defined for ≥ 2 gaps"
            let qualifying = [| for i in 0 .. c.Batch - 1 do if gaps.[i].Length >= 2 then cv i |]
            let meanCv = if qualifying.Length = 0 then 0.0 else Array.average qualifying
            Expect.floatClose { absolute = tol; relative = tol } (Tensors.toFloat stats.MeanSpacingCv) meanCv "mean CV"
            let ones (g: float[]) = g |> Array.filter ((=) 1.0) |> Array.length |> float
            Reference.close tol "adjacency" stats.Adjacency (perRow (fun i -> if gaps.[i].Length = 0 then 0.0 else ones gaps.[i] / float gaps.[i].Length))
            let allGaps = Array.concat gaps
            let overall = if allGaps.Length = 0 then 0.0 else ones allGaps / float allGaps.Length
            Expect.floatClose { absolute = tol; relative = tol } (Tensors.toFloat stats.AdjacencyOverall) overall "overall adjacency"
            for t in [ stats.SpacingCv; stats.MeanSpacingCv; stats.Entropy; stats.LogProb; stats.Confidence ] do
                Expect.isTrue (t.isfinite().all().item<bool>()) "finite (never NaN)")

        test "rows with 0, 1 or 2 boundaries have no CV; 3 boundaries (2 gaps) do" {
            use _ = torch.NewDisposeScope()
            let rows =
                [| [| 0.0; 0.0; 0.0; 0.0; 0.0; 0.0 |]
                   [| 0.0; 0.0; 1.0; 0.0; 0.0; 0.0 |]
                   [| 1.0; 0.0; 0.0; 1.0; 0.0; 0.0 |]
                   [| 1.0; 1.0; 0.0; 0.0; 1.0; 0.0 |] |]
            let b = tensor2 torch.float32 rows
            use stats = Boundaries.stats None (torch.full_like(b, 0.3)) b
            let ones = Array.create 6 1.0
            let expectedCv = rows |> Array.map (fun row -> let g = rowGaps row ones in if g.Length >= 2 then cvOf g else 0.0)
            Expect.sequenceEqual (Tensors.toFloatArray stats.CvDefined) [| 0.0; 0.0; 0.0; 1.0 |] "only the row with two gaps"
            Reference.close 1e-6 "CV" stats.SpacingCv (tensor1 torch.float64 expectedCv)
            Expect.floatClose Accuracy.medium (Tensors.toFloat stats.MeanSpacingCv) expectedCv.[3] "mean over the one qualifying row"
            Expect.isTrue (stats.SpacingCv.isfinite().all().item<bool>()) "no NaN"
        }

        caseProperty "log-prob and entropy are differentiable in p: ∂logProb/∂p = m[h/p − (1 − h)/(1 − p)]" (fun c ->
            let r = Random c.Seed
            let pRows = interiorProbsRows r c.Batch c.Length
            let mask, mRows = maskOf c (prefixMaskRows r c.Batch c.Length)
            let hRows = boundaryRows r c.Batch c.Length
            let p = (tensor2 c.Dtype pRows).detach().requires_grad_(true)
            let lp = Boundaries.logProb mask p (tensor2 c.Dtype hRows)
            Expect.equal lp.dtype c.Dtype "float32 (float64 kept)"
            lp.sum().backward()
            let pRead = rowsOf p
            let expected =
                Array.init c.Batch (fun i ->
                    Array.init c.Length (fun j ->
                        let q, h = pRead.[i].[j], hRows.[i].[j]
                        mRows.[i].[j] * (h / q - (1.0 - h) / (1.0 - q))))
            closeRel (if c.Double then 1e-9 else 1e-5) "∂logProb/∂p" p.grad (tensor2 torch.float64 expected)
            let q = (tensor2 c.Dtype pRows).detach().requires_grad_(true)
            (Boundaries.entropy mask q).sum().backward()
            let expectedH =
                Array.init c.Batch (fun i ->
                    Array.init c.Length (fun j -> let v = pRead.[i].[j] in mRows.[i].[j] * (log (1.0 - v) - log v)))
            closeRel (if c.Double then 1e-9 else 1e-5) "∂H/∂p" q.grad (tensor2 torch.float64 expectedH))

        test "saturated float32 probabilities give finite log-probs and entropies" {
            use _ = torch.NewDisposeScope()
            let p = torch.tensor([| 1.0f; 0.0f; 1.0f; 0.0f |]).reshape(1L, 4L)
            let h = torch.tensor([| 0.0f; 1.0f; 1.0f; 0.0f |]).reshape(1L, 4L)
            let expected = 2.0 * log 1e-8 + 2.0 * log (1.0 - 1e-8)
            Expect.floatClose Accuracy.medium (Tensors.toFloat (Boundaries.logProb None p h)) expected "clamped to 1e-8"
            Expect.isTrue ((Boundaries.entropy None p).isfinite().all().item<bool>()) "finite entropy"
        }

        test "temporaries are disposed: only the returned tensors stay alive" {
            use p = torch.rand(3L, 9L, dtype = torch.float64)
            use b = torch.rand(3L, 9L, dtype = torch.float64).gt(sc 0.5).to_type(torch.float64)
            use m = torch.ones(3L, 9L, dtype = torch.float64).tril(3L)
            use g = Boundaries.generator 7L torch.CPU
            let mask = Some m
            let one (t: Tensor) = [ t :> IDisposable ]
            leavesNoTensors "relaxedSample" (fun () -> one (Boundaries.relaxedSample g 0.5 p))
            leavesNoTensors "hard" (fun () -> one (Boundaries.hard 0.5 p))
            leavesNoTensors "straightThrough" (fun () -> one (Boundaries.straightThrough b p))
            leavesNoTensors "steThenMask" (fun () -> one (Boundaries.steThenMask mask b p))
            leavesNoTensors "maskThenSte" (fun () -> one (Boundaries.maskThenSte mask b p))
            leavesNoTensors "maskAndForce without a mask" (fun () -> one (Boundaries.maskAndForce None b))
            leavesNoTensors "shortenedMask" (fun () -> one (Boundaries.shortenedMask b))
            leavesNoTensors "validCounts" (fun () -> one (Boundaries.validCounts None b))
            leavesNoTensors "stats" (fun () -> [ Boundaries.stats mask p b :> IDisposable ])
            leavesNoTensors "stats without a mask" (fun () -> [ Boundaries.stats None p b :> IDisposable ])
        }

        test "bad shapes and arguments are rejected with the argument's name" {
            use _ = torch.NewDisposeScope()
            let b = torch.zeros(2L, 5L)
            let throwsNamed name (f: unit -> obj) =
                let e = Expect.throwsC (f >> ignore) id
                Expect.isTrue (e :? ArgumentException && (e :?> ArgumentException).ParamName = name) $"ArgumentException naming {name}: {e.Message}"
            throwsNamed "mask" (fun () -> box (Boundaries.applyMask (Some(torch.ones(2L, 4L))) b))
            throwsNamed "like" (fun () -> box (Boundaries.lastValidFrame None (torch.zeros(5L))))
            throwsNamed "temperature" (fun () -> box (Boundaries.relaxedFromNoise 0.0 b b))
            throwsNamed "u" (fun () -> box (Boundaries.relaxedFromNoise 1.0 (torch.zeros(2L, 4L)) b))
            throwsNamed "h" (fun () -> box (Boundaries.straightThrough (torch.zeros(2L, 4L)) b))
            throwsNamed "b" (fun () -> box (Boundaries.stats None b (torch.zeros(2L, 4L))))
            throwsNamed "counts" (fun () -> box (Boundaries.shortenedMaskOfCounts torch.float32 b))
        }
    ]
