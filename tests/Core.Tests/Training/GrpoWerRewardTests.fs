/// GRPO's optional WER reward (issue 10): greedy decoding from an encoder output equals greedy decoding from the mel;
/// with weight μ > 0 each sample's reward is −loss − λ · kept − μ · WER, the WER recomputed here from the decoded
/// texts (English normaliser, word edit distance written out here); with μ = 0 the rewards are bit-identical to the
/// reward without the term; the configuration key reads, writes and rejects bad values by name.
module MagnetWhisper.Tests.Training.GrpoWerRewardTests

open System
open System.IO
open Expecto
open TorchSharp
open MagnetWhisper.Core.Segments
open MagnetWhisper.Core.Decoding
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Text
open MagnetWhisper.Core.Training
open MagnetWhisper.Tests
open MagnetWhisper.Tests.Magnet

/// Samples per audio and audios of the rollout.
let private k, b = 3, 3

/// Most tokens decoded per sample (the fixtures' decoder takes 24 positions).
let private maxNew = 8

/// A word per token id, letters only, so the normaliser keeps it as one word ("tab" for 26).
let private wordOf (id: int) = $"t{char (int 'a' + id % 26)}{char (int 'a' + id / 26)}"

let private textOf (ids: int[]) = ids |> Array.map wordOf |> String.concat " "

/// Levenshtein distance of two word sequences (unit costs), written out.
let private editDistance (r: string[]) (h: string[]) : int =
    let d = Array2D.init (r.Length + 1) (h.Length + 1) (fun i j -> if i = 0 then j elif j = 0 then i else 0)
    for i in 1 .. r.Length do
        for j in 1 .. h.Length do
            d.[i, j] <- min (min (d.[i - 1, j] + 1) (d.[i, j - 1] + 1)) (d.[i - 1, j - 1] + (if r.[i - 1] = h.[j - 1] then 0 else 1))
    d.[r.Length, h.Length]

/// WER as `magnet eval` scores an utterance: both sides through the English normaliser, words split at spaces,
/// errors over the reference's words (over one word for an empty reference).
let private werOf (reference: string) (hypothesis: string) : float =
    let words (s: string) = (Normalizer.english s).Split([| ' ' |], StringSplitOptions.RemoveEmptyEntries)
    let r, h = words reference, words hypothesis
    float (editDistance r h) / float (max 1 r.Length)

/// The fixtures' model with its decoder's cross-attention output scaled up, so greedy decodes follow the audio (a
/// random decoder mostly repeats what its token embeddings prefer, whatever it hears).
let private listeningModel (seed: int64) : MagnetWhisperModel =
    let model = TrainingFixtures.model seed MagnetFixtures.config
    use _ = torch.no_grad ()
    for struct (name, p) in model.named_parameters() do
        if name.Contains ".encoder_attn.out_proj." then p.mul_((40.0).ToScalar()) |> ignore
    model

let private floats (t: torch.Tensor) = t.to_type(torch.float64).data<float>().ToArray()

/// The bit patterns of a float64 tensor's values (bit-identity, not closeness).
let private bits (t: torch.Tensor) = floats t |> Array.map BitConverter.DoubleToInt64Bits

[<Tests>]
let tests =
    testSequenced <| testList "training.grpo.wer" [
        test "greedyTokensFrom on the encoder output of a training-style encoder pass equals greedyTokens on the mel" {
            use _ = torch.NewDisposeScope()
            let config = MagnetFixtures.config
            use model = listeningModel 43L
            let batch = TrainingFixtures.batch 44L config 4
            // Rows at different levels, so this random model hears a difference.
            let mel = batch.Mel * torch.tensor([| 0.3f; 1.0f; 3.0f; -2.0f |]).reshape(4L, 1L, 1L)
            let prompt = Search.checkpointPrompt config
            let fromMel = Search.greedyTokens (model :> ISpeechModel) mel (Some batch.Mask) prompt maxNew
            let fromEncoder =
                use _ = torch.no_grad ()
                use enc = model.Encode(EncoderInput.Inference(mel, Some batch.Mask))
                Search.greedyTokensFrom model { Hidden = enc.Hidden; Mask = Some enc.Mask } prompt maxNew
            Expect.equal fromEncoder fromMel "the same tokens, row by row"
            Expect.isTrue (fromMel |> Array.exists (fun t -> t.Length > 0)) "tokens were decoded"
            Expect.isGreaterThan (Array.distinct fromMel).Length 1 "the rows decode differently"
            Expect.throwsT<ArgumentException> (fun () -> Search.greedyTokensFrom model { Hidden = batch.Mel; Mask = None } prompt 0 |> ignore) "no token allowed"
        }

        test "with μ > 0 the reward is −loss − λ·kept − μ·WER of each sample's own greedy decode; μ = 0 leaves it bit-identical" {
            use _ = torch.NewDisposeScope()
            let config = MagnetFixtures.config
            use model = listeningModel 43L
            let batch = TrainingFixtures.batch 44L config b
            let tile = GrpoBatch.tile k
            let w, lambda, mu = 0.7, 0.3, 0.4
            let input (g: torch.Generator) = ForwardInput.Training(tile batch.Mel, Some(tile batch.Mask), tile batch.Labels, None, g)
            let prompt = Search.checkpointPrompt config
            // The reference: the RL-mode forward with the same draws, and the reward without the WER term written out.
            use g0 = Boundaries.generator 45L torch.CPU
            use result =
                use _ = torch.no_grad ()
                model.Forward { input g0 with Rl = true; RlBoundaryLossWeight = w }
            let layer = List.exactlyOne result.Encoder.Layers
            let kept = layer.Output.BoundaryCounts.to_type(torch.float64) / layer.Output.ValidCounts.to_type(torch.float64).clamp_min((1.0).ToScalar())
            let withoutWer = -(result.LossPerUtterance.to_type(torch.float64)) - kept * lambda
            let decoded =
                Search.greedyTokensFrom model { Hidden = result.Encoder.Hidden; Mask = Some result.Encoder.Mask } prompt maxNew
                |> Array.map textOf
            // K-major rows: row i is audio i % B. Audios 0 and 1 take their first sample's decode as the reference
            // (that sample scores 0), audio 2 a fixed text.
            let references = Array.init (k * b) (fun i -> if i % b = 2 then textOf [| 5; 6; 7 |] else decoded.[i % b])
            let expectedWer = Array.init (k * b) (fun i -> werOf references.[i] decoded.[i])
            Expect.equal (expectedWer.[0], expectedWer.[1]) (0.0, 0.0) "a sample scored against its own decode"
            Expect.isGreaterThan (Array.distinct expectedWer).Length 2 "the case has several different WERs"
            Expect.isTrue
                ([ 0 .. b - 1 ] |> List.exists (fun a -> (List.distinct [ for j in 0 .. k - 1 -> decoded.[j * b + a] ]).Length > 1))
                "the samples of one audio decode differently: the decode reads the sampled boundaries"
            let wer = { References = references; Prompt = prompt; MaxNewTokens = maxNew; TextOf = textOf }
            let settings = { GrpoSettings.Default with GroupSize = k; BoundaryLossWeight = w; KeptFractionWeight = lambda }
            use g1 = Boundaries.generator 45L torch.CPU
            use off = GrpoStep.sample model settings (input g1) None None
            Expect.equal (bits off.Rewards) (bits withoutWer) "μ = 0: bit-identical to the reward without the term"
            Expect.isNone off.WordErrorRate "μ = 0: no WER"
            use g2 = Boundaries.generator 45L torch.CPU
            use ignored = GrpoStep.sample model settings (input g2) (Some wer) None
            Expect.equal (bits ignored.Rewards) (bits withoutWer) "μ = 0 with references given: still bit-identical, nothing decoded"
            Expect.isNone ignored.WordErrorRate "μ = 0 with references: no WER"
            use g3 = Boundaries.generator 45L torch.CPU
            use on = GrpoStep.sample model { settings with WerRewardWeight = mu } (input g3) (Some wer) None
            let rates = floats (Expect.wantSome on.WordErrorRate "μ > 0: the WER is recorded")
            let rewards = floats on.Rewards
            let baseline = floats withoutWer
            for i in 0 .. k * b - 1 do
                Expect.floatClose Accuracy.veryHigh rates.[i] expectedWer.[i] $"WER of sample {i}"
                Expect.floatClose { absolute = 1e-12; relative = 1e-12 } rewards.[i] (baseline.[i] - mu * expectedWer.[i]) $"reward of sample {i}"
            Expect.equal (bits on.OldLogProb) (bits off.OldLogProb) "the same draws"
            use g4 = Boundaries.generator 45L torch.CPU
            Expect.throwsT<ArgumentException> (fun () -> GrpoStep.sample model { settings with WerRewardWeight = mu } (input g4) None None |> ignore) "μ > 0 needs the references"
            Expect.throwsT<ArgumentException> (fun () -> { settings with WerRewardWeight = -0.1 }.Validate() |> ignore) "μ < 0"
        }

        test "wer_reward_weight: default 0, read, written to config.json, negative values rejected by key" {
            Expect.equal GrpoConfig.Default.WerRewardWeight 0.0 "off by default"
            Expect.equal GrpoConfig.Default.Settings.WerRewardWeight 0.0 "settings off by default"
            let c = GrpoConfig.applyJson "g.json" """{"wer_reward_weight": 0.25}""" GrpoConfig.Default
            Expect.equal c.Settings.WerRewardWeight 0.25 "read into the settings"
            Expect.stringContains (GrpoConfig.toJson c) "\"wer_reward_weight\": 0.25" "written"
            Expect.equal (GrpoConfig.applyJson "resolved" (GrpoConfig.toJson c) GrpoConfig.Default) c "reads back"
            let message =
                try
                    GrpoConfig.set "wer_reward_weight=-1" GrpoConfig.Default |> ignore
                    "accepted"
                with :? InvalidDataException as e -> e.Message
            Expect.stringContains message "--set wer_reward_weight=-1: key 'wer_reward_weight'" "the key is named"
        }
    ]
