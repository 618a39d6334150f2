module MagnetWhisper.Tests.Magnet.ModelApiTests

// The model API a trainer drives: evaluation mode that gives each submodule its own flag back, trainable parameter
// groups, the RL boundary-loss weight, and variable-length encoder input.

open System
open Expecto
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Decoding
open MagnetWhisper.Tests.Reference
open MagnetWhisper.Tests.Whisper.WhisperReference
open MagnetWhisper.Tests.Magnet.MagnetFixtures

/// BP1 with mean pooling before layer 1 and one extra stride-2 convolution, its scorer's final bias zeroed so that
/// the boundary probabilities spread around the threshold (a fresh BP1 keeps almost no frame).
let private compressingModel (seed: int64) =
    let slot = PredictorSlot.Create(1, Bp1, 0.3)
    let slot = { slot with Predictor = { slot.Predictor with Pooling = MeanPooling } }
    let options = MagnetOptions.Default.WithSlot(slot).WithConvStrides(config.DModel, [ 2 ])
    let m = magnet seed config options
    use _ = torch.no_grad()
    for n, p in m.State do
        if n = "model.encoder.boundary_predictors.1.boundary_mlp.2.bias" then p.zero_() |> ignore
        elif n.StartsWith "model.encoder.boundary_predictors.1.boundary_mlp." && n.EndsWith ".weight" then p.mul_((4.0).ToScalar()) |> ignore
    m

/// The trainable parameters' names after SetTrainable.
let private trainable (m: MagnetWhisperModel) =
    set [ for struct (n, p) in m.named_parameters() do if p.requires_grad then n ]

[<Tests>]
let tests =
    testSequenced
    <| testList "magnet.api" [
        test "evaluation gives every submodule its own training flag back" {
            use _ = torch.NewDisposeScope()
            let slot = PredictorSlot.Create(1, Bp3, 0.3)
            use m = magnet 5L config (MagnetOptions.Default.WithSlot slot)
            m.train()
            // A frozen decoder stays in evaluation mode while the rest trains.
            m.Decoder.eval()
            let mel, mask = paddedMel 6L config [| 40L; 48L |]
            use _audio = (m :> ISpeechModel).Encode(mel, Some mask)
            Expect.isTrue m.training "the model trains again"
            Expect.isTrue m.Encoder.training "the encoder trains again"
            Expect.isFalse m.Decoder.training "the frozen decoder stays in evaluation (before: this.train() switched it on)"
            for struct (name, sub) in m.Decoder.named_modules() do
                Expect.isFalse sub.training $"decoder submodule {name} stays in evaluation"
            let bp3 = (m.Encoder.Predictor 1).Value
            Expect.isTrue bp3.training "BP3 (with its BatchNorm) trains again"
        }

        test "parameter groups partition the parameters by the Hugging Face layout; SetTrainable freezes the rest" {
            use _ = torch.NewDisposeScope()
            use m = compressingModel 7L
            let names = [ for struct (n, _) in m.named_parameters() -> n ]
            // Expected membership written out from the key layout: first predictor before layer 1.
            let layerOf (n: string) =
                let parts = n.Split '.'
                if n.StartsWith "model.encoder.layers." then Some(int parts.[3]) else None
            let expected group (n: string) =
                match group with
                | Predictors -> n.StartsWith "model.encoder.boundary_predictors."
                | ExtraConvolutions -> n.StartsWith "model.encoder.additional_convs."
                | EncoderBeforeFirstPredictor -> n.StartsWith "model.encoder.conv" || layerOf n = Some 0
                | EncoderAfterFirstPredictor -> (match layerOf n with Some l -> l >= 1 | None -> false) || n.StartsWith "model.encoder.layer_norm."
                | Decoder -> (n.StartsWith "model.decoder." && not (n.Contains "embed_positions")) || n.StartsWith "proj_out."
                | AllParameters -> not (n.EndsWith "embed_positions.weight")
            let groups = [ Predictors; ExtraConvolutions; EncoderBeforeFirstPredictor; EncoderAfterFirstPredictor; Decoder ]
            for n in names do
                for g in AllParameters :: groups do
                    Expect.equal (m.InGroup(g, n)) (expected g n) $"{n} in {g}"
                if not (n.EndsWith "embed_positions.weight") then
                    Expect.equal (groups |> List.filter (fun g -> m.InGroup(g, n)) |> List.length) 1 $"{n} is in exactly one group"
            let newParts = m.SetTrainable [ Predictors; ExtraConvolutions ]
            Expect.equal (set newParts) (set [ for n in names do if expected Predictors n || expected ExtraConvolutions n then n ]) "returned names"
            Expect.equal (trainable m) (set newParts) "requires_grad follows the groups"
            Expect.isTrue (newParts |> List.exists (fun n -> n.Contains "additional_convs")) "fresh extra convolutions train with the predictors"
        }

        test "a predictor-only step changes only predictor parameters" {
            use _ = torch.NewDisposeScope()
            use m = compressingModel 8L
            m.SetTrainable [ Predictors ] |> ignore
            m.train()
            let before = [ for n, t in m.State -> n, t.detach().clone() ]
            let mel, mask = paddedMel 9L config [| 30L; 48L |]
            let labels = randomTokens 10L config 2L 5L
            use g = new torch.Generator(3UL)
            let targets = torch.tensor([| 6.0f; 9.0f |]).unsqueeze(0L)
            use result = m.Forward(ForwardInput.Training(mel, Some mask, labels, Some targets, g))
            result.Loss.backward()
            use _ = torch.no_grad()
            for _, p in m.TrainableParameters do
                if not (isNull p.grad) then p.sub_(p.grad * 0.1) |> ignore
            let changed = [ for (n, old), (_, now) in List.zip before m.State do if maxAbsDiff old now > 0.0 then n ]
            Expect.isNonEmpty changed "the step changed something"
            for n in changed do
                Expect.stringContains n ".boundary_predictors." $"{n} changed"
        }

        test "the RL boundary-loss weight scales each utterance's own boundary loss" {
            use _ = torch.NewDisposeScope()
            use m = compressingModel 11L
            let mel, mask = paddedMel 12L config [| 30L; 48L |]
            let labels = randomTokens 13L config 2L 5L
            let run (w: float) =
                use g = new torch.Generator(5UL)
                let input = { ForwardInput.Training(mel, Some mask, labels, None, g) with Rl = true; RlBoundaryLossWeight = w }
                m.Forward input
            use r0 = run 0.0
            use r2 = run 2.0
            // Per-utterance CE written out: −log softmax at each label, averaged over the row, in float64.
            let logits = r0.Logits.to_type(torch.float64)
            let logp = torch.nn.functional.log_softmax(logits, -1L)
            let ce = -(logp.gather(2L, labels.unsqueeze(2L)).squeeze(2L)).mean([| 1L |])
            close 1e-5 "w = 0: the cross-entropy alone" r0.LossPerUtterance ce
            let boundary = r2.Encoder.Layers.Head.Output.LossPerUtterance.to_type(torch.float64)
            Expect.isGreaterThan (toFloat (boundary.abs().sum())) 0.0 "the boundary loss is not zero"
            close 1e-5 "w = 2: CE + 2 · boundary loss" r2.LossPerUtterance (ce + boundary * 2.0)
        }

        test "variable-length input: a batch cut to its longest utterance gives the 30 s batch's valid outputs and logits" {
            use _ = torch.NewDisposeScope()
            use m = compressingModel 14L
            let lengths = [| 13L; 30L |]
            let mel, mask = paddedMel 15L config lengths
            let frames = m.Encoder.FramesFor 30
            // 30 valid frames + 4 frames of convolution lookahead (2 of the stem, 1 · stride 2 of the extra
            // convolution), rounded up to the total stride 4.
            Expect.equal frames 36 "frames for the longest utterance"
            let cutMel, cutMask = m.CutToLongest(mel, Some mask)
            Expect.equal cutMel.shape.[2] 36L "the features are cut"
            use full = m.Encode(mel, Some mask)
            use cut = m.Encode(cutMel, cutMask)
            let p = full.Layers.Head.Output.Probabilities
            let validFrames = full.Layers.Head.Output.ValidCounts
            for i in 0 .. 1 do
                let n = int64 (toFloat validFrames.[int64 i])
                let margin = toFloat ((p.[int64 i].narrow(0L, 0L, n) - 0.5).abs().min())
                Expect.isGreaterThan margin 1e-4 $"row {i}: no probability at the threshold (a rounding could flip it)"
            Expect.equal cut.Mask.shape.[1] full.Mask.shape.[1] "the same compressed length (the longest row decides it)"
            close 0.0 "the same shortened masks" cut.Mask full.Mask
            let valid = full.Mask.unsqueeze(2L)
            close 2e-5 "valid encoder outputs equal" (cut.Hidden * valid) (full.Hidden * valid)
            let kept = toFloat (full.Mask.sum()) / float (Array.sum lengths)
            Expect.isLessThan kept 0.6 "the predictor compresses"
            let tokens = randomTokens 16L config 2L 4L
            let speech = m :> ISpeechModel
            use a = speech.Encode(mel, Some mask)
            Expect.equal a.Hidden.shape.[1] cut.Hidden.shape.[1] "ISpeechModel.Encode cuts short audio itself"
            let logitsOf (h: Tensor) (em: Tensor) = m.Decode(tokens, h, Some em, None, None).Logits
            close 2e-5 "decoder logits equal" (logitsOf cut.Hidden cut.Mask) (logitsOf full.Hidden full.Mask)
        }

        test "variable-length input: lengths that are no multiple of the stride are rejected; Whisper keeps 30 s" {
            use _ = torch.NewDisposeScope()
            use m = compressingModel 17L
            let mel = randomMel 18L config 1L
            let e = Expect.throwsC (fun () -> m.Encode(mel.narrow(2L, 0L, 30L), None) |> ignore) id
            Expect.stringContains e.Message "multiple of the total convolution stride 4" "names the rule"
            use w = whisper 19L config
            Expect.throwsT<ArgumentException> (fun () -> w.Encode(mel.narrow(2L, 0L, 32L)) |> ignore) "absolute positions fix the length"
        }
    ]
