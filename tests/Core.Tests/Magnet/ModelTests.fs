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

            test "the boundary loss inside the model is 10 · NLL_Bin(k; n, t)/n of each row's count, valid positions and target" {
                use _ = torch.NewDisposeScope()
                let options = withPredictor 0 Bp1 0.25
                use m = magnet 9L config options
                let mel, mask = paddedMel 10L config [| 48L; 36L |]
                let targets = [| 6.0; 4.0 |]
                let targetMatrix = torch.tensor(targets |> Array.map float32).reshape(1L, 2L)
                use g1 = Boundaries.generator 11L torch.CPU
                use out = m.Encode(EncoderInput.Training(mel, Some mask, Some targetMatrix, g1))
                let o = out.Layers.Head.Output
                // Valid positions after conv2's stride 2: ⌈48/2⌉ and ⌈36/2⌉.
                let n = [| 24.0; 18.0 |]
                Expect.equal (Tensors.toFloatArray o.ValidCounts) n "valid positions"
                let k = Tensors.toFloatArray o.BoundaryCounts
                for r, b in Array.indexed (Formulas.rows o.Boundaries) do
                    Expect.equal (Array.sum b) k.[r] $"row {r}: the count is the row's boundaries"
                    Expect.equal b.[int n.[r] - 1] 1.0 $"row {r}: the last valid position is a boundary"
                    Expect.isTrue (b.[int n.[r] ..] |> Array.forall ((=) 0.0)) $"row {r}: no boundary past the mask"
                // The encoder's lerp at progress 1, then BP1's own schedule at 1 (targets scheduled once): t_eff = min(t, n).
                let expected =
                    Array.init 2 (fun r ->
                        let t = Formulas.compressionTarget 1.0 n.[r] (Formulas.progressTarget 1.0 n.[r] targets.[r])
                        10.0 * Formulas.binomialFromTarget k.[r] n.[r] t)
                Formulas.expectClose 1e-5 "per utterance" (Tensors.toFloatArray out.BoundaryLossPerUtterance) expected
                Formulas.expectClose 1e-5 "loss" [| Tensors.toFloat out.BoundaryLoss |] [| Array.average expected |]
                Expect.isGreaterThan (Tensors.toFloat out.BoundaryLoss) 0.0 "a real loss"
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
                // Layer 0 (BP1) reads row 0 on ⌈48/2⌉, ⌈40/2⌉ positions; layer 1 (BP2) row 1 on layer 0's segments.
                let k0 = Tensors.toFloatArray out.Layers.[0].Output.BoundaryCounts
                let k1 = Tensors.toFloatArray out.Layers.[1].Output.BoundaryCounts
                let n0 = [| 24.0; 20.0 |]
                Expect.equal (Tensors.toFloatArray out.Layers.[1].Output.ValidCounts) k0 "layer 1's valid positions are layer 0's segments"
                let rows = Formulas.rows two
                let lossOf (k: float[]) (n: float[]) (t: float[]) =
                    Array.init 2 (fun r -> 10.0 * Formulas.binomialFromTarget k.[r] n.[r] (Formulas.progressTarget 1.0 n.[r] t.[r]))
                let perUtterance = Array.map2 (+) (lossOf k0 n0 rows.[0]) (lossOf k1 k0 rows.[1])
                Formulas.expectClose 1e-5 "boundary loss per utterance = Σ layers" (Tensors.toFloatArray out.BoundaryLossPerUtterance) perUtterance
                Formulas.expectClose 1e-5 "boundary loss = Σ layers of the batch means" [| Tensors.toFloat out.BoundaryLoss |] [| Array.average perUtterance |]
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
                // Cross-entropy by hand in float64: logsumexp of the logits minus the label's logit.
                let ceOf (logits: Tensor) =
                    let v = int logits.shape.[2]
                    let flat = Tensors.toFloatArray logits
                    fun (b: int) (t: int) ->
                        let z = flat.[(b * 4 + t) * v .. (b * 4 + t + 1) * v - 1]
                        let top = Array.max z
                        top + log (z |> Array.sumBy (fun x -> exp (x - top))) - z.[int (labels.[int64 b, int64 t].item<int64>())]
                let ce = ceOf r.Logits
                let row0 = [ for t in 0 .. 3 -> ce 0 t ]
                let row1 = [ for t in 0 .. 1 -> ce 1 t ]
                let tokenMean = List.average (row0 @ row1)
                // The predictor before layer 1 sees ⌈48/2⌉, ⌈40/2⌉ valid positions; targets 6, 5 scheduled once.
                let k = Tensors.toFloatArray r.Encoder.Layers.Head.Output.BoundaryCounts
                let n = [| 24.0; 20.0 |]
                let boundary = Array.init 2 (fun b -> 10.0 * Formulas.binomialFromTarget k.[b] n.[b] (Formulas.progressTarget 1.0 n.[b] [| 6.0; 5.0 |].[b]))
                Formulas.expectClose 1e-5 "token mean" [| Tensors.toFloat r.CrossEntropy |] [| tokenMean |]
                Formulas.expectClose 1e-5 "loss = token-mean CE + boundary loss" [| Tensors.toFloat r.Loss |] [| tokenMean + Array.average boundary |]
                let perUtterance = [| List.average row0; List.average row1 |]
                Formulas.expectClose 1e-5 "per utterance" (Tensors.toFloatArray r.CrossEntropyPerUtterance) perUtterance
                Formulas.expectClose 1e-5 "RL loss per utterance" (Tensors.toFloatArray r.LossPerUtterance) (Array.map2 (+) perUtterance boundary)
                use w = whisper 19L config
                use original = MagnetWhisperModel.FromWhisper(w, { withPredictor 1 Bp1 0.25 with Compatibility = Compatibility.Original })
                original.eval()
                use e = original.Forward(ForwardInput.Evaluation(mel, Some mask, labels))
                let ce = ceOf e.Logits
                Formulas.expectClose 1e-5 "original: row 1 averaged over all 4 positions" [| Tensors.toFloat e.CrossEntropyPerUtterance.[1L] |] [| (ce 1 0 + ce 1 1) / 4.0 |]
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
                Search.greedyTokens (m :> ISpeechModel) mel (Some mask) (Search.checkpointPrompt config) 4 |> ignore
                Expect.equal (live ()) before "live tensors"
            }

            test "greedy generation is batch-invariant: a file alone equals the same file in a padded batch" {
                use _ = torch.NewDisposeScope()
                use m = magnet 30L config (withPredictor 1 Bp1 0.3)
                let mel, mask = paddedMel 31L config [| 48L; 22L |]
                let prompt = Search.checkpointPrompt config
                let batch = Search.greedyTokens (m :> ISpeechModel) mel (Some mask) prompt 10
                for i in 0 .. 1 do
                    let alone = Search.greedyTokens (m :> ISpeechModel) (row mel (int64 i)) (Some(row mask (int64 i))) prompt 10
                    Expect.sequenceEqual batch.[i] alone.[0] $"row {i}"
                Expect.isGreaterThan batch.[0].Length 0 "tokens were generated"
                for t in Array.concat batch do
                    Expect.isFalse (Array.contains t config.SuppressTokens) "suppressed tokens never appear"
            }
        ]
    ]
