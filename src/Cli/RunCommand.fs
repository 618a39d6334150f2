/// What `magnet train` and `magnet grpo` share: the configuration of a new run (file, then `--set`, then the flags of
/// the common keys), the checks of a new run and of a resume (usage errors naming the flag, the --set or the file's
/// key), Ctrl-C/SIGTERM finishing the step with a checkpoint, and the lines printed at the end of a run.
module MagnetWhisper.Cli.RunCommand

open System
open System.IO
open System.Runtime.InteropServices
open System.Text.Json
open System.Threading
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Training

/// A flag's text value as JSON.
let text (s: string) = JsonSerializer.Serialize s

/// A flag's number as JSON.
let number (x: float) = x.ToString("R", Globalization.CultureInfo.InvariantCulture)

/// A flag's comma-separated names as a JSON array.
let names (s: string) = JsonSerializer.Serialize(s.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries))

/// How a command's configuration is read, set and checked, and where its common keys are.
type ConfigOps<'Config> =
    { Default: 'Config
      Read: string -> 'Config
      /// Applies `key=value` (a --set).
      Set: string -> 'Config -> 'Config
      /// Sets a key from JSON text, the first argument naming the source in errors.
      SetValue: string -> string -> string -> 'Config -> 'Config
      Validate: 'Config -> 'Config
      Common: 'Config -> TrainConfig
      WithCommon: TrainConfig -> 'Config -> 'Config }

/// Where a new run's configuration comes from: the file, the --set overrides and the key flags (flag, key, JSON).
type Sources =
    { ConfigFile: string option
      Sets: string list
      Flags: (string * string * string) list }

    /// True when a flag of this name was given.
    member s.Has(flag: string) = s.Flags |> List.exists (fun (f, _, _) -> f = flag)

/// The configuration of a new run: the file, then the --set overrides, then `prepare` (e.g. a starting-point flag
/// clearing the file's other starting point), then the flags. Errors name the file, the --set or the flag, and are
/// usage errors.
let configure (ops: ConfigOps<'Config>) (sources: Sources) (prepare: 'Config -> 'Config) : 'Config =
    try
        let fromFile =
            match sources.ConfigFile with
            | Some path ->
                if not (File.Exists path) then invalidArg "--config" $"--config {path}: no such file"
                ops.Read path
            | None -> ops.Default
        let overridden = sources.Sets |> List.fold (fun c s -> ops.Set s c) fromFile
        let config = sources.Flags |> List.fold (fun c (flag, key, json) -> ops.SetValue $"{flag} {json}" key json c) (prepare overridden)
        ops.Validate config
    with :? InvalidDataException as e -> invalidArg "config" e.Message

/// Where a key's value came from, for errors about the path it names: the flag, else the last --set of the key,
/// else the configuration file's key.
let private sourceOf (sources: Sources) (flag: string) (key: string) =
    let sets = sources.Sets |> List.filter (fun s -> s.Split('=').[0].Trim() = key)
    if sources.Has flag then flag
    elif not sets.IsEmpty then $"--set {List.last sets}:"
    else
        match sources.ConfigFile with
        | Some file -> $"{file}: key '{key}'"
        | None -> $"key '{key}'"

/// A path as the user can paste it into a shell.
let quoted (path: string) =
    if path |> Seq.exists (fun c -> Char.IsWhiteSpace c || "'\"$`\\!&;|<>()*?[]#~".Contains c) then "'" + path.Replace("'", "'\\''") + "'" else path

/// Checks a new run's paths before anything is loaded: the corpora exist, the starting point resolves, the run
/// folder is free. Usage errors naming the flag or key.
let private checkNewRun (command: string) (sources: Sources) (config: TrainConfig) (runDir: string) (outputFlag: string) =
    // Patterns (data/dev-*.parquet) are left to the corpus reader.
    let exists (p: string) = p.IndexOfAny [| '*'; '?' |] >= 0 || File.Exists p || Directory.Exists p
    let corpus (flag: string) (key: string) (path: string option) =
        match path with
        | Some p when not (exists p) -> invalidArg flag $"{sourceOf sources flag key} {p}: no such file or folder"
        | _ -> ()
    corpus "--data" "data" (Some config.Data)
    corpus "--dev-data" "dev_data" config.DevData
    corpus "--test-data" "test_data" config.TestData
    if config.FromScratch.IsNone then
        let dir = config.Model
        let source = sourceOf sources "--model" "model"
        if not (Directory.Exists dir) then invalidArg "--model" $"{source} {dir}: folder not found"
        let known =
            MagnetFormat.isMagnetFolder dir || OriginalCheckpoint.isOriginalFolder dir || File.Exists(Path.Combine(dir, "config.json"))
        if not known then
            invalidArg "--model" $"{source} {dir}: not a MagnetWhisper folder (no magnet.json), a Hugging Face Whisper folder (config.json) nor an original checkpoint (boundary_params.pt), e.g. a run's best/ or final/"
    try StartingPoint.ofConfig config |> ignore
    with :? InvalidDataException as e -> invalidArg "model" e.Message
    if File.Exists runDir then invalidArg outputFlag $"{outputFlag} {runDir} is a file, not a folder"
    if File.Exists(Path.Combine(runDir, TrainingRun.ConfigFile)) then
        if (TrainingRun.checkpoints runDir).IsEmpty then
            invalidArg outputFlag $"{outputFlag} {runDir} already holds a run ({TrainingRun.ConfigFile}) that has no checkpoint to resume: remove the folder to start again, or choose another folder"
        else
            invalidArg outputFlag $"{outputFlag} {runDir} already holds a run ({TrainingRun.ConfigFile}): continue it with 'magnet {command} --resume {quoted runDir}' or choose another folder"

/// The run folder, whether it resumes, and the configuration: `--resume DIR` reads the run's own configuration (no
/// configuration flag may be given: `fixedFlags` lists those that were), `-o DIR` configures a new run (paths made
/// absolute, so config.json resumes from any folder).
let resolve (command: string) (ops: ConfigOps<'Config>) (sources: Sources) (prepare: 'Config -> 'Config)
            (resume: string option) (output: string option) (outputFlag: string) (fixedFlags: string list) : string * bool * 'Config =
    match resume, output with
    | Some dir, output ->
        match output with
        | Some o when Path.GetFullPath o <> Path.GetFullPath dir -> invalidArg outputFlag $"{outputFlag} {o}: --resume continues the run in {dir}; give one folder"
        | _ -> ()
        match fixedFlags with
        | flag :: _ ->
            invalidArg flag $"{flag}: a resumed run keeps its own configuration ({Path.Combine(dir, TrainingRun.ConfigFile)}), so that it continues exactly; only --device and --stop-at-step apply with --resume"
        | [] -> ()
        if not (File.Exists(Path.Combine(dir, TrainingRun.ConfigFile))) then
            invalidArg "--resume" $"--resume {dir}: not a training run (no {TrainingRun.ConfigFile})"
        if (TrainingRun.checkpoints dir).IsEmpty then
            invalidArg "--resume" $"--resume {dir}: the run has no checkpoint to resume from (checkpoints/ is empty)"
        let config =
            try ops.Read(Path.Combine(dir, TrainingRun.ConfigFile))
            with :? InvalidDataException as e -> invalidArg "--resume" $"--resume {dir}: {e.Message}"
        dir, true, config
    | None, None -> invalidArg outputFlag "give -o RUN_DIR for a new run, or --resume RUN_DIR to continue one"
    | None, Some dir ->
        let config = configure ops sources prepare
        checkNewRun command sources (ops.Common config) dir outputFlag
        let full (p: string) = if String.IsNullOrWhiteSpace p then p else Path.GetFullPath p
        let c = ops.Common config
        let absolute =
            { c with Model = full c.Model; Data = full c.Data; DevData = c.DevData |> Option.map full; TestData = c.TestData |> Option.map full }
        dir, false, ops.WithCommon absolute config

/// A run command's command line apart from its Argu union.
type Parsed =
    { Sources: Sources
      Resume: string option
      Output: string option
      Device: string option
      StopAtStep: int option }

/// The device, the stop step, the run folder, whether it resumes, and the configuration of a run command (see
/// resolve); usage errors name the flag.
let start (command: string) (ops: ConfigOps<'Config>) (parsed: Parsed) (prepare: 'Config -> 'Config) =
    let outputFlag = Args.typed [ "-o"; "--output" ]
    let device = Args.value "--device" (fun () -> MagnetWhisper.Core.Device.parse (defaultArg parsed.Device "auto"))
    parsed.StopAtStep |> Option.iter (fun n -> Args.require "--stop-at-step" (n >= 1) $"must be at least 1, got {n}")
    let sources = parsed.Sources
    let fixedFlags =
        [ if sources.ConfigFile.IsSome then yield "--config"
          if not sources.Sets.IsEmpty then yield "--set"
          for flag, _, _ in sources.Flags do yield flag ]
    let runDir, resume, config = resolve command ops sources prepare parsed.Resume parsed.Output outputFlag fixedFlags
    device, parsed.StopAtStep, runDir, resume, config

/// The first SIGINT or SIGTERM cancels the token (the run finishes its step and writes a checkpoint) and tells
/// `note`; a second one terminates as usual.
type Signals(note: string -> unit) =
    let cts = new CancellationTokenSource()
    let signalled = ref 0
    let onSignal (name: string) (context: PosixSignalContext) =
        if Interlocked.Increment(&signalled.contents) = 1 then
            context.Cancel <- true
            cts.Cancel()
            note $"{name}: finishing the current step, then writing a checkpoint (send it again to stop at once, losing the step)"
    let interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, onSignal "interrupt")
    let terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, onSignal "terminate")

    /// Cancelled by the first signal.
    member _.Token = cts.Token

    interface IDisposable with
        member _.Dispose() =
            interrupt.Dispose()
            terminate.Dispose()
            cts.Dispose()

/// The lines at the end of a run: why it ended and how to resume it, or final/, best/, the test scores; the metrics.
let printEnd (command: string) (runDir: string) (config: TrainConfig) (cancelled: bool) (result: SupervisedResult) : unit =
    let at (sub: string) = Path.Combine(runDir, sub)
    let metrics () = printfn "metrics     %s (TensorBoard events in %s)" (at "metrics.jsonl") runDir
    match result.Outcome with
    | Interrupted ->
        let why = if cancelled then "interrupted" else $"stopped at step {result.Step} (--stop-at-step)"
        let checkpoint = result.Checkpoint |> Option.defaultValue (at TrainingRun.CheckpointsFolder)
        printfn "%s after step %d of %d; checkpoint %s" why result.Step config.MaxSteps checkpoint
        metrics ()
        printfn "resume with: magnet %s --resume %s" command (quoted runDir)
    | Completed
    | StoppedEarly ->
        if result.Outcome = StoppedEarly then
            printfn "stopped early at step %d: the dev WER did not improve for %d evaluations" result.Step config.EarlyStoppingPatience
        else printfn "completed %d steps" result.Step
        printfn "final       %s" (at TrainingRun.FinalFolder)
        match result.Best with
        | Some(wer, step) -> printfn "best        %s (dev WER %.2f%% at step %d)" (at TrainingRun.BestFolder) (100.0 * wer) step
        | None -> ()
        match result.Test with
        | Some t ->
            let kept = if Double.IsNaN t.Compression then "" else $", kept {100.0 * t.Compression:F1}%%"
            printfn "test        %s: WER %.2f%%, CER %.2f%%%s (%d utterances)" t.Model (100.0 * t.Wer) (100.0 * t.Cer) kept t.Utterances
        | None -> ()
        metrics ()
