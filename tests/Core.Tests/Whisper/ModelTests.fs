module MagnetWhisper.Tests.Whisper.ModelTests

open System
open Expecto
open TorchSharp
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Decoding
open MagnetWhisper.Tests.Reference
open MagnetWhisper.Tests.Whisper.WhisperReference

let private slice (t: Tensor) (dim: int64) (start: int64) (len: int64) = t.narrow(dim, start, len)

/// Rows of a (B, …) tensor, each kept with batch size 1.
let private row (t: Tensor) (i: int64) = t.narrow(0, i, 1L)

[<Tests>]
let tests =
    testList "whisper" [
        testList "model" [
            test "sinusoids equal whisper's formula evaluated in scalar float64" {
                use s = Sinusoids.create 7L 10L
                Expect.sequenceEqual s.shape [| 7L; 10L |] "shape"
                let half = 5
                let values = MagnetWhisper.Core.Tensors.toFloatArray s
                for p in 0 .. 6 do
                    for i in 0 .. half - 1 do
                        let w = Math.Exp(-(float i) * Math.Log 10000.0 / float (half - 1))
                        Expect.floatClose Accuracy.high values.[p * 10 + i] (Math.Sin(float p * w)) $"sin p={p} i={i}"
                        Expect.floatClose Accuracy.high values.[p * 10 + half + i] (Math.Cos(float p * w)) $"cos p={p} i={i}"
            }

            test "a random model's parameters are exactly the Hugging Face keys and shapes (whisper-tiny sizes)" {
                let config = WhisperConfig.preset "tiny"
                use m = new WhisperModel(config)
                let actual = [ for struct (n, p) in m.named_parameters() -> n, List.ofArray p.shape ] |> List.sort
                let expected = hfKeys config |> List.map (fun (n, s) -> n, List.ofArray s) |> List.sort
                Expect.sequenceEqual actual expected "names and shapes"
                let positions = m.named_parameters() |> Seq.pick (fun struct (n, p) -> if n = "model.encoder.embed_positions.weight" then Some p else None)
                use sin = Sinusoids.create 1500L 384L
                close 0.0 "encoder positions initialised to sinusoids" positions sin
                Expect.isFalse positions.requires_grad "encoder positions are fixed"
            }

            test "forward equals an independent float64 implementation (float64 and float32 parameters)" {
                use m = randomModel 1L tinyConfig
                let mel = randomMel 2L tinyConfig 2L
                let tokens = randomTokens 3L tinyConfig 2L 9L
                let reference = Forward.logits tinyConfig (parameters64 m) mel tokens
                use logits32 = m.forward (mel, tokens)
                Expect.sequenceEqual logits32.shape [| 2L; 9L; 97L |] "logits shape"
                close 2e-4 "float32 model vs float64 reference" logits32 reference
                m.``to``(torch.float64) |> ignore
                use logits64 = m.forward (mel.to_type torch.float64, tokens)
                close 1e-10 "float64 model vs float64 reference" logits64 reference
                use enc = m.Encode(mel.to_type torch.float64)
                close 1e-10 "encoder output" enc (Forward.encode tinyConfig (parameters64 m) (mel.to_type torch.float64))
            }

            test "an untied proj_out is used for the logits" {
                let config = { tinyConfig with TieWordEmbeddings = false; ActivationFunction = "gelu" }
                use m = randomModel 4L config
                let names = [ for struct (n, _) in m.named_parameters() -> n ]
                Expect.contains names "proj_out.weight" "proj_out registered when untied"
                let mel = randomMel 5L config 1L
                let tokens = randomTokens 6L config 1L 5L
                use logits = m.forward (mel, tokens)
                close 2e-4 "untied logits vs reference" logits (Forward.logits config (parameters64 m) mel tokens)
                use tied = randomModel 4L tinyConfig
                Expect.isFalse ([ for struct (n, _) in tied.named_parameters() -> n ] |> List.contains "proj_out.weight") "tied: no proj_out parameter"
            }

            test "the encoder accepts exactly 2·max_source_positions frames and the configured mel bins" {
                use m = randomModel 7L tinyConfig
                let bad = torch.randn(1L, 16L, 23L)
                let e = Expect.throwsC (fun () -> m.Encode bad |> ignore) id
                Expect.stringContains e.Message "24" "names the expected frame count"
                Expect.stringContains e.Message "(1, 16, 23)" "names the given shape"
                let e2 = Expect.throwsC (fun () -> m.Encode(torch.randn(1L, 80L, 24L)) |> ignore) id
                Expect.stringContains e2.Message "16 mel bins" "names the mel bins"
            }

            test "encoding a batch equals encoding each row alone" {
                use m = randomModel 8L tinyConfig
                use _ = torch.inference_mode()
                let mel = randomMel 9L tinyConfig 3L
                use batch = m.Encode mel
                for i in 0L .. 2L do
                    use alone = m.Encode(row mel i)
                    close 1e-5 $"row {i}" (row batch i) alone
            }

            test "incremental decoding with the cache equals full-sequence decoding at every step" {
                use m = randomModel 10L tinyConfig
                use _ = torch.inference_mode()
                let enc = m.Encode(randomMel 11L tinyConfig 2L)
                let tokens = randomTokens 12L tinyConfig 2L 8L
                let full = (m.Decode(tokens, enc, None)).Logits
                // One token at a time.
                let mutable cache = None
                for i in 0L .. 7L do
                    let r = m.Decode(slice tokens 1 i 1L, enc, cache)
                    close 1e-5 $"step {i}" r.Logits (slice full 1 i 1L)
                    Expect.equal r.Cache.Length (i + 1L) "cache length"
                    Expect.sequenceEqual r.Cache.Layers.[0].SelfKey.shape [| 2L; 4L; i + 1L; 8L |] "self K (B, H, T, dh)"
                    cache <- Some r.Cache
                // A prompt of 3, a chunk of 2, then single tokens (a cached step with several tokens).
                let first = m.Decode(slice tokens 1 0L 3L, enc, None)
                close 1e-5 "prompt" first.Logits (slice full 1 0L 3L)
                let second = m.Decode(slice tokens 1 3L 2L, enc, Some first.Cache)
                close 1e-5 "chunk after the prompt" second.Logits (slice full 1 3L 2L)
                Expect.isTrue (obj.ReferenceEquals(second.Cache.Layers.[1].CrossKey, first.Cache.Layers.[1].CrossKey)) "cross K computed once and shared"
                let third = m.Decode(slice tokens 1 5L 3L, enc, Some second.Cache)
                close 1e-5 "rest" third.Logits (slice full 1 5L 3L)
                DecoderCache.disposeSuperseded first.Cache second.Cache
                Expect.isFalse (second.Cache.Layers.[0].CrossKey.IsInvalid) "shared cross K survives disposal of the old cache"
            }

            test "padded decoder rows do not change valid rows (left and right padding, full and cached)" {
                use m = randomModel 13L tinyConfig
                use _ = torch.inference_mode()
                let enc = m.Encode(randomMel 14L tinyConfig 3L)
                let garbage = randomTokens 15L tinyConfig 3L 7L
                let real = randomTokens 16L tinyConfig 3L 7L
                // Row 0: 5 real tokens then 2 pads; row 1: 7 real; row 2: 3 pads then 4 real.
                let valid = [| (0L, 5L); (0L, 7L); (3L, 4L) |]
                let maskRows = valid |> Array.map (fun (s, n) -> Array.init 7 (fun j -> int64 j >= s && int64 j < s + n))
                let mask = torch.tensor(Array.concat maskRows).view(3L, 7L)
                let tokens = torch.where(mask, real, garbage)
                let batch = m.Decode(tokens, enc, None, None, Some mask)
                let next = randomTokens 17L tinyConfig 3L 1L
                let step = m.Decode(next, enc, Some batch.Cache)
                for i in 0 .. 2 do
                    let s, n = valid.[i]
                    let mine = slice (row real (int64 i)) 1 s n
                    let alone = m.Decode(mine, row enc (int64 i), None)
                    close 1e-5 $"row {i} full" (slice (row batch.Logits (int64 i)) 1 s n) alone.Logits
                    let aloneNext = m.Decode(row next (int64 i), row enc (int64 i), Some alone.Cache)
                    close 1e-5 $"row {i} cached step after padding" (row step.Logits (int64 i)) aloneNext.Logits
                    Expect.isFalse (batch.Logits.isnan().any().item<bool>()) "padded rows stay finite"
            }

            test "the cross-attention key mask hides padded encoder positions" {
                use m = randomModel 18L tinyConfig
                use _ = torch.inference_mode()
                let enc = m.Encode(randomMel 19L tinyConfig 2L)
                let mask = torch.tensor(Array.init 24 (fun j -> j % 12 < (if j < 12 then 8 else 12))).view(2L, 12L)
                let tokens = randomTokens 20L tinyConfig 2L 4L
                let masked = m.Decode(tokens, enc, Some mask, None, None)
                let truncated = m.Decode(row tokens 0L, slice (row enc 0L) 1 0L 8L, None)
                close 1e-5 "row 0 sees only its 8 valid positions" (row masked.Logits 0L) truncated.Logits
                let unmasked = m.Decode(row tokens 1L, row enc 1L, None)
                close 1e-5 "row 1 (all valid) unchanged" (row masked.Logits 1L) unmasked.Logits
                let next = m.Decode(slice tokens 1 0L 1L, enc, Some masked.Cache)
                Expect.isTrue (next.Cache.EncoderMask.IsSome) "the mask stays in the cache"
                // A row without any valid encoder position attends to nothing (zero cross-attention), never NaN; the
                // other rows are unaffected.
                let rowEmpty = torch.tensor(Array.init 24 (fun j -> j >= 12)).view(2L, 12L)
                let partly = m.Decode(tokens, enc, Some rowEmpty, None, None)
                Expect.isTrue (partly.Logits.isfinite().all().item<bool>()) "finite logits for the empty row"
                close 1e-5 "row 1 unchanged next to an empty row" (row partly.Logits 1L) unmasked.Logits
            }

            test "decoding checks positions, token ids and batch sizes" {
                use m = randomModel 21L tinyConfig
                use _ = torch.inference_mode()
                let enc = m.Encode(randomMel 22L tinyConfig 1L)
                let tooLong = randomTokens 23L tinyConfig 1L 21L
                let e = Expect.throwsC (fun () -> m.Decode(tooLong, enc, None) |> ignore) id
                Expect.stringContains e.Message "max_target_positions" "names the limit"
                let r = m.Decode(randomTokens 24L tinyConfig 1L 20L, enc, None)
                Expect.throwsT<ArgumentException> (fun () -> m.Decode(randomTokens 25L tinyConfig 1L 1L, enc, Some r.Cache) |> ignore) "cache full"
                let e2 = Expect.throwsC (fun () -> m.Decode(torch.tensor([| 5L; 97L |]).view(1L, 2L), enc, None) |> ignore) id
                Expect.stringContains e2.Message "vocab_size" "out-of-range token"
                Expect.throwsT<ArgumentException> (fun () -> m.Decode(randomTokens 26L tinyConfig 2L 1L, enc, Some r.Cache) |> ignore) "batch mismatch"
            }

            test "the loss is the token mean of cross-entropy over labels that are not -100" {
                use m = randomModel 27L tinyConfig
                let mel = randomMel 28L tinyConfig 2L
                let labels = randomTokens 29L tinyConfig 2L 6L
                let labels = labels.index_put_(torch.tensor(-100L), [| torch.TensorIndex.Single 1L; torch.TensorIndex.Slice(4L) |])
                let tokens = m.DecoderInputs labels
                use loss = m.Loss(mel, tokens, labels)
                let reference = Forward.logits tinyConfig (parameters64 m) mel tokens
                let logits = Array.init 2 (fun b -> Array.init 6 (fun t -> MagnetWhisper.Core.Tensors.toFloatArray (reference.[int64 b, int64 t])))
                let labelValues = MagnetWhisper.Core.Tensors.toFloatArray labels |> Array.map int
                let mutable sum, count = 0.0, 0
                for b in 0 .. 1 do
                    for t in 0 .. 5 do
                        let y = labelValues.[b * 6 + t]
                        if y <> -100 then
                            let z = logits.[b].[t]
                            let mx = Array.max z
                            let lse = mx + log (z |> Array.sumBy (fun v -> exp (v - mx)))
                            sum <- sum + lse - z.[y]
                            count <- count + 1
                Expect.equal count 10 "two labels ignored"
                Expect.floatClose { absolute = 1e-4; relative = 1e-5 } (loss.item<float32>() |> float) (sum / float count) "token-mean cross-entropy"
                loss.backward()
                let grads = [ for struct (n, p) in m.named_parameters() do if isNull p.grad then n ]
                Expect.sequenceEqual grads [ "model.encoder.embed_positions.weight" ] "every trainable parameter gets a gradient"
                let allIgnored = torch.full([| 2L; 6L |], (-100L).ToScalar(), dtype = torch.int64)
                Expect.throwsT<ArgumentException> (fun () -> m.Loss(mel, tokens, allIgnored) |> ignore) "nothing to average"
            }

            test "dropout acts in training mode only" {
                let config = { tinyConfig with Dropout = 0.2; AttentionDropout = 0.2; ActivationDropout = 0.2 }
                use m = randomModel 34L config
                let mel = randomMel 35L config 1L
                let tokens = randomTokens 36L config 1L 4L
                use a = m.forward (mel, tokens)
                use b = m.forward (mel, tokens)
                Expect.isTrue (identical a b) "evaluation mode is deterministic"
                m.train()
                use c = m.forward (mel, tokens)
                use d = m.forward (mel, tokens)
                Expect.isFalse (identical c d) "training mode drops"
                m.eval()
            }

            test "decoder inputs are the labels shifted right after the start token, -100 as padding" {
                use m = randomModel 30L tinyConfig
                let labels = torch.tensor([| 5L; 6L; 7L; 8L; 9L; -100L; -100L; 4L |]).view(2L, 4L)
                let inputs = m.DecoderInputs labels
                Expect.sequenceEqual (inputs.data<int64>().ToArray()) [| 95L; 5L; 6L; 7L; 95L; 9L; 96L; 96L |] "HF shift_tokens_right"
            }

            test "public methods leave only their results in the caller's dispose scope" {
                use m = randomModel 31L tinyConfig
                use _ = torch.inference_mode()
                let mel = randomMel 32L tinyConfig 1L
                let tokens = randomTokens 33L tinyConfig 1L 3L
                use scope = torch.NewDisposeScope()
                let before = scope.DisposablesCount
                let enc = m.Encode mel
                Expect.equal (scope.DisposablesCount - before) 1 "encode: one tensor"
                let r = m.Decode(tokens, enc, None)
                let cacheTensors = r.Cache.Tensors |> List.distinct |> List.length
                Expect.equal (scope.DisposablesCount - before) (2 + cacheTensors) "decode: logits and the cache"
                let first = slice tokens 1 0L 1L
                let count = scope.DisposablesCount
                let r2 = m.Decode(first, enc, Some r.Cache)
                // New: logits and the self K/V of each layer; cross K/V are shared.
                Expect.equal (scope.DisposablesCount - count) (1 + 2 * tinyConfig.DecoderLayers) "a cached step adds logits and self K/V"
                DecoderCache.disposeSuperseded r.Cache r2.Cache
            }
        ]
    ]
