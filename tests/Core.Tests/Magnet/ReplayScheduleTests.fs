/// The trainer-facing predictor API (issue 7 §2, §3): replaying recorded actions (PPO ratios, KL penalty),
/// per-predictor schedules in the encoder, ScheduleOnce without silent overrides, the inference threshold of
/// BP1/BP4, and the new options through WithOriginalCompatibility, the original import and magnet.json.
module MagnetWhisper.Tests.Magnet.ReplayScheduleTests

open System.Collections.Generic
open System.Text.RegularExpressions
open Expecto
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Segments
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Tests.Reference
open MagnetWhisper.Tests.Magnet.MagnetFixtures

let private dim = 16

/// (B, L) 0/1 prefix mask of the given lengths, in dtype.
let private maskOf (dtype: torch.ScalarType) (lens: int64[]) (l: int64) : Tensor =
    torch.arange(l, dtype = torch.int64).unsqueeze(0L).lt(torch.tensor(lens).unsqueeze(1L)).to_type(dtype)

/// A predictor in eval mode (dropout off) with seeded weights.
let private predictor (config: PredictorConfig) =
    torch.manual_seed 5L |> ignore
    let p = Predictors.create config dim
    p.eval ()
    p

/// Adds small noise to every parameter (a weight change between sampling and replay).
let private perturb (m: torch.nn.Module) =
    use _ = torch.no_grad ()
    use g = Boundaries.generator 99L torch.CPU
    for p in m.parameters () do
        p.add_(torch.randn(p.shape, dtype = p.dtype, generator = g) * 0.2) |> ignore

/// The name of a scorer parameter of each kind (it shapes p, so the log-probability's gradient must reach it).
let private scorerParameter (kind: PredictorKind) =
    match kind with
    | Bp1 | Bp2 -> "boundary_mlp.0.weight"
    | Bp3 -> "q_mlp.0.weight"
    | Bp4 -> "boundary_conv.0.weight"

let private kinds = [ Bp1; Bp2; Bp3; Bp4 ]

/// The default configuration with BP1/BP4's initial rate ½ (σ(0)), so every sample has many boundaries.
let private balanced (kind: PredictorKind) = { PredictorConfig.Default(kind, 0.3) with InitialBoundaryBias = Some 0.0 }

/// The loss of a BP1 before an encoder layer recomputed from its output: 10 · binomial from its counts against the
/// targets after the progress lerp ρ and the compression schedule s.
let private bp1Loss (progress: float) (compression: float) (o: PredictorOutput) (row: Tensor) =
    let n = o.ValidCounts
    let targets = Losses.progressTargets progress n row
    let effective = Losses.compressionScheduledTargets compression n targets
    Losses.binomialFromTargets o.BoundaryCounts n effective * 10.0

[<Tests>]
let tests =
    testSequenced <| testList "replay and schedules" [
        for kind in kinds do
            for rl in [ false; true ] do
                test $"{kind} replay (rl {rl}): the replayed log-prob equals the recorded one, and differs after a weight change" {
                    use _ = torch.NewDisposeScope()
                    use p = predictor (balanced kind)
                    let hidden = torch.randn([| 2L; 13L; int64 dim |], generator = Boundaries.generator 3L torch.CPU)
                    let mask = maskOf torch.float32 [| 13L; 9L |] 13L
                    use g = Boundaries.generator 11L torch.CPU
                    let input = { PredictorInput.Create(hidden, Some mask, Sample g) with Targets = Some(torch.tensor([| 4.0f; 3.0f |])); Rl = rl }
                    let recorded = p.forward input
                    let replay = { input with Mode = Replay recorded.Actions }
                    let replayed = p.forward replay
                    close 1e-6 "log-prob" replayed.LogProb.Value recorded.LogProb.Value
                    close 0.0 "actions" replayed.Actions recorded.Actions
                    close 0.0 "pooled boundaries" replayed.Boundaries recorded.Boundaries
                    close 1e-6 "pooled states" replayed.Pooled recorded.Pooled
                    close 1e-6 "loss" replayed.LossPerUtterance recorded.LossPerUtterance
                    // The actions are the raw sample: the padded frames and the forced frame are not overwritten.
                    Expect.sequenceEqual recorded.Actions.shape [| 2L; 13L |] "actions (B, L)"
                    perturb p
                    let after = p.forward replay
                    Expect.isGreaterThan (maxAbsDiff after.LogProb.Value recorded.LogProb.Value) 1e-3 "the weights changed the log-prob"
                    close 0.0 "the same actions are pooled" after.Boundaries recorded.Boundaries
                }

        for kind in kinds do
            test $"{kind} replay: the log-prob's gradient matches finite differences and reaches the scorer" {
                use _ = torch.NewDisposeScope()
                use p = predictor (balanced kind)
                p.``to``(torch.float64) |> ignore
                let hidden = torch.randn([| 2L; 11L; int64 dim |], dtype = torch.float64, generator = Boundaries.generator 4L torch.CPU)
                let mask = maskOf torch.float64 [| 11L; 8L |] 11L
                use g = Boundaries.generator 12L torch.CPU
                let actions = (p.forward { PredictorInput.Create(hidden, Some mask, Sample g) with Rl = true }).Actions
                let logProb (h: Tensor) =
                    (p.forward { PredictorInput.Create(h, Some mask, Replay actions) with Rl = true }).LogProb.Value.sum()
                let leaf = hidden.clone().requires_grad_(true)
                p.zero_grad ()
                (logProb leaf).backward()
                let grad = leaf.grad
                let eps = 1e-6
                for beta, l, d in [ 0, 0, 0; 0, 5, 3; 0, 10, 15; 1, 2, 7; 1, 7, 1; 1, 4, 12 ] do
                    let shifted (delta: float) =
                        use _ = torch.no_grad ()
                        let h = hidden.clone()
                        h.[int64 beta, int64 l, int64 d] <- h.[int64 beta, int64 l, int64 d] + delta
                        Tensors.toFloat (logProb h)
                    let fd = (shifted eps - shifted -eps) / (2.0 * eps)
                    let analytic = grad.[int64 beta, int64 l, int64 d].item<float>()
                    Expect.floatClose { absolute = 1e-6; relative = 1e-5 } analytic fd $"∂logProb/∂hidden[{beta}, {l}, {d}]"
                let scorer = p.get_parameter (scorerParameter kind)
                Expect.isGreaterThan (Tensors.toFloat (scorer.grad.abs().sum())) 0.0 "gradient into the scorer"
            }

        test "a replay of the wrong shape is an error naming PredictorMode.Replay" {
            use _ = torch.NewDisposeScope()
            use p = predictor (PredictorConfig.Default(Bp1, 0.3))
            let hidden = torch.randn(2L, 13L, int64 dim)
            let e = Expect.throwsC (fun () -> p.forward(PredictorInput.Create(hidden, None, Replay(torch.zeros(2L, 12L)))) |> ignore) id
            Expect.stringContains e.Message "PredictorMode.Replay" "names the mode"
            Expect.stringContains e.Message "(2, 13)" "names the expected shape"
        }

        test "an encoder replays every layer: same states and lengths, the recorded log-prob; bad keys are errors" {
            use _ = torch.NewDisposeScope()
            let options = (withPredictor 0 Bp1 0.25).WithPredictor(1, Bp2, 0.5)
            use m = magnet 21L config options
            let mel, mask = paddedMel 22L config [| 48L; 36L |]
            use g = Boundaries.generator 23L torch.CPU
            use sampled = m.Encode({ EncoderInput.Inference(mel, Some mask) with Mode = Sample g; Rl = true })
            use replayed = m.Encode({ EncoderInput.Inference(mel, Some mask) with Rl = true; Replay = sampled.Actions })
            close 1e-5 "log-prob" replayed.LogProb.Value sampled.LogProb.Value
            close 1e-5 "states" replayed.Hidden sampled.Hidden
            Expect.sequenceEqual replayed.LayerLengths sampled.LayerLengths "layer lengths"
            for a, b in List.zip replayed.Layers sampled.Layers do
                close 0.0 $"layer {a.Index} boundaries" a.Output.Boundaries b.Output.Boundaries
            let e = Expect.throwsC (fun () -> m.Encode({ EncoderInput.Inference(mel, Some mask) with Replay = Map [ 2, sampled.Actions.[0] ] }) |> ignore) id
            Expect.stringContains e.Message "EncoderInput.Replay" "names the field"
            Expect.stringContains e.Message "encoder layer 2" "names the layer"
            let e2 = Expect.throwsC (fun () -> m.Encode({ EncoderInput.Inference(mel, Some mask) with Mode = Replay sampled.Actions.[0] }) |> ignore) id
            Expect.stringContains e2.Message "EncoderInput.Replay" "points to the per-layer field"
        }

        test "per-predictor schedules reach their own predictor (two BP1s, different temperatures and compression)" {
            use _ = torch.NewDisposeScope()
            // Initial rate ½, so layer 1 sees more positions than its targets and its compression schedule matters.
            let slot layer =
                { PredictorSlot.Create(layer, Bp1, 0.25) with
                    Predictor = { PredictorConfig.Default(Bp1, 0.25) with Threshold = 0.6; InitialBoundaryBias = Some 0.5 } }
            use two = magnet 31L config (MagnetOptions.Default.WithSlot(slot 0).WithSlot(slot 1))
            use one = magnet 31L config (MagnetOptions.Default.WithSlot(slot 0))
            (one.Encoder.Predictor 0).Value.load_state_dict((two.Encoder.Predictor 0).Value.state_dict()) |> ignore
            let mel, mask = paddedMel 32L config [| 48L; 40L |]
            let targets = torch.tensor([| 9.0f; 7.0f; 3.0f; 2.0f |]).reshape(2L, 2L)
            let s0 = { Schedule.Default with Temperature = 0.5; CompressionSchedule = 0.3 }
            let s1 = { Schedule.Default with Temperature = 2.0; CompressionSchedule = 0.8 }
            let run (m: MagnetWhisperModel) (rows: Tensor) (schedules: Map<int, Schedule>) =
                use g = Boundaries.generator 33L torch.CPU
                m.Encode({ EncoderInput.Training(mel, Some mask, Some rows, g) with Schedules = schedules })
            let boundaries = ResizeArray<Tensor>()
            for first, second in [ s0, s1; s1, s0 ] do
                use both = run two targets (Map [ 0, first; 1, second ])
                use alone = run one (targets.narrow(0L, 0L, 1L)) (Map [ 0, first ])
                let l0, l1 = both.Layers.[0].Output, both.Layers.[1].Output
                close 0.0 "layer 0 boundaries = the single predictor's" l0.Boundaries alone.Layers.[0].Output.Boundaries
                close 1e-6 "layer 0 loss = the single predictor's" l0.LossPerUtterance alone.Layers.[0].Output.LossPerUtterance
                close 1e-5 $"layer 0 loss with compression {first.CompressionSchedule}" l0.LossPerUtterance (bp1Loss 1.0 first.CompressionSchedule l0 (targets.select(0L, 0L)))
                close 1e-5 $"layer 1 loss with compression {second.CompressionSchedule}" l1.LossPerUtterance (bp1Loss 1.0 second.CompressionSchedule l1 (targets.select(0L, 1L)))
                Expect.isTrue (Tensors.toFloatArray (l1.ValidCounts - targets.select(0L, 1L)) |> Array.forall (fun d -> d > 0.5)) "layer 1: targets below its valid positions"
                boundaries.Add(l0.Boundaries.clone())
            // With threshold 0.6 the hard sample depends on τ: the two temperatures gave layer 0 different boundaries.
            Expect.isGreaterThan (maxAbsDiff boundaries.[0] boundaries.[1]) 0.5 "the temperature reached layer 0"
            let e = Expect.throwsC (fun () -> run two targets (Map [ 2, s0 ]) |> ignore) id
            Expect.stringContains e.Message "EncoderInput.Schedules" "a schedule for a layer without a predictor is an error"
            // The helper maps: one schedule for every slot, and each slot's own with a target progress.
            let options = MagnetOptions.Default.WithSlot(slot 0).WithSlot({ slot 2 with Predictor = { (slot 2).Predictor with Temperature = 0.7 } })
            Expect.equal (PredictorSchedules.shared options s1) (Map [ 0, s1; 2, s1 ]) "shared"
            Expect.equal (PredictorSchedules.withTargetProgress options 0.4)
                (Map [ 0, { Schedule.Default with TargetProgress = 0.4 }; 2, { Schedule.Default with Temperature = 0.7; TargetProgress = 0.4 } ])
                "own schedules with a target progress"
        }

        test "ScheduleOnce keeps an explicit compression schedule, and refuses two schedules on one predictor" {
            use _ = torch.NewDisposeScope()
            let options = withPredictor 0 Bp1 0.25
            Expect.equal options.Compatibility.TargetScheduling ScheduleOnce "the default"
            use m = magnet 41L config options
            let mel, mask = paddedMel 42L config [| 48L; 30L |]
            let targets = torch.tensor([| 8.0f; 5.0f |]).reshape(1L, 2L)
            let run (m: MagnetWhisperModel) (schedule: Schedule) =
                use g = Boundaries.generator 43L torch.CPU
                m.Encode({ EncoderInput.Training(mel, Some mask, Some targets, g) with Schedules = Map [ 0, schedule ] })
            let row = targets.select(0L, 0L)
            // Compression 0 (the original's initial value): every frame a target, not silently reset to 1.
            for c in [ 0.0; 0.4 ] do
                use out = run m { Schedule.Default with CompressionSchedule = c }
                let o = out.Layers.Head.Output
                close 1e-5 $"compression {c} applied" o.LossPerUtterance (bp1Loss 1.0 c o row)
            use progress = run m { Schedule.Default with TargetProgress = 0.5 }
            close 1e-5 "progress 0.5 applied" progress.Layers.Head.Output.LossPerUtterance (bp1Loss 0.5 1.0 progress.Layers.Head.Output row)
            let both = { Schedule.Default with TargetProgress = 0.5; CompressionSchedule = 0.4 }
            let e = Expect.throwsC (fun () -> run m both |> ignore) id
            Expect.stringContains e.Message "BoundaryPredictor1 before encoder layer 0" "names the predictor"
            Expect.stringContains e.Message "ScheduleTwice" "names the alternative"
            // The original's double scheduling: lerp, then the compression schedule.
            use twice = magnet 41L config { options with Compatibility = { options.Compatibility with TargetScheduling = ScheduleTwice } }
            use out = run twice both
            close 1e-5 "ScheduleTwice: both" out.Layers.Head.Output.LossPerUtterance (bp1Loss 0.5 0.4 out.Layers.Head.Output row)
        }

        test "InferenceThreshold replaces Threshold at inference only" {
            use _ = torch.NewDisposeScope()
            let config = { PredictorConfig.Default(Bp1, 0.3) with Threshold = 0.9; InferenceThreshold = Some 0.5; InitialBoundaryBias = Some 1.0 }
            use p = predictor config
            let hidden = torch.randn([| 2L; 13L; int64 dim |], generator = Boundaries.generator 6L torch.CPU)
            let mask = maskOf torch.float32 [| 13L; 9L |] 13L
            let o = p.forward (PredictorInput.Create(hidden, Some mask, Threshold))
            let pr = o.Probabilities
            let at (t: float) = Boundaries.maskAndForce (Some mask) (pr.gt(t.ToScalar()).to_type(torch.float32))
            close 0.0 "1[p > 0.5]" o.Boundaries (at 0.5)
            Expect.isGreaterThan (maxAbsDiff (at 0.5) (at 0.9)) 0.5 "the two thresholds differ on this batch"
            // Sampling keeps Threshold: the same weights and seed without InferenceThreshold sample the same actions.
            use plain = predictor { config with InferenceThreshold = None }
            let sample (m: BoundaryPredictor) =
                use g = Boundaries.generator 7L torch.CPU
                (m.forward { PredictorInput.Create(hidden, Some mask, Sample g) with Targets = Some(torch.tensor([| 4.0f; 3.0f |])) }).Actions
            close 0.0 "sampled actions" (sample p) (sample plain)
            let inferred = plain.forward (PredictorInput.Create(hidden, Some mask, Threshold))
            close 0.0 "without it, inference uses Threshold" inferred.Boundaries (at 0.9)
        }

        test "the original options: AsOriginal, WithOriginalCompatibility and the original import set them" {
            let options = ((withPredictor 0 Bp1 0.2).WithPredictor(1, Bp2, 0.3).WithPredictor(2, Bp4, 0.1)).WithOriginalCompatibility()
            for s in options.Predictors do
                Expect.equal s.Predictor.TargetClamp Losses.ClampInFloat32 $"slot {s.Layer}: float32 clamp"
                Expect.equal s.Predictor.Batching OriginalBatching $"slot {s.Layer}: original batching"
                let expected = match s.Predictor.Kind with Bp1 | Bp4 -> Some 0.5 | _ -> None
                Expect.equal s.Predictor.InferenceThreshold expected $"slot {s.Layer}: inference threshold"
            let p : OriginalBoundaryParams =
                { LayerPriors = [ 1, 0.2; 2, 0.3; 3, 0.4 ]
                  LayerTemps = [ 1, 1.0; 2, 1.0; 3, 1.0 ]
                  LayerThresholds = [ 1, 0.7; 2, 0.35; 3, 0.6 ]
                  LayerTypes = [ 0, "Identity"; 1, "BoundaryPredictor1"; 2, "BoundaryPredictor4"; 3, "BoundaryPredictor2" ]
                  ConvConfig = None }
            let states = Dictionary<int, (string * int64[]) list>()
            states.[1] <- [ "boundary_mlp.0.weight", [| 16L; 16L |]; "pool_query", [| 16L |] ]
            states.[2] <- [ "boundary_conv.0.weight", [| 5L; 16L; 3L |] ]
            states.[3] <- [ "boundary_mlp.0.weight", [| 16L; 16L |]; "learned_query", [| 16L |] ]
            let original = OriginalCheckpoint.slots "test" p states ImportOptions.Original
            let project = OriginalCheckpoint.slots "test" p states ImportOptions.Project
            let summary (slots: PredictorSlot list) =
                [ for s in slots -> s.Layer, s.Predictor.Threshold, s.Predictor.InferenceThreshold, s.Predictor.TargetClamp ]
            Expect.equal (summary original)
                [ 1, 0.7, Some 0.5, Losses.ClampInFloat32; 2, 0.35, Some 0.5, Losses.ClampInFloat32; 3, 0.6, None, Losses.ClampInFloat32 ]
                "original import: BP1/BP4 threshold at 0.5 at inference, saved thresholds kept for sampling"
            Expect.equal (summary project)
                [ 1, 0.7, None, Losses.ClampInFloat64; 2, 0.35, None, Losses.ClampInFloat64; 3, 0.6, None, Losses.ClampInFloat64 ]
                "project import: the saved thresholds everywhere"
        }

        test "magnet.json round-trips the new options; older files load with the defaults" {
            let options =
                { ((withPredictor 0 Bp1 0.2).WithPredictor(2, Bp3, 0.3)).WithOriginalCompatibility() with RopeTheta = 10000.0 }
            let text = MagnetJson.write 4 options
            Expect.equal (MagnetJson.parse "magnet.json" 4 text) options "parsed back"
            Expect.stringContains text "\"target_clamp\": \"float32\"" "clamp written"
            Expect.stringContains text "\"inference_threshold\": 0.5" "inference threshold written"
            let stripped =
                Regex.Replace(Regex.Replace(text, ",\\s*\"inference_threshold\": (null|[0-9.]+)", ""), ",\\s*\"target_clamp\": \"[a-z0-9]+\"", "")
            Expect.isFalse (stripped.Contains "target_clamp" || stripped.Contains "inference_threshold") "fields removed"
            for s in (MagnetJson.parse "magnet.json" 4 stripped).Predictors do
                Expect.equal s.Predictor.TargetClamp Losses.ClampInFloat64 $"slot {s.Layer}: default clamp"
                Expect.equal s.Predictor.InferenceThreshold None $"slot {s.Layer}: default inference threshold"
        }
    ]
