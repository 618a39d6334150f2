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

/// "none" → None, else a finite number.
let private optionalFloat (flag: string) (text: string) : float option =
    match text.Trim().ToLowerInvariant() with
    | "none" -> None
    | s ->
        match Double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture) with
        | true, v when Double.IsFinite v -> Some v
        | _ -> invalidArg flag $"{flag} expects a number or none, got '{text}'"

/// The language code of a --language value (a code or a name); a usage error naming the flag otherwise.
let languageCode (text: string) : string =
    match Languages.tryFind text with
    | Some lang -> lang.Code
    | None -> invalidArg "--language" $"--language: unknown language '{text}' (use a code such as en or a name such as english)"

/// The options of the command line (openai/whisper's CLI defaults: beam 5, best of 5, fallback 0 … 1 by 0.2),
/// checked against the model's config (vocabulary size, decoder positions); errors name the flag.
let options (config: MagnetWhisper.Core.Whisper.WhisperConfig) (args: ParseResults<TranscribeArgs>) : TranscribeOptions =
    let task =
        match args.GetResult(Task, defaultValue = "transcribe").Trim().ToLowerInvariant() with
        | "transcribe" -> Transcribe
        | "translate" -> Translate
        | other -> invalidArg "--task" $"--task must be transcribe or translate, got '{other}'"
    let language = args.TryGetResult Language |> Option.map languageCode
    let beam = args.GetResult(Beam_Size, defaultValue = 5)
    Args.require "--beam-size" (beam >= 0) $"must be 0 (greedy) or more, got {beam}"
    let bestOf = args.GetResult(Best_Of, defaultValue = 5)
    Args.require "--best-of" (bestOf >= 1) $"must be at least 1, got {bestOf}"
    let patience = args.TryGetResult Patience
    patience |> Option.iter (fun p ->
        Args.require "--patience" (beam > 0) "needs --beam-size above 0"
        Args.require "--patience" (Double.IsFinite p && Math.Round(float beam * p, MidpointRounding.ToEven) >= 1.0)
            $"{p} with --beam-size {beam} collects no finished beam: give a positive value with round(beam-size × patience) ≥ 1")
    let lengthPenalty = args.TryGetResult Length_Penalty
    lengthPenalty |> Option.iter (fun a ->
        Args.require "--length-penalty" (a >= 0.0 && a <= 1.0) $"must be between 0 and 1, got {a}")
    let vocab = config.VocabSize
    let suppress =
        args.GetResult(Suppress_Tokens, defaultValue = "-1").Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
        |> Array.map (fun s ->
            match Int32.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture) with
            | true, v when v = -1 || (v >= 0 && v < vocab) -> v
            | true, v -> invalidArg "--suppress-tokens" $"--suppress-tokens: token {v} is not in this model's vocabulary (ids 0 to {vocab - 1}, or -1 for the non-speech symbols)"
            | _ -> invalidArg "--suppress-tokens" $"--suppress-tokens expects comma-separated token ids, got '{s}'")
        |> List.ofArray
    // Half the decoder positions hold the previous-text prompt (whisper's n_text_ctx // 2), the other half the sample.
    let maxSample = config.MaxTargetPositions / 2
    let sampleLen = args.TryGetResult Sample_Len
    sampleLen |> Option.iter (fun n ->
        Args.require "--sample-len" (n >= 1 && n <= maxSample)
            $"must be between 1 and {maxSample} (half of this model's {config.MaxTargetPositions} decoder positions), got {n}")
    let temperature = args.GetResult(Temperature, defaultValue = 0.0)
    Args.require "--temperature" (temperature >= 0.0 && Double.IsFinite temperature) $"must be 0 or more, got {temperature}"
    let incrementFlag = "--temperature-increment-on-fallback"
    let increment = optionalFloat incrementFlag (args.GetResult(Temperature_Increment_On_Fallback, defaultValue = "0.2"))
    increment |> Option.iter (fun step ->
        Args.require incrementFlag (step > 0.0) $"must be above 0 (or none), got {step}"
        Args.require "--temperature" (temperature <= 1.0)
            $"{temperature} is above 1.0, where the fallback schedule ends: give {incrementFlag} none to sample at {temperature}")
    let decoding =
        { DecodingOptions.defaults with
            Task = task
            Language = language
            BeamSize = if beam > 0 then Some beam else None
            BestOf = Some bestOf
            Patience = patience
            LengthPenalty = lengthPenalty
            SuppressTokens = suppress
            WithoutTimestamps = args.Contains Without_Timestamps
            SampleLen = sampleLen
            Seed = args.GetResult(Seed, defaultValue = 0L) }
    { Decoding = decoding
      Temperatures = TranscribeOptions.temperatureSchedule temperature increment
      CompressionRatioThreshold = optionalFloat "--compression-ratio-threshold" (args.GetResult(Compression_Ratio_Threshold, defaultValue = "2.4"))
      LogProbThreshold = optionalFloat "--logprob-threshold" (args.GetResult(Logprob_Threshold, defaultValue = "-1.0"))
      NoSpeechThreshold = optionalFloat "--no-speech-threshold" (args.GetResult(No_Speech_Threshold, defaultValue = "0.6"))
      ConditionOnPreviousText = args.GetResult(Condition_On_Previous_Text, defaultValue = true)
      InitialPrompt = args.TryGetResult Initial_Prompt }

/// Makes sure the output folder exists (created like whisper's makedirs) and takes files, before any decoding:
/// a path that is a file, cannot be created or is read-only is a usage error naming --output-dir.
let checkOutputDir (dir: string) : unit =
    let flag = Args.typed [ "-o"; "--output-dir" ]
    if File.Exists dir then invalidArg flag $"{flag} {dir} is a file, not a folder"
    try
        Directory.CreateDirectory dir |> ignore
        let probe = Path.Combine(dir, $".magnet-write-test-{Guid.NewGuid():N}")
        File.WriteAllBytes(probe, [||])
        File.Delete probe
    with
    | :? IOException
    | :? UnauthorizedAccessException as e -> invalidArg flag $"{flag} {dir} cannot be written: {e.Message}"

/// The configuration of the --model folder, before loading it: a missing folder or an unreadable config.json is a
/// usage error naming --model and the folder as typed.
let modelConfig (modelDir: string) : WhisperConfig =
    if not (Directory.Exists modelDir) then raise (DirectoryNotFoundException $"--model {modelDir}: folder not found")
    try Checkpoint.ReadConfig modelDir
    with
    | :? IOException
    | :? InvalidDataException as e -> invalidArg "--model" $"--model {modelDir}: {e.Message}"

/// Loads a MagnetWhisper folder or a Hugging Face Whisper folder; Error with the message when it cannot be loaded.
let loadModel (modelDir: string) (device: torch.Device) : Result<ISpeechModel, string> =
    try
        if MagnetWhisper.Core.Magnet.MagnetFormat.isMagnetFolder modelDir then
            Ok(MagnetWhisper.Core.Magnet.MagnetFormat.load modelDir device torch.float32 :> ISpeechModel)
        else Ok(WhisperModel.FromPretrained(modelDir, device, torch.float32) :> ISpeechModel)
    with
    | :? IOException
    | :? InvalidDataException
    | :? UnauthorizedAccessException as e -> Error e.Message

/// "layer 3: kept 24.1% (4.1×)" for each predictor of a MagnetWhisper model on the file's first 30 s window.
let private compressionReport (magnet: MagnetWhisper.Core.Magnet.MagnetWhisperModel) (path: string) : string =
    use _ = torch.NewDisposeScope()
    let samples = MagnetWhisper.Core.Audio.Audio.load path
    use features = MagnetWhisper.Core.Audio.LogMel.extract magnet.Config.NumMelBins magnet.Device [ samples ]
    use encoded = magnet.Encode(features.Mel, Some features.Mask)
    encoded.Compression
    |> List.map (fun (layer, kept) -> $"layer {layer}: kept {100.0 * kept:F1}%% ({1.0 / max kept 1e-9:F1}×)")
    |> String.concat ", "

/// Transcribes every file with a loaded model; returns the exit code (1 when a file failed).
let private transcribeAll
    (model: ISpeechModel)
    (options: TranscribeOptions)
    (paths: string list)
    (formats: OutputFormat list)
    (outputDir: string)
    (batchSize: int)
    (quiet: bool)
    : int =
    use reporter = new Progress.Reporter(not Console.IsErrorRedirected, quiet, paths.Length > 1)
    let transcriber = Transcriber(model)
    let options =
        if Search.isMultilingual transcriber.Tokenizer then options
        else
            match options.Decoding.Language with
            | Some l when l <> "en" -> reporter.Note $"this is an English-only model but --language is '{l}'; using English instead"
            | _ -> ()
            { options with Decoding = { options.Decoding with Language = Some "en" } }
    let sinceLast = Stopwatch.StartNew()
    let mutable failures = 0
    let mutable finished = 0
    let fail (path: string) (e: exn) =
        failures <- failures + 1
        let e = match e with :? AggregateException as a when not (isNull a.InnerException) -> a.InnerException | e -> e
        // Audio errors already start with the path.
        reporter.Error(if e.Message.StartsWith path then e.Message else $"{path}: {e.Message}")
    let onFile (path: string) (result: Result<Transcript, exn>) =
        reporter.Idle()
        finished <- finished + 1
        match result with
        | Ok t ->
            try
                let written = Writers.write outputDir path formats t
                let seconds = sinceLast.Elapsed.TotalSeconds
                let outputs = String.Join(", ", written)
                reporter.Note $"{path}: language {t.Language}, {t.Segments.Length} segments in {seconds:F1} s → {outputs}"
                let text = t.Text.Trim()
                reporter.Out(if paths.Length = 1 then text else $"{path}: {text}")
                match model with
                | :? MagnetWhisper.Core.Magnet.MagnetWhisperModel as magnet ->
                    reporter.Note $"{path}: compression {compressionReport magnet path}"
                | _ -> ()
            with
            | :? IOException
            | :? UnauthorizedAccessException as e -> fail path e
        | Error e -> fail path e
        sinceLast.Restart()
        // With one file per batch the next one starts now; a batch's first file names the bar until a window ends.
        if finished % batchSize = 0 && finished < paths.Length then reporter.Begin(List.item finished paths)
    reporter.Begin(List.head paths)
    transcriber.TranscribeFiles(paths, options, batchSize, reporter.WindowStart, reporter.Window, onFile, CancellationToken.None) |> ignore
    reporter.Idle()
    if failures > 0 then
        Output.error $"{failures} of {paths.Length} files failed"
        1
    else 0

/// Runs the command: outputs in -o DIR named after each audio file, each transcript's text on stdout, segments and
/// progress and errors on stderr. Every flag and the output folder are checked before the model is loaded; exit
/// code 0 on success, 1 when a file failed, 2 when the arguments, the output folder or the model are wrong.
let run (args: ParseResults<TranscribeArgs>) : int =
    let paths = args.GetResult Audio
    if paths.IsEmpty then invalidArg "audio" "give at least one audio file"
    let formats = Args.value (Args.typed [ "-f"; "--output-format" ]) (fun () -> Writers.parseFormat (args.GetResult(Output_Format, defaultValue = "all")))
    let outputDir = args.GetResult(Output_Dir, defaultValue = ".")
    let batchSize = args.GetResult(Batch_Size, defaultValue = 1)
    Args.require "--batch-size" (batchSize >= 1) $"must be at least 1, got {batchSize}"
    let threads = args.TryGetResult Threads
    threads |> Option.iter (fun n -> Args.require "--threads" (n >= 1) $"must be at least 1, got {n}")
    let quiet = args.Contains No_Progress
    let device = Args.value "--device" (fun () -> Device.parse (args.GetResult(Device, defaultValue = "auto")))
    let modelDir = args.GetResult Model
    let config = modelConfig modelDir
    let options = options config args
    checkOutputDir outputDir
    threads |> Option.iter torch.set_num_threads
    Output.progress quiet $"loading {modelDir} on {device}"
    match loadModel modelDir device with
    | Error message ->
        Output.error message
        2
    | Ok model ->
        use _ = model :?> IDisposable
        transcribeAll model options paths formats outputDir batchSize quiet
