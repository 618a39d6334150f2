/// `magnet transcribe AUDIO... --model DIR`: openai/whisper's command line over a Hugging Face Whisper folder or a
/// MagnetWhisper folder (then also the compression each boundary predictor achieved).
module MagnetWhisper.Cli.Commands.Transcribe

open System
open System.Diagnostics
open System.Globalization
open System.IO
open System.Threading
open Argu
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Decoding
open MagnetWhisper.Core.Text
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Cli

type TranscribeArgs =
    | [<MainCommand; Mandatory>] Audio of paths: string list
    | [<Mandatory>] Model of dir: string
    | Device of name: string
    | Language of name: string
    | Task of task: string
    | Beam_Size of count: int
    | Best_Of of count: int
    | Patience of value: float
    | Length_Penalty of alpha: float
    | Temperature of value: float
    | Temperature_Increment_On_Fallback of step: string
    | Compression_Ratio_Threshold of value: string
    | Logprob_Threshold of value: string
    | No_Speech_Threshold of value: string
    | Condition_On_Previous_Text of enabled: bool
    | Without_Timestamps
    | Initial_Prompt of text: string
    | Suppress_Tokens of ids: string
    | Sample_Len of count: int
    | Seed of seed: int64
    | [<AltCommandLine("-f")>] Output_Format of format: string
    | [<AltCommandLine("-o")>] Output_Dir of dir: string
    | Batch_Size of count: int
    | Threads of count: int
    | No_Progress
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Audio _ -> "audio files (WAV and FLAC natively; other formats need ffmpeg)."
            | Model _ -> "Hugging Face Whisper folder (config.json + model.safetensors); the tokenizer follows its vocabulary size."
            | Device _ -> "auto (default), cpu, cuda or cuda:N."
            | Language _ -> "language spoken (code or name, e.g. en or english); detected from the first 30 s when omitted."
            | Task _ -> "transcribe (default) or translate (into English)."
            | Beam_Size _ -> "beams of beam search at temperature 0 (default 5; 0 = greedy)."
            | Best_Of _ -> "candidates sampled at temperatures above 0 (default 5)."
            | Patience _ -> "beam-search patience (default 1.0)."
            | Length_Penalty _ -> "length penalty alpha in [0, 1] (default: divide by the length)."
            | Temperature _ -> "first sampling temperature (default 0)."
            | Temperature_Increment_On_Fallback _ -> "temperature step of the fallback (default 0.2; none = no fallback)."
            | Compression_Ratio_Threshold _ -> "gzip compression ratio above which a window is re-decoded (default 2.4; none)."
            | Logprob_Threshold _ -> "average log-probability below which a window is re-decoded (default -1.0; none)."
            | No_Speech_Threshold _ -> "no-speech probability above which a failed window is silence (default 0.6; none)."
            | Condition_On_Previous_Text _ -> "prompt each window with the previous text (default true)."
            | Without_Timestamps -> "text only: no timestamp tokens (one segment per 30 s window)."
            | Initial_Prompt _ -> "text to prompt the first window with."
            | Suppress_Tokens _ -> "comma-separated token ids to suppress; -1 = non-speech symbols (default -1)."
            | Sample_Len _ -> "most tokens per window (default 224)."
            | Seed _ -> "seed of temperature sampling (default 0)."
            | Output_Format _ -> "txt, vtt, srt, tsv, json or all (default all)."
            | Output_Dir _ -> "directory for the output files (default .)."
            | Batch_Size _ -> "files decoded together (default 1)."
            | Threads _ -> "libtorch CPU threads (default: libtorch's choice)."
            | No_Progress -> "no progress on stderr."

/// "none" → None, else a number.
let private optionalFloat (name: string) (text: string) : float option =
    match text.Trim().ToLowerInvariant() with
    | "none" -> None
    | s ->
        match Double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture) with
        | true, v -> Some v
        | _ -> invalidArg name $"--{name} expects a number or none, got '{text}'"

/// The options of the command line (openai/whisper's CLI defaults: beam 5, best of 5, fallback 0 … 1 by 0.2).
let options (args: ParseResults<TranscribeArgs>) : TranscribeOptions =
    let task =
        match args.GetResult(Task, defaultValue = "transcribe").Trim().ToLowerInvariant() with
        | "transcribe" -> Transcribe
        | "translate" -> Translate
        | other -> invalidArg "task" $"--task must be transcribe or translate, got '{other}'"
    let language =
        args.TryGetResult Language
        |> Option.map (fun l ->
            match Languages.tryFind l with
            | Some lang -> lang.Code
            | None -> invalidArg "language" $"unknown language '{l}' (use a code such as en or a name such as english)")
    let beam = args.GetResult(Beam_Size, defaultValue = 5)
    let suppress =
        args.GetResult(Suppress_Tokens, defaultValue = "-1").Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
        |> Array.map (fun s ->
            match Int32.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture) with
            | true, v -> v
            | _ -> invalidArg "suppress-tokens" $"--suppress-tokens expects comma-separated integers, got '{s}'")
        |> List.ofArray
    let temperature = args.GetResult(Temperature, defaultValue = 0.0)
    let increment = optionalFloat "temperature-increment-on-fallback" (args.GetResult(Temperature_Increment_On_Fallback, defaultValue = "0.2"))
    let decoding =
        { DecodingOptions.defaults with
            Task = task
            Language = language
            BeamSize = if beam > 0 then Some beam else None
            BestOf = Some(args.GetResult(Best_Of, defaultValue = 5))
            Patience = args.TryGetResult Patience
            LengthPenalty = args.TryGetResult Length_Penalty
            SuppressTokens = suppress
            WithoutTimestamps = args.Contains Without_Timestamps
            SampleLen = args.TryGetResult Sample_Len
            Seed = args.GetResult(Seed, defaultValue = 0L) }
    if decoding.Patience.IsSome && decoding.BeamSize.IsNone then invalidArg "patience" "--patience needs --beam-size > 0"
    { Decoding = decoding
      Temperatures = TranscribeOptions.temperatureSchedule temperature increment
      CompressionRatioThreshold = optionalFloat "compression-ratio-threshold" (args.GetResult(Compression_Ratio_Threshold, defaultValue = "2.4"))
      LogProbThreshold = optionalFloat "logprob-threshold" (args.GetResult(Logprob_Threshold, defaultValue = "-1.0"))
      NoSpeechThreshold = optionalFloat "no-speech-threshold" (args.GetResult(No_Speech_Threshold, defaultValue = "0.6"))
      ConditionOnPreviousText = args.GetResult(Condition_On_Previous_Text, defaultValue = true)
      InitialPrompt = args.TryGetResult Initial_Prompt }

/// "layer 3: kept 24.1% (4.1×)" for each predictor of a MagnetWhisper model on the file's first 30 s window.
let private compressionReport (magnet: MagnetWhisper.Core.Magnet.MagnetWhisperModel) (path: string) : string =
    use _ = torch.NewDisposeScope()
    let samples = MagnetWhisper.Core.Audio.Audio.load path
    use features = MagnetWhisper.Core.Audio.LogMel.extract magnet.Config.NumMelBins magnet.Device [ samples ]
    use encoded = magnet.Encode(features.Mel, Some features.Mask)
    encoded.Compression
    |> List.map (fun (layer, kept) -> $"layer {layer}: kept {100.0 * kept:F1}%% ({1.0 / max kept 1e-9:F1}×)")
    |> String.concat ", "

/// Transcribes every file with a loaded model; returns the exit code.
let private transcribeAll
    (model: ISpeechModel)
    (options: TranscribeOptions)
    (paths: string list)
    (formats: OutputFormat list)
    (outputDir: string)
    (batchSize: int)
    (quiet: bool)
    : int =
    let live = not quiet && not Console.IsErrorRedirected
    let transcriber = Transcriber(model)
    let options =
        if Search.isMultilingual transcriber.Tokenizer then options
        else
            match options.Decoding.Language with
            | Some l when l <> "en" ->
                Output.progress quiet $"this is an English-only model but --language is '{l}'; using English instead"
            | _ -> ()
            { options with Decoding = { options.Decoding with Language = Some "en" } }
    let sinceLast = Stopwatch.StartNew()
    let progress (p: FileProgress) =
        if not quiet then
            let name = Path.GetFileName p.Path
            let line = $"{name}: {p.Done:F1}/{p.Duration:F1} s"
            if live then eprintf "\r%s\x1b[K" line else eprintfn "%s" line
    let mutable failures = 0
    let fail (path: string) (e: exn) =
        failures <- failures + 1
        let message = match e with :? AggregateException as a when not (isNull a.InnerException) -> a.InnerException.Message | _ -> e.Message
        Output.error $"{path}: {message}"
    let onFile (path: string) (result: Result<Transcript, exn>) =
        if live then eprintf "\r\x1b[K"
        match result with
        | Ok t ->
            try
                let written = Writers.write outputDir path formats t
                let seconds = sinceLast.Elapsed.TotalSeconds
                sinceLast.Restart()
                let outputs = String.Join(", ", written)
                Output.progress quiet $"{path}: language {t.Language}, {t.Segments.Length} segments in {seconds:F1} s → {outputs}"
                let text = t.Text.Trim()
                if paths.Length = 1 then printfn "%s" text else printfn "%s: %s" path text
                match model with
                | :? MagnetWhisper.Core.Magnet.MagnetWhisperModel as magnet ->
                    Output.progress quiet $"{path}: compression {compressionReport magnet path}"
                | _ -> ()
            with
            | :? IOException
            | :? UnauthorizedAccessException as e -> fail path e
        | Error e -> fail path e
    transcriber.TranscribeFiles(paths, options, batchSize, progress, onFile, CancellationToken.None) |> ignore
    if failures > 0 then
        Output.error $"{failures} of {paths.Length} files failed"
        1
    else 0

/// Runs the command: outputs in -o DIR named after each audio file, each transcript's text on stdout, progress and
/// errors on stderr; exit code 1 when a file failed, 2 when the arguments or the model are wrong.
let run (args: ParseResults<TranscribeArgs>) : int =
    let paths = args.GetResult Audio
    if paths.IsEmpty then invalidArg "audio" "give at least one audio file"
    let formats = Writers.parseFormat (args.GetResult(Output_Format, defaultValue = "all"))
    let outputDir = args.GetResult(Output_Dir, defaultValue = ".")
    let batchSize = args.GetResult(Batch_Size, defaultValue = 1)
    if batchSize < 1 then invalidArg "batch-size" $"--batch-size must be at least 1, got {batchSize}"
    args.TryGetResult Threads |> Option.iter (fun n ->
        if n < 1 then invalidArg "threads" $"--threads must be at least 1, got {n}"
        torch.set_num_threads n)
    let quiet = args.Contains No_Progress
    let device = Device.parse (args.GetResult(Device, defaultValue = "auto"))
    let modelDir = args.GetResult Model
    let options = options args
    Output.progress quiet $"loading {modelDir} on {device}"
    let loaded =
        try
            if MagnetWhisper.Core.Magnet.MagnetFormat.isMagnetFolder modelDir then
                Ok(MagnetWhisper.Core.Magnet.MagnetFormat.load modelDir device torch.float32 :> ISpeechModel)
            else Ok(WhisperModel.FromPretrained(modelDir, device, torch.float32) :> ISpeechModel)
        with
        | :? IOException
        | :? InvalidDataException
        | :? UnauthorizedAccessException as e -> Error e.Message
    match loaded with
    | Error message ->
        Output.error message
        2
    | Ok model ->
        use _ = model :?> IDisposable
        transcribeAll model options paths formats outputDir batchSize quiet
