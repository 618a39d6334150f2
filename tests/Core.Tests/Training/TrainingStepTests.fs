/// One training update: gradient accumulation normalised over the whole accumulated batch (4 × B/4 = B, float64),
/// global-norm clipping (torch's clip_grad_norm_ recomputed in float64), skipped non-finite updates, and the loss
/// terms against the models' own forward passes.
module MagnetWhisper.Tests.Training.TrainingStepTests

open System
open Expecto
open TorchSharp
open MagnetWhisper.Core.Segments
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Training
open MagnetWhisper.Tests.Magnet
open MagnetWhisper.Tests.Training.TrainingFixtures

let private config = MagnetFixtures.config

/// The fixtures' model in float64, everything trainable, and its optimizer.
let private setup () =
    let m = model 11L config
    m.``to``(torch.float64) |> ignore
    m.SetTrainable [ AllParameters ] |> ignore
    let o = Optimizer.forMagnet { OptimizerSettings.PredictorsAndRest(1e-2, 1e-3) with WeightDecay = 0.01 } m
    m, o

let private float64 (b: Batch) =
    { b with Mel = b.Mel.to_type(torch.float64); Mask = b.Mask.to_type(torch.float64); Targets = b.Targets.to_type(torch.float64) }

/// The loss sums of a replayed micro-batch.
let private loss (m: MagnetWhisperModel) (generator: torch.Generator) (b: Batch) = LossSums.magnet m (replayInput generator b)

/// The gradients of the trained parameters (float64 copies).
let private grads (o: TrainingOptimizer) = [ for n, p in o.Parameters -> n, p.grad.detach().clone() ]

[<Tests>]
let tests =
    testSequenced <| testList "training.step" [
        test "accumulating 4 × B/4 gives the gradient, the clipped norm and the update of one batch of B (float64, 1e-12)" {
            let data = float64 (batch 5L config 8)
            let perRow = data.Labels.ne(torch.tensor(-100L)).sum(1L).data<int64>().ToArray()
            Expect.isGreaterThan (Array.distinct perRow).Length 1 "micro-batches hold different token counts"
            let m1, o1 = setup ()
            let m4, o4 = setup ()
            use _ = m1
            use _ = m4
            use _ = o1
            use _ = o4
            use g = Boundaries.generator 1L torch.CPU
            let whole = TrainingStep.accumulate [ data ] counts (loss m1 g)
            let split = TrainingStep.accumulate (data.Split 2L) counts (loss m4 g)
            match whole, split with
            | Ok(l1, ce1, b1, c1), Ok(l4, ce4, b4, c4) ->
                Expect.equal c4 c1 "the same tokens and utterances"
                Expect.floatClose { absolute = 1e-12; relative = 1e-12 } l4 l1 "loss"
                Expect.floatClose { absolute = 1e-12; relative = 1e-12 } ce4 ce1 "cross-entropy"
                Expect.floatClose { absolute = 1e-12; relative = 1e-12 } b4 b1 "boundary loss"
                Expect.isGreaterThan b1 1e-3 "the boundary loss contributes"
            | _ -> failtest "a finite loss"
            let diff = maxRelativeDifference (grads o4) (grads o1)
            Expect.isLessThanOrEqual diff 1e-12 "gradients"
            Expect.isGreaterThan (TrainingStep.globalNorm (o1.Parameters |> List.map (fun (_, p) -> p.grad))) 1e-3 "a real gradient"
            // The full update, clipped: the same pre-clip norm and parameters.
            let settings = { MaxGradientNorm = Some 0.05 }
            let r1 = TrainingStep.run o1 settings 0.7 [ data ] counts (loss m1 g)
            let r4 = TrainingStep.run o4 settings 0.7 (data.Split 2L) counts (loss m4 g)
            Expect.isNone r1.Skipped "applied"
            Expect.isGreaterThan r1.GradientNorm 0.05 "clipping is active"
            Expect.floatClose { absolute = 0.0; relative = 1e-12 } r4.GradientNorm r1.GradientNorm "pre-clip norm"
            Expect.isLessThanOrEqual (maxRelativeDifference m4.State m1.State) 1e-12 "parameters after the update"
        }
        test "one micro-batch: the step's loss is the model's own token-mean CE + mean boundary loss" {
            let m, o = setup ()
            use _ = m
            use _ = o
            let data = float64 (batch 6L config 5)
            use g = Boundaries.generator 1L torch.CPU
            use reference = m.Forward(replayInput g data)
            let r = TrainingStep.run o { MaxGradientNorm = None } 1.0 [ data ] counts (loss m g)
            Expect.floatClose { absolute = 1e-6; relative = 1e-6 } r.Loss (TrainingStep.value reference.Loss) "loss (the model's CE is float32)"
            Expect.floatClose { absolute = 1e-6; relative = 1e-6 } r.CrossEntropy (TrainingStep.value reference.CrossEntropy) "CE (the model's is float32)"
            Expect.floatClose { absolute = 1e-6; relative = 1e-6 } r.BoundaryLoss (TrainingStep.value reference.BoundaryLoss) "boundary (the encoder's total is float32)"
            // Tokens counted by hand: labels ≠ −100.
            let tokens = data.Labels.data<int64>().ToArray() |> Array.filter (fun t -> t <> -100L) |> Array.length
            Expect.equal r.Counts { Tokens = int64 tokens; Utterances = 5L } "counts"
        }
        test "clipping scales the gradient to the max norm; the reported norm is the float64 √Σg² before clipping" {
            let m, o = setup ()
            use _ = m
            use _ = o
            let data = float64 (batch 7L config 4)
            use g = Boundaries.generator 1L torch.CPU
            TrainingStep.accumulate [ data ] counts (loss m g) |> ignore
            let before = grads o
            let expected = before |> List.sumBy (fun (_, t) -> (t * t).sum().item<float>()) |> sqrt
            let norm = TrainingStep.clip (Some(expected / 3.0)) (o.Parameters |> List.map snd)
            Expect.floatClose { absolute = 0.0; relative = 1e-12 } norm expected "pre-clip norm"
            let c = (expected / 3.0) / (expected + 1e-6)
            for (n, after), (_, b) in List.zip (grads o) before do
                let diff = (after - b * c).abs().max().item<float>()
                Expect.isLessThanOrEqual diff 1e-15 $"{n} scaled by max/(norm + 1e-6)"
            let unclipped = grads o
            let again = TrainingStep.clip (Some(expected * 10.0)) (o.Parameters |> List.map snd)
            Expect.isLessThanOrEqual (maxRelativeDifference (grads o) unclipped) 0.0 "below the max norm nothing changes"
            Expect.floatClose { absolute = 0.0; relative = 1e-12 } again (expected * c) "the clipped norm is max · norm/(norm + 1e-6)"
        }
        test "a non-finite loss or gradient skips the update, leaves parameters and moments alone, and is reported" {
            let m, o = setup ()
            use _ = m
            use _ = o
            let data = float64 (batch 8L config 4)
            use g = Boundaries.generator 1L torch.CPU
            let before = copies m.State
            let moments = TrainingSnapshot.optimizerBytes o
            let poisoned (b: Batch) =
                let s = loss m g b
                { s with TokenCrossEntropy = s.TokenCrossEntropy * nan }
            let r = TrainingStep.run o { MaxGradientNorm = Some 1.0 } 1.0 (data.Split 2L) counts poisoned
            Expect.equal r.Skipped (Some NonFiniteLoss) "reported"
            Expect.isEmpty (changed before m.State) "parameters unchanged"
            Expect.sequenceEqual (TrainingSnapshot.optimizerBytes o) moments "moments unchanged"
            Expect.isTrue (o.Parameters |> List.forall (fun (_, p) -> isNull p.grad)) "gradients cleared"
            // A finite loss whose gradient is NaN: √(0·x) is 0, but its derivative at 0 is ∞ · 0.
            let steep (b: Batch) =
                let s = loss m g b
                { s with BoundaryLoss = s.BoundaryLoss + (s.BoundaryLoss * 0.0).sqrt() }
            let r = TrainingStep.run o { MaxGradientNorm = Some 1.0 } 1.0 [ data ] counts steep
            Expect.equal r.Skipped (Some NonFiniteGradient) "an infinite gradient"
            Expect.isEmpty (changed before m.State) "parameters still unchanged"
        }
        test "memory stays flat: updates leave no tensor alive in the caller's scope" {
            let m, o = setup ()
            use _ = m
            use _ = o
            let micro = (float64 (batch 10L config 4)).Split 2L
            use g = Boundaries.generator 1L torch.CPU
            use _ = torch.NewDisposeScope()
            let live () = DisposeScopeManager.Statistics.ThreadTotalLiveCount
            let update () = TrainingStep.run o { MaxGradientNorm = Some 1.0 } 1.0 micro counts (loss m g) |> ignore
            update ()
            let after = live ()
            for _ in 1 .. 3 do update ()
            let final = live ()
            Expect.equal final after $"live tensors after 4 updates ({final}) = after 1 ({after})"
        }
        test "stock Whisper: the loss sums give the model's token-mean loss over a batch" {
            use w = MagnetFixtures.whisper 4L config
            let data = batch 9L config 3
            let tokens = w.DecoderInputs data.Labels
            let sums = LossSums.whisper w data.Mel tokens data.Labels None None
            let c = counts data
            let expected = w.Loss(data.Mel, tokens, data.Labels).item<float32>() |> float
            Expect.floatClose { absolute = 1e-5; relative = 1e-5 } (sums.TokenCrossEntropy.item<float32>() |> float |> fun s -> s / float c.Tokens) expected "Σ CE / tokens = Loss"
            Expect.equal (sums.BoundaryLoss.item<float32>()) 0.0f "no boundary loss"
        }
    ]
