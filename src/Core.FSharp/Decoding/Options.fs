namespace MagnetWhisper.Core.Decoding

open System
open MagnetWhisper.Core.Text

/// Text or token ids, for a decoding prompt or prefix.
type TextOrTokens =
    /// Text, encoded as whisper does: `" " + text.Trim()`.
    | PlainText of string
    /// Token ids used as they are.
    | TokenIds of int[]

/// Everything that drives the decoding of one 30-second window (openai/whisper's `DecodingOptions`): immutable,
/// defaults in `DecodingOptions.defaults`. Greedy decoding at temperature 0 unless BeamSize is set; sampling when
/// Temperature > 0 (BestOf independent samples, ranked by length-normalised log-probability).
type DecodingOptions =
    { /// Transcribe in the spoken language, or translate into English.
      Task: TaskKind
      /// Language code or name ("en", "english"); None detects it from the audio (multilingual models).
      Language: string option
      /// Sampling temperature; 0 = argmax (or beam search).
      Temperature: float
      /// Most tokens to sample; None = max_target_positions / 2 (224).
      SampleLen: int option
      /// Independent samples per audio when Temperature > 0.
      BestOf: int option
      /// Beams of beam search (Temperature 0).
      BeamSize: int option
      /// Beam-search patience (arXiv:2204.05424): collect round(BeamSize · Patience) finished candidates; None = 1.
      Patience: float option
      /// Google NMT length penalty α in [0, 1] when ranking candidates; None = divide by the length.
      LengthPenalty: float option
      /// Previous context, fed after `<|startofprev|>` (its last max_target_positions/2 − 1 = 223 tokens).
      Prompt: TextOrTokens option
      /// Tokens that start the transcript after the start-of-transcript sequence.
      Prefix: TextOrTokens option
      /// Token ids suppressed at every step; -1 stands for whisper's non-speech symbols plus the checkpoint's
      /// suppress_tokens. The task, start and no-speech tokens are always suppressed.
      SuppressTokens: int list
      /// Suppress a blank (" ") and end-of-text as the first sampled token.
      SuppressBlank: bool
      /// Decode text only (`<|notimestamps|>`); otherwise the timestamp rules apply.
      WithoutTimestamps: bool
      /// The first timestamp cannot be later than this (seconds); None = no limit.
      MaxInitialTimestamp: float option
      /// Seed of the sampling generators (Temperature > 0): equal inputs and seed give equal outputs.
      Seed: int64 }

/// Defaults and validation of DecodingOptions.
[<RequireQualifiedAccess>]
module DecodingOptions =
    /// whisper's defaults: transcribe, detect the language, greedy, suppress "-1", blank suppressed, timestamps on,
    /// first timestamp at most 1 s.
    let defaults =
        { Task = Transcribe
          Language = None
          Temperature = 0.0
          SampleLen = None
          BestOf = None
          BeamSize = None
          Patience = None
          LengthPenalty = None
          Prompt = None
          Prefix = None
          SuppressTokens = [ -1 ]
          SuppressBlank = true
          WithoutTimestamps = false
          MaxInitialTimestamp = Some 1.0
          Seed = 0L }

    /// whisper's checks (beam search and best-of are exclusive, best-of needs sampling, patience needs beams,
    /// α in [0, 1]) plus positivity; raises ArgumentException naming the option.
    let validate (o: DecodingOptions) : DecodingOptions =
        if o.BeamSize.IsSome && o.BestOf.IsSome then invalidArg "BeamSize" "beam_size and best_of can't be given together"
        if o.Temperature = 0.0 && o.BestOf.IsSome then invalidArg "BestOf" "best_of with greedy sampling (T=0) is not compatible"
        if o.Patience.IsSome && o.BeamSize.IsNone then invalidArg "Patience" "patience requires beam_size to be given"
        match o.LengthPenalty with
        | Some a when not (a >= 0.0 && a <= 1.0) -> invalidArg "LengthPenalty" "length_penalty (alpha) should be a value between 0 and 1"
        | _ -> ()
        if o.Temperature < 0.0 || Double.IsNaN o.Temperature then invalidArg "Temperature" $"temperature must be >= 0, got {o.Temperature}"
        let positive name (v: int option) =
            match v with
            | Some n when n < 1 -> invalidArg name $"{name} must be at least 1, got {n}"
            | _ -> ()
        positive "BeamSize" o.BeamSize
        positive "BestOf" o.BestOf
        positive "SampleLen" o.SampleLen
        match o.BeamSize, o.Patience with
        | Some b, Some p when Math.Round(float b * p, MidpointRounding.ToEven) < 1.0 ->
            invalidArg "Patience" $"Invalid beam size ({b}) or patience ({p})"
        | _ -> ()
        o

/// Options of long-form transcription (openai/whisper's `transcribe`): the decoding options of each window plus the
/// temperature fallback, the silence check and prompting with the previous text.
type TranscribeOptions =
    { /// Options of each window; its Temperature is replaced by each of Temperatures in turn.
      Decoding: DecodingOptions
      /// Temperatures tried in order while a window fails the thresholds (whisper: 0, 0.2, …, 1.0).
      Temperatures: float list
      /// A window whose text has a gzip compression ratio above this is too repetitive (2.4).
      CompressionRatioThreshold: float option
      /// A window whose average log-probability is below this failed (−1.0).
      LogProbThreshold: float option
      /// A window with no-speech probability above this and a failed log-probability is silence (0.6).
      NoSpeechThreshold: float option
      /// Prompt each window with the text so far (reset after a window decoded above temperature 0.5).
      ConditionOnPreviousText: bool
      /// Text given as the prompt of the first window.
      InitialPrompt: string option }

/// Defaults of TranscribeOptions.
[<RequireQualifiedAccess>]
module TranscribeOptions =
    /// numpy's `arange(start, 1.0 + 1e-6, increment)` (whisper's CLI): start, start + increment, … up to 1.0;
    /// just [start] when increment is None.
    let temperatureSchedule (start: float) (increment: float option) : float list =
        match increment with
        | None -> [ start ]
        | Some step when step <= 0.0 -> invalidArg "increment" $"the temperature increment must be positive, got {step}"
        | Some step ->
            let stop = 1.0 + 1e-6
            let count = int (Math.Ceiling((stop - start) / step))
            [ for i in 0 .. count - 1 -> start + float i * step ]

    /// whisper's `transcribe` defaults: temperatures 0, 0.2, …, 1.0, thresholds 2.4 / −1.0 / 0.6, conditioning on.
    let defaults =
        { Decoding = DecodingOptions.defaults
          Temperatures = temperatureSchedule 0.0 (Some 0.2)
          CompressionRatioThreshold = Some 2.4
          LogProbThreshold = Some -1.0
          NoSpeechThreshold = Some 0.6
          ConditionOnPreviousText = true
          InitialPrompt = None }

/// The outcome of decoding one window for one audio (openai/whisper's `DecodingResult`).
type DecodingResult =
    { /// The language code used (given or detected).
      Language: string
      /// Probabilities of every language, when it was detected.
      LanguageProbs: Map<string, float> option
      /// Sampled tokens between the start-of-transcript sequence and end-of-text (text and timestamps).
      Tokens: int[]
      /// The text of Tokens without timestamps, trimmed.
      Text: string
      /// Sum of the tokens' log-probabilities (without the end-of-text token's when decoding hit the length limit).
      SumLogProb: float
      /// SumLogProb / (token count + 1).
      AvgLogProb: float
      /// Probability of `<|nospeech|>` right after the start-of-transcript token.
      NoSpeechProb: float
      /// The sampling temperature that produced it.
      Temperature: float
      /// gzip compression ratio of Text.
      CompressionRatio: float }

/// One transcribed segment (openai/whisper's segment dictionary).
type Segment =
    { /// Position in the transcript, from 0.
      Id: int
      /// Mel frame where its window started.
      Seek: int
      /// Start time in seconds.
      Start: float
      /// End time in seconds.
      End: float
      /// Its text (empty for a cleared, instantaneous or blank segment).
      Text: string
      /// Its tokens, timestamps included.
      Tokens: int[]
      /// Temperature of the window's decoding.
      Temperature: float
      /// Average log-probability of the window.
      AvgLogProb: float
      /// Compression ratio of the window's text.
      CompressionRatio: float
      /// No-speech probability of the window.
      NoSpeechProb: float }

/// The transcript of one audio.
type Transcript =
    { /// The whole text (the decoded tokens of every segment, initial prompt excluded).
      Text: string
      /// The segments in time order.
      Segments: Segment list
      /// The language code (given or detected).
      Language: string }
