namespace MagnetWhisper.Core.Evaluation

// Batched evaluation of a speech model on a corpus (issue 8 §3): audio loaded ahead on background workers, batches
// sorted by length (less padding), one 30-second window per utterance decoded greedily (or by beam search) at
// temperature 0 without timestamps, corpus WER/CER, per-predictor compression, timing. Rows of a batch never
// influence each other (Search decodes rows independently, MagnetWhisper's encoder is batch-independent), so the
// results do not depend on the batch size or on which utterances share a batch.

open System
open System.Diagnostics
open System.Threading
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Data
open MagnetWhisper.Core.Decoding
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Text

/// How to evaluate. Immutable; defaults in `EvaluationOptions.Default`.
type EvaluationOptions =
    { /// Utterances decoded together.
      BatchSize: int
      /// Beams of beam search; None decodes greedily.
      BeamSize: int option
      /// Background tasks decoding audio files.
      Workers: int
      /// The language of the start-of-transcript prompt (multilingual models); English-only models always use theirs.
      Language: string
      /// Most tokens decoded per utterance; None = half the decoder positions (224), as whisper.
      MaxTokens: int option
      /// Utterances whose measured length exceeds this many seconds are skipped (Corpora.select already skips those
      /// whose length the corpus states).
      MaxDuration: float option
      /// The ffmpeg used for formats other than WAV and FLAC; None = such files are skipped with the reason.
      Ffmpeg: string option }

    /// Batches of 16, greedy, two loading workers, English, whisper's token limit, ffmpeg from PATH.
    static member Default =
        { BatchSize = 16; BeamSize = None; Workers = 2; Language = "en"; MaxTokens = None; MaxDuration = None
          Ffmpeg = Audio.findFfmpeg () }

/// The evaluation of one utterance.
type UtteranceResult =
    { /// The utterance's id in its corpus.
      Id: string
      /// Where its audio came from (file path or embedded source).
      Source: string
      /// Seconds of audio, measured after decoding.
      Duration: float
      /// Its score.
      Score: UtteranceScore
      /// What each boundary predictor did to it (empty for stock Whisper).
      Predictors: PredictorCount[]
      /// Each predictor's boundaries scored against the utterance's phone alignment (empty without an alignment or
      /// predictors).
      Boundaries: BoundaryAccuracy.LayerBoundaryCounts[] }

    /// Valid positions entering the first predictor per position leaving the last (1 for stock Whisper).
    member r.Compression = Compression.overall r.Predictors

/// Where the time went.
type EvaluationTiming =
    { /// Seconds of audio evaluated.
      AudioSeconds: float
      /// Seconds spent in the encoder (predictors included).
      EncoderSeconds: float
      /// Seconds spent decoding tokens.
      DecodeSeconds: float
      /// Wall-clock seconds of the whole evaluation (loading, features, encoding, decoding, scoring).
      TotalSeconds: float }

    /// Processing seconds per audio second (TotalSeconds / AudioSeconds); 0 without audio.
    member t.RealTimeFactor = if t.AudioSeconds > 0.0 then t.TotalSeconds / t.AudioSeconds else 0.0

    /// Encoder seconds per audio second; 0 without audio.
    member t.EncoderRealTimeFactor = if t.AudioSeconds > 0.0 then t.EncoderSeconds / t.AudioSeconds else 0.0

/// The evaluation of a corpus.
type EvaluationResult =
    { /// The corpus name (what it was read from).
      Corpus: string
      /// Evaluated utterances in the corpus's order.
      Utterances: UtteranceResult[]
      /// Entries left out (by the reader, the selection or while loading), with the reason.
      Skipped: Skipped[]
      /// Corpus WER (normalised and raw) and CER.
      Score: CorpusScore
      /// Compression of each predictor, in layer order (empty for stock Whisper).
      Predictors: PredictorCompression list
      /// Boundary precision, recall, F1 and random F1 of each predictor, in layer order, over the utterances with
      /// phone alignments (±BoundaryAccuracy.DefaultTolerance; empty when none has one, or without predictors).
      Boundaries: BoundaryAccuracy.LayerBoundaryCounts list
      /// Timing.
      Timing: EvaluationTiming
      /// The options it ran with.
      Options: EvaluationOptions }

/// How far an evaluation is.
type EvaluationProgress =
    { /// Utterances done (evaluated or skipped while loading).
      Done: int
      /// Utterances to do.
      Total: int
      /// Of Done, those skipped.
      Skipped: int
      /// Seconds of audio evaluated so far.
      AudioSeconds: float
      /// Wall-clock seconds since the start.
      ElapsedSeconds: float }

    /// Seconds left at the rate so far (utterances per second); None before anything is done.
    member p.RemainingSeconds =
        if p.Done <= 0 then None else Some(float (p.Total - p.Done) * p.ElapsedSeconds / float p.Done)

/// What decoding one batch gave.
type BatchTranscript =
    { /// The text of each row.
      Texts: string[]
      /// Each row's predictor counts (empty arrays for stock Whisper).
      Predictors: PredictorCount[][]
      /// Each row's predictor boundary times (empty arrays for stock Whisper).
      Boundaries: BoundaryAccuracy.PredictorBoundaries[][]
      /// Seconds in the encoder.
      EncoderSeconds: float
      /// Seconds decoding tokens.
      DecodeSeconds: float }

/// Evaluation of a speech model on a corpus.
[<RequireQualifiedAccess>]
module Evaluator =
    /// Utterances longer than this are skipped: evaluation decodes one 30-second window per utterance.
    let maxSeconds = float LogMel.ChunkSeconds

    /// The decoding options of an evaluation: temperature 0, no timestamps, the model's start-of-transcript prompt in
    /// the options' language, no previous-text prompt.
    let decodingOptions (options: EvaluationOptions) : DecodingOptions =
        { DecodingOptions.defaults with
            Language = Some options.Language
            Temperature = 0.0
            BeamSize = options.BeamSize
            SampleLen = options.MaxTokens
            WithoutTimestamps = true }
        |> DecodingOptions.validate

    let private synchronize (device: torch.Device) =
        if device.``type`` = DeviceType.CUDA then torch.cuda.synchronize ()

    /// Encodes a batch as decoding sees it and reads each row's predictor counts from the same forward (MagnetWhisper:
    /// encoder output (thresholded boundaries, cut to the longest utterance as its ISpeechModel.Encode does), or the
    /// model's own Encode without counts), and each row's boundary times (durations: each row's seconds of audio).
    /// The audio lands in the caller's dispose scope.
    let private encode (model: ISpeechModel) (mel: torch.Tensor) (frameMask: torch.Tensor) (durations: float[])
        : EncodedAudio * PredictorCount[][] * BoundaryAccuracy.PredictorBoundaries[][] =
        let rows = int mel.shape.[0]
        match model with
        | :? MagnetWhisperModel as magnet ->
            let counts (t: torch.Tensor) = Tensors.toFloatArray t |> Array.map (fun v -> int (Math.Round v))
            let secondsPerPosition = float magnet.Model.Encoder.TotalStride * BoundaryTrace.secondsPerMelFrame
            let audio, (predictors, boundaries) =
                magnet.EncodeReading(mel, Some frameMask, fun output ->
                    let layers = output.Layers |> List.map (fun l -> l.Index, counts l.Output.BoundaryCounts, counts l.Output.ValidCounts)
                    let predictors =
                        Array.init rows (fun r ->
                            [| for layer, boundaries, positions in layers -> { Layer = layer; Boundaries = boundaries.[r]; Positions = positions.[r] } |])
                    let boundaries =
                        Array.init rows (fun r ->
                            BoundaryTrace.rowBoundaries secondsPerPosition output r durations.[r]
                            |> List.map (fun (layer, ends, flags) -> BoundaryAccuracy.predictorBoundaries layer ends flags)
                            |> Array.ofList)
                    predictors, boundaries)
            audio, predictors, boundaries
        | _ -> model.Encode(mel, Some frameMask), Array.create rows [||], Array.create rows [||]

    /// Decodes a batch of 16 kHz waveforms (each at most 30 s) with a model: log-mel features, encoder (timed), one
    /// window per row (timed). Every tensor is freed before returning.
    let transcribeBatch (model: ISpeechModel) (tokenizer: Tokenizer) (decoding: DecodingOptions) (waves: float32[][]) (ct: CancellationToken) : BatchTranscript =
        use _ = torch.NewDisposeScope()
        use _ = torch.inference_mode()
        use features = LogMel.extract model.Config.NumMelBins model.Device waves
        let watch = Stopwatch.StartNew()
        let durations = waves |> Array.map (fun w -> float (min w.Length LogMel.NSamples) / float LogMel.SampleRate)
        let audio, counts, boundaries = encode model features.Mel features.Mask durations
        synchronize model.Device
        let encoderSeconds = watch.Elapsed.TotalSeconds
        watch.Restart()
        let results = Search.decodeWindow model tokenizer decoding audio (Array.create waves.Length WindowRow.defaults) ct
        let decodeSeconds = watch.Elapsed.TotalSeconds
        { Texts = results |> Array.map _.Text; Predictors = counts; Boundaries = boundaries; EncoderSeconds = encoderSeconds; DecodeSeconds = decodeSeconds }

    /// A loaded utterance: its position in the corpus, the utterance, its samples, its reference phone boundaries
    /// (when it has an alignment).
    type private Loaded = { Index: int; Utterance: Utterance; Samples: float32[]; Reference: float[] option }

    let private reasonOf (source: string) (e: exn) =
        let e = match e with :? AggregateException as a when not (isNull a.InnerException) -> a.InnerException | e -> e
        // Audio errors start with the file's name; the skipped entry names it already.
        if e.Message.StartsWith(source + ": ") then e.Message.Substring(source.Length + 2) else e.Message

    /// Evaluates a corpus with a batch transcriber (the model's transcribeBatch, or any function in tests): loads the
    /// audio on `Workers` background tasks (a file that cannot be read, holds no samples or is too long becomes a
    /// Skipped entry with the reason), sorts pools of loaded utterances by length (longest first) into batches, scores
    /// each hypothesis and reports progress after each batch. Results are in the corpus's order.
    let run
        (transcribe: float32[][] -> CancellationToken -> BatchTranscript)
        (options: EvaluationOptions)
        (corpus: Corpus)
        (progress: EvaluationProgress -> unit)
        (ct: CancellationToken)
        : EvaluationResult =
        if options.BatchSize < 1 then invalidArg "BatchSize" $"the batch size must be at least 1, got {options.BatchSize}"
        if options.Workers < 1 then invalidArg "Workers" $"at least one loading worker is needed, got {options.Workers}"
        let clock = Stopwatch.StartNew()
        let utterances = corpus.Utterances
        // Longest first when the corpus states every length (then pools hold similar lengths); else corpus order.
        let order =
            if utterances |> Array.forall (fun u -> u.Duration.IsSome) then
                utterances |> Array.indexed |> Seq.sortByDescending (fun (_, u) -> u.Duration.Value) |> Array.ofSeq
            else Array.indexed utterances
        let load (_: CancellationToken) (index: int, u: Utterance) : Result<Loaded, Skipped> =
            let source = AudioSource.name u.Audio
            try
                let samples = UtteranceAudio.loadUsing options.Ffmpeg u
                let seconds = float samples.Length / float LogMel.SampleRate
                if samples.Length = 0 then Error { Source = source; Reason = "the audio holds no samples" }
                elif seconds > maxSeconds then
                    Error { Source = source; Reason = $"%.2f{seconds} s is longer than the %g{maxSeconds} s window evaluation decodes (long-form audio is not evaluated)" }
                else
                    match options.MaxDuration with
                    | Some limit when seconds > limit ->
                        Error { Source = source; Reason = $"%.2f{seconds} s is longer than the maximum of %g{limit} s" }
                    | _ ->
                        match u.Phones with
                        | None -> Ok { Index = index; Utterance = u; Samples = samples; Reference = None }
                        | Some phones ->
                            let reference = BoundaryAccuracy.referenceBoundaries (PhoneAlignment.read phones) seconds
                            Ok { Index = index; Utterance = u; Samples = samples; Reference = Some reference }
            with e -> Error { Source = source; Reason = reasonOf source e }
        let results = ResizeArray<int * UtteranceResult>()
        let skipped = ResizeArray<Skipped>()
        let mutable encoderSeconds = 0.0
        let mutable decodeSeconds = 0.0
        let mutable audioSeconds = 0.0
        let mutable loadSkipped = 0
        let mutable reported = -1
        let report () =
            let finished = results.Count + loadSkipped
            if finished <> reported then
                reported <- finished
                progress
                    { Done = finished; Total = utterances.Length; Skipped = loadSkipped
                      AudioSeconds = audioSeconds; ElapsedSeconds = clock.Elapsed.TotalSeconds }
        let decode (batch: Loaded[]) =
            ct.ThrowIfCancellationRequested()
            let out = transcribe (batch |> Array.map _.Samples) ct
            if out.Texts.Length <> batch.Length || out.Predictors.Length <> batch.Length || out.Boundaries.Length <> batch.Length then
                invalidOp $"the batch transcriber returned {out.Texts.Length} texts, {out.Predictors.Length} counts and {out.Boundaries.Length} boundary rows for {batch.Length} utterances"
            encoderSeconds <- encoderSeconds + out.EncoderSeconds
            decodeSeconds <- decodeSeconds + out.DecodeSeconds
            batch |> Array.iteri (fun i l ->
                let seconds = float l.Samples.Length / float LogMel.SampleRate
                audioSeconds <- audioSeconds + seconds
                results.Add(
                    l.Index,
                    { Id = l.Utterance.Id
                      Source = AudioSource.name l.Utterance.Audio
                      Duration = seconds
                      Score = Scoring.utterance l.Utterance.Transcript out.Texts.[i]
                      Predictors = out.Predictors.[i]
                      Boundaries =
                        match l.Reference with
                        | None -> [||]
                        | Some reference ->
                            out.Boundaries.[i]
                            |> Array.map (fun p ->
                                let seed = BoundaryAccuracy.seedOf l.Utterance.Id p.Layer
                                { Layer = p.Layer; Utterances = 1
                                  Counts = BoundaryAccuracy.score BoundaryAccuracy.DefaultTolerance seed reference p }) }))
            report ()
        // While a pool is decoded, the next one loads in the background (Prefetch keeps `ahead` items in flight).
        let poolSize = options.BatchSize * 4
        Prefetch.ordered options.Workers poolSize ct load order
        |> Seq.chunkBySize poolSize
        |> Seq.iter (fun pool ->
            for entry in pool do
                match entry with
                | Error s ->
                    skipped.Add s
                    loadSkipped <- loadSkipped + 1
                | Ok _ -> ()
            pool
            |> Array.choose (function Ok l -> Some l | Error _ -> None)
            |> Seq.sortByDescending _.Samples.Length
            |> Seq.chunkBySize options.BatchSize
            |> Seq.iter decode)
        report ()
        let evaluated = results |> Seq.sortBy fst |> Seq.map snd |> Array.ofSeq
        { Corpus = corpus.Name
          Utterances = evaluated
          Skipped = Array.append corpus.Skipped (skipped.ToArray())
          Score = Scoring.corpus (evaluated |> Array.map _.Score)
          Predictors = Compression.summarize (evaluated |> Array.map _.Predictors)
          Boundaries = BoundaryAccuracy.summarize (evaluated |> Array.map _.Boundaries)
          Timing =
            { AudioSeconds = audioSeconds
              EncoderSeconds = encoderSeconds
              DecodeSeconds = decodeSeconds
              TotalSeconds = clock.Elapsed.TotalSeconds }
          Options = options }

    /// Evaluates a corpus with a model (stock Whisper, MagnetWhisper or any ISpeechModel) as `run` describes.
    let evaluate (model: ISpeechModel) (options: EvaluationOptions) (corpus: Corpus) (progress: EvaluationProgress -> unit) (ct: CancellationToken) : EvaluationResult =
        let tokenizer = Search.tokenizerOf model
        let decoding = decodingOptions options
        run (transcribeBatch model tokenizer decoding) options corpus progress ct
