/// GRPO's pieces (issue 10): group advantages sum to zero in every group; the clipped objective against a formula
/// written out here; with the original's options one update equals plain REINFORCE with a group-mean baseline and
/// global normalisation (float64, gradient and AdamW step recomputed here); a tiny MagnetWhisper trained on a toy reward
/// for fewer (more) boundaries lowers (raises) its expected kept fraction at every checkpoint of the run.
module MagnetWhisper.Tests.Training.GrpoTests

open System
open Expecto
open FsCheck
open TorchSharp
open MagnetWhisper.Core.Segments
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Training
open MagnetWhisper.Tests
open MagnetWhisper.Tests.Magnet

type Tensor = torch.Tensor

/// Rewards of B groups of K in the K-major layout, from a seed; values on a coarse grid so groups with equal
/// rewards (zero spread) occur.
let private rewardsOf (k: int) (b: int) (seed: int) : float[] =
    let rng = Random seed
    [| for _ in 1 .. k * b -> if rng.Next 4 = 0 then 1.5 else Math.Round(rng.NextDouble() * 4.0 - 2.0, 1) |]

/// Reward of sample k of audio b in the K-major layout.
let private at (rewards: float[]) (b: int) (groups: int) (k: int) = rewards.[k * groups + b]

/// ln π of fixed actions under independent Bernoulli(σ(θ)) frames, per row: Σ_l a ln σ(θ) + (1 − a) ln(1 − σ(θ)).
let private bernoulliLogProb (theta: Tensor) (actions: Tensor) : Tensor =
    (actions * torch.nn.functional.logsigmoid theta + (1.0 - actions) * torch.nn.functional.logsigmoid (-theta)).sum(1L)

/// A tiny MagnetWhisper (BP1 before encoder layer 1, initial rate ½, eval mode: no dropout) trained by GRPO on a toy
/// reward sign · (each sample's kept fraction), predictors only. Returns the expected kept fraction (mean p over the
/// valid frames of a fixed batch) at step 0 and every `every` steps.
module private GrpoToy =
    let private options =
        let predictor = { PredictorConfig.Default(Bp1, 0.3) with InitialBoundaryBias = Some 0.0 }
        MagnetOptions.Default.WithSlot { PredictorSlot.Create(1, Bp1, 0.3) with Predictor = predictor }

    let train (sign: float) (steps: int) (every: int) : float[] =
        use _ = torch.NewDisposeScope()
        let config = MagnetFixtures.config
        use model = MagnetFixtures.magnet 11L config options
        TrainedParts.apply PredictorsOnly model |> ignore
        use optimizer = Optimizer.forMagnet (OptimizerSettings.Default 1e-3) model
        let settings = GrpoSettings.Default
        let batch = TrainingFixtures.batch 4L config 4
        let mel, mask = GrpoBatch.tile settings.GroupSize batch.Mel, GrpoBatch.tile settings.GroupSize batch.Mask
        use g = Boundaries.generator 21L torch.CPU
        let expectedKept () =
            use _ = torch.no_grad ()
            use enc = model.Encode { EncoderInput.Inference(batch.Mel, Some batch.Mask) with Rl = true }
            let o = enc.Layers.Head.Output
            (o.Probabilities.sum() / o.ValidCounts.sum()).item<float32>() |> float
        [| yield expectedKept ()
           for step in 1 .. steps do
               use _ = torch.NewDisposeScope()
               let rollout =
                   use _ = torch.no_grad ()
                   use enc = model.Encode { EncoderInput.Training(mel, Some mask, None, g) with Rl = true }
                   let zeros = torch.zeros(mel.shape.[0])
                   GrpoStep.rollout enc (GrpoStep.keptFraction enc * sign) zeros zeros None
               let report = GrpoStep.update optimizer settings 1.0 rollout (GrpoStep.replayEncoder model (EncoderInput.Inference(mel, Some mask)))
               if report.Skipped.IsSome then failwith $"step {step} was skipped: {report.Skipped}"
               if step % every = 0 then yield expectedKept () |]

[<Tests>]
let tests =
    testSequenced <| testList "training.grpo" [
        Generators.prop "group advantages sum to zero in every group (every normalisation)" (fun (PositiveInt k0, PositiveInt b0, seed: int) ->
            let k, b = 1 + k0 % 6, 1 + b0 % 5
            let rewards = rewardsOf k b seed
            for n in [ PerGroup; GlobalAfterGroupMean; GroupMeanOnly ] do
                use r = torch.tensor(rewards, dtype = torch.float64)
                use a = GrpoAdvantages.compute n k r
                let adv = a.Advantages.data<float>().ToArray()
                for g in 0 .. b - 1 do
                    let sum = List.sum [ for j in 0 .. k - 1 -> at adv g b j ]
                    Expect.floatClose { absolute = 1e-9; relative = 0.0 } sum 0.0 $"{n}: the advantages of group {g} sum to 0")

        test "per-group advantages are (r − mean)/(std + 1e-8) per group; a zero-spread group gets 0 and is counted" {
            // B = 3 audios, K = 3 samples, K-major: rewards of audio b are rows b, 3 + b, 6 + b.
            let groups = [| [| 1.0; 2.0; 6.0 |]; [| 0.5; 0.5; 0.5 |]; [| -1.0; 3.0; -1.0 |] |]
            let flat = [| for k in 0 .. 2 do for b in 0 .. 2 -> groups.[b].[k] |]
            use r = torch.tensor(flat, dtype = torch.float64)
            use a = GrpoAdvantages.compute PerGroup 3 r
            Expect.equal a.ZeroSpreadGroups 1 "one group has zero spread"
            Expect.floatClose Accuracy.veryHigh a.ZeroSpreadFraction (1.0 / 3.0) "fraction"
            let adv = a.Advantages.data<float>().ToArray()
            for b in 0 .. 2 do
                let g = groups.[b]
                let mean = Array.average g
                let std = sqrt ((g |> Array.sumBy (fun x -> (x - mean) ** 2.0)) / 2.0)
                for k in 0 .. 2 do
                    let expected = if std = 0.0 then 0.0 else (g.[k] - mean) / (std + 1e-8)
                    Expect.floatClose Accuracy.veryHigh (at adv b 3 k) expected $"advantage of audio {b}, sample {k}"
        }

        test "the clipped objective equals the PPO formula written out (ratios inside and outside the clip range)" {
            let logp = [| -2.0; -1.0; -3.0; -0.5; -4.0 |]
            let old = [| -2.0; -1.5; -2.5; -0.2; -4.6 |]
            let adv = [| 1.0; 1.0; -1.0; -2.0; 0.5 |]
            let reference = [| -2.2; -1.1; -2.9; -0.4; -4.0 |]
            let entropy = [| 0.3; 0.2; 0.1; 0.4; 0.5 |]
            let eps, beta, c = 0.2, 0.05, 0.01
            let n = float logp.Length
            let rho i = exp (logp.[i] - old.[i])
            let clamp x = max (1.0 - eps) (min (1.0 + eps) x)
            let surrogate i = min (rho i * adv.[i]) (clamp (rho i) * adv.[i])
            let k3 i = exp (reference.[i] - logp.[i]) - (reference.[i] - logp.[i]) - 1.0
            let policy = -(List.sum [ for i in 0 .. 4 -> surrogate i ]) / n
            let kl = List.sum [ for i in 0 .. 4 -> k3 i ] / n
            let ent = Array.average entropy
            let expectedLoss = policy + beta * kl - c * ent
            let clipped = [ for i in 0 .. 4 -> abs (rho i - 1.0) > eps ] |> List.filter id |> List.length
            let approx = List.sum [ for i in 0 .. 4 -> (rho i - 1.0) - log (rho i) ] / n
            use _ = torch.NewDisposeScope()
            let t64 (xs: float[]) = torch.tensor(xs, dtype = torch.float64)
            let settings = { ClipEpsilon = Some eps; KlCoefficient = beta; EntropyCoefficient = c }
            let terms = GrpoObjective.terms settings (t64 logp) (t64 old) (t64 adv) (Some(t64 reference)) (t64 entropy)
            Expect.floatClose Accuracy.veryHigh (terms.PolicyLoss.item<float>()) policy "policy loss"
            Expect.floatClose Accuracy.veryHigh (terms.KlToReference.item<float>()) kl "k3 KL"
            Expect.floatClose Accuracy.veryHigh (terms.Loss.item<float>()) expectedLoss "loss"
            Expect.floatClose Accuracy.veryHigh terms.ClipFraction (float clipped / n) "clip fraction"
            Expect.floatClose Accuracy.veryHigh terms.ApproxKl approx "approximate KL"
            Expect.isGreaterThan clipped 0 "the case clips some samples"
            Expect.isLessThan clipped 5 "and leaves some unclipped"
        }

        test "with the original's options one update is plain REINFORCE with a group-mean baseline and global normalisation (float64)" {
            use _ = torch.NewDisposeScope()
            let k, b, l = 3, 2, 4
            let n = k * b
            use g = Boundaries.generator 5L torch.CPU
            let theta0 = torch.randn([| int64 n; int64 l |], dtype = torch.float64, generator = g)
            let actions = torch.rand([| int64 n; int64 l |], dtype = torch.float64, generator = g).lt((0.5).ToScalar()).to_type(torch.float64)
            let rewards = [| 0.3; -1.2; 2.0; 0.7; -0.4; 1.1 |] // K-major: audio 0 = rows 0, 2, 4; audio 1 = rows 1, 3, 5
            // REINFORCE written out: A = r − mean of its group, then (A − mean A)/(std_unbiased A + 1e-8) over all.
            let centred = [| for i in 0 .. n - 1 -> rewards.[i] - List.average [ for j in 0 .. k - 1 -> rewards.[j * b + i % b] ] |]
            let m = Array.average centred
            let s = sqrt ((centred |> Array.sumBy (fun a -> (a - m) ** 2.0)) / float (n - 1))
            let adv = centred |> Array.map (fun a -> (a - m) / (s + 1e-8))
            // ∂/∂θ_il of −(1/N) Σ_i A_i ln π_i = −(1/N) A_i (a_il − σ(θ_il)).
            let th = theta0.data<float>().ToArray()
            let act = actions.data<float>().ToArray()
            let sigma x = 1.0 / (1.0 + exp -x)
            let grad = Array.init (n * l) (fun j -> -(adv.[j / l]) * (act.[j] - sigma th.[j]) / float n)
            // The gradient of the objective.
            let settings = { GrpoSettings.Original with GroupSize = k }
            let theta = torch.nn.Parameter(theta0.clone())
            let rollout =
                { Actions = Map [ 0, actions ]; OldLogProb = (bernoulliLogProb theta0 actions).detach(); ReferenceLogProb = None
                  Rewards = torch.tensor(rewards, dtype = torch.float64); CrossEntropy = torch.zeros(int64 n)
                  BoundaryLoss = torch.zeros(int64 n); KeptFraction = torch.zeros(int64 n); WordErrorRate = None; LayerKeptFractions = [] }
            let evaluate (a: Map<int, Tensor>) = { LogProb = bernoulliLogProb theta a.[0]; Entropy = torch.zeros(int64 n, dtype = torch.float64) }
            use advantages = GrpoAdvantages.compute settings.Normalisation k rollout.Rewards
            let terms = GrpoObjective.terms settings.Objective (evaluate rollout.Actions).LogProb rollout.OldLogProb advantages.Advantages None (torch.zeros(int64 n, dtype = torch.float64))
            terms.Loss.backward()
            let got = theta.grad.data<float>().ToArray()
            for j in 0 .. n * l - 1 do
                Expect.floatClose { absolute = 1e-12; relative = 1e-10 } got.[j] grad.[j] $"gradient {j}"
            // The whole update: one AdamW step (no weight decay, no clip): θ − lr · g / (|g| + ε) on a first step.
            theta.grad <- null
            let lr = 0.01
            use optimizer =
                Optimizer.create { OptimizerSettings.Default lr with WeightDecay = 0.0 } (fun _ _ -> true) [ "theta", theta ]
            let report = GrpoStep.update optimizer { settings with MaxGradientNorm = None } 1.0 rollout evaluate
            Expect.equal (report.EpochsApplied, report.Skipped) (1, None) "one on-policy step"
            let after = theta.detach().data<float>().ToArray()
            for j in 0 .. n * l - 1 do
                let expected = th.[j] - lr * grad.[j] / (abs grad.[j] + 1e-8)
                Expect.floatClose { absolute = 1e-12; relative = 1e-9 } after.[j] expected $"parameter {j} after the step"
            let gradNorm = sqrt (grad |> Array.sumBy (fun x -> x * x))
            Expect.floatClose { absolute = 1e-12; relative = 1e-9 } report.GradientNorm gradNorm "gradient norm"
            Expect.floatClose Accuracy.veryHigh report.ClipFraction 0.0 "no clipping"
            Expect.floatClose { absolute = 1e-12; relative = 0.0 } report.ApproxKl 0.0 "on-policy: ratio 1"
        }

        test "predictors only: other parameters get no gradient, and the clipped norm is the predictors' gradient norm" {
            use _ = torch.NewDisposeScope()
            let config = MagnetFixtures.config
            use model = MagnetFixtures.magnet 12L config TrainingFixtures.options
            let trained = TrainedParts.apply PredictorsOnly model
            Expect.isTrue (trained |> List.forall (fun n -> n.Contains ".boundary_predictors.")) "only predictor parameters train"
            use optimizer = Optimizer.forMagnet (OptimizerSettings.Default 1e-3) model
            let settings = { GrpoSettings.Default with InnerEpochs = 1; MaxGradientNorm = Some 1e-6 }
            let batch = TrainingFixtures.batch 6L config 3
            let mel, mask = GrpoBatch.tile settings.GroupSize batch.Mel, GrpoBatch.tile settings.GroupSize batch.Mask
            use g = Boundaries.generator 8L torch.CPU
            let rollout =
                use _ = torch.no_grad ()
                use enc = model.Encode { EncoderInput.Training(mel, Some mask, None, g) with Rl = true }
                let zeros = torch.zeros(mel.shape.[0])
                GrpoStep.rollout enc (GrpoStep.keptFraction enc) zeros zeros None
            let evaluate = GrpoStep.replayEncoder model (EncoderInput.Inference(mel, Some mask))
            // The first epoch's gradient, by hand: the objective's backward, then the norm over every parameter that got one.
            use advantages = GrpoAdvantages.compute settings.Normalisation settings.GroupSize rollout.Rewards
            let policy = evaluate rollout.Actions
            let terms = GrpoObjective.terms settings.Objective policy.LogProb rollout.OldLogProb advantages.Advantages None policy.Entropy
            terms.Loss.backward()
            let withGradient = [ for struct (n, p) in model.named_parameters() do if not (isNull p.grad) then n, p.grad.detach().to_type(torch.float64) ]
            Expect.isNonEmpty withGradient "the predictors get a gradient"
            for n, _ in withGradient do
                Expect.stringContains n ".boundary_predictors." $"{n} is a predictor parameter"
            let norm = sqrt (withGradient |> List.sumBy (fun (_, g) -> g.square().sum().item<float>()))
            for struct (_, p) in model.named_parameters() do p.grad <- null
            let before = TrainingFixtures.copies [ for struct (n, p) in model.named_parameters() -> n, p ]
            let report = GrpoStep.update optimizer settings 1.0 rollout evaluate
            Expect.floatClose { absolute = 1e-9; relative = 1e-6 } report.GradientNorm norm "the clipping norm is the predictors' gradient norm"
            let after = [ for struct (n, p) in model.named_parameters() -> n, p :> Tensor ]
            let moved = TrainingFixtures.changed before after
            Expect.isNonEmpty moved "the step moved the predictors"
            for n in moved do
                Expect.stringContains n ".boundary_predictors." $"only predictor parameters move ({n})"
            for struct (n, p) in model.named_parameters() do
                Expect.isTrue (isNull p.grad) $"no gradient is left on {n}"
        }

        for fewer in [ true; false ] do
            let direction = if fewer then "fewer" else "more"
            test $"a toy reward for {direction} boundaries moves the expected kept fraction that way at every checkpoint" {
                let kept =
                    GrpoToy.train (if fewer then -1.0 else 1.0) 30 6
                eprintfn "GRPO toy reward for %s boundaries: expected kept fraction at steps 0, 6, …, 30: %A" direction kept
                Expect.equal kept.Length 6 "checkpoints at steps 0, 6, …, 30"
                for i in 1 .. kept.Length - 1 do
                    if fewer then Expect.isLessThan kept.[i] (kept.[i - 1] - 0.005) $"kept fraction falls from checkpoint {i - 1} to {i}: %A{kept}"
                    else Expect.isGreaterThan kept.[i] (kept.[i - 1] + 0.005) $"kept fraction rises from checkpoint {i - 1} to {i}: %A{kept}"
                let change = abs (kept.[kept.Length - 1] - kept.[0])
                Expect.isGreaterThan change 0.1 $"the kept fraction moved by more than 0.1: %A{kept}"
            }
    ]
