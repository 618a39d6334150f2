/// The predictors' compatibility options (DECISIONS #1, #4): the original's batch-dependent forcing and tail rule,
/// and BP1's all-ones RL pooling.
module MagnetWhisper.Tests.Magnet.CompatTests

open Expecto
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Segments
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Tests.Reference

type Tensor = torch.Tensor

let private dim = 16

/// (B, L) 0/1 prefix mask of the given lengths.
let private maskOf (lens: int64[]) (l: int64) : Tensor =
    torch.arange(l, dtype = torch.int64).unsqueeze(0L).lt(torch.tensor(lens).unsqueeze(1L)).to_type(torch.float32)

/// A predictor in eval mode (no dropout) with a fixed seed.
let private predictor (config: PredictorConfig) =
    torch.manual_seed 7L |> ignore
    let p = Predictors.create config dim
    p.eval ()
    p

/// Inference with threshold 1 (no scored boundary): only the forced boundaries remain.
let private forcedOnly (kind: PredictorKind) (pooling: PoolingKind) (batching: BatchingRule) =
    { PredictorConfig.Default(kind, 0.2) with Threshold = 1.0; Pooling = pooling; Batching = batching }

let private run (p: BoundaryPredictor) (hidden: Tensor) (mask: Tensor) =
    p.forward(PredictorInput.Create(hidden, Some mask, Threshold))

[<Tests>]
let tests =
    testList "compat" [
        testCase "original forced frames: only padded rows of padded batches, just before the first pad" <| fun () ->
            use _ = torch.NewDisposeScope()
            let like = torch.zeros(3L, 6L)
            let f = Boundaries.originalForcedFrames (Some(maskOf [| 6L; 4L; 0L |] 6L)) like
            let expected = torch.tensor([| 0.0f; 0.0f; 0.0f; 0.0f; 0.0f; 0.0f; 0.0f; 0.0f; 0.0f; 1.0f; 0.0f; 0.0f; 0.0f; 0.0f; 0.0f; 0.0f; 0.0f; 0.0f |]).reshape(3L, 6L)
            close 0.0 "padded batch" f expected
            let unpadded = Boundaries.originalForcedFrames (Some(maskOf [| 6L; 6L |] 6L)) (torch.zeros(2L, 6L))
            Expect.equal (unpadded.sum().item<float32>()) 0.0f "unpadded batch"
            let noMask = Boundaries.originalForcedFrames None (torch.zeros(2L, 6L))
            Expect.equal (noMask.sum().item<float32>()) 0.0f "no mask"

        for kind, pooling in [ Bp1, AttentionPooling; Bp1, MeanPooling; Bp2, AttentionPooling; Bp3, AttentionPooling; Bp4, MeanPooling ] do
            testCase $"{kind} {pooling}: original batching depends on the batch, the default does not" <| fun () ->
                use _ = torch.NewDisposeScope()
                let hidden = torch.randn([| 2L; 13L; int64 dim |], generator = Boundaries.generator 3L torch.CPU)
                let padded = maskOf [| 13L; 9L |] 13L
                let full = maskOf [| 13L; 13L |] 13L
                use original = predictor (forcedOnly kind pooling OriginalBatching)
                let inPadded = run original hidden padded
                let inFull = run original hidden full
                // Row 0 is unpadded: no forced boundary, in either batch; row 1 gets one at frame 8 only when padded.
                Expect.equal (inPadded.BoundaryCounts.to_type(torch.float64).data<float>() |> Seq.toList) [ 0.0; 1.0 ] "padded batch counts"
                Expect.equal (inFull.BoundaryCounts.to_type(torch.float64).data<float>() |> Seq.toList) [ 0.0; 0.0 ] "unpadded batch: no forced boundary"
                Expect.equal (inPadded.Boundaries.[1L, 8L].item<float32>()) 1.0f "forced just before the first pad"
                // Row 0's tail (all its frames) is pooled as segment 0 because row 1 has a boundary; not marked valid.
                Expect.equal inPadded.Pooled.shape [| 2L; 1L; int64 dim |] "S = 1"
                Expect.equal inFull.Pooled.shape [| 2L; 0L; int64 dim |] "S = 0"
                Expect.equal (inPadded.Mask.data<float32>() |> Seq.toList) [ 0.0f; 1.0f ] "the extra tail segment is not valid"
                let embedOnly = torch.tensor(Formulas.sinusoidal 0 dim, dtype = torch.float32).unsqueeze(0L) // segment 0: sin 0, cos 0, …
                Expect.isGreaterThan ((inPadded.Pooled.[0L] - embedOnly.[0L]).abs().max().item<float32>()) 1e-3f "row 0's tail pooled"
                if pooling = MeanPooling && kind <> Bp3 then
                    // The tail segment is the mean of all 13 frames of row 0, plus the embedding of ordinal 0.
                    let mean = hidden.[0L].to_type(torch.float64).mean([| 0L |]).unsqueeze(0L)
                    close 1e-5 "row 0's tail = mean of its frames + PE(0)" inPadded.Pooled.[0L] (mean + embedOnly.to_type(torch.float64))
                // The default: row 0 gets its forced last boundary, and its output is the same in both batches and alone.
                use independent = predictor (forcedOnly kind pooling BatchIndependent)
                let a = run independent hidden padded
                let b = run independent hidden full
                let alone = run independent (hidden.narrow(0L, 0L, 1L)) (full.narrow(0L, 0L, 1L))
                close 1e-6 "row 0, padded vs unpadded batch" a.Pooled.[0L] b.Pooled.[0L]
                close 1e-6 "row 0, batch vs alone" a.Pooled.[0L] alone.Pooled.[0L]

        testCase "original tail through a predictor: row 0's output changes with row 1's boundary count" <| fun () ->
            use _ = torch.NewDisposeScope()
            let hidden = torch.randn([| 2L; 10L; int64 dim |], generator = Boundaries.generator 5L torch.CPU)
            let config = { PredictorConfig.Default(Bp1, 0.2) with Threshold = 1.0; Batching = OriginalBatching }
            use p = predictor config
            // Row 0 has 1 forced boundary at 3 (length 4); row 1 has 0 (unpadded) or 1 (length 6).
            let withBoundary = run p hidden (maskOf [| 4L; 6L |] 10L)
            let without = run p hidden (maskOf [| 4L; 10L |] 10L)
            Expect.equal withBoundary.Pooled.shape [| 2L; 1L; int64 dim |] "S = 1"
            close 1e-6 "row 0 identical when both rows have one boundary" withBoundary.Pooled.[0L] without.Pooled.[0L]
            // Row 1 without boundary: its whole valid sequence is the extra segment 0 (row 0 is maximal).
            Expect.equal (without.Mask.data<float32>() |> Seq.toList) [ 1.0f; 0.0f ] "row 1's tail segment is not valid"
            let embedOnly = torch.tensor(Formulas.sinusoidal 0 dim, dtype = torch.float32).unsqueeze(0L) // segment 0: sin 0, cos 0, …
            Expect.isGreaterThan ((without.Pooled.[1L] - embedOnly.[0L]).abs().max().item<float32>()) 1e-3f "row 1's frames pooled"

        testCase "BP1 all-ones RL pooling: S = valid length, log-prob of the sample with gradient" <| fun () ->
            use _ = torch.NewDisposeScope()
            let lens = [| 13L; 9L; 4L |]
            let hidden = torch.randn([| 3L; 13L; int64 dim |], generator = Boundaries.generator 9L torch.CPU)
            let mask = maskOf lens 13L
            let config = { PredictorConfig.Default(Bp1, 0.2) with RlPooling = PoolAllFrames }
            use p = predictor config
            use g = Boundaries.generator 11L torch.CPU
            let out = p.forward({ PredictorInput.Create(hidden, Some mask, Sample g) with Rl = true })
            Expect.equal out.Pooled.shape [| 3L; 13L; int64 dim |] "S = the longest valid length"
            Expect.equal (out.BoundaryCounts.to_type(torch.float64).data<float>() |> Seq.toList) [ 13.0; 9.0; 4.0 ] "every valid frame a boundary"
            close 0.0 "boundaries = mask" out.Boundaries mask
            let logProb = out.LogProb |> Option.defaultWith (fun () -> failwith "no log-prob")
            logProb.sum().backward()
            let grads = [ for q in p.parameters () do if not (isNull q.grad) then q.grad.abs().sum().item<float32>() ]
            Expect.isTrue (grads |> List.exists (fun v -> v > 0.0f)) "the log-prob trains the scorer"
            // The default pools the sample: fewer segments than frames.
            use d = predictor (PredictorConfig.Default(Bp1, 0.2))
            use g2 = Boundaries.generator 11L torch.CPU
            let sampled = d.forward({ PredictorInput.Create(hidden, Some mask, Sample g2) with Rl = true })
            Expect.isLessThan sampled.Pooled.shape.[1] 13L "sampled boundaries compress"

        testCase "PoolAllFrames is BP1-only" <| fun () ->
            Expect.throwsT<System.ArgumentException>
                (fun () -> Predictors.create { PredictorConfig.Default(Bp2, 0.2) with RlPooling = PoolAllFrames } dim |> ignore)
                "BP2 rejects it"

        testCase "WithOriginalCompatibility sets the model options and every slot's original segmentation" <| fun () ->
            let options = MagnetOptions.Default.WithPredictor(1, Bp1, 0.25).WithPredictor(2, Bp3, 0.3).WithOriginalCompatibility()
            Expect.equal options.Compatibility Compatibility.Original "model-level options"
            for slot in options.Predictors do
                Expect.equal slot.Predictor.Batching OriginalBatching $"slot {slot.Layer}: batching"
                Expect.equal slot.Predictor.UNetAlignment OriginalCrop $"slot {slot.Layer}: U-Net"
            Expect.equal (options.Predictors |> List.map (fun s -> s.Predictor.RlPooling)) [ PoolAllFrames; PoolSampled ] "all-ones RL pooling for BP1 only"
    ]
