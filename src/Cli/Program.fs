/// The `magnet` command line: one Argu union per command, one file per command.
module MagnetWhisper.Cli.Program

open System
open System.Reflection
open Argu
open MagnetWhisper.Cli
open MagnetWhisper.Cli.Commands

[<HelpFlags("--help", "-h")>]
type Command =
    | [<CliPrefix(CliPrefix.None)>] Doctor of ParseResults<Doctor.DoctorArgs>
    | [<CliPrefix(CliPrefix.None)>] Demo of ParseResults<Demo.DemoArgs>
    | [<CliPrefix(CliPrefix.None)>] Bench of ParseResults<Bench.BenchArgs>
    | [<CliPrefix(CliPrefix.None)>] Features of ParseResults<Features.FeaturesArgs>
    | [<CliPrefix(CliPrefix.None)>] Convert of ParseResults<Convert.ConvertArgs>
    | [<CliPrefix(CliPrefix.None)>] Inspect of ParseResults<Inspect.InspectArgs>
    | [<CliPrefix(CliPrefix.None)>] Transcribe of ParseResults<Transcribe.TranscribeArgs>
    | [<CliPrefix(CliPrefix.None)>] Visualize of ParseResults<Visualize.VisualizeArgs>
    | [<CliPrefix(CliPrefix.None)>] Eval of ParseResults<Eval.EvalArgs>
    | [<CliPrefix(CliPrefix.None)>] Corpus of ParseResults<Corpus.CorpusArgs>
    | [<CliPrefix(CliPrefix.None)>] Train of ParseResults<Train.TrainArgs>
    | [<CliPrefix(CliPrefix.None)>] Grpo of ParseResults<Grpo.GrpoArgs>
    | [<CliPrefix(CliPrefix.None)>] Report of ParseResults<Report.ReportArgs>
    | [<AltCommandLine("-V")>] Version
    interface IArgParserTemplate with
        member c.Usage =
            match c with
            | Doctor _ -> "report TorchSharp, libtorch, the libstdc++ remedy, devices and optional tools."
            | Demo _ -> "the whole experiment on the built-in corpus and base model: evaluate, add a predictor and fine-tune, evaluate and time both; 'demo toy' for the tensor core alone."
            | Bench _ -> "measure speed: downsample, encoder, transcribe."
            | Features _ -> "write Whisper's log-mel features (and frame mask) of an audio file as .npy."
            | Convert _ -> "convert a Whisper folder (with predictor options) or import an original checkpoint into a MagnetWhisper folder."
            | Inspect _ -> "print a Whisper or MagnetWhisper folder's structure, predictor slots and parameter counts."
            | Transcribe _ -> "transcribe or translate audio files with a Whisper checkpoint (txt, vtt, srt, tsv, json)."
            | Visualize _ -> "write an HTML page of one audio's log-mel, boundary probabilities and boundaries, phones and transcript."
            | Corpus _ -> "make corpora: synth speaks generated sentences with espeak-ng, festival and flite."
            | Train _ -> "train a model (supervised): from a config file and flags into a run folder; --resume continues one."
            | Grpo _ -> "train the boundary predictors by GRPO (reinforcement learning over sampled boundaries, docs/GRPO.md)."
            | Eval _ -> "evaluate a Whisper or MagnetWhisper folder on a corpus: WER, CER, compression, real-time factor."
            | Report _ -> "write an HTML page of training runs: loss, learning rate, dev WER, compression, temperature; WER against compression."
            | Version -> "print the version and exit."

/// Exit codes (README "Exit codes"): success, some inputs failed, the command line is wrong.
[<RequireQualifiedAccess>]
module ExitCode =
    /// Everything worked.
    [<Literal>]
    let Success = 0
    /// Some inputs (audio files, checkpoints) could not be processed; the others were.
    [<Literal>]
    let InputFailed = 1
    /// The command line cannot be run as given: unknown flag, bad value, missing or unusable file or folder.
    [<Literal>]
    let Usage = 2

/// Argu's errors: help on stdout with 0, any parse error on stderr with the usage-error code (Argu's
/// ProcessExiter would exit 3 for some of them).
type private Exiter() =
    interface IExiter with
        member _.Name = "magnet"
        member _.Exit(message, code) =
            if code = ErrorCode.HelpText then
                stdout.WriteLine message
                exit ExitCode.Success
            else
                stderr.WriteLine message
                exit ExitCode.Usage

/// "magnet 0.1.0 (TorchSharp 0.107.0)".
let private versionText () =
    let versionOf (a: Assembly) =
        match a.GetCustomAttribute<AssemblyInformationalVersionAttribute>() with
        | null -> string (a.GetName().Version)
        | v -> v.InformationalVersion.Split('+').[0]
    $"magnet {versionOf (Assembly.GetExecutingAssembly())} (TorchSharp {versionOf typeof<TorchSharp.torch>.Assembly})"

[<EntryPoint>]
let main argv =
    let parser = ArgumentParser.Create<Command>(programName = "magnet", errorHandler = Exiter())
    try
        // Unknown flags first: Argu would read them as positional arguments (an audio path, a folder).
        match List.ofArray argv with
        | "doctor" :: rest -> Args.rejectUnknown<Doctor.DoctorArgs> "doctor" rest
        | "demo" :: rest -> Demo.rejectUnknownFlags rest
        | "features" :: rest -> Args.rejectUnknown<Features.FeaturesArgs> "features" rest
        | "convert" :: rest -> Args.rejectUnknown<Convert.ConvertArgs> "convert" rest
        | "inspect" :: rest -> Args.rejectUnknown<Inspect.InspectArgs> "inspect" rest
        | "transcribe" :: rest -> Args.rejectUnknown<Transcribe.TranscribeArgs> "transcribe" rest
        | "visualize" :: rest -> Args.rejectUnknown<Visualize.VisualizeArgs> "visualize" rest
        | "eval" :: rest -> Args.rejectUnknown<Eval.EvalArgs> "eval" rest
        | "train" :: rest -> Args.rejectUnknown<Train.TrainArgs> "train" rest
        | "grpo" :: rest -> Args.rejectUnknown<Grpo.GrpoArgs> "grpo" rest
        | "report" :: rest -> Args.rejectUnknown<Report.ReportArgs> "report" rest
        | "corpus" :: rest -> Args.rejectUnknownInSubcommand<Corpus.CorpusArgs> "corpus" rest
        | "bench" :: rest -> Args.rejectUnknownInSubcommand<Bench.BenchArgs> "bench" rest
        | _ -> ()
        let results = parser.ParseCommandLine(argv)
        if results.Contains Version then
            printfn "%s" (versionText ())
            ExitCode.Success
        else
        match results.TryGetSubCommand() with
        | None ->
            eprintfn "%s" (parser.PrintUsage(message = "give a command"))
            ExitCode.Usage
        | Some command ->
        match command with
        | Version -> ExitCode.Success
        | Doctor a -> Doctor.run a
        | Demo a -> Demo.run a
        | Bench a -> Bench.run a
        | Features a -> Features.run a
        | Convert a -> Convert.run a
        | Inspect a -> Inspect.run a
        | Transcribe a -> Transcribe.run a
        | Visualize a -> Visualize.run a
        | Eval a -> Eval.run a
        | Corpus a -> Corpus.run a
        | Train a -> Train.run a
        | Grpo a -> Grpo.run a
        | Report a -> Report.run a
    with
    | :? ArgumentException as e ->
        // .NET appends " (Parameter 'name')"; the message itself already names the flag.
        Output.error (Args.messageOf e)
        ExitCode.Usage
    | :? IO.FileNotFoundException as e ->
        Output.error e.Message
        ExitCode.Usage
    | :? IO.DirectoryNotFoundException as e ->
        Output.error e.Message
        ExitCode.Usage
    | :? IO.InvalidDataException as e ->
        Output.error e.Message
        ExitCode.InputFailed
    | :? IO.IOException
    | :? UnauthorizedAccessException
    | :? InvalidOperationException
    | :? NotSupportedException as e ->
        // Bad files, configurations or states: the message names the problem; no stack trace for users.
        Output.error e.Message
        ExitCode.InputFailed
    | e ->
        // A defect: keep the stack trace for the report, but stay within the documented exit codes.
        Output.error $"unexpected error: {e}"
        ExitCode.InputFailed
