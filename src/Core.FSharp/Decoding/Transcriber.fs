namespace MagnetWhisper.Core.Decoding

open System
open System.Threading
open TorchSharp
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Text
open MagnetWhisper.Core.Whisper

/// Progress of a file being transcribed.
type FileProgress =
    { /// The file.
      Path: string
      /// The segments its latest window added.
      Segments: Segment list
      /// Seconds done.
      Done: float
      /// Its length in seconds.
      Duration: float }

/// Transcription with any ISpeechModel (stock Whisper or MagnetWhisper): audio samples or files in, transcripts out.
/// The tokenizer is chosen from the model's vocabulary size. Not thread-safe: one call at a time per instance
/// (dispose scopes and inference mode are per thread, so each call runs entirely on its calling thread).
[<Sealed>]
type Transcriber(model: ISpeechModel) =
    let tokenizer = Search.tokenizerOf model

    /// The model.
    member _.Model = model
    /// The tokenizer of the model's vocabulary.
    member _.Tokenizer = tokenizer

    /// Transcribes a batch of 16 kHz mono audios together (see LongForm.transcribe); onWindow hears new segments.
    member _.Transcribe(audios: float32[][], options: TranscribeOptions, onWindow: WindowProgress -> unit, ct: CancellationToken) : Transcript[] =
        LongForm.transcribe model tokenizer options audios onWindow ct

    /// Transcribes a batch of 16 kHz mono audios together.
    member this.Transcribe(audios: float32[][], options: TranscribeOptions) : Transcript[] =
        this.Transcribe(audios, options, ignore, CancellationToken.None)

    /// Transcribes one 16 kHz mono audio.
    member this.Transcribe(samples: float32[], options: TranscribeOptions) : Transcript =
        (this.Transcribe([| samples |], options)).[0]

    /// Decodes log-mel windows (B, n_mels, 3000) (openai/whisper's `decode`).
    member _.Decode(mel: Tensor, options: DecodingOptions) : DecodingResult[] = Search.decodeMel model options mel None

    /// Language code and probabilities of each 30-s log-mel window (B, n_mels, 3000).
    member _.DetectLanguage(mel: Tensor) : (string * Map<string, float>)[] =
        use _ = torch.inference_mode()
        use _ = torch.NewDisposeScope()
        Search.detectLanguage model tokenizer (model.Encode(mel, None))

    /// Transcribes files batchSize at a time (audio loaded with Audio.load). A file that cannot be loaded or
    /// decoded (or holds no samples) gets an Error and the others go on (a failed batch is retried file by file);
    /// onWindowStart hears every window before it is decoded (no segments; Done is where it starts), onProgress
    /// every window once decoded, onFile every finished file (in input order within a batch). Cancellation
    /// propagates.
    member this.TranscribeFiles
        (
            paths: string list,
            options: TranscribeOptions,
            batchSize: int,
            onWindowStart: FileProgress -> unit,
            onProgress: FileProgress -> unit,
            onFile: string -> Result<Transcript, exn> -> unit,
            ct: CancellationToken
        ) : (string * Result<Transcript, exn>) list =
        if batchSize < 1 then invalidArg "batchSize" $"the batch size must be at least 1, got {batchSize}"
        let isCancel (e: exn) = e :? OperationCanceledException
        let loaded =
            paths
            |> List.map (fun p ->
                p,
                lazy
                    (try
                        let samples = Audio.load p
                        // An empty file would "succeed" with an empty transcript; say so instead.
                        if samples.Length = 0 then Error(IO.InvalidDataException $"{p}: the file holds no audio samples" :> exn)
                        else Ok samples
                     with e -> Error e))
        let run (batch: (string * float32[]) list) =
            let paths = batch |> List.map fst |> Array.ofList
            let progress (w: WindowProgress) =
                onProgress { Path = paths.[w.Audio]; Segments = w.Segments; Done = w.Done; Duration = w.Duration }
            let starting (w: WindowStart) =
                onWindowStart { Path = paths.[w.Audio]; Segments = []; Done = w.Start; Duration = w.Duration }
            LongForm.transcribeWithProgress model tokenizer options (batch |> List.map snd |> Array.ofList) starting progress ct
        [ for chunk in List.chunkBySize batchSize loaded do
              ct.ThrowIfCancellationRequested()
              let outcomes = chunk |> List.map (fun (p, audio) -> p, audio.Force()) |> Array.ofList
              let ready = outcomes |> Array.indexed |> Array.choose (fun (i, (p, r)) -> match r with Ok a -> Some(i, (p, a)) | Error _ -> None)
              let decoded: Result<Transcript, exn>[] =
                  if ready.Length = 0 then [||]
                  else
                      try
                          run (ready |> Array.map snd |> List.ofArray) |> Array.map Ok
                      with e when not (isCancel e) && ready.Length > 1 ->
                          ready
                          |> Array.map (fun (_, (p, a)) ->
                              try Ok (run [ p, a ]).[0]
                              with e when not (isCancel e) -> Error e)
              for i, (p, r) in Array.indexed outcomes do
                  let result =
                      match r with
                      | Error e -> Error e
                      | Ok _ -> decoded.[ready |> Array.findIndex (fun (j, _) -> j = i)]
                  onFile p result
                  yield p, result ]

    /// Transcribes files batchSize at a time (see the overload with onWindowStart).
    member this.TranscribeFiles
        (
            paths: string list,
            options: TranscribeOptions,
            batchSize: int,
            onProgress: FileProgress -> unit,
            onFile: string -> Result<Transcript, exn> -> unit,
            ct: CancellationToken
        ) : (string * Result<Transcript, exn>) list =
        this.TranscribeFiles(paths, options, batchSize, ignore, onProgress, onFile, ct)

/// Functions over Transcriber.
[<RequireQualifiedAccess>]
module Transcriber =
    /// Loads a Hugging Face Whisper folder onto a device ("auto", "cpu", "cuda", "cuda:N") as a speech model.
    let loadWhisper (dir: string) (device: string) : WhisperModel =
        WhisperModel.FromPretrained(dir, MagnetWhisper.Core.Device.parse device, torch.float32)

    /// Transcribes one 16 kHz mono audio with a model.
    let transcribe (model: ISpeechModel) (options: TranscribeOptions) (samples: float32[]) : Transcript =
        Transcriber(model).Transcribe(samples, options)

    /// Transcribes one audio file with a model.
    let transcribeFile (model: ISpeechModel) (options: TranscribeOptions) (path: string) : Transcript =
        Transcriber(model).Transcribe(Audio.load path, options)
