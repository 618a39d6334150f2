/// `magnet grpo`: a GRPO run (docs/GRPO.md) from a configuration file, `--set key=value` overrides and flags for the
/// common keys (flags win), into a run folder; `--resume RUN_DIR` continues one. Ctrl-C or SIGTERM finishes the
/// current step, writes a checkpoint and says how to resume.
module MagnetWhisper.Cli.Commands.Grpo

open System
open System.IO
open System.Runtime.InteropServices
open System.Text.Json
open System.Threading
open Argu
open MagnetWhisper.Core
open MagnetWhisper.Core.Training
open MagnetWhisper.Cli

type GrpoArgs =
    | Config of file: string
    | Set of assignment: string
    | [<AltCommandLine("-o")>] Output of run_dir: string
    | Resume of run_dir: string
    | Model of dir: string
    | Data of corpus: string
    | Dev_Data of corpus: string
    | Max_Steps of int
    | Batch_Size of int
    | Group_Size of int
    | Predictor_Lr of float
    | Eval_Every of int
    | Checkpoint_Every of int
    | Seed of int64
    | Stop_At_Step of int
    | Device of name: string
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Config _ -> "JSON configuration file (keys in docs/GRPO.md and docs/TRAINING.md); flags and --set override it."
            | Set _ -> "key=value override of a configuration key, e.g. --set kl_coef=0.02 (repeatable)."
            | Output _ -> "the run folder to create: config.json, metrics.jsonl, TensorBoard events, checkpoints/, best/, final/."
            | Resume _ -> "continue the run in this folder from its newest checkpoint, with its own configuration."
            | Model _ -> "the MagnetWhisper folder to start from, e.g. a supervised run's best/ (key model)."
            | Data _ -> "training corpus (key data)."
            | Dev_Data _ -> "dev corpus evaluated every --eval-every steps (key dev_data)."
            | Max_Steps _ -> "GRPO updates of the run (key max_steps)."
            | Batch_Size _ -> "audios per update, each sampled --group-size times (key batch_size)."
            | Group_Size _ -> "boundary sets sampled per audio, K (key group_size)."
            | Predictor_Lr _ -> "peak learning rate of the predictors (key predictor_lr)."
            | Eval_Every _ -> "dev evaluation every N steps; 0 = at the end only (key eval_every)."
            | Checkpoint_Every _ -> "checkpoint every N steps; 0 = at the end only (key checkpoint_every)."
            | Seed _ -> "seed of the data order and the boundary sampling (key seed)."
            | Stop_At_Step _ -> "end the run after step N with a checkpoint, exactly as an interruption would."
            | Device _ -> "auto (default), cpu, cuda or cuda:N."

/// The flags that set a configuration key: flag, key, the value as JSON text.
let private keyFlags (args: ParseResults<GrpoArgs>) : (string * string * string) list =
    let text (s: string) = JsonSerializer.Serialize s
    let number (x: float) = x.ToString("R", Globalization.CultureInfo.InvariantCulture)
    [ for a in args.GetAllResults() do
          match a with
          | Model d -> "--model", "model", text d
          | Data d -> "--data", "data", text d
          | Dev_Data d -> "--dev-data", "dev_data", text d
          | Max_Steps n -> "--max-steps", "max_steps", string n
          | Batch_Size n -> "--batch-size", "batch_size", string n
          | Group_Size n -> "--group-size", "group_size", string n
          | Predictor_Lr x -> "--predictor-lr", "predictor_lr", number x
          | Eval_Every n -> "--eval-every", "eval_every", string n
          | Checkpoint_Every n -> "--checkpoint-every", "checkpoint_every", string n
          | Seed s -> "--seed", "seed", string s
          | _ -> () ]

/// The configuration of a new run: the file, then the --set overrides, then the flags. Errors name the file, the
/// --set or the flag, and are usage errors.
let configure (args: ParseResults<GrpoArgs>) : GrpoConfig =
    try
        let fromFile =
            match args.TryGetResult Config with
            | Some path ->
                if not (File.Exists path) then invalidArg "--config" $"--config {path}: no such file"
                GrpoConfig.read path
            | None -> GrpoConfig.Default
        let overridden = args.GetResults Set |> List.fold (fun c s -> GrpoConfig.set s c) fromFile
        let flagged =
            keyFlags args
            |> List.fold
                (fun c (flag, key, json) ->
                    try GrpoConfig.set $"{key}={json}" c
                    with :? InvalidDataException as e -> raise (InvalidDataException $"{flag} {json}: {e.Message.Substring(e.Message.IndexOf(':') + 2)}"))
                overridden
        GrpoConfig.validate flagged
    with :? InvalidDataException as e -> invalidArg "config" e.Message

/// A path as the user can paste it into a shell.
let private quoted (path: string) =
    if path |> Seq.exists (fun c -> Char.IsWhiteSpace c || "'\"$`\\!&;|<>()*?[]#~".Contains c) then "'" + path.Replace("'", "'\\''") + "'" else path

/// Checks a new run's paths before anything is loaded; usage errors naming the flag or key.
let private checkNewRun (args: ParseResults<GrpoArgs>) (config: GrpoConfig) (runDir: string) (outputFlag: string) =
    let source (present: bool) (flag: string) (key: string) = if present then flag else $"key '{key}'"
    let exists (p: string) = p.IndexOfAny [| '*'; '?' |] >= 0 || File.Exists p || Directory.Exists p
    let c = config.Common
    let dataSource = source (args.Contains Data) "--data" "data"
    let devSource = source (args.Contains Dev_Data) "--dev-data" "dev_data"
    let modelSource = source (args.Contains Model) "--model" "model"
    if not (exists c.Data) then invalidArg "--data" $"{dataSource} {c.Data}: no such file or folder"
    match c.DevData with
    | Some d when not (exists d) -> invalidArg "--dev-data" $"{devSource} {d}: no such file or folder"
    | _ -> ()
    if not (File.Exists(Path.Combine(c.Model, "magnet.json"))) then
        invalidArg "--model" $"{modelSource} {c.Model}: not a MagnetWhisper folder (no magnet.json); GRPO starts from a MagnetWhisper, e.g. a supervised run's best/ or final/"
    if File.Exists runDir then invalidArg outputFlag $"{outputFlag} {runDir} is a file, not a folder"
    if File.Exists(Path.Combine(runDir, TrainingRun.ConfigFile)) then
        invalidArg outputFlag $"{outputFlag} {runDir} already holds a run ({TrainingRun.ConfigFile}): continue it with 'magnet grpo --resume {quoted runDir}' or choose another folder"

let run (args: ParseResults<GrpoArgs>) : int =
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
                try GrpoConfig.read (Path.Combine(dir, TrainingRun.ConfigFile))
                with :? InvalidDataException as e -> invalidArg "--resume" $"--resume {dir}: {e.Message}"
            dir, true, config
        | None, None -> invalidArg outputFlag "give -o RUN_DIR for a new run, or --resume RUN_DIR to continue one"
        | None, Some dir ->
            let config = configure args
            checkNewRun args config dir outputFlag
            // Absolute paths, so config.json resumes from any folder.
            let full (p: string) = if String.IsNullOrWhiteSpace p then p else Path.GetFullPath p
            let c = config.Common
            dir, false, { config with Common = { c with Model = full c.Model; Data = full c.Data; DevData = c.DevData |> Option.map full } }
    use cts = new CancellationTokenSource()
    let signalled = ref 0
    let onSignal (name: string) (context: PosixSignalContext) =
        if Interlocked.Increment(&signalled.contents) = 1 then
            context.Cancel <- true
            cts.Cancel()
            eprintfn "%s: finishing the current step, then writing a checkpoint (send it again to stop at once, losing the step)" name
    use _int = PosixSignalRegistration.Create(PosixSignal.SIGINT, onSignal "interrupt")
    use _term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, onSignal "terminate")
    let options: SupervisedOptions = { Device = device; StopAtStep = stopAt; Ffmpeg = Audio.Audio.findFfmpeg () }
    if resume then eprintfn "resuming %s from %s on %O" runDir (Path.GetFileName(TrainingRun.checkpoints runDir |> List.last)) device
    else eprintfn "GRPO from %s on %O into %s (K = %d, μ = %d)" config.Common.Model device runDir config.GroupSize config.InnerEpochs
    let progress (p: GrpoProgress) =
        if p.Step % config.Common.LogEvery = 0 || p.Step = p.MaxSteps then
            eprintfn "step %d/%d  reward %.4f  kept %.1f%%  %s elapsed" p.Step p.MaxSteps p.RewardMean (100.0 * p.KeptFraction) (Progress.clock p.ElapsedSeconds)
    let result = MagnetWhisper.Core.Training.Grpo.run config runDir resume options (GrpoEvents.ProgressOnly progress) cts.Token
    let at (sub: string) = Path.Combine(runDir, sub)
    match result.Outcome with
    | Interrupted ->
        let why = if cts.IsCancellationRequested then "interrupted" else $"stopped at step {result.Step} (--stop-at-step)"
        printfn "%s after step %d of %d; checkpoint %s" why result.Step config.Common.MaxSteps (result.Checkpoint |> Option.defaultValue (at TrainingRun.CheckpointsFolder))
        printfn "metrics     %s" (at "metrics.jsonl")
        printfn "resume with: magnet grpo --resume %s" (quoted runDir)
    | Completed
    | StoppedEarly ->
        printfn "completed %d steps" result.Step
        printfn "final       %s" (at "final")
        match result.Best with
        | Some(wer, step) -> printfn "best        %s (dev WER %.2f%% at step %d)" (at "best") (100.0 * wer) step
        | None -> ()
        printfn "metrics     %s" (at "metrics.jsonl")
    0
