module MagnetWhisper.Tests.Segments.PositionsTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Segments.Positions
open MagnetWhisper.Tests
open MagnetWhisper.Tests.Reference

/// A RoPE case: x (B, H, T, dh) at positions (T) or, when PerRow, (B, T).
type RopeCase =
    { Batch: int
      Heads: int
      Time: int
      HeadDim: int
      PerRow: bool
      Theta: float
      Seed: int }

/// A frame-mask case: (B, F) random 0/1 pooled by Stride.
type MaskCase = { Rows: int; Frames: int; Stride: int; Density: float; MaskSeed: int }

/// A sinusoidal case: an (S, D) table, D odd or even.
type TableCase = { Length: int; Dim: int }

let private ropeCaseGen =
    gen {
        let! batch = Gen.choose (1, 3)
        let! heads = Gen.choose (1, 3)
        let! time = Gen.choose (1, 8)
        let! half = Gen.choose (1, 5)
        let! perRow = Gen.elements [ true; false ]
        let! theta = Gen.elements [ DefaultRopeTheta; 500.0 ]
        let! seed = Gen.choose (0, Int32.MaxValue - 1)
        return { Batch = batch; Heads = heads; Time = time; HeadDim = 2 * half; PerRow = perRow; Theta = theta; Seed = seed }
    }

let private maskCaseGen =
    gen {
        let! rows = Gen.choose (1, 3)
        let! frames = Gen.choose (0, 40)
        let! stride = Gen.choose (1, 5)
        let! density = Gen.elements [ 0.0; 0.1; 0.5; 1.0 ]
        let! seed = Gen.choose (0, Int32.MaxValue - 1)
        return { Rows = rows; Frames = frames; Stride = stride; Density = density; MaskSeed = seed }
    }

let private tableCaseGen =
    gen {
        let! length = Gen.choose (0, 60)
        let! dim = Gen.choose (1, 17)
        return { Length = length; Dim = dim }
    }

type PositionArbs =
    static member RopeCase() = Arb.fromGen ropeCaseGen
    static member MaskCase() = Arb.fromGen maskCaseGen
    static member TableCase() = Arb.fromGen tableCaseGen

let private config = Generators.configWith [ typeof<PositionArbs> ]
let private prop name (f: 'a -> unit) = testPropertyWithConfig config name f

let private normal (rng: Random) =
    let u1 = 1.0 - rng.NextDouble()
    Math.Sqrt(-2.0 * Math.Log u1) * Math.Cos(2.0 * Math.PI * rng.NextDouble())

let private ofArray (dtype: torch.ScalarType) (dims: int64[]) (values: float[]) : torch.Tensor =
    torch.tensor(values, dtype = torch.float64).reshape(dims).to_type(dtype)

let private positionsOf (dims: int64[]) (values: int64[]) : torch.Tensor =
    torch.tensor(values, dtype = torch.int64).reshape(dims)

/// Float64 loop value of the sinusoidal table (SPEC §4.6); odd widths end with a lone sine.
let private sinusoid (s: int) (j: int) (d: int) =
    let angle = float s * Math.Pow(10000.0, -2.0 * float (j / 2) / float d)
    if j % 2 = 0 then Math.Sin angle else Math.Cos angle

/// Float64 loop RoPE of one head vector at position pos: pairs (2i, 2i+1) rotated by pos·θ^(−2i/dh).
let private rotateVector (theta: float) (pos: int64) (v: float[]) =
    let dh = v.Length
    let out = Array.zeroCreate dh
    for i in 0 .. dh / 2 - 1 do
        let angle = float pos * Math.Pow(theta, -2.0 * float i / float dh)
        let c, s = Math.Cos angle, Math.Sin angle
        out.[2 * i] <- v.[2 * i] * c - v.[2 * i + 1] * s
        out.[2 * i + 1] <- v.[2 * i] * s + v.[2 * i + 1] * c
    out

/// Random x and positions (up to the 1500 encoder positions) of a case, as arrays and tensors.
let private ropeInputs (c: RopeCase) =
    let rng = Random c.Seed
    let x = Array.init (c.Batch * c.Heads * c.Time * c.HeadDim) (fun _ -> normal rng)
    let rows = if c.PerRow then c.Batch else 1
    let positions = Array.init (rows * c.Time) (fun _ -> int64 (rng.Next(0, 1501)))
    let positionTensor = if c.PerRow then positionsOf [| int64 c.Batch; int64 c.Time |] positions else positionsOf [| int64 c.Time |] positions
    x, positions, ofArray torch.float64 [| int64 c.Batch; int64 c.Heads; int64 c.Time; int64 c.HeadDim |] x, positionTensor

let private dot (a: float[]) (b: float[]) = Array.fold2 (fun acc u v -> acc + u * v) 0.0 a b

/// Rotates one vector with the library: (1, 1, 1, dh) at a single position.
let private ropeOne (theta: float) (pos: int64) (v: float[]) =
    use x = ofArray torch.float64 [| 1L; 1L; 1L; int64 v.Length |] v
    use p = positionsOf [| 1L |] [| pos |]
    use y = applyRope theta p x
    Tensors.toFloatArray y

let private paramNameOf (f: unit -> unit) =
    try
        f ()
        "no exception"
    with :? ArgumentException as e -> e.ParamName

[<Tests>]
let tests =
    testList "positions" [
        prop "the sinusoidal table equals the interleaved formula (odd widths too)" (fun (c: TableCase) ->
            use _ = torch.NewDisposeScope()
            let t = sinusoidalTable (int64 c.Length) (int64 c.Dim) torch.float64 torch.CPU
            let expected = Array.init (c.Length * c.Dim) (fun k -> sinusoid (k / c.Dim) (k % c.Dim) c.Dim)
            close 1e-12 "table" t (ofArray torch.float64 [| int64 c.Length; int64 c.Dim |] expected))

        testCase "a float32 table of 1500 positions × 64 is the formula to float32 precision" <| fun () ->
            use _ = torch.NewDisposeScope()
            let t = sinusoidalTable 1500L 64L torch.float32 torch.CPU
            Expect.equal t.dtype torch.float32 "dtype"
            let expected = Array.init (1500 * 64) (fun k -> sinusoid (k / 64) (k % 64) 64)
            close 1e-6 "table" t (ofArray torch.float64 [| 1500L; 64L |] expected)

        testCase "addSinusoidal adds the table to every row and keeps the dtype" <| fun () ->
            use _ = torch.NewDisposeScope()
            let rng = Random 4
            let b, s, d = 2, 7, 6
            let pooled = Array.init (b * s * d) (fun _ -> normal rng)
            let expected = pooled |> Array.mapi (fun k v -> v + sinusoid ((k / d) % s) (k % d) d)
            for dtype, tol in [ torch.float64, 1e-12; torch.float32, 1e-6; torch.float16, 5e-3 ] do
                let input = ofArray dtype [| int64 b; int64 s; int64 d |] pooled
                let y = addSinusoidal input
                Expect.equal y.dtype dtype $"{dtype}"
                // Compare with the rounded input the function saw.
                let seen = Tensors.toFloatArray input |> Array.mapi (fun k v -> v + sinusoid ((k / d) % s) (k % d) d)
                close tol $"{dtype}" y (ofArray torch.float64 y.shape seen)
            close 1e-12 "float64 against the unrounded sum" (addSinusoidal (ofArray torch.float64 [| 2L; 7L; 6L |] pooled)) (ofArray torch.float64 [| 2L; 7L; 6L |] expected)

        prop "RoPE equals a float64 loop rotation of interleaved pairs" (fun (c: RopeCase) ->
            use _ = torch.NewDisposeScope()
            let x, positions, xt, pt = ropeInputs c
            let y = applyRope c.Theta pt xt
            let expected = Array.zeroCreate x.Length
            for b in 0 .. c.Batch - 1 do
                for h in 0 .. c.Heads - 1 do
                    for t in 0 .. c.Time - 1 do
                        let at = ((b * c.Heads + h) * c.Time + t) * c.HeadDim
                        let pos = positions.[(if c.PerRow then b * c.Time else 0) + t]
                        Array.blit (rotateVector c.Theta pos x.[at .. at + c.HeadDim - 1]) 0 expected at c.HeadDim
            close 1e-9 "rotated" y (ofArray torch.float64 y.shape expected))

        prop "RoPE preserves the norm of every pair" (fun (c: RopeCase) ->
            use _ = torch.NewDisposeScope()
            let x, _, xt, pt = ropeInputs c
            let y = Tensors.toFloatArray (applyRope c.Theta pt xt)
            for k in 0 .. x.Length / 2 - 1 do
                let before = x.[2 * k] * x.[2 * k] + x.[2 * k + 1] * x.[2 * k + 1]
                let after = y.[2 * k] * y.[2 * k] + y.[2 * k + 1] * y.[2 * k + 1]
                Expect.floatClose { absolute = 1e-12; relative = 1e-10 } after before $"pair {k}")

        prop "RoPE scores depend only on the position difference" (fun (c: RopeCase) ->
            let rng = Random c.Seed
            let q = Array.init c.HeadDim (fun _ -> normal rng)
            let k = Array.init c.HeadDim (fun _ -> normal rng)
            let p1, p2, delta = int64 (rng.Next(0, 1500)), int64 (rng.Next(0, 1500)), int64 (rng.Next(0, 1500))
            let score a b = dot (ropeOne c.Theta a q) (ropeOne c.Theta b k)
            Expect.floatClose { absolute = 1e-9; relative = 1e-9 } (score (p1 + delta) (p2 + delta)) (score p1 p2) "shifted both")

        testCase "RoPE at position 0 is the identity" <| fun () ->
            use _ = torch.NewDisposeScope()
            let c = { Batch = 2; Heads = 3; Time = 5; HeadDim = 8; PerRow = false; Theta = DefaultRopeTheta; Seed = 2 }
            let x, _, _, _ = ropeInputs c
            for dtype in [ torch.float32; torch.float64; torch.float16 ] do
                let xt = ofArray dtype [| 2L; 3L; 5L; 8L |] x
                let y = applyRope DefaultRopeTheta (torch.zeros(5L, dtype = torch.int64)) xt
                Expect.equal y.dtype dtype $"{dtype}"
                Expect.equal (maxAbsDiff y xt) 0.0 $"{dtype}"

        testCase "interleaved layout on a hand-computed 4-dim example" <| fun () ->
            use _ = torch.NewDisposeScope()
            // dh = 4: pair (0, 1) turns by 3·θ^0 = 3 rad, pair (2, 3) by 3·θ^(−1/2) = 0.03 rad (θ = 10000).
            let a, b, c, d = 1.0, 2.0, 3.0, 4.0
            let expected =
                [| a * cos 3.0 - b * sin 3.0; a * sin 3.0 + b * cos 3.0
                   c * cos 0.03 - d * sin 0.03; c * sin 0.03 + d * cos 0.03 |]
            let y = applyRope 10000.0 (positionsOf [| 1L |] [| 3L |]) (ofArray torch.float64 [| 1L; 1L; 1L; 4L |] [| a; b; c; d |])
            close 1e-12 "rotated" y (ofArray torch.float64 [| 1L; 1L; 1L; 4L |] expected)
            let f = applyRope 10000.0 (positionsOf [| 1L |] [| 3L |]) (ofArray torch.float32 [| 1L; 1L; 1L; 4L |] [| a; b; c; d |])
            Expect.equal f.dtype torch.float32 "float32 stays float32"
            close 1e-6 "float32" f (ofArray torch.float64 [| 1L; 1L; 1L; 4L |] expected)

        testCase "per-row positions equal rotating each row with its own positions" <| fun () ->
            use _ = torch.NewDisposeScope()
            let c = { Batch = 3; Heads = 2; Time = 4; HeadDim = 6; PerRow = true; Theta = DefaultRopeTheta; Seed = 9 }
            let _, _, xt, pt = ropeInputs c
            let y = applyRope c.Theta pt xt
            for b in 0L .. 2L do
                let alone = applyRope c.Theta (pt.select(0L, b)) (xt.narrow(0L, b, 1L))
                close 1e-12 $"row {b}" (y.narrow(0L, b, 1L)) alone

        testCase "ropeTable holds cos and sin of pos·θ^(−2i/dh) for (T) and (B, T) positions" <| fun () ->
            use _ = torch.NewDisposeScope()
            let values = [| 0L; 1L; 7L; 1499L; 12L; 3L |]
            for dims in [ [| 6L |]; [| 2L; 3L |] ] do
                let cos, sin = ropeTable 500.0 8 torch.float64 (positionsOf dims values)
                Expect.sequenceEqual cos.shape (Array.append dims [| 4L |]) "shape"
                let angle k = float values.[k / 4] * Math.Pow(500.0, -2.0 * float (k % 4) / 8.0)
                close 1e-12 "cos" cos (ofArray torch.float64 cos.shape (Array.init 24 (angle >> Math.Cos)))
                close 1e-12 "sin" sin (ofArray torch.float64 sin.shape (Array.init 24 (angle >> Math.Sin)))

        testCase "RoPE rejects bad arguments by name" <| fun () ->
            use _ = torch.NewDisposeScope()
            let x = torch.zeros(1L, 1L, 3L, 4L)
            let apply (p: torch.Tensor) (x: torch.Tensor) () = applyRope DefaultRopeTheta p x |> ignore
            Expect.equal (paramNameOf (apply (torch.zeros(3L, dtype = torch.int64)) (torch.zeros(1L, 1L, 3L, 5L)))) "headDim" "odd head width"
            Expect.equal (paramNameOf (apply (torch.zeros(1L, 1L, 3L, dtype = torch.int64)) x)) "positions" "positions rank"
            Expect.equal (paramNameOf (apply (torch.zeros(4L, dtype = torch.int64)) x)) "table" "positions length"
            Expect.equal (paramNameOf (apply (torch.zeros(3L, dtype = torch.int64)) (torch.zeros(3L, 4L)))) "x" "x rank"

        prop "frame-mask pooling is any() over stride groups, the last group padded" (fun (c: MaskCase) ->
            use _ = torch.NewDisposeScope()
            let rng = Random c.MaskSeed
            let mask = Array.init (c.Rows * c.Frames) (fun _ -> if rng.NextDouble() < c.Density then 1.0 else 0.0)
            let y = poolFrameMask c.Stride (ofArray torch.float32 [| int64 c.Rows; int64 c.Frames |] mask)
            let groups = (c.Frames + c.Stride - 1) / c.Stride
            let expected =
                Array.init (c.Rows * groups) (fun k ->
                    let r, g = k / groups, k % groups
                    let frames = [ g * c.Stride .. min c.Frames ((g + 1) * c.Stride) - 1 ]
                    if frames |> List.exists (fun f -> mask.[r * c.Frames + f] <> 0.0) then 1.0 else 0.0)
            Expect.equal y.dtype torch.float32 "float32"
            Expect.sequenceEqual y.shape [| int64 c.Rows; int64 groups |] "shape"
            Expect.equal (if y.numel() = 0L then [||] else Tensors.toFloatArray y) expected "pooled")

        testCase "frame-mask pooling of 3000 frames by stride 2 gives 1500 positions; a bad stride is rejected" <| fun () ->
            use _ = torch.NewDisposeScope()
            let mask = torch.cat([| torch.ones(1L, 1001L); torch.zeros(1L, 1999L) |], 1L)
            let y = poolFrameMask 2 mask
            Expect.sequenceEqual y.shape [| 1L; 1500L |] "shape"
            Expect.equal (y.sum().item<float32>()) 501.0f "frame 1000 makes position 500 valid"
            Expect.equal (paramNameOf (fun () -> poolFrameMask 0 mask |> ignore)) "stride" "stride"
    ]
