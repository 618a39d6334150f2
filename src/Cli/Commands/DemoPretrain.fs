/// `magnet demo pretrain`: the reproducible recipe of the built-in base model (docs/PRETRAINING.md): a synthetic
/// corpus, the supervised trainer with data/demo/pretrain.json, and the export to RUN_DIR/base-model (float16, no CTC
/// head) with PROVENANCE.md. The stages are MagnetWhisper.Core.Pretraining.Pretrain; this file parses flags and prints.
module MagnetWhisper.Cli.Commands.DemoPretrain

open System
open System.IO
open Argu
open MagnetWhisper.Core
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Pretraining
open MagnetWhisper.Core.Training
open MagnetWhisper.Cli

type DemoPretrainArgs =
    | [<AltCommandLine("-o"); Mandatory>] Output of run_dir: string
    | Corpus of dir: string
    | Utterances of count: int
    | Steps of count: int
    | Seed of seed: int64
    | Set of assignment: string
    | Resume
    | From_Run of run_dir: string
    | Stop_At_Step of step: int
    | Device of name: string
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Output _ -> "the run folder: corpus/, train/ (the training run), base-model/ (with PROVENANCE.md), pretrain.json."
            | Corpus _ -> "train on this corpus (a manifest, or a folder with manifest.jsonl, with the splits train, dev, test, test-unseen-voice) instead of synthesising one."
            | Utterances _ -> "utterances to synthesise (default 3000)."
            | Steps _ -> "training steps (default: the recipe's 2000)."
            | Seed _ -> "seed of the synthesis and of the training (default 0)."
            | Set _ -> "key=value override of a recipe key (docs/TRAINING.md), e.g. --set batch_size=16 (repeatable)."
            | Resume -> "continue the run in -o RUN_DIR where it stopped (corpus, training or export), with its own recipe."
            | From_Run _ -> "export this already trained run folder (e.g. made by magnet train --config data/demo/pretrain.json) to RUN_DIR/base-model instead of training."
            | Stop_At_Step _ -> "end the training after step N with a checkpoint, exactly as an interruption would (continue with --resume)."
            | Device _ -> "auto (default), cpu, cuda or cuda:N."

/// The command line as typed, for the provenance ("magnet demo pretrain -o run ...").
let private commandLine () =
    let args = Environment.GetCommandLineArgs() |> Array.skip 1 |> Array.map RunCommand.quoted
    "magnet " + String.Join(" ", args)

/// Usage errors before anything runs: flags that do not go together, values out of range, the run folder's state.
let private check (args: ParseResults<DemoPretrainArgs>) (runDir: string) (outputFlag: string) =
    let recipeFlags =
        [ if args.Contains Corpus then "--corpus"
          if args.Contains Utterances then "--utterances"
          if args.Contains Steps then "--steps"
          if args.Contains Seed then "--seed"
          if not (args.GetResults Set).IsEmpty then "--set" ]
    if File.Exists runDir then invalidArg outputFlag $"{outputFlag} {runDir} is a file, not a folder"
    args.TryGetResult Stop_At_Step |> Option.iter (fun n -> Args.require "--stop-at-step" (n >= 1) $"must be at least 1, but is {n}")
    match args.TryGetResult From_Run with
    | Some trained ->
        let extra = [ if args.Contains Resume then "--resume"
                      if args.Contains Stop_At_Step then "--stop-at-step" ]
        match extra @ recipeFlags with
        | flag :: _ -> invalidArg flag $"{flag} does not apply to --from-run, which exports a run that is already trained"
        | [] -> ()
        if not (Directory.Exists trained) then raise (DirectoryNotFoundException $"--from-run {trained}: folder not found")
        if not (File.Exists(Path.Combine(trained, TrainingRun.ConfigFile))) then
            invalidArg "--from-run" $"--from-run {trained}: not a training run (no {TrainingRun.ConfigFile})"
        if not (Pretrain.isTrained trained) then
            invalidArg "--from-run" $"--from-run {trained}: the run has not completed (no {TrainingRun.FinalFolder}/); finish it with 'magnet train --resume {RunCommand.quoted trained}'"
        let baseModel = Path.Combine(runDir, Pretrain.BaseModelFolder)
        if Directory.Exists baseModel && not (Seq.isEmpty (Directory.EnumerateFileSystemEntries baseModel)) && not (MagnetFormat.isMagnetFolder baseModel) then
            invalidArg outputFlag $"{outputFlag} {runDir}: {baseModel} exists and is not a MagnetWhisper folder; choose another folder"
    | None when args.Contains Resume ->
        match recipeFlags with
        | flag :: _ ->
            invalidArg flag $"{flag}: a resumed run keeps its own recipe ({Path.Combine(runDir, PretrainState.FileName)}); only --device and --stop-at-step apply with --resume"
        | [] -> ()
        if not (File.Exists(Path.Combine(runDir, PretrainState.FileName))) then
            invalidArg "--resume" $"--resume: {runDir} is not a pretraining run (no {PretrainState.FileName}); start one with -o {RunCommand.quoted runDir}"
    | None ->
        if not (Pretrain.isFresh runDir) then
            invalidArg outputFlag $"{outputFlag} {runDir} is not empty: continue the run there with --resume, or choose a new folder"
        if args.Contains Corpus && args.Contains Utterances then
            invalidArg "--utterances" "--utterances sizes the corpus to synthesise; with --corpus none is synthesised"
        let utterances = args.GetResult(Utterances, defaultValue = 3000)
        Args.require "--utterances" (utterances >= 10) $"must be at least 10 (every split needs utterances), but is {utterances}"
        args.TryGetResult Steps |> Option.iter (fun n -> Args.require "--steps" (n >= 1) $"must be at least 1, but is {n}")
        args.TryGetResult Corpus
        |> Option.iter (fun c -> if not (File.Exists c || Directory.Exists c) then invalidArg "--corpus" $"--corpus {c}: no such file or folder")
        // The recipe with the overrides, checked now so a bad --set is a usage error that leaves nothing behind.
        try PretrainRecipe.config (match args.TryGetResult Corpus with Some c -> Pretrain.corpusPath c | None -> "corpus") (args.GetResults Set) None None |> ignore
        with :? InvalidDataException as e -> invalidArg "--set" e.Message

let run (args: ParseResults<DemoPretrainArgs>) : int =
    let runDir = args.GetResult Output
    let outputFlag = Args.typed [ "-o"; "--output" ]
    check args runDir outputFlag
    let device = Args.value "--device" (fun () -> Device.parse (args.GetResult(Device, "auto")))
    let options: PretrainOptions =
        { RunDir = runDir
          Corpus = args.TryGetResult Corpus
          Utterances = args.GetResult(Utterances, defaultValue = 3000)
          Seed = args.GetResult(Seed, defaultValue = 0L)
          Steps = args.TryGetResult Steps
          Sets = args.GetResults Set
          Resume = args.Contains Resume
          TrainedRun = args.TryGetResult From_Run
          CommandLine = commandLine ()
          Device = device
          Ffmpeg = Audio.Audio.findFfmpeg ()
          SynthesisWorkers = Environment.ProcessorCount }
    use reporter = new TrainProgress.Reporter(not Console.IsErrorRedirected, 25)
    use signals = new RunCommand.Signals(reporter.Note)
    let events: PretrainEvents =
        { Stage = fun line -> reporter.Note line
          Note = fun line -> reporter.Note("  " + line)
          Training =
            { SupervisedEvents.ProgressOnly reporter.Step with
                Evaluated =
                    fun e ->
                        let best = if e.IsBest then " (best so far)" else ""
                        reporter.Note $"  step {e.Step}: dev WER {100.0 * e.Wer:F2}%%, CER {100.0 * e.Cer:F2}%%{best}" } }
    let supervised: SupervisedOptions = { Device = device; StopAtStep = args.TryGetResult Stop_At_Step; Ffmpeg = options.Ffmpeg }
    let resumeHint () = printfn "interrupted; resume with: magnet demo pretrain -o %s --resume" (RunCommand.quoted runDir)
    let result =
        // A signal during synthesis or the export's evaluation cancels them (training instead ends with a checkpoint).
        try Some(Pretrain.run options supervised events signals.Token)
        with :? OperationCanceledException when signals.Token.IsCancellationRequested -> None
    reporter.Done()
    match result |> Option.bind (fun r -> Option.map2 (fun p d -> p, d) r.Provenance r.BaseModel) with
    | Some(p, dir) ->
        printfn "base model  %s (%s, %d parameters, %.1f MB)" dir p.DType p.Parameters (float p.Bytes / 1048576.0)
        for s in p.Scores do
            printfn "  %-18s WER %6.2f%%  CER %6.2f%%  (%d utterances)" s.Split (100.0 * s.Wer) (100.0 * s.Cer) s.Utterances
        printfn "provenance  %s" (Path.Combine(dir, Provenance.FileName))
        printfn "time        %s in total" (Provenance.clock (p.Stages |> List.sumBy snd))
        0
    | None ->
        resumeHint ()
        0
