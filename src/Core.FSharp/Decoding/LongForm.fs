namespace MagnetWhisper.Core.Decoding

open System
open System.Threading
open TorchSharp
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Text

/// What long-form transcription reports after each window of each audio.
type WindowProgress =
    { /// Index of the audio in the batch.
      Audio: int
      /// The segments this window added (possibly none).
      Segments: Segment list
      /// Seconds of the audio done so far.
      Done: float
      /// Length of the audio in seconds.
      Duration: float }

/// What long-form transcription reports before it decodes a window of an audio.
type WindowStart =
    { /// Index of the audio in the batch.
      Audio: int
      /// Where the window starts in the audio (seconds).
      Start: float
      /// Length of the audio in seconds.
      Duration: float }

/// Long-form transcription (openai/whisper's `transcribe`): the whole audio's log-mel (padded by 30 s of zeros) is
/// read window by window; each window is decoded with temperature fallback, split into segments at timestamp
/// pairs, and the next window starts at the last timestamp (or after the window when it ends in a lone timestamp or
/// has none). Several audios advance together, one window each per batched decode.
[<RequireQualifiedAccess>]
module LongForm =
    /// Mel frames per decoder timestamp step: 3000 / max_source_positions (2).
    let inputStride (model: ISpeechModel) =
        let frames = LogMel.NFrames
        let ctx = model.Config.MaxSourcePositions
        if frames % ctx <> 0 then invalidArg "model" $"{frames} mel frames are not a multiple of max_source_positions {ctx}"
        frames / ctx

    /// Seconds per timestamp step: inputStride · hop / rate (0.02).
    let timePrecision (stride: int) = float (stride * LogMel.HopLength) / float LogMel.SampleRate

    /// A segment before numbering: start, end (seconds) and tokens.
    type RawSegment = { Start: float; End: float; Tokens: int[] }

    /// Splits the tokens of a window that starts at mel frame `seek` and covers `segmentSize` frames into segments
    /// (whisper's rules): at every pair of consecutive timestamps; the new seek is the last timestamp of the last
    /// pair, or the window's end when the tokens end in a single timestamp; without a pair, one segment up to the
    /// last timestamp (or the window's end) and the next window follows this one.
    let split (timestampBegin: int) (stride: int) (seek: int) (segmentSize: int) (tokens: int[]) : RawSegment list * int =
        let precision = timePrecision stride
        let offset = float (seek * LogMel.HopLength) / float LogMel.SampleRate
        let isTs = tokens |> Array.map (fun t -> t >= timestampBegin)
        let n = tokens.Length
        let singleEnding = n >= 2 && not isTs.[n - 2] && isTs.[n - 1]
        let consecutive = [ for i in 0 .. n - 2 do if isTs.[i] && isTs.[i + 1] then i + 1 ]
        if not consecutive.IsEmpty then
            let slices = if singleEnding then consecutive @ [ n ] else consecutive
            let bounds = List.pairwise (0 :: slices)
            let segments =
                [ for a, b in bounds ->
                      let sliced = tokens.[a .. b - 1]
                      { Start = offset + float (sliced.[0] - timestampBegin) * precision
                        End = offset + float (sliced.[sliced.Length - 1] - timestampBegin) * precision
                        Tokens = sliced } ]
            let lastSlice = List.last slices
            let nextSeek = if singleEnding then seek + segmentSize else seek + (tokens.[lastSlice - 1] - timestampBegin) * stride
            segments, nextSeek
        else
            let duration =
                match Array.tryFindBack (fun t -> t >= timestampBegin) tokens with
                | Some last when last <> timestampBegin -> float (last - timestampBegin) * precision
                | _ -> float (segmentSize * LogMel.HopLength) / float LogMel.SampleRate
            [ { Start = offset; End = offset + duration; Tokens = tokens } ], seek + segmentSize

    /// whisper's log-mel of a whole audio: 16 kHz samples padded with 30 s of zeros → (n_mels, frames) float32 on
    /// device; the first ⌊n/160⌋ frames are content.
    let logMel (nMels: int) (device: torch.Device) (samples: float32[]) : Tensor =
        use _ = torch.NewDisposeScope()
        let padded = Array.zeroCreate<float32> (samples.Length + LogMel.NSamples)
        Array.blit samples 0 padded 0 samples.Length
        use audio = torch.tensor(padded, device = device)
        (LogMel.logMelOf (LogMel.melFilters nMels device) audio).MoveToOuterDisposeScope()

    type private FileState =
        { Mel: Tensor
          ContentFrames: int
          mutable Seek: int
          AllTokens: ResizeArray<int>
          mutable PromptResetSince: int
          Segments: ResizeArray<Segment>
          mutable Language: string
          InitialPromptLength: int
          Duration: float }

    /// Frames [seek, seek + size) of a whole-audio mel, zero-padded to 3000 frames, and its frame mask.
    let private window (mel: Tensor) (seek: int) (size: int) : Tensor * Tensor =
        let nMels = mel.shape.[0]
        let frames = int64 LogMel.NFrames
        let segment = mel.narrow(1L, int64 seek, int64 size)
        let padded = if int64 size = frames then segment else torch.nn.functional.pad (segment, [| 0L; frames - int64 size |])
        let mask = torch.zeros([| frames |], dtype = torch.float32, device = mel.device)
        mask.narrow(0L, 0L, int64 size).fill_((1.0).ToScalar()) |> ignore
        padded.reshape(nMels, frames), mask

    /// Transcribes a batch of 16 kHz mono audios; onWindowStart hears each window before it is decoded (a window
    /// can take minutes on a CPU), onWindow its new segments once they are made. Runs in inference mode, one
    /// dispose scope per window: nothing is left in the caller's scope.
    let transcribeWithProgress
        (model: ISpeechModel)
        (tokenizer: Tokenizer)
        (options: TranscribeOptions)
        (audios: float32[][])
        (onWindowStart: WindowStart -> unit)
        (onWindow: WindowProgress -> unit)
        (ct: CancellationToken)
        : Transcript[] =
        for t in options.Temperatures do
            DecodingOptions.validate (Fallback.optionsAt options.Decoding t) |> ignore
        if audios.Length = 0 then [||]
        else
        use _ = torch.inference_mode()
        use _ = torch.NewDisposeScope()
        let device = model.Device
        let nMels = model.Config.NumMelBins
        let stride = inputStride model
        let specials = tokenizer.Specials
        let frames = LogMel.NFrames
        let initialPrompt =
            options.InitialPrompt
            |> Option.filter (fun p -> not (String.IsNullOrEmpty p))
            |> Option.map (fun p -> tokenizer.Encode(" " + p.Trim()))
            |> Option.defaultValue [||]
        let states =
            audios
            |> Array.map (fun samples ->
                let mel = logMel nMels device samples
                let all = ResizeArray<int>(initialPrompt)
                { Mel = mel
                  ContentFrames = int mel.shape.[1] - frames
                  Seek = 0
                  AllTokens = all
                  PromptResetSince = 0
                  Segments = ResizeArray()
                  Language = "en"
                  InitialPromptLength = initialPrompt.Length
                  Duration = float samples.Length / float LogMel.SampleRate })
        // language: given, English for English-only models, else detected on the first 30 s of each audio
        match options.Decoding.Language with
        | Some l when Search.isMultilingual tokenizer ->
            let code = Languages.tryFind l |> Option.map _.Code |> Option.defaultValue l
            for s in states do s.Language <- code
        | Some _ -> ()
        | None when not (Search.isMultilingual tokenizer) -> ()
        | None ->
            use _ = torch.NewDisposeScope()
            let mels = states |> Array.map (fun s -> s.Mel.narrow(1L, 0L, int64 frames))
            let masks = states |> Array.map (fun s -> snd (window s.Mel 0 (min frames (max 1 s.ContentFrames))))
            let audio = model.Encode(torch.stack(mels, 0L), Some(torch.stack(masks, 0L)))
            let detected = Search.detectLanguage model tokenizer audio
            states |> Array.iteri (fun i s -> s.Language <- fst detected.[i])
        let precision = timePrecision stride
        let mutable active = states |> Array.indexed |> Array.filter (fun (_, s) -> s.Seek < s.ContentFrames)
        while active.Length > 0 do
            ct.ThrowIfCancellationRequested()
            for index, s in active do
                onWindowStart { Audio = index; Start = float s.Seek * precision / float stride; Duration = s.Duration }
            (use _ = torch.NewDisposeScope()
             let sizes = active |> Array.map (fun (_, s) -> min frames (s.ContentFrames - s.Seek))
             let windows = Array.map2 (fun (_, s) size -> window s.Mel s.Seek size) active sizes
             let audio = model.Encode(torch.stack(Array.map fst windows, 0L), Some(torch.stack(Array.map snd windows, 0L)))
             let rows =
                 active
                 |> Array.map (fun (_, s) ->
                     { Prompt = Some(s.AllTokens.GetRange(s.PromptResetSince, s.AllTokens.Count - s.PromptResetSince).ToArray())
                       Language = Some s.Language
                       Seed = int64 s.Seek })
             let results = Fallback.decode model tokenizer options audio rows ct
             for k in 0 .. active.Length - 1 do
                 let index, s = active.[k]
                 let r = results.[k]
                 let size = sizes.[k]
                 let silent =
                     match options.NoSpeechThreshold with
                     | Some t ->
                         r.NoSpeechProb > t && not (options.LogProbThreshold |> Option.exists (fun lt -> r.AvgLogProb > lt))
                     | None -> false
                 let added =
                     if silent then
                         s.Seek <- s.Seek + size
                         []
                     else
                         let raw, nextSeek = split specials.TimestampBegin stride s.Seek size r.Tokens
                         let made =
                             raw
                             |> List.mapi (fun i seg ->
                                 let text = tokenizer.Decode(seg.Tokens |> Array.filter (fun t -> t < specials.EndOfText), SkipAll)
                                 let cleared = seg.Start = seg.End || text.Trim() = ""
                                 { Id = s.Segments.Count + i
                                   Seek = s.Seek
                                   Start = seg.Start
                                   End = seg.End
                                   Text = if cleared then "" else text
                                   Tokens = if cleared then [||] else seg.Tokens
                                   Temperature = r.Temperature
                                   AvgLogProb = r.AvgLogProb
                                   CompressionRatio = r.CompressionRatio
                                   NoSpeechProb = r.NoSpeechProb })
                         s.Segments.AddRange made
                         for seg in made do s.AllTokens.AddRange seg.Tokens
                         if not options.ConditionOnPreviousText || r.Temperature > 0.5 then
                             s.PromptResetSince <- s.AllTokens.Count
                         s.Seek <- nextSeek
                         made
                 let doneSeconds = min s.Duration (float (min s.Seek s.ContentFrames) * precision / float stride)
                 onWindow { Audio = index; Segments = added; Done = doneSeconds; Duration = s.Duration })
            active <- active |> Array.filter (fun (_, s) -> s.Seek < s.ContentFrames)
        states
        |> Array.map (fun s ->
            let tokens = s.AllTokens.GetRange(s.InitialPromptLength, s.AllTokens.Count - s.InitialPromptLength)
            { Text = tokenizer.Decode(tokens, SkipAll)
              Segments = List.ofSeq s.Segments
              Language = s.Language })

    /// Transcribes a batch of 16 kHz mono audios; onWindow hears each window's new segments as they are made
    /// (see transcribeWithProgress).
    let transcribe
        (model: ISpeechModel)
        (tokenizer: Tokenizer)
        (options: TranscribeOptions)
        (audios: float32[][])
        (onWindow: WindowProgress -> unit)
        (ct: CancellationToken)
        : Transcript[] =
        transcribeWithProgress model tokenizer options audios ignore onWindow ct
