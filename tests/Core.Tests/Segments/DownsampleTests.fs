/// Segment-mean pooling against independent references: float64 array loops, the dense autograd formulation,
/// central finite differences of the dense weights, the SPEC §2.6 cases and the example.py gradient demo.
module MagnetWhisper.Tests.Segments.DownsampleTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Segments.Downsample
open MagnetWhisper.Tests.Reference

// ---------------------------------------------------------------------------------------------------------------
// Generated batches

type Precision =
    | F32
    | F64
    | F16

type Case =
    { Batch: int
      Length: int
      Dim: int
      /// Batch × Length, 0/1.
      Bounds: int[][]
      /// Valid prefix length per row, when masked.
      Lengths: int[] option
      Seed: int
      Precision: Precision
      Tail: TailRule }

let private genRow (length: int) =
    Gen.frequency
        [ 1, Gen.constant (Array.zeroCreate length)
          1, Gen.constant (Array.create length 1)
          5,
          gen {
              let! p = Gen.choose (1, 9)
              let! draws = Gen.arrayOfLength length (Gen.choose (0, 9))
              return draws |> Array.map (fun v -> if v < p then 1 else 0)
          } ]

let private genCaseWith (precisions: Precision list) (masked: bool option) =
    gen {
        let! batch = Gen.choose (1, 4)
        let! length = Gen.choose (1, 40)
        let! dim = Gen.choose (1, 8)
        let! rows = Gen.arrayOfLength batch (genRow length)
        let! useMask =
            match masked with
            | Some m -> Gen.constant m
            | None -> Gen.elements [ false; true ]
        let! lengths = Gen.arrayOfLength batch (Gen.choose (1, length))
        // Predictors force a boundary at the last valid frame; generate both forced and unforced rows.
        let! force = Gen.arrayOfLength batch (Gen.elements [ false; true ])
        let rows =
            rows
            |> Array.mapi (fun i r ->
                let r = Array.copy r
                if force.[i] then r.[(if useMask then lengths.[i] else length) - 1] <- 1
                r)
        let! seed = Gen.choose (0, Int32.MaxValue - 10)
        let! precision = Gen.elements precisions
        let! tail = Gen.elements [ DropAfterLastBoundary; OriginalTail ]
        return
            { Batch = batch
              Length = length
              Dim = dim
              Bounds = rows
              Lengths = (if useMask then Some lengths else None)
              Seed = seed
              Precision = precision
              Tail = tail }
    }

type AnyCase = AnyCase of Case
type Float64Case = Float64Case of Case
type Unmasked64Case = Unmasked64Case of Case
/// A case and replacement rows for every other row of the batch (batch-independence).
type PairCase = PairCase of Case * int[][] * int

type Arbs =
    static member Any() = Arb.fromGen (genCaseWith [ F32; F64; F16 ] None |> Gen.map AnyCase)
    static member Float64() = Arb.fromGen (genCaseWith [ F64 ] None |> Gen.map Float64Case)
    static member Unmasked64() = Arb.fromGen (genCaseWith [ F64 ] (Some false) |> Gen.map Unmasked64Case)
    static member Pair() =
        gen {
            let! c = genCaseWith [ F32; F64 ] None
            let! others = Gen.choose (1, 3)
            let! rows = Gen.arrayOfLength others (genRow c.Length)
            let! seed = Gen.choose (0, Int32.MaxValue)
            return PairCase(c, rows, seed)
        }
        |> Arb.fromGen

let private config = { FsCheckConfig.defaultConfig with maxTest = 60; arbitrary = [ typeof<Arbs> ] }
let private prop name (f: 'a -> unit) = testPropertyWithConfig config name f

// ---------------------------------------------------------------------------------------------------------------
// Building tensors

let private dtypeOf =
    function
    | F32 -> torch.float32
    | F64 -> torch.float64
    | F16 -> torch.float16

/// Value tolerance for a mean of values in [−2, 2] stored in the given precision.
let private tolOf =
    function
    | F32 -> 1e-5
    | F64 -> 1e-12
    | F16 -> 2e-3

let private randomValues (seed: int) (count: int) =
    let r = Random(seed)
    Array.init count (fun _ -> r.NextDouble() * 4.0 - 2.0)

let private tensorOf (dims: int list) (values: float[]) =
    let shape = dims |> List.map int64 |> Array.ofList
    if values.Length = 0 then torch.zeros(shape, dtype = torch.float64)
    else torch.tensor(values, dtype = torch.float64).reshape(shape)

let private boundariesOf (rows: int[][]) =
    let l = rows.[0].Length
    tensorOf [ rows.Length; l ] (rows |> Array.collect (Array.map float)) |> fun t -> t.to_type(torch.float32)

let private maskRows (c: Case) =
    c.Lengths |> Option.map (fun ls -> ls |> Array.map (fun n -> Array.init c.Length (fun l -> if l < n then 1.0 else 0.0)))

let private maskOf (c: Case) =
    maskRows c |> Option.map (fun rows -> (tensorOf [ c.Batch; c.Length ] (Array.concat rows)).to_type(torch.float32))

/// The hidden tensor (B, L, D) in the case's precision.
let private hiddenOf (c: Case) =
    (tensorOf [ c.Batch; c.Length; c.Dim ] (randomValues c.Seed (c.Batch * c.Length * c.Dim))).to_type(dtypeOf c.Precision)

/// The values actually stored (after rounding to the case's precision), as a flat float64 array.
let private valuesOf (t: Tensor) = toFloatArray t

// ---------------------------------------------------------------------------------------------------------------
// Independent float64 references (plain loops)

type private Pooled =
    { S: int
      /// B × S × D, flat.
      Y: float[]
      /// B × L segment id.
      Ids: int[][]
      /// B × L pooling weight (mask × kept).
      W: float[][]
      /// B × S masked segment sizes.
      N: float[][] }

let private poolLoop (tail: TailRule) (bounds: int[][]) (mask: float[][] option) (x: float[]) (d: int) =
    let batch, length = bounds.Length, bounds.[0].Length
    let counts = bounds |> Array.map Array.sum
    let s = Array.max counts
    let ids = Array.init batch (fun _ -> Array.zeroCreate length)
    let w = Array.init batch (fun _ -> Array.zeroCreate length)
    let n = Array.init batch (fun _ -> Array.zeroCreate s)
    let sums = Array.zeroCreate (batch * s * d)
    for b in 0 .. batch - 1 do
        let mutable c = 0
        for l in 0 .. length - 1 do
            ids.[b].[l] <- c
            let kept =
                match tail with
                | DropAfterLastBoundary -> c < counts.[b]
                | OriginalTail -> c < s
            let m = match mask with Some m -> m.[b].[l] | None -> 1.0
            if kept then
                w.[b].[l] <- m
                n.[b].[c] <- n.[b].[c] + m
                for j in 0 .. d - 1 do
                    sums.[(b * s + c) * d + j] <- sums.[(b * s + c) * d + j] + m * x.[(b * length + l) * d + j]
            c <- c + bounds.[b].[l]
    let y = Array.init (batch * s * d) (fun i -> sums.[i] / (n.[i / (s * d)].[(i / d) % s] + 1e-9))
    { S = s; Y = y; Ids = ids; W = w; N = n }

/// Hidden gradient of Σ Y·R: R[c_l]·w_l/(N_c + ε).
let private backProjection (p: Pooled) (r: float[]) (length: int) (d: int) =
    let batch = p.Ids.Length
    Array.init (batch * length * d) (fun i ->
        let b, l, j = i / (length * d), (i / d) % length, i % d
        let c = p.Ids.[b].[l]
        if c < p.S && p.W.[b].[l] <> 0.0 then r.[(b * p.S + c) * d + j] * p.W.[b].[l] / (p.N.[b].[c] + 1e-9) else 0.0)

/// Σ_s Y_s·R_s of the dense construction for real-valued boundaries with the one-hot pattern (segment ids, kept
/// flags) of `pattern` held fixed: W[l, id_l] = (1 − id_l + c_l(real)) · m_l · kept_l. Differentiating this in
/// the real boundaries is exactly what the original's `1 − (s − c)` trick lets autograd do.
let private denseLossFixedPattern (pattern: Pooled) (real: float[][]) (x: float[]) (r: float[]) (d: int) =
    let batch, length = real.Length, real.[0].Length
    let mutable total = 0.0
    for b in 0 .. batch - 1 do
        let z = Array.zeroCreate pattern.S
        let acc = Array.zeroCreate (pattern.S * d)
        let mutable c = 0.0
        for l in 0 .. length - 1 do
            let id = pattern.Ids.[b].[l]
            if id < pattern.S && pattern.W.[b].[l] <> 0.0 then
                let weight = (1.0 - float id + c) * pattern.W.[b].[l]
                z.[id] <- z.[id] + weight
                for j in 0 .. d - 1 do
                    acc.[id * d + j] <- acc.[id * d + j] + weight * x.[(b * length + l) * d + j]
            c <- c + real.[b].[l]
        for s in 0 .. pattern.S - 1 do
            for j in 0 .. d - 1 do
                total <- total + acc.[s * d + j] / (z.[s] + 1e-9) * r.[(b * pattern.S + s) * d + j]
    total

/// The finite-difference boundary gradient of SPEC §2.2 as the original's double loop (no mask).
let private finiteDifferenceLoop (bounds: float[][]) (x: float[]) (r: float[]) (s: int) (d: int) (scale: float) =
    let batch, length = bounds.Length, bounds.[0].Length
    let binary = bounds |> Array.map (Array.map (fun v -> if v >= 0.5 then 1 else 0))
    let g = Array.init batch (fun _ -> Array.zeroCreate length)
    let deltaL = Array.init batch (fun _ -> Array.zeroCreate length)
    let deltaR = Array.init batch (fun _ -> Array.zeroCreate length)
    let dot (a: int -> float) (b: int -> float) = Seq.sum (seq { for j in 0 .. d - 1 -> a j * b j })
    let xAt b l j = x.[(b * length + l) * d + j]
    let gAt b k j = r.[(b * s + k) * d + j]
    for b in 0 .. batch - 1 do
        let idx = [| for l in 0 .. length - 1 do if binary.[b].[l] = 1 then yield l |]
        if idx.Length >= 2 then
            let lens = idx |> Array.mapi (fun k i -> if k = 0 then i + 1 else i - idx.[k - 1])
            let mean k j =
                let start = if k = 0 then 0 else idx.[k - 1] + 1
                // Ŷ = downsample(b̂, X), with the original's ε.
                Seq.sum (seq { for l in start .. idx.[k] -> xAt b l j }) / (float (idx.[k] - start + 1) + 1e-9)
            for k in 0 .. idx.Length - 2 do
                let i = idx.[k]
                let nk, nk1 = float lens.[k], float lens.[k + 1]
                let mutable dl, dr = 0.0, 0.0
                if i < length - 1 && binary.[b].[i + 1] = 0 && nk1 > 1.0 then
                    dr <-
                        dot (gAt b k) (fun j -> (xAt b (i + 1) j - mean k j) / (nk + 1.0))
                        + dot (gAt b (k + 1)) (fun j -> (mean (k + 1) j - xAt b (i + 1) j) / (nk1 - 1.0))
                    deltaR.[b].[i] <- dr
                if i > 0 && binary.[b].[i - 1] = 0 && nk > 1.0 then
                    dl <-
                        dot (gAt b k) (fun j -> (mean k j - xAt b i j) / (nk - 1.0))
                        + dot (gAt b (k + 1)) (fun j -> (xAt b i j - mean (k + 1) j) / (nk1 + 1.0))
                    deltaL.[b].[i] <- dl
                if dl < 0.0 then g.[b].[i - 1] <- g.[b].[i - 1] + dl * scale
                if dr < 0.0 then g.[b].[i + 1] <- g.[b].[i + 1] + dr * scale
                g.[b].[i] <- g.[b].[i] - (min dl 0.0 + min dr 0.0) * scale
    g, deltaL, deltaR

/// SPEC §2.1's closed form written from the text: ∂L/∂b[k] = Σ_{l>k, kept, m=1} (X_l − μ_c)·G_c / N_c.
let private closedFormLoop (p: Pooled) (x: float[]) (r: float[]) (length: int) (d: int) =
    let batch = p.Ids.Length
    let q =
        Array.init batch (fun b ->
            Array.init length (fun l ->
                let c = p.Ids.[b].[l]
                if c < p.S && p.W.[b].[l] <> 0.0 then
                    let mutable acc = 0.0
                    for j in 0 .. d - 1 do
                        acc <- acc + (x.[(b * length + l) * d + j] - p.Y.[(b * p.S + c) * d + j]) * r.[(b * p.S + c) * d + j]
                    acc * p.W.[b].[l] / (p.N.[b].[c] + 1e-9)
                else 0.0))
    q |> Array.map (fun row -> Array.init length (fun k -> Array.sum row.[k + 1 ..]))

let private movingAverageLoop (kernel: int) (x: float[]) (batch: int) (length: int) (d: int) =
    Array.init (batch * length * d) (fun i ->
        let b, l, j = i / (length * d), (i / d) % length, i % d
        let mutable acc = 0.0
        for t in l - kernel / 2 .. l + kernel / 2 do
            if t >= 0 && t < length then acc <- acc + x.[(b * length + t) * d + j]
        acc / float kernel)

// ---------------------------------------------------------------------------------------------------------------
// Tests

let private optionsOf (c: Case) = { Tail = c.Tail }

let private valueProperties =
    [ prop "values, S and empty rows match a float64 loop (both tail rules, all dtypes)" (fun (AnyCase c) ->
          use _ = torch.NewDisposeScope()
          let x = hiddenOf c
          let expected = poolLoop c.Tail c.Bounds (maskRows c) (valuesOf x) c.Dim
          let y = downsample (optionsOf c) (boundariesOf c.Bounds) x (maskOf c)
          Expect.equal y.dtype x.dtype "dtype preserved"
          Expect.sequenceEqual y.shape [| int64 c.Batch; int64 expected.S; int64 c.Dim |] "shape (B, max count, D)"
          close (tolOf c.Precision) "means" y (tensorOf [ c.Batch; expected.S; c.Dim ] expected.Y)
          // (Tensors.toFloatArray throws on empty tensors.)
          let actual = if y.numel() = 0L then [||] else toFloatArray y
          for b in 0 .. c.Batch - 1 do
              for s in 0 .. expected.S - 1 do
                  if expected.N.[b].[s] = 0.0 then
                      for j in 0 .. c.Dim - 1 do
                          Expect.equal actual.[(b * expected.S + s) * c.Dim + j] 0.0 $"empty segment ({b}, {s}) is exactly zero")

      prop "all-ones boundaries are the identity" (fun (AnyCase c) ->
          use _ = torch.NewDisposeScope()
          let x = hiddenOf c
          let ones = Array.init c.Batch (fun _ -> Array.create c.Length 1)
          let y = downsample (optionsOf c) (boundariesOf ones) x None
          // The original's ε: x/(1 + 1e-9) differs from x by ~1e-9 in float64.
          close (max (tolOf c.Precision) 1e-8) "identity" y x)

      prop "sequence-first and batch-first agree (values and gradients)" (fun (AnyCase c) ->
          use _ = torch.NewDisposeScope()
          let run seqFirst =
              let x = (hiddenOf c).requires_grad_(true)
              let b = (boundariesOf c.Bounds).requires_grad_(true)
              let y =
                  if seqFirst then (downsampleSeqFirst (optionsOf c) b (x.transpose(0L, 1L)) (maskOf c)).transpose(0L, 1L)
                  else downsample (optionsOf c) b x (maskOf c)
              if y.numel() > 0L then
                  (y.to_type(torch.float64) * torch.linspace(-1.0, 1.0, y.numel(), dtype = torch.float64).view_as(y)).sum().backward()
              y, (if isNull x.grad then torch.zeros_like(x) else x.grad), (if isNull b.grad then torch.zeros_like(b) else b.grad)
          let y1, gx1, gb1 = run false
          let y2, gx2, gb2 = run true
          close 0.0 "values" y2 y1
          close 1e-9 "hidden gradient" gx2 gx1
          close 1e-9 "boundary gradient" gb2 gb1)

      prop "a row's output does not depend on the other rows (default rule)" (fun (PairCase(c, others, seed)) ->
          use _ = torch.NewDisposeScope()
          let row0 = c.Bounds.[0]
          let single = { c with Batch = 1; Bounds = [| row0 |]; Lengths = c.Lengths |> Option.map (fun ls -> [| ls.[0] |]) }
          let x0 = (hiddenOf c).narrow(0L, 0L, 1L)
          let alone = downsample defaultOptions (boundariesOf [| row0 |]) x0 (maskOf single)
          let batchRows = Array.append [| row0 |] others
          let xs = torch.cat([| x0; (tensorOf [ others.Length; c.Length; c.Dim ] (randomValues seed (others.Length * c.Length * c.Dim))).to_type(x0.dtype) |], 0L)
          let mask =
              maskOf single
              |> Option.map (fun m -> torch.cat([| m; torch.ones(int64 others.Length, int64 c.Length, dtype = torch.float32) |], 0L))
          let together = downsample defaultOptions (boundariesOf batchRows) xs mask
          let n0 = alone.shape.[1]
          close 0.0 "row 0 with other rows" (together.narrow(0L, 0L, 1L).narrow(1L, 0L, n0)) alone
          close 0.0 "rows past the row's own count are zero"
              (together.narrow(0L, 0L, 1L).narrow(1L, n0, together.shape.[1] - n0))
              (torch.zeros(1L, together.shape.[1] - n0, int64 c.Dim)))

      prop "garbage in padded frames changes nothing (values and gradients)" (fun (AnyCase c) ->
          use _ = torch.NewDisposeScope()
          let lengths = defaultArg c.Lengths (Array.create c.Batch c.Length)
          let c = { c with Lengths = Some lengths }
          // Forced last boundary, as the predictors do; the padded part gets random boundaries in the second run.
          let clean = c.Bounds |> Array.mapi (fun b r -> Array.init c.Length (fun l -> if l = lengths.[b] - 1 then 1 elif l < lengths.[b] then r.[l] else 0))
          let dirty = clean |> Array.mapi (fun b r -> Array.init c.Length (fun l -> if l < lengths.[b] then r.[l] else (c.Seed + l) % 2))
          let valid = maskOf c |> Option.get
          let run (bounds: int[][]) (noise: float) =
              let x0 = hiddenOf c
              let garbage = (tensorOf [ c.Batch; c.Length; c.Dim ] (randomValues (c.Seed + 1) (c.Batch * c.Length * c.Dim))).to_type(x0.dtype)
              let x = (x0 + garbage * noise * (1.0 - valid).unsqueeze(-1L).to_type(x0.dtype)).detach().requires_grad_(true)
              let b = (boundariesOf bounds).requires_grad_(true)
              let y = downsample (optionsOf c) b x (Some valid)
              let n = clean |> Array.map Array.sum |> Array.max |> int64
              let yValid = y.narrow(1L, 0L, n)
              (yValid.to_type(torch.float64) * torch.linspace(-1.0, 1.0, yValid.numel(), dtype = torch.float64).view_as(yValid)).sum().backward()
              y, x.grad * valid.unsqueeze(-1L), b.grad * valid, x.grad * (1.0 - valid).unsqueeze(-1L)
          let y1, gx1, gb1, _ = run clean 0.0
          let y2, gx2, gb2, padGrad = run dirty 1000.0
          let n = y1.shape.[1]
          close 0.0 "valid rows" (y2.narrow(1L, 0L, n)) y1
          close 0.0 "extra rows are zero" (y2.narrow(1L, n, y2.shape.[1] - n)) (torch.zeros(int64 c.Batch, y2.shape.[1] - n, int64 c.Dim))
          close 1e-6 "hidden gradient on valid frames" gx2 gx1
          close 1e-6 "boundary gradient on valid frames" gb2 gb1
          close 0.0 "no hidden gradient on padded frames" padGrad (torch.zeros_like(padGrad))) ]

let private gradientProperties =
    [ prop "hidden gradient equals the analytic back-projection" (fun (AnyCase c) ->
          use _ = torch.NewDisposeScope()
          let x = (hiddenOf c).requires_grad_(true)
          let p = poolLoop c.Tail c.Bounds (maskRows c) (valuesOf x) c.Dim
          let r = randomValues (c.Seed + 7) (c.Batch * p.S * c.Dim)
          let y = downsample (optionsOf c) (boundariesOf c.Bounds) x (maskOf c)
          if p.S > 0 then
              (y.to_type(torch.float64) * tensorOf [ c.Batch; p.S; c.Dim ] r).sum().backward()
              let expected = backProjection p r c.Length c.Dim
              close (if c.Precision = F16 then 2e-3 else tolOf c.Precision) "hidden gradient" x.grad (tensorOf [ c.Batch; c.Length; c.Dim ] expected))

      prop "values and both gradients equal the dense float64 autograd reference" (fun (Float64Case c) ->
          use _ = torch.NewDisposeScope()
          let run f =
              let x = (hiddenOf c).requires_grad_(true)
              let b = (boundariesOf c.Bounds).to_type(torch.float64).requires_grad_(true)
              let y: Tensor = f (optionsOf c) b x (maskOf c)
              if y.numel() > 0L then
                  (y * torch.linspace(-1.0, 2.0, y.numel(), dtype = torch.float64).view_as(y)).sum().backward()
              y, x.grad, b.grad
          let y, gx, gb = run downsample
          let yd, gxd, gbd = run denseReference
          close 1e-12 "values" y yd
          if y.numel() > 0L then
              close 1e-12 "hidden gradient" gx gxd
              close 1e-10 "boundary gradient" gb gbd)

      prop "boundary gradient equals SPEC §2.1's closed form and central finite differences (float64)" (fun (Float64Case c) ->
          use _ = torch.NewDisposeScope()
          let x = hiddenOf c
          let xs = valuesOf x
          let p = poolLoop c.Tail c.Bounds (maskRows c) xs c.Dim
          if p.S > 0 then
              let r = randomValues (c.Seed + 3) (c.Batch * p.S * c.Dim)
              let b = (boundariesOf c.Bounds).to_type(torch.float64).requires_grad_(true)
              (downsample (optionsOf c) b x (maskOf c) * tensorOf [ c.Batch; p.S; c.Dim ] r).sum().backward()
              let fromText = closedFormLoop p xs r c.Length c.Dim
              close 1e-10 "closed form of SPEC §2.1" b.grad (tensorOf [ c.Batch; c.Length ] (Array.concat fromText))
              let h = 1e-6
              let real = c.Bounds |> Array.map (Array.map float)
              let fd =
                  Array.init c.Batch (fun bi ->
                      Array.init c.Length (fun k ->
                          let shifted (delta: float) = real |> Array.mapi (fun i row -> if i = bi then row |> Array.mapi (fun l v -> if l = k then v + delta else v) else row)
                          (denseLossFixedPattern p (shifted h) xs r c.Dim - denseLossFixedPattern p (shifted -h) xs r c.Dim) / (2.0 * h)))
              close 1e-6 "central finite differences" b.grad (tensorOf [ c.Batch; c.Length ] (Array.concat fd)))

      prop "finite-difference variant matches the original's double loop (float64)" (fun (Unmasked64Case c) ->
          use _ = torch.NewDisposeScope()
          let x = (hiddenOf c).requires_grad_(true)
          let xs = valuesOf x
          let p = poolLoop c.Tail c.Bounds None xs c.Dim
          if p.S > 0 then
              let scale = 0.5 + float (c.Seed % 3)
              let r = randomValues (c.Seed + 5) (c.Batch * p.S * c.Dim)
              let grad = tensorOf [ c.Batch; p.S; c.Dim ] r
              let b = (boundariesOf c.Bounds).to_type(torch.float64).requires_grad_(true)
              let y = finiteDifference (optionsOf c) scale b x
              close 1e-12 "forward = downsample" y (downsample (optionsOf c) (b.detach()) (x.detach()) None)
              (y * grad).sum().backward()
              let g, dl, dr = finiteDifferenceLoop (c.Bounds |> Array.map (Array.map float)) xs r p.S c.Dim scale
              let auto = closedFormLoop p xs r c.Length c.Dim
              let expected = Array.init c.Batch (fun bi -> Array.init c.Length (fun l -> 0.1 * g.[bi].[l] + scale * auto.[bi].[l]))
              close 1e-10 "boundary gradient 0.1·g + scale·g_auto" b.grad (tensorOf [ c.Batch; c.Length ] (Array.concat expected))
              close 1e-12 "hidden gradient" x.grad (tensorOf [ c.Batch; c.Length; c.Dim ] (backProjection p r c.Length c.Dim))
              let moves = boundaryMoves (b.detach()) (x.detach()) grad
              close 1e-12 "Δ_L" moves.Left (tensorOf [ c.Batch; c.Length ] (Array.concat dl))
              close 1e-12 "Δ_R" moves.Right (tensorOf [ c.Batch; c.Length ] (Array.concat dr)))

      prop "smoothed variant: moving-averaged hidden gradient, unchanged boundary gradient" (fun (Float64Case c) ->
          use _ = torch.NewDisposeScope()
          let kernel = [| 1; DefaultSmoothingKernel; 5 |].[c.Seed % 3]
          let x = (hiddenOf c).requires_grad_(true)
          let xs = valuesOf x
          let p = poolLoop c.Tail c.Bounds (maskRows c) xs c.Dim
          if p.S > 0 then
              let r = tensorOf [ c.Batch; p.S; c.Dim ] (randomValues (c.Seed + 9) (c.Batch * p.S * c.Dim))
              let b = (boundariesOf c.Bounds).to_type(torch.float64).requires_grad_(true)
              let y = smoothed (optionsOf c) kernel b x (maskOf c)
              close 1e-12 "forward = downsample" y (downsample (optionsOf c) (b.detach()) (x.detach()) (maskOf c))
              (y * r).sum().backward()
              let b2 = (boundariesOf c.Bounds).to_type(torch.float64).requires_grad_(true)
              (downsample (optionsOf c) b2 (x.detach()) (maskOf c) * r).sum().backward()
              close 1e-12 "boundary gradient unchanged" b.grad b2.grad
              let natural = backProjection p (toFloatArray r) c.Length c.Dim
              let expected = movingAverageLoop kernel natural c.Batch c.Length c.Dim
              close 1e-12 "hidden gradient" x.grad (tensorOf [ c.Batch; c.Length; c.Dim ] expected)) ]

let private hidden32 (seed: int) (dims: int list) =
    (tensorOf dims (randomValues seed (List.reduce (*) dims))).to_type(torch.float32)

let private examples =
    [ test "SPEC §2.6 all-ones: B=2, L=10, D=768 is the identity within 1e-5" {
          use _ = torch.NewDisposeScope()
          let x = hidden32 11 [ 2; 10; 768 ]
          for options in [ defaultOptions; originalOptions ] do
              let y = downsampleSeqFirst options (torch.ones(2L, 10L)) (x.transpose(0L, 1L)) (Some(torch.ones(2L, 10L)))
              Expect.sequenceEqual y.shape [| 10L; 2L; 768L |] "shape equals the input's"
              Expect.isLessThanOrEqual (maxAbsDiff (y.transpose(0L, 1L)) x) 1e-5 "identity"
      }

      test "SPEC §2.6 padding: mask lengths 7 and 5, boundaries = mask" {
          use _ = torch.NewDisposeScope()
          let x = hidden32 12 [ 2; 10; 1 ]
          let mask = tensorOf [ 2; 10 ] (Array.init 20 (fun i -> if i % 10 < (if i < 10 then 7 else 5) then 1.0 else 0.0))
          let mask = mask.to_type(torch.float32)
          for options in [ defaultOptions; originalOptions ] do
              let y = downsample options mask x (Some mask)
              Expect.sequenceEqual y.shape [| 2L; 7L; 1L |] "output (2, 7, 1)"
              close 1e-5 "item 0, rows 0–6" (y.[0L].narrow(0L, 0L, 7L)) (x.[0L].narrow(0L, 0L, 7L))
              close 1e-5 "item 1, rows 0–4" (y.[1L].narrow(0L, 0L, 5L)) (x.[1L].narrow(0L, 0L, 5L))
              close 0.0 "item 1, rows 5–6 are zero" (y.[1L].narrow(0L, 5L, 2L)) (torch.zeros(2L, 1L))
      }

      test "SPEC §2.6 fp16: dtype preserved, identity within 1e-3 (and bfloat16 within 1e-2)" {
          use _ = torch.NewDisposeScope()
          let x = hidden32 13 [ 2; 10; 768 ]
          for dtype, tol in [ torch.float16, 1e-3; torch.bfloat16, 1e-2 ] do
              let y = downsampleSeqFirst defaultOptions (torch.ones(2L, 10L)) (x.transpose(0L, 1L).to_type(dtype)) (Some(torch.ones(2L, 10L)))
              Expect.equal y.dtype dtype "dtype preserved"
              Expect.isLessThanOrEqual (maxAbsDiff (y.transpose(0L, 1L)) x) tol "identity"
      }

      test "example.py: boundaries one step early give the published gradient [0.0075, 0, −1.4963, −0.7526, 0, 0]" {
          use _ = torch.NewDisposeScope()
          // The published demo's data: two clusters of 2-D frames, boundaries at 1 and 4 instead of 2 and 5.
          let frames = tensorOf [ 6; 1; 2 ] [| 1.0; 0.2; 1.3; -0.1; 0.8; 0.3; 5.0; 5.2; 5.4; 4.9; 4.8; 5.1 |]
          let frames = frames.to_type(torch.float32)
          let correct = tensorOf [ 1; 6 ] [| 0.; 0.; 1.; 0.; 0.; 1. |]
          let published = tensorOf [ 1; 6 ] [| 0.0075; 0.0; -1.4963; -0.7526; 0.0; 0.0 |]
          for options in [ originalOptions; defaultOptions ] do
              for impl, name in [ downsampleSeqFirst, "index_add"; (fun o b x m -> (denseReference o b (x.transpose(0L, 1L)) m).transpose(0L, 1L)), "dense" ] do
                  let target = impl options (correct.to_type(torch.float32)) frames None
                  let wrong = (tensorOf [ 1; 6 ] [| 0.; 1.; 0.; 0.; 1.; 0. |]).to_type(torch.float32).requires_grad_(true)
                  let hidden = frames.clone().requires_grad_(true)
                  let loss = torch.nn.functional.mse_loss(impl options wrong hidden None, target.detach())
                  loss.backward()
                  // Printed with 4 decimals: agreement within half a unit of the last digit (plus float32 noise).
                  close 6e-5 $"{name} boundary gradient ({options.Tail})" wrong.grad published
                  Expect.isLessThan (wrong.grad.[0L, 2L].item<float32>()) -1.0f "strongly negative at the true boundary 2"
      }

      test "the original tail rule depends on the batch, the default does not" {
          use _ = torch.NewDisposeScope()
          let x = (tensorOf [ 2; 4; 1 ] [| 1.; 2.; 3.; 4.; 10.; 20.; 30.; 40. |]).to_type(torch.float32)
          let row0 = [| 1; 0; 0; 0 |]
          let alone options = downsample options (boundariesOf [| row0 |]) (x.narrow(0L, 0L, 1L)) None
          let inBatch options = downsample options (boundariesOf [| row0; [| 1; 1; 0; 0 |] |]) x None
          // Original: alone, row 0 is maximal and frames 1–3 are dropped; next to a row with 2 boundaries they
          // form segment 1 (mean 3).
          close 0.0 "original, alone" (alone originalOptions) (tensorOf [ 1; 1; 1 ] [| 1. |])
          close 0.0 "original, in a batch" ((inBatch originalOptions).narrow(0L, 0L, 1L)) (tensorOf [ 1; 2; 1 ] [| 1.; 3. |])
          close 0.0 "original, row 1 (maximal) drops its tail" ((inBatch originalOptions).narrow(0L, 1L, 1L)) (tensorOf [ 1; 2; 1 ] [| 10.; 20. |])
          close 0.0 "default, alone" (alone defaultOptions) (tensorOf [ 1; 1; 1 ] [| 1. |])
          close 0.0 "default, in a batch" ((inBatch defaultOptions).narrow(0L, 0L, 1L)) (tensorOf [ 1; 2; 1 ] [| 1.; 0. |])
      }

      test "straight-through boundaries and boundaries without gradient" {
          use _ = torch.NewDisposeScope()
          let x = (hidden32 21 [ 3; 12; 4 ]).requires_grad_(true)
          let hardRows = [| [| 0; 1; 0; 0; 1; 0; 1; 0; 0; 0; 0; 1 |]; [| 1; 1; 1; 0; 0; 0; 0; 0; 0; 0; 0; 0 |]; Array.zeroCreate 12 |]
          let hard = boundariesOf hardRows
          let r = hidden32 22 [ 3; 4; 4 ]
          // Leaf boundaries.
          let leaf = hard.clone().requires_grad_(true)
          (downsample defaultOptions leaf x None * r).sum().backward()
          // Straight-through: hard + soft − soft.detach(), values 0/1 up to rounding.
          let soft = (hidden32 23 [ 3; 12 ]).sigmoid().requires_grad_(true)
          let ste = hard + soft - soft.detach()
          (downsample defaultOptions ste (x.detach()) None * r).sum().backward()
          close 1e-6 "gradient reaches the soft scores" soft.grad leaf.grad
          // No gradient wanted for the boundaries.
          let x2 = x.detach().clone().requires_grad_(true)
          let fixedB = hard.clone()
          (downsample defaultOptions fixedB x2 None * r).sum().backward()
          Expect.isTrue (isNull fixedB.grad) "no boundary gradient"
          close 0.0 "hidden gradient unchanged" x2.grad x.grad
      }

      test "no boundary anywhere gives empty (B, 0, D) and (0, B, D)" {
          use _ = torch.NewDisposeScope()
          let x = hidden32 31 [ 3; 5; 2 ]
          let zeros = torch.zeros(3L, 5L)
          Expect.sequenceEqual (downsample defaultOptions zeros x None).shape [| 3L; 0L; 2L |] "batch-first"
          Expect.sequenceEqual (downsampleSeqFirst originalOptions zeros (x.transpose(0L, 1L)) None).shape [| 0L; 3L; 2L |] "sequence-first"
          Expect.sequenceEqual (denseReference defaultOptions zeros x None).shape [| 3L; 0L; 2L |] "dense"
          Expect.equal (segmentCount zeros) 0L "S = 0"
      }

      test "forward + backward leaves no live tensors behind (all variants)" {
          let live () = DisposeScopeManager.Statistics.ThreadTotalLiveCount
          let pass (pool: Tensor -> Tensor -> Tensor) =
              use _ = torch.NewDisposeScope()
              let x = (hidden32 51 [ 2; 30; 8 ]).requires_grad_(true)
              let b = (boundariesOf [| Array.init 30 (fun l -> l % 4 / 3); Array.init 30 (fun l -> l % 7 / 6) |]).requires_grad_(true)
              (pool b x * 2.0).sum().backward()
          let variants: (Tensor -> Tensor -> Tensor) list =
              [ (fun b x -> downsample defaultOptions b x None)
                (fun b x -> finiteDifference originalOptions 1.0 b x)
                (fun b x -> smoothed defaultOptions 3 b x None) ]
          for pool in variants do pass pool
          let before = live ()
          for _ in 1..5 do
              for pool in variants do pass pool
          Expect.equal (live ()) before "live tensor count unchanged"
      }

      test "wrong shapes and kernels are rejected naming the argument" {
          use _ = torch.NewDisposeScope()
          let x = hidden32 41 [ 2; 5; 3 ]
          let b = torch.ones(2L, 5L)
          let throwsNaming (name: string) (f: unit -> Tensor) =
              match (try f () |> ignore; None with e -> Some e) with
              | Some(:? ArgumentException as e) -> Expect.equal e.ParamName name $"argument named: {e.Message}"
              | Some e -> failtest $"expected an ArgumentException for {name}, got {e}"
              | None -> failtest $"expected an ArgumentException for {name}"
          throwsNaming "boundaries" (fun () -> downsample defaultOptions (torch.ones(2L, 5L, 1L)) x None)
          throwsNaming "hidden" (fun () -> downsample defaultOptions b (torch.ones(2L, 5L)) None)
          throwsNaming "hidden" (fun () -> downsample defaultOptions b (torch.ones(2L, 4L, 3L)) None)
          throwsNaming "hidden" (fun () -> downsample defaultOptions b (torch.ones(2L, 5L, 3L, dtype = torch.int64)) None)
          throwsNaming "mask" (fun () -> downsample defaultOptions b x (Some(torch.ones(2L, 4L))))
          throwsNaming "kernel" (fun () -> smoothed defaultOptions 2 b x None)
          throwsNaming "kernel" (fun () -> movingAverage 4 x)
      } ]

[<Tests>]
let tests = testList "downsample" [ yield! valueProperties; yield! gradientProperties; yield! examples ]
