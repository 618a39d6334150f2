namespace MagnetWhisper.Core.Data

open System
open TorchSharp
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Text
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Magnet

/// How many mel frames a batch's features have.
type FrameLength =
    /// The full 30 s window, 2·max_source_positions frames: models with absolute positions (Whisper), and
    /// MagnetWhisper with the original's padding-dependent options.
    | FullWindow
    /// Cut to the batch's longest utterance: `framesFor longestValidFrames` frames (MagnetEncoder.FramesFor), for
    /// models whose valid outputs do not depend on the padding (MagnetWhisperModel.CutsPadding).
    | CutToLongest of framesFor: (int -> int)

/// What collation needs from the model: its tokenizer and prompt, its decoder limit, its mel bins, its frame rule,
/// and the kind of each row of its target matrix.
type CollateOptions =
    { /// The model's tokenizer (from its vocab_size).
      Tokenizer: Tokenizer
      /// The decoder prompt every label sequence starts with: `<|startoftranscript|>`, then for multilingual models
      /// the language and `<|transcribe|>`, then `<|notimestamps|>` (SPEC §7.1; `Tokenizer.sotSequence`).
      Prompt: int[]
      /// Mel bins of the features (80, or 128 for large-v3).
      NMels: int
      /// The longest label sequence the decoder takes (max_target_positions, 448).
      MaxTokens: int
      /// The full window, or cut to the longest utterance.
      Frames: FrameLength
      /// The kind of each row of the target matrix (`Targets.rowKinds`); empty: no matrix.
      TargetRows: TargetKind[]
      /// How phonemes (and syllables) are counted.
      PhonemeOptions: PhonemeOptions
      /// Lower-case the transcript before tokenising (SPEC §7.1: `strip().lower()`, for LibriSpeech's capitals).
      Lowercase: bool
      /// Put a space before the text, as Whisper itself writes its first word (" And so …"); the original does not.
      LeadingSpace: bool }

    /// The options of a model configuration: its tokenizer (by vocab_size), the prompt for `language` (ignored by
    /// English-only models) and task, the full 30 s window, no target matrix, the original's text handling.
    static member Of(config: WhisperConfig, language: string, task: TaskKind) : CollateOptions =
        if config.InputFrames <> LogMel.NFrames then
            invalidArg (nameof config) $"the model takes {config.InputFrames} mel frames but Whisper's features have {LogMel.NFrames} (a 30 s window)"
        let tokenizer = Tokenizer.ofVocabSize config.VocabSize
        let prompt = Tokenizer.sotSequence tokenizer (Some language) (Some task) true
        if prompt.[0] <> config.DecoderStartTokenId then
            invalidArg (nameof config) $"the tokenizer's <|startoftranscript|> is {prompt.[0]} but the model's decoder_start_token_id is {config.DecoderStartTokenId}"
        { Tokenizer = tokenizer; Prompt = prompt; NMels = config.NumMelBins; MaxTokens = config.MaxTargetPositions
          Frames = FullWindow; TargetRows = [||]; PhonemeOptions = PhonemeOptions.Default; Lowercase = true
          LeadingSpace = false }

    /// The options of a MagnetWhisper model: features cut to the longest utterance when the model allows it
    /// (CutsPadding), and a target matrix with `targets.[i]` counted for the i-th predictor in layer order.
    static member ForMagnet(model: MagnetWhisperModel, language: string, task: TaskKind, targets: TargetKind list) : CollateOptions =
        let options = CollateOptions.Of(model.Config, language, task)
        { options with
            Frames = (if model.CutsPadding then CutToLongest model.Encoder.FramesFor else FullWindow)
            TargetRows = Targets.rowKinds model.Options.Predictors targets }

/// One utterance ready to be stacked into a batch (what a loader's worker produces).
type PreparedUtterance =
    { /// The utterance as the corpus gave it.
      Utterance: Utterance
      /// 16 kHz samples of the audio.
      Samples: int
      /// Log-mel features (n_mels × 3000, row-major) of the 30 s window.
      Mel: float32[]
      /// The complete token sequence: prompt, text, `<|endoftext|>`.
      Tokens: int[]
      /// The utterance's column of the target matrix (one count per row).
      Targets: float32[] }

/// A collated batch on one device. Dispose it to free its tensors.
[<NoEquality; NoComparison>]
type CollatedBatch =
    { /// The utterances' ids, in batch order.
      Ids: string[]
      /// Seconds of audio of each utterance.
      Durations: float[]
      /// (B, n_mels, F) log-mel features; F = 3000 or the frames the longest utterance needs (FrameLength).
      Mel: torch.Tensor
      /// (B, F) float32 frame validity (1 = real audio).
      FrameMask: torch.Tensor
      /// (B, T) int64 labels: the tokens after `<|startoftranscript|>` (SPEC §7.1 drops that column), ending with
      /// `<|endoftext|>`; −100 on every padded position (DECISIONS #9).
      Labels: torch.Tensor
      /// (B, T) int64 decoder inputs: the labels shifted right behind `<|startoftranscript|>`, `<|endoftext|>` on
      /// padded positions (Hugging Face's `shift_tokens_right`).
      DecoderInputs: torch.Tensor
      /// (B, T) bool: real decoder inputs (false = padding).
      TokenMask: torch.Tensor
      /// (rows, B) float32 target boundary counts, one row per CollateOptions.TargetRows; None without rows.
      TargetMatrix: torch.Tensor option }

    /// Every tensor of the batch.
    member b.Tensors: torch.Tensor list =
        [ b.Mel; b.FrameMask; b.Labels; b.DecoderInputs; b.TokenMask ] @ Option.toList b.TargetMatrix

    /// A supervised MagnetWhisper forward over the batch: sampled boundaries from the generator, with its decoder
    /// inputs, token mask and targets.
    member b.Training(generator: torch.Generator) : ForwardInput =
        { ForwardInput.Training(b.Mel, Some b.FrameMask, b.Labels, b.TargetMatrix, generator) with
            DecoderInputs = Some b.DecoderInputs
            TokenMask = Some b.TokenMask }

    interface IDisposable with
        member b.Dispose() =
            for t in b.Tensors do
                t.Dispose()

/// Collation (SPEC §7.1 with DECISIONS #3 and #9): features, frame masks, labels, decoder inputs and targets.
[<RequireQualifiedAccess>]
module Collate =
    /// The label value of positions that carry no target (PyTorch's cross-entropy `ignore_index`).
    [<Literal>]
    let Ignored = -100L

    /// The complete token sequence of a transcript: prompt, text (trimmed; lower-cased and with a leading space as
    /// the options say), `<|endoftext|>`; or why there is none (an empty transcript, or more labels than the decoder
    /// takes).
    let tokens (options: CollateOptions) (transcript: string) : Result<int[], string> =
        let text = (if isNull transcript then "" else transcript).Trim()
        if text = "" then Error "the transcript is empty"
        else
            let text = if options.Lowercase then text.ToLowerInvariant() else text
            let text = if options.LeadingSpace then " " + text else text
            let sequence = Array.concat [ options.Prompt; Tokenizer.encode options.Tokenizer text; [| options.Tokenizer.Specials.EndOfText |] ]
            // The labels are the sequence without its first token.
            if sequence.Length - 1 > options.MaxTokens then
                Error $"the transcript has {sequence.Length - 1} label tokens, more than the {options.MaxTokens} the decoder takes"
            else Ok sequence

    /// Labels, decoder inputs and token mask (B, T) of complete token sequences, T = the longest sequence − 1:
    /// labels = each sequence without its first token, −100 after its end; decoder inputs = each sequence without
    /// its last token, `pad` after its end; the mask is true on the real decoder inputs.
    let padTokens (pad: int) (sequences: int[][]) : int64[,] * int64[,] * bool[,] =
        if sequences.Length = 0 then invalidArg (nameof sequences) "the batch is empty"
        if sequences |> Array.exists (fun s -> s.Length < 2) then
            invalidArg (nameof sequences) "every token sequence needs at least a start and one label"
        let t = (sequences |> Array.map Array.length |> Array.max) - 1
        let labels = Array2D.create sequences.Length t Ignored
        let inputs = Array2D.create sequences.Length t (int64 pad)
        let real = Array2D.zeroCreate sequences.Length t
        sequences
        |> Array.iteri (fun b s ->
            for i in 0 .. s.Length - 2 do
                labels.[b, i] <- int64 s.[i + 1]
                inputs.[b, i] <- int64 s.[i]
                real.[b, i] <- true)
        labels, inputs, real

    /// Prepares one utterance from its 16 kHz samples (at most 30 s) and its complete token sequence: log-mel
    /// features of the 30 s window and the target column.
    let prepare (options: CollateOptions) (utterance: Utterance) (tokens: int[]) (samples: float32[]) : PreparedUtterance =
        if samples.Length > LogMel.NSamples then
            invalidArg (nameof samples) $"{AudioSource.name utterance.Audio}: {samples.Length} samples are more than the 30 s window"
        use features = LogMel.extract options.NMels torch.CPU [| samples |]
        { Utterance = utterance
          Samples = samples.Length
          Mel = features.Mel.data<float32>().ToArray()
          Tokens = tokens
          Targets = Targets.column options.PhonemeOptions options.TargetRows utterance.Transcript }

    /// Frames of a batch whose longest utterance has this many samples.
    let frames (options: CollateOptions) (longestSamples: int) : int =
        match options.Frames with
        | FullWindow -> LogMel.NFrames
        | CutToLongest framesFor ->
            let valid = min LogMel.NFrames ((longestSamples + LogMel.HopLength - 1) / LogMel.HopLength)
            min LogMel.NFrames (framesFor valid)

    /// Stacks prepared utterances into a batch on a device.
    let stack (options: CollateOptions) (device: torch.Device) (items: PreparedUtterance[]) : CollatedBatch =
        if items.Length = 0 then invalidArg (nameof items) "the batch is empty"
        let b = items.Length
        let f = frames options (items |> Array.map (fun i -> i.Samples) |> Array.max)
        let m = options.NMels
        let mel = Array.zeroCreate<float32> (b * m * f)
        let mask = Array.zeroCreate<float32> (b * f)
        items
        |> Array.iteri (fun k item ->
            if item.Mel.Length <> m * LogMel.NFrames then
                invalidArg (nameof items) $"{item.Utterance.Id}: features have {item.Mel.Length} values, not {m} × {LogMel.NFrames}"
            for row in 0 .. m - 1 do
                Array.blit item.Mel (row * LogMel.NFrames) mel ((k * m + row) * f) f
            Array.blit (LogMel.frameMaskArray (int64 item.Samples)) 0 mask (k * f) f)
        let labels, inputs, real = padTokens options.Tokenizer.Specials.EndOfText (items |> Array.map (fun i -> i.Tokens))
        let t = Array2D.length2 labels
        let rows = options.TargetRows.Length
        use scope = torch.NewDisposeScope()
        let onDevice (x: torch.Tensor) = x.``to``(device).MoveToOuterDisposeScope()
        let flat (a: 'a[,]) = Array.init (Array2D.length1 a * Array2D.length2 a) (fun i -> a.[i / Array2D.length2 a, i % Array2D.length2 a])
        { Ids = items |> Array.map (fun i -> i.Utterance.Id)
          Durations = items |> Array.map (fun i -> float i.Samples / float LogMel.SampleRate)
          Mel = onDevice (torch.tensor(mel).reshape(int64 b, int64 m, int64 f))
          FrameMask = onDevice (torch.tensor(mask).reshape(int64 b, int64 f))
          Labels = onDevice (torch.tensor(flat labels).reshape(int64 b, int64 t))
          DecoderInputs = onDevice (torch.tensor(flat inputs).reshape(int64 b, int64 t))
          TokenMask = onDevice (torch.tensor(flat real).reshape(int64 b, int64 t))
          TargetMatrix =
            if rows = 0 then None
            else
                let matrix = Array.init (rows * b) (fun i -> items.[i % b].Targets.[i / b])
                Some(onDevice (torch.tensor(matrix).reshape(int64 rows, int64 b))) }
