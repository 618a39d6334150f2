/// MagnetWhisper's attention, layers, encoder, decoder and model: padding invariance with key masking (and the
/// original's query-only masking breaking it), RoPE's relative positions, predictor layers inside the encoder
/// (shapes, masks, statistics, losses, compression), gradients, the KV cache, conversion and greedy generation.
module MagnetWhisper.Tests.Magnet.ModelTests

open System
open Expecto
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Segments
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Transformer
open MagnetWhisper.Core.Decoding
open MagnetWhisper.Tests.Reference
open MagnetWhisper.Tests.Whisper.WhisperReference
open MagnetWhisper.Tests.Magnet.MagnetFixtures

let private row (t: Tensor) (i: int64) = t.narrow(0, i, 1L)
let private prefix (t: Tensor) (len: int64) = t.narrow(1, 0L, len)

/// Three sequences of lengths 10, 7, 5 (D = 32), padded to 10 with random garbage, as the original's stale tests.
let private paddedBatch () =
    torch.manual_seed 42L |> ignore
    let lengths = [| 10L; 7L; 5L |]
    let x = torch.randn(3L, 10L, 32L)
    let garbage = torch.randn(3L, 10L, 32L) * 20.0
    let mask = frameMask 10L lengths
    torch.where(mask.unsqueeze(-1L).gt((0.0).ToScalar()), x, garbage), mask, lengths

let private initialise (m: torch.nn.Module) =
    use _ = torch.no_grad()
    for struct (_, p) in m.named_parameters() do
        p.normal_(0.0, 0.2) |> ignore

/// Rotation at positions 0..T−1 of x (B, T, ·) for heads of width 8.
let private rope8 (x: Tensor) = Some(Rotation.Range(10000.0, 8L, torch.float32, x.device, x.shape.[1]))

/// An encoder block's context for x at positions 0..T−1 with RoPE at the fixture's head width.
let private blockContext (x: Tensor) (mask: Tensor option) (maskKeys: bool) : EncoderContext =
    { Rotation = Some(Rotation.Range(10000.0, int64 config.EncoderHeadDim, torch.float32, x.device, x.shape.[1]))
      Mask = AttentionMask.selfAttention mask maskKeys }

[<Tests>]
let tests =
    testList "magnet" [
        testList "attention" [
            test "padding invariance: with query and key masks, valid outputs of a padded batch equal each sequence alone" {
                use _ = torch.NewDisposeScope()
                torch.manual_seed 1L |> ignore
                use attention = new Attention(32L, 4L, 0.0)
                initialise attention
                let x, mask, lengths = paddedBatch ()
                let batched = attention.SelfAttend(x, rope8 (x), AttentionMask.selfAttention (Some mask) true)
                for i, len in Array.indexed lengths do
                    let alone = attention.SelfAttend(prefix (row x (int64 i)) len, rope8 (prefix (row x (int64 i)) len), AttentionMask.selfAttention (None) true)
                    close 1e-5 $"sequence {i}" (prefix (row batched (int64 i)) len) alone
                // Padded queries get zero attention: their output is out_proj.bias.
                let bias = attention.named_parameters() |> Seq.pick (fun struct (n, p) -> if n = "out_proj.bias" then Some(p :> Tensor) else None)
                close 1e-6 "padded query = out_proj.bias" (batched.[2L, 6L]) bias
            }

            test "query-only masking (the original) is not padding invariant" {
                use _ = torch.NewDisposeScope()
                torch.manual_seed 1L |> ignore
                use attention = new Attention(32L, 4L, 0.0)
                initialise attention
                let x, mask, lengths = paddedBatch ()
                let batched = attention.SelfAttend(x, rope8 (x), AttentionMask.selfAttention (Some mask) false)
                let alone = attention.SelfAttend(prefix (row x 2L) lengths.[2], rope8 (prefix (row x 2L) lengths.[2]), AttentionMask.selfAttention (None) false)
                let diff = maxAbsDiff (prefix (row batched 2L) lengths.[2]) alone
                Expect.isGreaterThan diff 1e-3 "valid queries see the padded keys"
            }

            test "RoPE: attention depends on relative positions only" {
                use _ = torch.NewDisposeScope()
                torch.manual_seed 3L |> ignore
                use attention = new Attention(32L, 4L, 0.0)
                initialise attention
                let q = torch.randn(2L, 5L, 32L)
                let kv = torch.randn(2L, 7L, 32L)
                let run (qShift: int64) (kShift: int64) =
                    let qp = torch.arange(5L, dtype = torch.int64) + qShift
                    let kp = torch.arange(7L, dtype = torch.int64) + kShift
                    let k, v = attention.KeyValue(kv, Some(Rotation.At(10000.0, 8L, torch.float32, kp)))
                    attention.Attend(attention.Query(q, Some(Rotation.At(10000.0, 8L, torch.float32, qp))), k, v, AttentionMask.None)
                let base' = run 0L 0L
                close 1e-5 "both shifted by 13" (run 13L 13L) base'
                close 1e-5 "both shifted by 400" (run 400L 400L) base'
                Expect.isGreaterThan (maxAbsDiff (run 3L 0L) base') 1e-3 "a different relative offset changes the output"
            }

            test "fully masked rows give zeros, never NaN" {
                use _ = torch.NewDisposeScope()
                use attention = new Attention(32L, 4L, 0.0)
                initialise attention
                let x = torch.randn(2L, 4L, 32L)
                let mask = torch.tensor([| 1.0f; 1.0f; 0.0f; 0.0f; 0.0f; 0.0f; 0.0f; 0.0f |]).reshape(2L, 4L)
                let y = attention.SelfAttend(x, rope8 (x), AttentionMask.selfAttention (Some mask) true)
                Expect.isTrue (y.isfinite().all().item<bool>()) "finite"
            }
        ]

        testList "layers" [
            test "padding invariance of a whole encoder layer (key masking); query-only masking differs" {
                use _ = torch.NewDisposeScope()
                torch.manual_seed 4L |> ignore
                use layer = new EncoderBlock(config)
                use original = new EncoderBlock(config)
                initialise layer
                original.load_state_dict(layer.state_dict()) |> ignore
                layer.eval()
                original.eval()
                let x, mask, lengths = paddedBatch ()
                let batched = layer.forward(x, blockContext x (Some mask) true)
                let batchedOriginal = original.forward(x, blockContext x (Some mask) false)
                for i, len in Array.indexed lengths do
                    let single = prefix (row x (int64 i)) len
                    let alone = layer.forward(single, blockContext single None true)
                    close 1e-5 $"sequence {i}" (prefix (row batched (int64 i)) len) alone
                let single = prefix (row x 2L) lengths.[2]
                let alone = original.forward(single, blockContext single None false)
                Expect.isGreaterThan (maxAbsDiff (prefix (row batchedOriginal 2L) lengths.[2]) alone) 1e-3 "QueriesOnly is not invariant"
            }
        ]

        testList "encoder" [
            test "conversion keeps every Whisper tensor and adds predictor and extra-conv tensors under the original's names" {
                use _ = torch.NewDisposeScope()
                let options = (withPredictor 1 Bp1 0.25).WithConvStrides(config.DModel, [ 2 ])
                use w = whisper 5L config
                use m = MagnetWhisperModel.FromWhisper(w, options)
                let state = dict m.State
                for struct (n, p) in w.named_parameters() do
                    Expect.isTrue (state.ContainsKey n) $"{n} kept"
                    close 0.0 n state.[n] p
                let extra = m.State |> List.map fst |> List.filter (fun n -> not (n.StartsWith "model.encoder.layers" || n.StartsWith "model.decoder" || n.StartsWith "model.encoder.conv" || n.StartsWith "model.encoder.embed" || n.StartsWith "model.encoder.layer_norm"))
                Expect.containsAll extra
                    [ "model.encoder.boundary_predictors.1.boundary_mlp.0.weight"; "model.encoder.boundary_predictors.1.boundary_mlp.2.bias"
                      "model.encoder.boundary_predictors.1.pool_query"; "model.encoder.boundary_predictors.1.pool_key.weight"
                      "model.encoder.additional_convs.0.weight"; "model.encoder.additional_convs.0.bias" ] "new tensors"
                Expect.equal extra.Length 10 "only predictor (8) and extra-conv (2) tensors are new"
            }

            test "a predictor before layer 1: shapes, masks, per-layer statistics, lengths" {
                use _ = torch.NewDisposeScope()
                use m = magnet 6L config (withPredictor 1 Bp1 0.25)
                forceRate m 1 0.3
                let mel, mask = paddedMel 7L config [| 48L; 30L |]
                use g = Boundaries.generator 8L torch.CPU
                let input = { EncoderInput.Inference(mel, Some mask) with Mode = Sample g; Rl = true }
                use out = m.Encode input
                Expect.equal out.Layers.Length 1 "one predictor layer"
                let l = out.Layers.Head
                Expect.equal l.Index 1 "index"
                Expect.equal l.InputLength 24L "L before the predictor"
                let s = out.Hidden.shape.[1]
                Expect.equal l.OutputLength s "S after it"
                Expect.sequenceEqual out.Hidden.shape [| 2L; s; 32L |] "hidden"
                Expect.sequenceEqual out.Mask.shape [| 2L; s |] "mask"
                Expect.sequenceEqual out.LayerLengths [| 24L; s; s |] "layer lengths"
                let counts = Tensors.toFloatArray l.Output.BoundaryCounts
                close 0.0 "mask = counts" (out.Mask.sum(1L)) (torch.tensor(counts).to_type(torch.float32))
                Expect.equal (Tensors.toFloatArray l.Output.ValidCounts) [| 24.0; 15.0 |] "valid positions after frame-mask pooling"
                Expect.floatClose Accuracy.high l.KeptFraction ((counts.[0] + counts.[1]) / 39.0) "kept fraction"
                Expect.isSome out.LogProb "RL log-prob"
                Expect.isTrue (counts.[1] <= 15.0) "no boundary past the mask"
            }

            test "the boundary loss inside the model equals the predictor's own on the same input" {
                use _ = torch.NewDisposeScope()
                let options = withPredictor 0 Bp1 0.25
                use m = magnet 9L config options
                let mel, mask = paddedMel 10L config [| 48L; 36L |]
                let targets = torch.tensor([| 6.0f; 4.0f |]).reshape(1L, 2L)
                use g1 = Boundaries.generator 11L torch.CPU
                use out = m.Encode(EncoderInput.Training(mel, Some mask, Some targets, g1))
                // The predictor's input before layer 0: GELU(conv2(GELU(conv1(mel)))), no positions.
                let w n = stateTensor m n
                let x = torch.nn.functional.gelu (torch.nn.functional.conv1d (mel, w "model.encoder.conv1.weight", w "model.encoder.conv1.bias", padding = 1L))
                let x = torch.nn.functional.gelu (torch.nn.functional.conv1d (x, w "model.encoder.conv2.weight", w "model.encoder.conv2.bias", stride = 2L, padding = 1L))
                let hidden = x.permute(0, 2, 1)
                let pooledMask = Positions.poolFrameMask 2 mask
                let predictor = (m.Encoder.Predictor 0).Value
                use g2 = Boundaries.generator 11L torch.CPU
                let alone: PredictorInput =
                    { Hidden = hidden; Mask = Some pooledMask; Targets = Some(targets.select(0L, 0L)); Mode = Sample g2; Rl = false
                      Schedule = Schedule.OfConfig predictor.Config }
                use own = predictor.forward alone
                close 1e-5 "loss" out.BoundaryLoss own.Loss
                close 1e-5 "per utterance" out.BoundaryLossPerUtterance own.LossPerUtterance
                close 0.0 "boundaries" out.Layers.Head.Output.Boundaries own.Boundaries
                Expect.isGreaterThan (Tensors.toFloat own.Loss) 0.0 "a real loss"
            }

            test "one target row per count-trained predictor; a missing row is an error naming the slot" {
                use _ = torch.NewDisposeScope()
                let options = (withPredictor 0 Bp1 0.25).WithPredictor(1, Bp2, 0.5)
                use m = magnet 12L config options
                let mel, mask = paddedMel 13L config [| 48L; 40L |]
                use g = Boundaries.generator 14L torch.CPU
                let two = torch.tensor([| 8.0f; 6.0f; 4.0f; 3.0f |]).reshape(2L, 2L)
                use out = m.Encode(EncoderInput.Training(mel, Some mask, Some two, g))
                Expect.equal out.Layers.Length 2 "two predictors"
                close 1e-6 "boundary loss = Σ layers" out.BoundaryLoss (out.Layers.[0].Output.Loss + out.Layers.[1].Output.Loss)
                use g2 = Boundaries.generator 14L torch.CPU
                let one = two.narrow(0L, 0L, 1L)
                let e = Expect.throwsC (fun () -> m.Encode(EncoderInput.Training(mel, Some mask, Some one, g2)) |> ignore) id
                Expect.stringContains e.Message "BoundaryPredictor2 before encoder layer 1" "names the slot"
                Expect.stringContains e.Message "row 1" "names the row"
            }

            test "a predictor at compression r runs the later layers on about L/r positions" {
                use _ = torch.NewDisposeScope()
                let c = { config with MaxSourcePositions = 400 }
                for r in [ 2.0; 4.0; 8.0 ] do
                    use m = magnet 15L c (withPredictor 1 Bp1 (1.0 / r))
                    forceRate m 1 (1.0 / r)
                    use g = Boundaries.generator 16L torch.CPU
                    let mel = torch.randn(2L, int64 c.NumMelBins, int64 c.InputFrames)
                    use out = m.Encode({ EncoderInput.Inference(mel, None) with Mode = Sample g; Rl = true })
                    Expect.equal out.LayerLengths.[0] 400L "layer 0 on L"
                    let s = float out.LayerLengths.[1]
                    Expect.isTrue (s > 400.0 / r * 0.75 && s < 400.0 / r * 1.3) $"r = {r}: layer 1 runs on {s} ≈ {400.0 / r} positions"
                    Expect.equal out.LayerLengths.[2] out.LayerLengths.[1] "later layers too"
                    Expect.floatClose { absolute = 0.06; relative = 0.0 } (out.Layers.Head.KeptFraction) (1.0 / r) "kept fraction ≈ 1/r"
            }

            test "extra convolutions shorten the sequence by their strides and pool the frame mask by the total stride" {
                use _ = torch.NewDisposeScope()
                let options = MagnetOptions.Default.WithConvStrides(config.DModel, [ 2; 2 ])
                use m = magnet 17L config options
                let mel, mask = paddedMel 18L config [| 48L; 20L |]
                use out = m.Encode(mel, Some mask)
                Expect.sequenceEqual out.Hidden.shape [| 2L; 6L; 32L |] "24 → 12 → 6"
                Expect.equal (Tensors.toFloatArray (out.Mask.sum(1L))) [| 6.0; 3.0 |] "⌈20 / 8⌉ = 3 valid"
            }
        ]

        testList "model" [
            test "the loss is token-mean CE + Σ boundary losses; per-utterance CE averages each row's real tokens" {
                use _ = torch.NewDisposeScope()
                use m = magnet 19L config (withPredictor 1 Bp1 0.25)
                let mel, mask = paddedMel 20L config [| 48L; 40L |]
                let labels = torch.tensor([| 5L; 6L; 7L; 96L; 8L; 9L; -100L; -100L |]).reshape(2L, 4L)
                use g = Boundaries.generator 21L torch.CPU
                let targets = torch.tensor([| 6.0f; 5.0f |]).reshape(1L, 2L)
                use r = m.Forward(ForwardInput.Training(mel, Some mask, labels, Some targets, g))
                close 1e-5 "loss" r.Loss (r.CrossEntropy + r.BoundaryLoss)
                let logits = r.Logits.to_type(torch.float32)
                let ce (b: int64) (t: int64) = torch.nn.functional.cross_entropy(logits.[b, t].unsqueeze(0L), labels.[b, t].unsqueeze(0L))
                let row0 = (ce 0L 0L + ce 0L 1L + ce 0L 2L + ce 0L 3L) / 4.0
                let row1 = (ce 1L 0L + ce 1L 1L) / 2.0
                close 1e-5 "token mean" r.CrossEntropy ((ce 0L 0L + ce 0L 1L + ce 0L 2L + ce 0L 3L + ce 1L 0L + ce 1L 1L) / 6.0)
                close 1e-5 "per utterance" r.CrossEntropyPerUtterance (torch.stack([ row0; row1 ]))
                close 1e-5 "RL loss per utterance" r.LossPerUtterance (r.CrossEntropyPerUtterance + r.Encoder.BoundaryLossPerUtterance)
                use w = whisper 19L config
                use original = MagnetWhisperModel.FromWhisper(w, { withPredictor 1 Bp1 0.25 with Compatibility = Compatibility.Original })
                original.eval()
                use e = original.Forward(ForwardInput.Evaluation(mel, Some mask, labels))
                let logits = e.Logits.to_type(torch.float32)
                let ce (b: int64) (t: int64) = torch.nn.functional.cross_entropy(logits.[b, t].unsqueeze(0L), labels.[b, t].unsqueeze(0L))
                close 1e-5 "original: row 1 averaged over all 4 positions" (e.CrossEntropyPerUtterance.[1L]) ((ce 1L 0L + ce 1L 1L) / 4.0)
            }

            test "mean pooling passes the decoder loss's gradient to the scorer; attention pooling does not" {
                use _ = torch.NewDisposeScope()
                let mel, mask = paddedMel 22L config [| 48L; 44L |]
                let labels = torch.tensor([| 5L; 6L; 7L; 8L; 9L; 10L |]).reshape(2L, 3L)
                let gradient (pooling: PoolingKind) =
                    let options = MagnetOptions.Default.WithSlot { PredictorSlot.Create(1, Bp1, 0.25) with Predictor = { PredictorConfig.Default(Bp1, 0.25) with Pooling = pooling } }
                    use m = magnet 23L config options
                    m.train()
                    use g = Boundaries.generator 24L torch.CPU
                    use r = m.Forward({ ForwardInput.Training(mel, Some mask, labels, None, g) with Rl = false; Mode = Sample g; TargetMatrix = Some(torch.tensor([| 8.0f; 7.0f |]).reshape(1L, 2L)) })
                    r.CrossEntropy.backward()
                    let w = stateTensor m "model.encoder.boundary_predictors.1.boundary_mlp.0.weight"
                    let grad = w.grad
                    if isNull grad then 0.0 else Tensors.toFloat (grad.abs().sum())
                Expect.isGreaterThan (gradient MeanPooling) 0.0 "mean pooling: the CE reaches the scorer"
                Expect.equal (gradient AttentionPooling) 0.0 "attention pooling: only the count loss trains the scorer"
            }

            test "incremental decoding with the cache equals teacher forcing; padded prompts keep each row's logits" {
                use _ = torch.NewDisposeScope()
                use m = magnet 25L config (withPredictor 1 Bp1 0.25)
                let mel, mask = paddedMel 26L config [| 48L; 30L |]
                use enc = m.Encode(mel, Some mask)
                let tokens = randomTokens 27L config 2L 6L
                use _ng = torch.no_grad()
                let full = m.Decode(tokens, enc.Hidden, Some enc.Mask, None, None)
                let first = m.Decode(tokens.narrow(1L, 0L, 3L), enc.Hidden, Some enc.Mask, None, None)
                let mutable cache = first.Cache
                let steps = ResizeArray [ first.Logits ]
                for t in 3L .. 5L do
                    let r = m.Decode(tokens.narrow(1L, t, 1L), enc.Hidden, Some enc.Mask, Some cache, None)
                    cache <- r.Cache
                    steps.Add r.Logits
                close 1e-4 "cached steps" (torch.cat(steps.ToArray(), 1L)) full.Logits
                // Row 1 left-padded by two tokens: its real tokens keep their positions and logits.
                let padded = torch.cat([| torch.full([| 2L; 2L |], (96L).ToScalar(), dtype = torch.int64); tokens |], 1L)
                let tokenMask = torch.cat([| torch.zeros(2L, 2L); torch.ones(2L, 6L) |], 1L)
                let withPad = m.Decode(padded, enc.Hidden, Some enc.Mask, None, Some tokenMask)
                close 1e-4 "left padding" (withPad.Logits.narrow(1L, 2L, 6L)) full.Logits
            }

            test "ISpeechModel: deterministic encoder (threshold mode) and decoding through the shortened mask" {
                use _ = torch.NewDisposeScope()
                use m = magnet 28L config (withPredictor 1 Bp1 0.25)
                m.train()
                let speech = m :> ISpeechModel
                let mel, mask = paddedMel 29L config [| 48L; 26L |]
                use a1 = speech.Encode(mel, Some mask)
                use a2 = speech.Encode(mel, Some mask)
                close 0.0 "deterministic" a1.Hidden a2.Hidden
                Expect.isSome a1.Mask "the shortened mask"
                Expect.isTrue m.training "training flag restored"
                let r = speech.Decode(torch.tensor([| 95L; 95L |]).reshape(2L, 1L), a1, None, None)
                Expect.sequenceEqual r.Logits.shape [| 2L; 1L; 97L |] "logits"
            }

            test "encode, forward, decode and generate leave no live tensors behind once their results are disposed" {
                use m = magnet 32L config (withPredictor 1 Bp1 0.3)
                let mel, mask = paddedMel 33L config [| 48L; 22L |]
                let labels = torch.tensor([| 5L; 6L; 7L; 8L |]).reshape(2L, 2L)
                let targets = torch.tensor([| 6.0f; 4.0f |]).reshape(1L, 2L)
                let live () = DisposeScopeManager.Statistics.ThreadTotalLiveCount
                let before = live ()
                let run () =
                    use enc = m.Encode(mel, Some mask)
                    use g = Boundaries.generator 34L torch.CPU
                    use r = m.Forward(ForwardInput.Training(mel, Some mask, labels, Some targets, g))
                    let speech = m :> ISpeechModel
                    use audio = speech.Encode(mel, Some mask)
                    let step = speech.Decode(labels, audio, None, None)
                    step.Logits.Dispose()
                    for t in step.Cache.Tensors do
                        t.Dispose()
                run ()
                Greedy.generate (m :> ISpeechModel) mel (Some mask) (Greedy.prompt config) 4 |> ignore
                Expect.equal (live ()) before "live tensors"
            }

            test "greedy generation is batch-invariant: a file alone equals the same file in a padded batch" {
                use _ = torch.NewDisposeScope()
                use m = magnet 30L config (withPredictor 1 Bp1 0.3)
                let mel, mask = paddedMel 31L config [| 48L; 22L |]
                let prompt = Greedy.prompt config
                let batch = Greedy.generate (m :> ISpeechModel) mel (Some mask) prompt 10
                for i in 0 .. 1 do
                    let alone = Greedy.generate (m :> ISpeechModel) (row mel (int64 i)) (Some(row mask (int64 i))) prompt 10
                    Expect.sequenceEqual batch.[i] alone.[0] $"row {i}"
                Expect.isGreaterThan batch.[0].Length 0 "tokens were generated"
                for t in Array.concat batch do
                    Expect.isFalse (Array.contains t config.SuppressTokens) "suppressed tokens never appear"
            }
        ]
    ]
