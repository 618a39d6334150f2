/// `magnet corpus ...`: making corpora. `synth` speaks the project's own sentences with the installed engines.
module MagnetWhisper.Cli.Commands.Corpus

open System
open System.Diagnostics
open System.Threading
open Argu
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Data
open MagnetWhisper.Core.Synthesis
open MagnetWhisper.Cli

type SynthArgs =
    | [<AltCommandLine("-o"); Mandatory>] Output_Dir of dir: string
    | Utterances of count: int
    | Seed of seed: int64
    | Engines of names: string
    | Workers of count: int
    | Format of format: string
    | Bitrate of kbps: int
    | Quiet
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Output_Dir _ -> "folder for the corpus: SPLIT/ID.wav (or .mp3), SPLIT/ID.phones from festival, manifest.jsonl."
            | Utterances _ -> "how many utterances, all splits together (default 100)."
            | Seed _ -> "seed of the sentences, voices, rates and pitches (default 0)."
            | Engines _ -> "comma-separated engines to use: espeak-ng, festival, flite (default: all; missing ones are skipped)."
            | Workers _ -> "utterances synthesised at once (default: the number of cores); the output is the same for any count."
            | Format _ -> "wav (16-bit, default) or mp3 (needs ffmpeg with libmp3lame)."
            | Bitrate _ -> "the MP3 bit rate in kbit/s (default 64; 8 to 320)."
            | Quiet -> "no progress lines on stderr."

type CorpusArgs =
    | [<CliPrefix(CliPrefix.None)>] Synth of ParseResults<SynthArgs>
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Synth _ -> "synthesise a corpus (train, dev, test, test-unseen-voice) from generated sentences with espeak-ng, festival and flite."

let private runSynth (args: ParseResults<SynthArgs>) : int =
    let output = args.GetResult Output_Dir
    let count = args.GetResult(Utterances, defaultValue = 100)
    Args.require "--utterances" (count >= 1) $"must be positive, but is {count}"
    let workers = args.GetResult(Workers, defaultValue = Environment.ProcessorCount)
    Args.require "--workers" (workers >= 1) $"must be positive, but is {workers}"
    let engines =
        match args.TryGetResult Engines with
        | None -> Engine.all
        | Some names ->
            names.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
            |> Array.map (fun n ->
                match Engine.parse n with
                | Ok e -> e
                | Error m -> invalidArg "--engines" $"--engines: {m}")
            |> Array.distinct
            |> List.ofArray
    Args.require "--engines" (not engines.IsEmpty) "names no engine"
    let kbps = args.GetResult(Bitrate, defaultValue = 64)
    Args.require "--bitrate" (kbps >= 8 && kbps <= 320) $"must be 8 to 320 kbit/s, but is {kbps}"
    if args.Contains Bitrate && args.GetResult(Format, defaultValue = "wav").Trim().ToLowerInvariant() <> "mp3" then
        invalidArg "--bitrate" "--bitrate applies to --format mp3 only"
    let format =
        match args.GetResult(Format, defaultValue = "wav").Trim().ToLowerInvariant() with
        | "wav" -> Wav
        | "mp3" ->
            match Audio.findFfmpeg () with
            | Some ffmpeg -> Mp3(ffmpeg, kbps)
            | None -> invalidArg "--format" "--format mp3 needs ffmpeg (with libmp3lame) on PATH; install it or use --format wav"
        | other -> invalidArg "--format" $"--format must be wav or mp3, but is '{other}'"
    let quiet = args.Contains Quiet
    let options =
        { SynthesisOptions.Default with
            Utterances = count
            Seed = args.GetResult(Seed, defaultValue = 0L)
            Engines = engines
            Workers = workers
            Format = format }
    let watch = Stopwatch.StartNew()
    let report = SynthCorpus.synthesise options output (Output.progress quiet) CancellationToken.None
    let seconds = watch.Elapsed.TotalSeconds
    for note in report.Notes do
        printfn "%s" note
    for f in report.Failed do
        Output.error $"{f.Source}: {f.Reason}"
    let corpus = Corpora.read CorpusOptions.Default report.Manifest
    printfn "wrote %s in %.1f s (%.2f utterances/s)" report.Manifest seconds (float corpus.Utterances.Length / seconds)
    for split in SynthCorpus.splits do
        let n = corpus.Utterances |> Array.filter (fun u -> u.Split = Some split) |> Array.length
        printfn "  %-18s %d utterances" split n
    printfn "%s" (Corpus.describe corpus)
    if report.Failed.Length > 0 || corpus.Skipped.Length > 0 then 1 else 0

/// Runs `magnet corpus <subcommand>`.
let run (args: ParseResults<CorpusArgs>) : int =
    match args.TryGetSubCommand() with
    | Some(Synth a) -> runSynth a
    | None ->
        Output.error "corpus needs a subcommand: synth"
        eprintfn "%s" (args.Parser.PrintUsage())
        2
