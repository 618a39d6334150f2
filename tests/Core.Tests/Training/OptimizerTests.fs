/// AdamW over the trained parameters: which parameters are weight-decayed, a learning rate per group, and the update
/// itself against AdamW's formulas written out in float64 (Loshchilov & Hutter; torch.optim.AdamW).
module MagnetWhisper.Tests.Training.OptimizerTests

open System
open Expecto
open TorchSharp
open MagnetWhisper.Core.Segments
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Training
open MagnetWhisper.Tests.Magnet
open MagnetWhisper.Tests.Training.TrainingFixtures

/// A float64 tiny model with every parameter of its groups trainable.
let private float64Model (groups: ParameterGroup list) =
    let m = model 3L MagnetFixtures.config
    m.``to``(torch.float64) |> ignore
    m.SetTrainable groups |> ignore
    m

/// The decay rule written out by name for the fixtures' model (BP1 with mean pooling has no vector parameters
/// besides biases): biases, LayerNorms and the embedding tables are not decayed.
let private decayedByName (name: string) =
    not (name.EndsWith ".bias" || name.Contains "layer_norm." || name.Contains "embed_tokens" || name.Contains "embed_positions")

let private settings = { OptimizerSettings.PredictorsAndRest(1e-2, 1e-3) with WeightDecay = 0.1 }

[<Tests>]
let tests =
    testSequenced <| testList "training.optimizer" [
        test "biases, norm weights and embeddings are not decayed; matrices and convolutions are" {
            use m = float64Model [ AllParameters ]
            let byName = dict m.TrainableParameters
            let decays name = Optimizer.decays name (byName.[name])
            for name in [ "model.encoder.conv1.weight"; "model.encoder.layers.0.fc1.weight"; "model.encoder.layers.2.self_attn.q_proj.weight"
                          "model.decoder.layers.1.encoder_attn.out_proj.weight"; "model.encoder.boundary_predictors.1.boundary_mlp.0.weight" ] do
                Expect.isTrue (decays name) $"{name} is decayed"
            for name in [ "model.encoder.conv1.bias"; "model.encoder.layers.0.self_attn_layer_norm.weight"; "model.encoder.layer_norm.weight"
                          "model.decoder.layer_norm.bias"; "model.decoder.embed_tokens.weight"; "model.encoder.boundary_predictors.1.boundary_mlp.2.bias" ] do
                Expect.isFalse (decays name) $"{name} is not decayed"
            for name, _ in m.TrainableParameters do
                Expect.equal (decays name) (decayedByName name) $"{name} follows the rule written out by name"
        }
        test "groups: each trained parameter in its first group, split into decayed and undecayed" {
            use m = float64Model [ AllParameters ]
            use o = Optimizer.forMagnet settings m
            let shape = [ for g in o.Groups -> g.Name, g.Decayed ]
            Expect.sequenceEqual shape [ "predictors", true; "predictors", false; "rest", true; "rest", false ] "group order"
            let names = o.Parameters |> List.map fst
            Expect.sequenceEqual (List.sort names) (m.TrainableParameters |> List.map fst |> List.sort) "every trained parameter exactly once"
            for g in o.Groups do
                for n, _ in g.Parameters do
                    Expect.equal (n.Contains ".boundary_predictors.") (g.Name = "predictors") $"{n} in group {g.Name}"
        }
        test "a zero gradient only decays: p·(1 − lr·λ) for decayed parameters at their group's rate, p for the others" {
            use m = float64Model [ AllParameters ]
            use o = Optimizer.forMagnet settings m
            let before = copies o.Parameters
            for _, p in o.Parameters do
                p.grad <- torch.zeros_like(p)
            o.SetLearningRate 0.5
            o.AdamW.step() |> ignore
            let after = dict o.Parameters
            for n, p0 in before do
                let peak = if n.Contains ".boundary_predictors." then 1e-2 else 1e-3
                let factor = if decayedByName n then 1.0 - 0.5 * peak * 0.1 else 1.0
                let expected = p0 * factor
                let diff = (after.[n].detach() - expected).abs().max().item<float>()
                Expect.isLessThanOrEqual diff 1e-15 $"{n}: factor {factor}"
        }
        test "two AdamW updates equal the formulas in float64 (bias-corrected moments, decoupled decay)" {
            use m = float64Model [ Predictors ]
            let s = { OptimizerSettings.Default 1e-2 with WeightDecay = 0.1; Beta1 = 0.8; Beta2 = 0.9; Epsilon = 1e-3 }
            use o = Optimizer.forMagnet s m
            let p0 = copies o.Parameters
            use g = Boundaries.generator 7L torch.CPU
            let grads = [ for _ in 1 .. 2 -> [ for n, p in o.Parameters -> n, torch.randn(p.shape, dtype = torch.float64, generator = g) ] ]
            for step in grads do
                for (_, p), (_, gr) in List.zip o.Parameters step do
                    p.grad <- gr.clone()
                o.SetLearningRate 1.0
                o.AdamW.step() |> ignore
            let lr, b1, b2, eps = 1e-2, 0.8, 0.9, 1e-3
            for i, (n, start) in List.indexed p0 do
                let wd = if decayedByName n then 0.1 else 0.0
                let mutable p = start
                let mutable mom = torch.zeros_like start
                let mutable v = torch.zeros_like start
                for t, step in List.indexed grads do
                    let gr = snd step.[i]
                    let t = float (t + 1)
                    p <- p * (1.0 - lr * wd)
                    mom <- mom * b1 + gr * (1.0 - b1)
                    v <- v * b2 + gr * gr * (1.0 - b2)
                    let mHat = mom / (1.0 - Math.Pow(b1, t))
                    let vHat = v / (1.0 - Math.Pow(b2, t))
                    p <- p - mHat / (vHat.sqrt() + eps) * lr
                let actual = (snd o.Parameters.[i]).detach()
                let diff = (actual - p).abs().max().item<float>()
                Expect.isLessThanOrEqual diff 1e-14 $"{n}"
        }
        test "a trained parameter that no learning-rate group takes is an error naming it" {
            use m = float64Model [ Predictors; Decoder ]
            let s = { OptimizerSettings.Default 1e-3 with Groups = [ { Name = "predictors"; Members = [ Predictors ]; LearningRate = 1e-3 } ] }
            let ex = raises<ArgumentException> (fun () -> Optimizer.forMagnet s m |> ignore)
            Expect.stringContains ex.Message "model.decoder." "names the parameter"
        }
        test "trained parts: names round-trip, and each choice trains exactly its parameters" {
            for name, parts in TrainedParts.all do
                Expect.equal (TrainedParts.parse (name.ToUpperInvariant())) parts $"{name} parses"
                Expect.equal (TrainedParts.name parts) name "name"
            let ex = raises<ArgumentException> (fun () -> TrainedParts.parse "predictor" |> ignore)
            Expect.stringContains ex.Message "'predictor'" "names the value"
            Expect.stringContains ex.Message "predictors+convs" "lists the choices"
            use m = float64Model []
            let names = m.State |> List.map fst
            // The fixtures' encoder has 3 layers and its predictor before layer 1; expectations by name.
            let expected parts =
                names
                |> List.filter (fun n ->
                    let predictor = n.Contains ".boundary_predictors."
                    let positions = n.EndsWith "embed_positions.weight"
                    let decoder = n.StartsWith "model.decoder." || n.StartsWith "proj_out."
                    let afterFirst =
                        n.StartsWith "model.encoder.layers.1." || n.StartsWith "model.encoder.layers.2." || n.StartsWith "model.encoder.layer_norm."
                    not positions
                    && (match parts with
                        | Everything -> true
                        | PredictorsOnly | PredictorsAndConvolutions -> predictor
                        | EncoderAfterFirstPredictor -> predictor || afterFirst
                        | DecoderFrozen -> not decoder))
                |> List.filter (fun n -> m.named_parameters() |> Seq.exists (fun struct (p, _) -> p = n))
            for _, parts in TrainedParts.all do
                let trained = TrainedParts.apply parts m
                Expect.sequenceEqual (List.sort trained) (List.sort (expected parts)) $"{TrainedParts.name parts}"
        }
        test "nothing trainable is an error" {
            use m = float64Model []
            raises<ArgumentException> (fun () -> Optimizer.forMagnet (OptimizerSettings.Default 1e-3) m |> ignore) |> ignore
        }
    ]
