module MagnetWhisper.Tests.Segments.PoolingTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Segments.Pooling
open MagnetWhisper.Tests
open MagnetWhisper.Tests.Reference

/// Shape and content choices of one pooling case; the numbers themselves come from Seed.
type PoolCase =
    { Batch: int
      Length: int
      Heads: int
      HeadDim: int
      Seed: int
      Masked: bool
      Normed: bool
      /// Probability of a boundary at each token.
      Rate: float }

/// One pooling problem as plain float64 arrays (row-major), the input of the loop reference.
type PoolData =
    { B: int
      L: int
      D: int
      H: int
      Hidden: float[]
      Boundaries: float[]
      Mask: float[] option
      Query: float[]
      Key: float[]
      Value: float[]
      Output: float[]
      Norm: (float[] * float[]) option }

let private poolCaseGen =
    gen {
        let! batch = Gen.choose (1, 3)
        let! length = Gen.choose (1, 30)
        let! heads = Gen.elements [ 1; 2; 4 ]
        let! headDim = Gen.choose (1, 4)
        let! seed = Gen.choose (0, Int32.MaxValue - 1)
        let! masked = Gen.elements [ true; false ]
        let! normed = Gen.elements [ true; false ]
        let! rate = Gen.elements [ 0.0; 0.05; 0.2; 0.5; 1.0 ]
        return
            { Batch = batch; Length = length; Heads = heads; HeadDim = headDim; Seed = seed
              Masked = masked; Normed = normed; Rate = rate }
    }

type PoolArbs =
    static member PoolCase() = Arb.fromGen poolCaseGen

let private config = Generators.configWith [ typeof<PoolArbs> ]
let private prop name (f: PoolCase -> unit) = testPropertyWithConfig config name f

let private normal (rng: Random) =
    let u1 = 1.0 - rng.NextDouble()
    Math.Sqrt(-2.0 * Math.Log u1) * Math.Cos(2.0 * Math.PI * rng.NextDouble())

let private normals (rng: Random) scale n = Array.init n (fun _ -> scale * normal rng)

/// Random data for a case: standard-normal hidden and query, projections N(0, 1/D), prefix masks with holes.
let private dataOf (c: PoolCase) : PoolData =
    let rng = Random c.Seed
    let d = c.Heads * c.HeadDim
    let hidden = normals rng 1.0 (c.Batch * c.Length * d)
    let boundaries = Array.init (c.Batch * c.Length) (fun _ -> if rng.NextDouble() < c.Rate then 1.0 else 0.0)
    let mask =
        if c.Masked then
            let valid = Array.init c.Batch (fun _ -> rng.Next(0, c.Length + 1))
            Some(Array.init (c.Batch * c.Length) (fun i ->
                if i % c.Length < valid.[i / c.Length] && rng.NextDouble() > 0.1 then 1.0 else 0.0))
        else None
    let matrix () = normals rng (1.0 / Math.Sqrt(float d)) (d * d)
    let query = normals rng 1.0 d
    let key, value, output = matrix (), matrix (), matrix ()
    let norm =
        if c.Normed then Some(Array.init d (fun _ -> 1.0 + 0.3 * normal rng), normals rng 0.3 d) else None
    { B = c.Batch; L = c.Length; D = d; H = c.Heads; Hidden = hidden; Boundaries = boundaries; Mask = mask
      Query = query; Key = key; Value = value; Output = output; Norm = norm }

let private ofArray (dtype: torch.ScalarType) (dims: int64[]) (values: float[]) : torch.Tensor =
    torch.tensor(values, dtype = torch.float64).reshape(dims).to_type(dtype)

let private paramsOf (dtype: torch.ScalarType) (p: PoolData) =
    let dd = [| int64 p.D; int64 p.D |]
    { Query = ofArray dtype [| int64 p.D |] p.Query
      Key = ofArray dtype dd p.Key
      Value = ofArray dtype dd p.Value
      Output = ofArray dtype dd p.Output }

let private normOf (dtype: torch.ScalarType) (p: PoolData) =
    p.Norm |> Option.map (fun (w, b) ->
        { Weight = ofArray dtype [| int64 p.D |] w; Bias = ofArray dtype [| int64 p.D |] b; Eps = 1e-5 })

let private inputsOf (dtype: torch.ScalarType) (p: PoolData) =
    let bl = [| int64 p.B; int64 p.L |]
    ofArray torch.float32 bl p.Boundaries,
    p.Mask |> Option.map (ofArray torch.float32 bl),
    ofArray dtype [| int64 p.B; int64 p.L; int64 p.D |] p.Hidden

/// Runs the library on the data: hidden in dtype, parameters in paramDtype.
let private run (dtype: torch.ScalarType) (paramDtype: torch.ScalarType) (p: PoolData) : torch.Tensor =
    let boundaries, mask, hidden = inputsOf dtype p
    multiHeadAttentionPool p.H (normOf paramDtype p) (paramsOf paramDtype p) boundaries mask hidden

/// Segment of each token and whether it is pooled, by plain loops: c = boundaries strictly before the token,
/// pooled when valid and c is below the row's boundary count (with the original tail rule: below S, the largest
/// count of the batch). Returns (segment, pooled, counts).
let private membershipTail (originalTail: bool) (p: PoolData) =
    let segment = Array.zeroCreate (p.B * p.L)
    let pooled = Array.zeroCreate (p.B * p.L)
    let counts = Array.zeroCreate p.B
    for b in 0 .. p.B - 1 do
        let mutable c = 0
        for l in 0 .. p.L - 1 do
            segment.[b * p.L + l] <- c
            if p.Boundaries.[b * p.L + l] > 0.5 then c <- c + 1
        counts.[b] <- c
    let s = if p.B = 0 then 0 else Array.max counts
    for b in 0 .. p.B - 1 do
        for l in 0 .. p.L - 1 do
            let valid = match p.Mask with Some m -> m.[b * p.L + l] <> 0.0 | None -> true
            let limit = if originalTail then s else counts.[b]
            pooled.[b * p.L + l] <- valid && segment.[b * p.L + l] < limit
    segment, pooled, counts

let private matVec (w: float[]) (d: int) (x: float[]) =
    Array.init d (fun o -> Seq.sum (seq { for i in 0 .. d - 1 -> w.[o * d + i] * x.[i] }))

/// Float64 loop reference of SPEC §4.3 step 4 (§4.2 for H = 1 without LayerNorm): returns (S, values (B·S·D)).
let private referenceTail (originalTail: bool) (p: PoolData) : int * float[] =
    let d, dh = p.D, p.D / p.H
    let segment, pooled, counts = membershipTail originalTail p
    let s = if p.B = 0 then 0 else Array.max counts
    let out = Array.zeroCreate (p.B * s * d)
    for b in 0 .. p.B - 1 do
        let x =
            Array.init p.L (fun l ->
                let v = p.Hidden.[(b * p.L + l) * d .. (b * p.L + l) * d + d - 1]
                match p.Norm with
                | None -> v
                | Some(w, bias) ->
                    let mean = Array.average v
                    let var = v |> Array.averageBy (fun a -> (a - mean) * (a - mean))
                    Array.init d (fun i -> (v.[i] - mean) / Math.Sqrt(var + 1e-5) * w.[i] + bias.[i]))
        let keys = x |> Array.map (matVec p.Key d)
        let values = x |> Array.map (matVec p.Value d)
        for seg in 0 .. s - 1 do
            let members = [| for l in 0 .. p.L - 1 do if pooled.[b * p.L + l] && segment.[b * p.L + l] = seg then l |]
            if members.Length > 0 then
                let concat = Array.zeroCreate d
                for h in 0 .. p.H - 1 do
                    let score l = Seq.sum (seq { for j in h * dh .. h * dh + dh - 1 -> p.Query.[j] * keys.[l].[j] }) / Math.Sqrt(float dh)
                    let scores = members |> Array.map score
                    let top = Array.max scores
                    let e = scores |> Array.map (fun v -> Math.Exp(v - top))
                    let total = Array.sum e
                    for j in h * dh .. h * dh + dh - 1 do
                        concat.[j] <- Seq.sum (seq { for k in 0 .. members.Length - 1 -> e.[k] / total * values.[members.[k]].[j] })
                let y = matVec p.Output d concat
                Array.blit y 0 out ((b * s + seg) * d) d
    s, out

let private membership (p: PoolData) = membershipTail false p
let private reference (p: PoolData) = referenceTail false p

let private expectReferenceTail originalTail tol message (p: PoolData) (actual: torch.Tensor) =
    let s, expected = referenceTail originalTail p
    use e = ofArray torch.float64 [| int64 p.B; int64 s; int64 p.D |] expected
    close tol message actual e

/// How much the optional LayerNorm amplifies float32 rounding of its input: the largest |x| / sqrt(var(x) + eps)
/// over tokens (at least 1). A token whose features nearly agree (small variance) turns relative rounding of x
/// into a large absolute error after normalisation, so the float32 tolerance scales with this.
let private layerNormConditioning (p: PoolData) =
    match p.Norm with
    | None -> 1.0
    | Some _ ->
        seq {
            for t in 0 .. p.B * p.L - 1 do
                let v = p.Hidden.[t * p.D .. t * p.D + p.D - 1]
                let mean = Array.average v
                let var = v |> Array.averageBy (fun a -> (a - mean) * (a - mean))
                yield (v |> Array.map abs |> Array.max) / Math.Sqrt(var + 1e-5)
        }
        |> Seq.fold max 1.0

let private expectReference tol message (p: PoolData) (actual: torch.Tensor) =
    let s, expected = reference p
    use e = ofArray torch.float64 [| int64 p.B; int64 s; int64 p.D |] expected
    close tol message actual e

/// The parameter name of the ArgumentException f throws.
let private paramNameOf (f: unit -> unit) =
    try
        f ()
        "no exception"
    with :? ArgumentException as e -> e.ParamName

[<Tests>]
let tests =
    testList "pooling" [
        prop "the original tail rule (H heads) equals a float64 loop reference of the original" (fun c ->
            use _ = torch.NewDisposeScope()
            let p = dataOf c
            let boundaries, mask, hidden = inputsOf torch.float64 p
            let y =
                multiHeadAttentionPoolWithTail
                    Segments.Downsample.OriginalTail p.H (normOf torch.float64 p) (paramsOf torch.float64 p) boundaries mask hidden
            expectReferenceTail true 1e-10 "pooled" p y)

        prop "the original tail rule (one head) equals the reference of the original" (fun c ->
            use _ = torch.NewDisposeScope()
            let p = { dataOf { c with Normed = false } with H = 1 }
            let boundaries, mask, hidden = inputsOf torch.float64 p
            let y = attentionPoolWithTail Segments.Downsample.OriginalTail (paramsOf torch.float64 p) boundaries mask hidden
            expectReferenceTail true 1e-10 "pooled" p y)

        testCase "original tail: a row's tail becomes segment n_β only when another row has more boundaries" <| fun () ->
            use _ = torch.NewDisposeScope()
            let d = 4L
            let parameters: AttentionPoolParams =
                { Query = torch.zeros(d, dtype = torch.float64); Key = torch.eye(d, dtype = torch.float64)
                  Value = torch.eye(d, dtype = torch.float64); Output = torch.eye(d, dtype = torch.float64) }
            let hidden = torch.arange(Scalar.op_Implicit(2L * 6L * d), dtype = torch.float64).reshape(2L, 6L, d)
            // Row 0: one boundary at 1 (tail 2..5); row 1: two boundaries (0 and 3, tail 4..5).
            let boundaries = torch.tensor([| 0.0; 1.0; 0.0; 0.0; 0.0; 0.0; 1.0; 0.0; 0.0; 1.0; 0.0; 0.0 |]).reshape(2L, 6L)
            let original = attentionPoolWithTail Segments.Downsample.OriginalTail parameters boundaries None hidden
            let drop = attentionPool parameters boundaries None hidden
            // Zero query: plain means. Row 0 segment 1 = mean of frames 2..5 under the original rule, zero otherwise.
            let tailMean = hidden.[0L].narrow(0L, 2L, 4L).mean([| 0L |])
            close 1e-12 "row 0 tail segment" original.[0L, 1L] tailMean
            Expect.equal (drop.[0L, 1L].abs().sum().item<float>()) 0.0 "dropped by default"
            // Row 1 is maximal: its tail is dropped in both rules.
            close 1e-12 "maximal row" original.[1L] drop.[1L]
            // Alone, row 0 is maximal and its tail is dropped: the original rule is batch-dependent.
            let alone = attentionPoolWithTail Segments.Downsample.OriginalTail parameters (boundaries.narrow(0L, 0L, 1L)) None (hidden.narrow(0L, 0L, 1L))
            Expect.equal alone.shape [| 1L; 1L; d |] "alone: S = 1"

        prop "H-head pooling (LayerNorm optional) equals a float64 loop reference" (fun c ->
            use _ = torch.NewDisposeScope()
            let p = dataOf c
            expectReference 1e-10 "pooled" p (run torch.float64 torch.float64 p))

        prop "single-head pooling equals the reference with one head and no LayerNorm" (fun c ->
            use _ = torch.NewDisposeScope()
            let p = { dataOf { c with Normed = false } with H = 1 }
            let boundaries, mask, hidden = inputsOf torch.float64 p
            expectReference 1e-10 "pooled" p (attentionPool (paramsOf torch.float64 p) boundaries mask hidden))

        prop "float32 input agrees with the reference to float32 precision" (fun c ->
            use _ = torch.NewDisposeScope()
            let p = dataOf c
            let y = run torch.float32 torch.float32 p
            Expect.equal y.dtype torch.float32 "dtype"
            expectReference (2e-5 * layerNormConditioning p) "pooled" p y)

        testCase "float32 agreement where LayerNorm amplifies rounding (a found case: two features, near-equal)" <| fun () ->
            use _ = torch.NewDisposeScope()
            let p =
                dataOf { Batch = 1; Length = 27; Heads = 2; HeadDim = 1; Seed = 1483729158
                         Masked = true; Normed = true; Rate = 1.0 }
            Expect.isGreaterThan (layerNormConditioning p) 2.0 "this case is ill-conditioned"
            expectReference (2e-5 * layerNormConditioning p) "pooled" p (run torch.float32 torch.float32 p)

        prop "segments without pooled tokens are exactly zero" (fun c ->
            use _ = torch.NewDisposeScope()
            let p = dataOf { c with Masked = true }
            let segment, pooled, _ = membership p
            let y = run torch.float32 torch.float32 p
            let s = int y.shape.[1]
            let values = if y.numel() = 0L then [||] else Tensors.toFloatArray y
            for b in 0 .. p.B - 1 do
                for seg in 0 .. s - 1 do
                    let occupied = Seq.exists (fun l -> pooled.[b * p.L + l] && segment.[b * p.L + l] = seg) (seq { 0 .. p.L - 1 })
                    if not occupied then
                        let row = values.[(b * s + seg) * p.D .. (b * s + seg) * p.D + p.D - 1]
                        Expect.allEqual row 0.0 $"row {b}, segment {seg} has no pooled token"
            Expect.isTrue (Array.forall Double.IsFinite values) "finite")

        prop "garbage (huge values, NaN) in masked and tail tokens changes nothing" (fun c ->
            use _ = torch.NewDisposeScope()
            let p = dataOf { c with Masked = true }
            let _, pooled, _ = membership p
            let rng = Random(c.Seed + 1)
            let garbage =
                p.Hidden |> Array.mapi (fun i v ->
                    if pooled.[i / p.D] then v
                    elif rng.NextDouble() < 0.2 then nan
                    else 1e6 * normal rng)
            let clean = run torch.float64 torch.float64 p
            let boundaries, mask, hidden = inputsOf torch.float64 { p with Hidden = garbage }
            let hidden = hidden.requires_grad_(true)
            let prms = paramsOf torch.float64 p
            let query = prms.Query.requires_grad_(true)
            let dirty = multiHeadAttentionPool p.H (normOf torch.float64 p) prms boundaries mask hidden
            // Not bit-equal: repeated identical CPU runs already differ by an ulp (alignment-dependent BLAS paths).
            close 1e-12 "identical outputs" dirty clean
            if dirty.numel() > 0L then
                dirty.sum().backward()
                Expect.isTrue (Tensors.toFloatArray query.grad |> Array.forall Double.IsFinite) "finite query gradient"
                Expect.isTrue (Tensors.toFloatArray hidden.grad |> Array.forall Double.IsFinite) "finite hidden gradient")

        prop "each row pools as it would alone" (fun c ->
            use _ = torch.NewDisposeScope()
            let p = dataOf c
            let _, _, counts = membership p
            let batch = run torch.float64 torch.float64 p
            let boundaries, mask, hidden = inputsOf torch.float64 p
            let prms, norm = paramsOf torch.float64 p, normOf torch.float64 p
            for b in 0 .. p.B - 1 do
                let row (t: torch.Tensor) = t.narrow(0L, int64 b, 1L)
                let alone = multiHeadAttentionPool p.H norm prms (row boundaries) (mask |> Option.map row) (row hidden)
                let n = int64 counts.[b]
                Expect.equal alone.shape.[1] n "a row alone has one segment per boundary"
                close 1e-12 $"row {b}" alone ((row batch).narrow(1L, 0L, n))
                let rest = (row batch).narrow(1L, n, batch.shape.[1] - n)
                Expect.equal (if rest.numel() = 0L then 0.0 else rest.abs().max().item<float>()) 0.0 "segments past the row's count")

        testCase "with identity projections and a tiny query, pooling is the segment mean" <| fun () ->
            use _ = torch.NewDisposeScope()
            for heads in [ 1; 4 ] do
                let c = { Batch = 3; Length = 30; Heads = heads; HeadDim = 4; Seed = 7 + heads; Masked = true; Normed = false; Rate = 0.2 }
                let p0 = dataOf c
                let d = p0.D
                let identity = Array.init (d * d) (fun i -> if i / d = i % d then 1.0 else 0.0)
                let p = { p0 with Key = identity; Value = identity; Output = identity; Query = p0.Query |> Array.map ((*) 1e-6) }
                let segment, pooled, counts = membership p
                let s = Array.max counts
                let mean = Array.zeroCreate (p.B * s * d)
                for b in 0 .. p.B - 1 do
                    for seg in 0 .. s - 1 do
                        let members = [ for l in 0 .. p.L - 1 do if pooled.[b * p.L + l] && segment.[b * p.L + l] = seg then l ]
                        for j in 0 .. d - 1 do
                            if not members.IsEmpty then
                                mean.[(b * s + seg) * d + j] <-
                                    members |> List.averageBy (fun l -> p.Hidden.[(b * p.L + l) * d + j])
                use expected = ofArray torch.float64 [| int64 p.B; int64 s; int64 d |] mean
                close 1e-5 $"{heads} heads" (run torch.float64 torch.float64 p) expected

        testCase "scores thousands apart across segments stay exact (per-segment softmax shift)" <| fun () ->
            use _ = torch.NewDisposeScope()
            for seed in 1 .. 5 do
                let c = { Batch = 2; Length = 30; Heads = 2; HeadDim = 3; Seed = seed; Masked = true; Normed = false; Rate = 0.2 }
                let p0 = dataOf c
                // A row-wide shift would underflow every segment whose scores sit ~1000 below the row's best.
                let p = { p0 with Query = p0.Query |> Array.map ((*) 3000.0) }
                expectReference 1e-9 $"seed {seed}" p (run torch.float64 torch.float64 p)

        testCase "gradients reach hidden and parameters (matching finite differences) but not boundaries" <| fun () ->
            use _ = torch.NewDisposeScope()
            let c = { Batch = 2; Length = 12; Heads = 2; HeadDim = 3; Seed = 11; Masked = true; Normed = true; Rate = 0.3 }
            let p = dataOf c
            let _, pooled, counts = membership p
            Expect.isGreaterThan (Array.max counts) 0 "the case has segments"
            let rng = Random 5
            let boundaries0, mask, hidden0 = inputsOf torch.float64 p
            // A straight-through boundary: value 0/1, gradient path to z.
            let z = torch.rand_like(boundaries0.to_type(torch.float64)).requires_grad_(true)
            let boundaries = boundaries0.to_type(torch.float64) + z - z.detach()
            let hidden = hidden0.requires_grad_(true)
            let prms = paramsOf torch.float64 p
            let norm = (normOf torch.float64 p).Value
            let leaves = [ hidden; prms.Query; prms.Key; prms.Value; prms.Output; norm.Weight; norm.Bias ]
            for t in leaves.Tail do t.requires_grad_(true) |> ignore
            let s = int64 (Array.max counts)
            use upstream = ofArray torch.float64 [| int64 p.B; s; int64 p.D |] (normals rng 1.0 (p.B * int s * p.D))
            let objective (h: torch.Tensor) (q: AttentionPoolParams) (n: LayerNormParams) =
                (multiHeadAttentionPool p.H (Some n) q boundaries mask h * upstream).sum()
            (objective hidden prms norm).backward()
            Expect.isNull z.grad "no gradient to the boundaries"
            let hiddenGrad = Tensors.toFloatArray hidden.grad
            for i in 0 .. hiddenGrad.Length - 1 do
                if not pooled.[i / p.D] then Expect.equal hiddenGrad.[i] 0.0 "tokens that are not pooled get no gradient"
            Expect.isGreaterThan (hiddenGrad |> Array.sumBy abs) 0.0 "pooled tokens get gradient"
            // Directional derivative along random directions vs a central difference.
            let directions = leaves |> List.map (fun t -> ofArray torch.float64 t.shape (normals rng 1.0 (int (t.numel()))))
            let analytic = List.map2 (fun (t: torch.Tensor) (v: torch.Tensor) -> (t.grad * v).sum().item<float>()) leaves directions |> List.sum
            let shifted (eps: float) =
                use _ = torch.no_grad()
                match List.map2 (fun (t: torch.Tensor) (v: torch.Tensor) -> t + v * eps) leaves directions with
                | [ h; q; k; v; o; w; b ] -> (objective h { Query = q; Key = k; Value = v; Output = o } { norm with Weight = w; Bias = b }).item<float>()
                | _ -> failwith "seven leaves"
            let eps = 1e-6
            let numeric = (shifted eps - shifted -eps) / (2.0 * eps)
            Expect.floatClose { absolute = 1e-6; relative = 1e-6 } analytic numeric "directional derivative"

        testCase "output dtype follows hidden (float16, float32, float64) and stays close to the reference" <| fun () ->
            use _ = torch.NewDisposeScope()
            let c = { Batch = 2; Length = 20; Heads = 4; HeadDim = 4; Seed = 3; Masked = true; Normed = true; Rate = 0.25 }
            let p = dataOf c
            // Parameters stay float32; the reference sees the same rounded numbers the library saw.
            let prms, norm = paramsOf torch.float32 p, normOf torch.float32 p
            let asData (hidden: torch.Tensor) =
                { p with
                    Hidden = Tensors.toFloatArray hidden
                    Query = Tensors.toFloatArray prms.Query
                    Key = Tensors.toFloatArray prms.Key
                    Value = Tensors.toFloatArray prms.Value
                    Output = Tensors.toFloatArray prms.Output
                    Norm = norm |> Option.map (fun n -> Tensors.toFloatArray n.Weight, Tensors.toFloatArray n.Bias) }
            for dtype, tol in [ torch.float16, 2e-2; torch.float32, 2e-5; torch.float64, 1e-10 ] do
                let boundaries, mask, hidden = inputsOf dtype p
                let y = multiHeadAttentionPool p.H norm prms boundaries mask hidden
                Expect.equal y.dtype dtype $"{dtype} output"
                expectReference tol $"{dtype}" (asData hidden) y

        testCase "no boundary anywhere gives (B, 0, D)" <| fun () ->
            use _ = torch.NewDisposeScope()
            let p = dataOf { Batch = 2; Length = 5; Heads = 2; HeadDim = 2; Seed = 1; Masked = false; Normed = false; Rate = 0.0 }
            let y = run torch.float32 torch.float32 p
            Expect.sequenceEqual y.shape [| 2L; 0L; 4L |] "empty"

        testCase "bad shapes name the argument" <| fun () ->
            use _ = torch.NewDisposeScope()
            let p = dataOf { Batch = 2; Length = 5; Heads = 2; HeadDim = 2; Seed = 1; Masked = true; Normed = false; Rate = 0.5 }
            let boundaries, mask, hidden = inputsOf torch.float32 p
            let prms = paramsOf torch.float32 p
            let pool heads (prms: AttentionPoolParams) (b: torch.Tensor) m (h: torch.Tensor) () = multiHeadAttentionPool heads None prms b m h |> ignore
            Expect.equal (paramNameOf (pool 2 prms (boundaries.narrow(1L, 0L, 4L)) mask hidden)) "boundaries" "boundaries"
            Expect.equal (paramNameOf (pool 2 prms boundaries (Some(torch.ones(2, 4))) hidden)) "mask" "mask"
            Expect.equal (paramNameOf (pool 2 prms boundaries mask (hidden.narrow(2L, 0L, 3L)))) "hidden" "hidden width"
            Expect.equal (paramNameOf (pool 2 prms boundaries mask (hidden.reshape(10L, 4L)))) "hidden" "hidden rank"
            Expect.equal (paramNameOf (pool 3 prms boundaries mask hidden)) "heads" "heads must divide D"
            Expect.equal (paramNameOf (pool 2 { prms with Key = torch.ones(4, 3) } boundaries mask hidden)) "parameters.Key" "key"
            Expect.equal (paramNameOf (pool 2 { prms with Query = torch.ones(4, 1) } boundaries mask hidden)) "parameters.Query" "query rank"
            Expect.equal (paramNameOf (pool 2 { prms with Value = torch.ones(4, 4, 1) } boundaries mask hidden)) "parameters.Value" "value rank"
    ]
