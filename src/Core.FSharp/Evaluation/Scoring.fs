namespace MagnetWhisper.Core.Evaluation

open MagnetWhisper.Core.Text

/// How one utterance's hypothesis compares with its reference.
type UtteranceScore =
    { /// The reference as the corpus writes it.
      Reference: string
      /// The decoded text as the model wrote it (trimmed).
      Hypothesis: string
      /// The reference after Whisper's English normaliser.
      NormalizedReference: string
      /// The hypothesis after Whisper's English normaliser.
      NormalizedHypothesis: string
      /// Word errors of the normalised texts (the reported WER).
      Words: ErrorRate
      /// Character errors of the normalised texts (the reported CER).
      Characters: ErrorRate
      /// Word errors of the unnormalised texts as the original's trainer scored them: the reference trimmed and
      /// lower-cased (its label preprocessing), the hypothesis as decoded.
      RawWords: ErrorRate }

/// Corpus error rates: the counts of every utterance summed before dividing (jiwer's corpus rates).
type CorpusScore =
    { /// Normalised word error rate.
      Words: ErrorRate
      /// Normalised character error rate.
      Characters: ErrorRate
      /// Unnormalised word error rate (the original's training-time metric).
      RawWords: ErrorRate }

/// Scoring of hypotheses against references (pure).
[<RequireQualifiedAccess>]
module Scoring =
    /// Scores one utterance.
    let utterance (reference: string) (hypothesis: string) : UtteranceScore =
        let hypothesis = hypothesis.Trim()
        let normalizedReference = Normalizer.english reference
        let normalizedHypothesis = Normalizer.english hypothesis
        { Reference = reference
          Hypothesis = hypothesis
          NormalizedReference = normalizedReference
          NormalizedHypothesis = normalizedHypothesis
          Words = Wer.wer normalizedReference normalizedHypothesis
          Characters = Wer.cer normalizedReference normalizedHypothesis
          RawWords = Wer.wer (reference.Trim().ToLowerInvariant()) hypothesis }

    /// The corpus rates of scored utterances.
    let corpus (scores: UtteranceScore seq) : CorpusScore =
        let scores = Seq.toArray scores
        { Words = scores |> Seq.map _.Words |> Wer.combine
          Characters = scores |> Seq.map _.Characters |> Wer.combine
          RawWords = scores |> Seq.map _.RawWords |> Wer.combine }
