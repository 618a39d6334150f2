namespace MagnetWhisper.Core.Training

// GRPO's optional WER reward (issue 10): each sample of a rollout is decoded greedily from its own pooled encoder
// output — the boundaries it sampled — and its transcript scored against its utterance's reference as `magnet eval`
// scores (Whisper's English normaliser on both sides, word edit distance: Evaluation/Scoring.fs). The reward then
// loses μ · WER, so it depends on the action through what the decoder recognises from it. Slower than the
// teacher-forced terms (one autoregressive decode of K·B rows per rollout), hence off by default.

open MagnetWhisper.Core.Decoding
open MagnetWhisper.Core.Evaluation

/// What the WER reward needs besides the rollout's encoder output.
type WerRewardInput =
    { /// The reference transcript of each row's utterance as the corpus writes it (K·B, in the rollout's K-major
      /// row order).
      References: string[]
      /// The decoder prompt each decode starts from (the start-of-transcript sequence the labels start with).
      Prompt: int[]
      /// Most tokens decoded per sample.
      MaxNewTokens: int
      /// The text of decoded token ids (special tokens left out).
      TextOf: int[] -> string }

/// The pieces of the WER reward.
[<RequireQualifiedAccess>]
module GrpoWerReward =
    /// The word error rate of a hypothesis against a reference after the English normaliser, as `magnet eval`
    /// scores an utterance, as a fraction: (S + D + I) / max(1, N). An empty reference counts its errors over one
    /// word rather than giving +∞, so the reward stays finite.
    let wordErrorRate (reference: string) (hypothesis: string) : float =
        let words = (Scoring.utterance reference hypothesis).Words
        float words.Errors / float (max 1 words.ReferenceLength)

    /// Each row's text, greedily decoded (Search.greedyTokensFrom, no gradients) from an encoder output.
    let decode (model: ISpeechModel) (audio: EncodedAudio) (input: WerRewardInput) : string[] =
        Search.greedyTokensFrom model audio input.Prompt input.MaxNewTokens |> Array.map input.TextOf

    /// Each row's WER of its greedy decode from the encoder output against its reference (K·B fractions).
    let rates (model: ISpeechModel) (audio: EncodedAudio) (input: WerRewardInput) : float[] =
        let rows = int audio.Hidden.shape.[0]
        if input.References.Length <> rows then
            invalidArg "input" $"{input.References.Length} references were given for {rows} samples"
        Array.map2 wordErrorRate input.References (decode model audio input)
