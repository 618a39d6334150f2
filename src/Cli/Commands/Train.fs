/// `magnet train`: a supervised run from a configuration file, `--set key=value` overrides and flags for the common
/// keys (flags win), into a run folder; `--resume RUN_DIR` continues one. Ctrl-C or SIGTERM finishes the current
/// step, writes a checkpoint and says how to resume. docs/TRAINING.md documents every key.
module MagnetWhisper.Cli.Commands.Train

open System
open System.IO
open System.Runtime.InteropServices
open System.Text.Json
open System.Threading
open Argu
open MagnetWhisper.Core
open MagnetWhisper.Core.Training
open MagnetWhisper.Cli

type TrainArgs =
    | Config of file: string
    | Set of assignment: string
    | [<AltCommandLine("-o")>] Output of run_dir: string
    | Resume of run_dir: string
    | Model of dir: string
    | From_Scratch of size: string
    | Data of corpus: string
    | Dev_Data of corpus: string
    | Data_Split of names: string
    | Dev_Split of names: string
    | Max_Steps of int
    | Batch_Size of int
    | Lr of float
    | Eval_Every of int
    | Checkpoint_Every of int
    | Seed of int64
    | Stop_At_Step of int
    | Device of name: string
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Config _ -> "JSON configuration file (keys in docs/TRAINING.md); flags and --set override it."
            | Set _ -> "key=value override of a configuration key, e.g. --set warmup_ratio=0.05 (repeatable)."
            | Output _ -> "the run folder to create: config.json, metrics.jsonl, TensorBoard events, checkpoints/, best/, final/."
            | Resume _ -> "continue the run in this folder from its newest checkpoint, with its own configuration."
            | Model _ -> "starting point (key model): a MagnetWhisper, Hugging Face Whisper or original checkpoint folder."
            | From_Scratch _ -> "train a fresh model of this size (key from_scratch): tiny, base or small; size keys via --set."
            | Data _ -> "training corpus (key data): a folder of audio + .txt, a JSONL manifest, ..."
            | Dev_Data _ -> "dev corpus evaluated every --eval-every steps (key dev_data)."
            | Data_Split _ -> "comma-separated splits of --data to train on, e.g. train (key data_splits; default: all)."
            | Dev_Split _ -> "comma-separated splits of --dev-data to evaluate, e.g. dev (key dev_splits; default: all)."
            | Max_Steps _ -> "optimizer updates of the run (key max_steps)."
            | Batch_Size _ -> "utterances per update (key batch_size)."
            | Lr _ -> "peak learning rate of every trained parameter but the predictors (key lr)."
            | Eval_Every _ -> "dev evaluation every N steps; 0 = at the end only (key eval_every)."
            | Checkpoint_Every _ -> "checkpoint every N steps; 0 = at the end only (key checkpoint_every)."
            | Seed _ -> "seed of the data order, boundary sampling, dropout and new weights (key seed)."
            | Stop_At_Step _ -> "end the run after step N with a checkpoint, exactly as an interruption would."
            | Device _ -> "auto (default), cpu, cuda or cuda:N."

/// The flags that set a configuration key: flag, key, the value as JSON text.
let private keyFlags (args: ParseResults<TrainArgs>) : (string * string * string) list =
    let text (s: string) = JsonSerializer.Serialize s
    let number (x: float) = x.ToString("R", Globalization.CultureInfo.InvariantCulture)
    let names (s: string) = JsonSerializer.Serialize(s.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries))
    [ for a in args.GetAllResults() do
          match a with
          | Model d -> "--model", "model", text d
          | From_Scratch s -> "--from-scratch", "from_scratch", text s
          | Data d -> "--data", "data", text d
          | Dev_Data d -> "--dev-data", "dev_data", text d
          | Data_Split s -> "--data-split", "data_splits", names s
          | Dev_Split s -> "--dev-split", "dev_splits", names s
          | Max_Steps n -> "--max-steps", "max_steps", string n
          | Batch_Size n -> "--batch-size", "batch_size", string n
          | Lr x -> "--lr", "lr", number x
          | Eval_Every n -> "--eval-every", "eval_every", string n
          | Checkpoint_Every n -> "--checkpoint-every", "checkpoint_every", string n
          | Seed s -> "--seed", "seed", string s
          | _ -> () ]

/// The configuration of a new run: the file, then the --set overrides, then the flags. Errors name the file, the
/// --set or the flag, and are usage errors.
let configure (args: ParseResults<TrainArgs>) : TrainConfig =
    let usage (e: exn) = invalidArg "config" e.Message
    try
        let fromFile =
            match args.TryGetResult Config with
            | Some path ->
                if not (File.Exists path) then invalidArg "--config" $"--config {path}: no such file"
                TrainConfig.read path
            | None -> TrainConfig.Default
        let overridden = args.GetResults Set |> List.fold (fun c s -> TrainConfig.set s c) fromFile
        let flagged = keyFlags args
        if args.Contains Model && args.Contains From_Scratch then
            invalidArg "--model" "give --model DIR or --from-scratch SIZE, not both"
        // A starting-point flag replaces the other starting point of the file.
        let cleared =
            if args.Contains Model then { overridden with FromScratch = None }
            elif args.Contains From_Scratch then { overridden with Model = "" }
            else overridden
        let config = flagged |> List.fold (fun c (flag, key, json) -> TrainConfig.setValue $"{flag} {json}" key json c) cleared
        TrainConfig.validate config
    with
    | :? InvalidDataException as e -> usage e

/// Where a key's value came from, for errors about the path it names: the flag, else the last --set of the key,
/// else the configuration file's key.
let private sourceOf (args: ParseResults<TrainArgs>) (flag: string) (key: string) (present: bool) =
    let sets = args.GetResults Set |> List.filter (fun s -> s.Split('=').[0].Trim() = key)
    if present then flag
    elif not sets.IsEmpty then $"--set {List.last sets}:"
    else
        match args.TryGetResult Config with
        | Some file -> $"{file}: key '{key}'"
        | None -> $"key '{key}'"

/// Checks a new run's paths before anything is loaded: the corpora exist, the starting point resolves, the run
/// folder is free. Usage errors naming the flag or key.
let private checkNewRun (args: ParseResults<TrainArgs>) (config: TrainConfig) (runDir: string) (outputFlag: string) =
    // Patterns (data/dev-*.parquet) are left to the corpus reader.
    let exists (p: string) = p.IndexOfAny [| '*'; '?' |] >= 0 || File.Exists p || Directory.Exists p
    if not (exists config.Data) then
        let source = sourceOf args "--data" "data" (args.Contains Data)
        invalidArg "--data" $"{source} {config.Data}: no such file or folder"
    match config.DevData with
    | Some d when not (exists d) ->
        let source = sourceOf args "--dev-data" "dev_data" (args.Contains Dev_Data)
        invalidArg "--dev-data" $"{source} {d}: no such file or folder"
    | _ -> ()
    if config.FromScratch.IsNone && not (Directory.Exists config.Model) then
        let source = sourceOf args "--model" "model" (args.Contains Model)
        invalidArg "--model" $"{source} {config.Model}: folder not found"
    try StartingPoint.ofConfig config |> ignore
    with :? InvalidDataException as e -> invalidArg "model" e.Message
    if File.Exists runDir then invalidArg outputFlag $"{outputFlag} {runDir} is a file, not a folder"
    if File.Exists(Path.Combine(runDir, TrainingRun.ConfigFile)) then
        if (TrainingRun.checkpoints runDir).IsEmpty then
            invalidArg outputFlag $"{outputFlag} {runDir} already holds a run ({TrainingRun.ConfigFile}) that has no checkpoint to resume: remove the folder to start again, or choose another folder"
        else
            invalidArg outputFlag $"{outputFlag} {runDir} already holds a run ({TrainingRun.ConfigFile}): continue it with 'magnet train --resume {runDir}' or choose another folder"

/// A path as the user can paste it into a shell.
let private quoted (path: string) =
    if path |> Seq.exists (fun c -> Char.IsWhiteSpace c || "'\"$`\\!&;|<>()*?[]#~".Contains c) then "'" + path.Replace("'", "'\\''") + "'" else path

let run (args: ParseResults<TrainArgs>) : int =
    let outputFlag = Args.typed [ "-o"; "--output" ]
    let device = Args.value "--device" (fun () -> Device.parse (args.GetResult(Device, defaultValue = "auto")))
    let stopAt = args.TryGetResult Stop_At_Step
    stopAt |> Option.iter (fun n -> Args.require "--stop-at-step" (n >= 1) $"must be at least 1, got {n}")
    let runDir, resume, config =
        match args.TryGetResult Resume, args.TryGetResult Output with
        | Some dir, output ->
            match output with
            | Some o when Path.GetFullPath o <> Path.GetFullPath dir -> invalidArg outputFlag $"{outputFlag} {o}: --resume continues the run in {dir}; give one folder"
            | _ -> ()
            let fixedFlags =
                [ if args.Contains Config then yield "--config"
                  if args.Contains Set then yield "--set"
                  for flag, _, _ in keyFlags args do yield flag ]
            match fixedFlags with
            | flag :: _ ->
                invalidArg flag $"{flag}: a resumed run keeps its own configuration ({Path.Combine(dir, TrainingRun.ConfigFile)}), so that it continues exactly; only --device and --stop-at-step apply with --resume"
            | [] -> ()
            if not (File.Exists(Path.Combine(dir, TrainingRun.ConfigFile))) then
                invalidArg "--resume" $"--resume {dir}: not a training run (no {TrainingRun.ConfigFile})"
            if (TrainingRun.checkpoints dir).IsEmpty then
                invalidArg "--resume" $"--resume {dir}: the run has no checkpoint to resume from (checkpoints/ is empty)"
            let config =
                try TrainConfig.read (Path.Combine(dir, TrainingRun.ConfigFile))
                with :? InvalidDataException as e -> invalidArg "--resume" $"--resume {dir}: {e.Message}"
            dir, true, config
        | None, None -> invalidArg outputFlag "give -o RUN_DIR for a new run, or --resume RUN_DIR to continue one"
        | None, Some dir ->
            let config = configure args
            checkNewRun args config dir outputFlag
            // Paths absolute (relative ones are to the current folder), so config.json resumes from any folder.
            let full (p: string) = if String.IsNullOrWhiteSpace p then p else Path.GetFullPath p
            dir, false, { config with Model = full config.Model; Data = full config.Data; DevData = config.DevData |> Option.map full }
    use cts = new CancellationTokenSource()
    use reporter = new TrainProgress.Reporter(not Console.IsErrorRedirected, config.LogEvery)
    let signalled = ref 0
    let onSignal (name: string) (context: PosixSignalContext) =
        if Interlocked.Increment(&signalled.contents) = 1 then
            // The first signal: finish the step and checkpoint; a second one terminates as usual.
            context.Cancel <- true
            cts.Cancel()
            reporter.Note $"{name}: finishing the current step, then writing a checkpoint (send it again to stop at once, losing the step)"
    use _int = PosixSignalRegistration.Create(PosixSignal.SIGINT, onSignal "interrupt")
    use _term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, onSignal "terminate")
    let options: SupervisedOptions = { Device = device; StopAtStep = stopAt; Ffmpeg = Audio.Audio.findFfmpeg () }
    if resume then
        let newest = TrainingRun.checkpoints runDir |> List.last
        reporter.Note $"resuming {runDir} from {Path.GetFileName newest} on {device}"
    else
        reporter.Note $"training {StartingPoint.describe (StartingPoint.ofConfig config)} on {device} into {runDir}"
    let events =
        { SupervisedEvents.ProgressOnly reporter.Step with
            Evaluated =
                fun e ->
                    let compression = if Double.IsNaN e.Compression then "" else $", kept {100.0 * e.Compression:F1}%%"
                    let best = if e.IsBest then " (best so far: best/)" else ""
                    reporter.Note $"step {e.Step}: dev WER {100.0 * e.Wer:F2}%%, CER {100.0 * e.Cer:F2}%%{compression}{best}" }
    let result = Supervised.run config runDir resume options events cts.Token
    reporter.Done()
    let at (sub: string) = Path.Combine(runDir, sub)
    let metrics () =
        printfn "metrics     %s (TensorBoard events in %s)" (at "metrics.jsonl") runDir
    match result.Outcome with
    | Interrupted ->
        let why = if cts.IsCancellationRequested then "interrupted" else $"stopped at step {result.Step} (--stop-at-step)"
        let checkpoint = result.Checkpoint |> Option.defaultValue (at TrainingRun.CheckpointsFolder)
        printfn "%s after step %d of %d; checkpoint %s" why result.Step config.MaxSteps checkpoint
        metrics ()
        printfn "resume with: magnet train --resume %s" (quoted runDir)
    | Completed
    | StoppedEarly ->
        if result.Outcome = StoppedEarly then
            printfn "stopped early at step %d: the dev WER did not improve for %d evaluations" result.Step config.EarlyStoppingPatience
        else printfn "completed %d steps" result.Step
        printfn "final       %s" (at "final")
        match result.Best with
        | Some(wer, step) -> printfn "best        %s (dev WER %.2f%% at step %d)" (at "best") (100.0 * wer) step
        | None -> ()
        metrics ()
    0
