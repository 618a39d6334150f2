/// The `magnet` command line: one Argu union per command, one file per command.
module MagnetWhisper.Cli.Program

open System
open Argu
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
    interface IArgParserTemplate with
        member c.Usage =
            match c with
            | Doctor _ -> "report TorchSharp, libtorch, the libstdc++ remedy, devices and optional tools."
            | Demo _ -> "run the built-in demonstration on synthetic data."
            | Bench _ -> "measure speed: downsample, encoder, transcribe."
            | Features _ -> "write Whisper's log-mel features (and frame mask) of an audio file as .npy."
            | Convert _ -> "convert a Whisper folder (with predictor options) or import an original checkpoint into a MagnetWhisper folder."
            | Inspect _ -> "print a Whisper or MagnetWhisper folder's structure, predictor slots and parameter counts."
            | Transcribe _ -> "transcribe or translate audio files with a Whisper checkpoint (txt, vtt, srt, tsv, json)."

[<EntryPoint>]
let main argv =
    let parser = ArgumentParser.Create<Command>(programName = "magnet", errorHandler = ProcessExiter())
    try
        let results = parser.ParseCommandLine(argv)
        match results.GetSubCommand() with
        | Doctor a -> Doctor.run a
        | Demo a -> Demo.run a
        | Bench a -> Bench.run a
        | Features a -> Features.run a
        | Convert a -> Convert.run a
        | Inspect a -> Inspect.run a
        | Transcribe a -> Transcribe.run a
    with
    | :? ArgumentException as e ->
        // .NET appends " (Parameter 'name')"; the message itself already names the argument.
        let suffix = $" (Parameter '{e.ParamName}')"
        Output.error (if isNull e.ParamName then e.Message else e.Message.Replace(suffix, ""))
        2
    | :? IO.FileNotFoundException as e ->
        Output.error e.Message
        2
    | :? IO.DirectoryNotFoundException as e ->
        Output.error e.Message
        2
    | :? IO.InvalidDataException as e ->
        Output.error e.Message
        1
    | :? IO.IOException
    | :? InvalidOperationException
    | :? NotSupportedException as e ->
        // Bad files, configurations or states: the message names the problem; no stack trace for users.
        Output.error e.Message
        1
