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
    | Test_Data of corpus: string
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
            | Model _ -> "starting point (key model): a MagnetWhisper folder with predictors, e.g. a supervised run's best/, or a Hugging Face Whisper folder with --set predictors=..."
            | Data _ -> "training corpus (key data)."
            | Dev_Data _ -> "dev corpus evaluated every --eval-every steps (key dev_data)."
            | Test_Data _ -> "test corpus evaluated with best/ (or final/) at the end of the run (key test_data)."
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
    [ for a in args.GetAllResults() do
          match a with
          | Model d -> "--model", "model", RunCommand.text d
          | Data d -> "--data", "data", RunCommand.text d
          | Dev_Data d -> "--dev-data", "dev_data", RunCommand.text d
          | Test_Data d -> "--test-data", "test_data", RunCommand.text d
          | Max_Steps n -> "--max-steps", "max_steps", string n
          | Batch_Size n -> "--batch-size", "batch_size", string n
          | Group_Size n -> "--group-size", "group_size", string n
          | Predictor_Lr x -> "--predictor-lr", "predictor_lr", RunCommand.number x
          | Eval_Every n -> "--eval-every", "eval_every", string n
          | Checkpoint_Every n -> "--checkpoint-every", "checkpoint_every", string n
          | Seed s -> "--seed", "seed", string s
          | _ -> () ]

let private ops: RunCommand.ConfigOps<GrpoConfig> =
    { Default = GrpoConfig.Default; Read = GrpoConfig.read; Set = GrpoConfig.set; SetValue = GrpoConfig.setValue
      Validate = GrpoConfig.validate; Common = _.Common; WithCommon = fun common c -> { c with Common = common } }

let private sources (args: ParseResults<GrpoArgs>) : RunCommand.Sources =
    { ConfigFile = args.TryGetResult Config; Sets = args.GetResults Set; Flags = keyFlags args }

/// The configuration of a new run: the file, then the --set overrides, then the flags. Errors name the file, the
/// --set or the flag, and are usage errors.
let configure (args: ParseResults<GrpoArgs>) : GrpoConfig = RunCommand.configure ops (sources args) id

let run (args: ParseResults<GrpoArgs>) : int =
    let parsed: RunCommand.Parsed =
        { Sources = sources args; Resume = args.TryGetResult Resume; Output = args.TryGetResult Output
          Device = args.TryGetResult Device; StopAtStep = args.TryGetResult Stop_At_Step }
    let device, stopAt, runDir, resume, config = RunCommand.start "grpo" ops parsed id
    use signals = new RunCommand.Signals(eprintfn "%s")
    let options: SupervisedOptions = { Device = device; StopAtStep = stopAt; Ffmpeg = Audio.Audio.findFfmpeg () }
    if resume then eprintfn "resuming %s from %s on %O" runDir (Path.GetFileName(TrainingRun.checkpoints runDir |> List.last)) device
    else eprintfn "GRPO from %s on %O into %s (K = %d, μ = %d)" (StartingPoint.describe (StartingPoint.ofConfig config.Common)) device runDir config.GroupSize config.InnerEpochs
    let progress (p: GrpoProgress) =
        if p.Step % config.Common.LogEvery = 0 || p.Step = p.MaxSteps then
            eprintfn "step %d/%d  reward %.4f  kept %.1f%%  %s elapsed" p.Step p.MaxSteps p.RewardMean (100.0 * p.KeptFraction) (Progress.clock p.ElapsedSeconds)
    let result = MagnetWhisper.Core.Training.Grpo.run config runDir resume options (GrpoEvents.ProgressOnly progress) signals.Token
    RunCommand.printEnd "grpo" runDir config.Common signals.Token.IsCancellationRequested result
    0
