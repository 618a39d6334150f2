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
    | Test_Data of corpus: string
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
            | Test_Data _ -> "test corpus evaluated with best/ (or final/) at the end of the run (key test_data)."
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
    [ for a in args.GetAllResults() do
          match a with
          | Model d -> "--model", "model", RunCommand.text d
          | From_Scratch s -> "--from-scratch", "from_scratch", RunCommand.text s
          | Data d -> "--data", "data", RunCommand.text d
          | Dev_Data d -> "--dev-data", "dev_data", RunCommand.text d
          | Data_Split s -> "--data-split", "data_splits", RunCommand.names s
          | Dev_Split s -> "--dev-split", "dev_splits", RunCommand.names s
          | Test_Data d -> "--test-data", "test_data", RunCommand.text d
          | Max_Steps n -> "--max-steps", "max_steps", string n
          | Batch_Size n -> "--batch-size", "batch_size", string n
          | Lr x -> "--lr", "lr", RunCommand.number x
          | Eval_Every n -> "--eval-every", "eval_every", string n
          | Checkpoint_Every n -> "--checkpoint-every", "checkpoint_every", string n
          | Seed s -> "--seed", "seed", string s
          | _ -> () ]

let private ops: RunCommand.ConfigOps<TrainConfig> =
    { Default = TrainConfig.Default; Read = TrainConfig.read; Set = TrainConfig.set; SetValue = TrainConfig.setValue
      Validate = TrainConfig.validate; Common = id; WithCommon = fun c _ -> c }

let private sources (args: ParseResults<TrainArgs>) : RunCommand.Sources =
    { ConfigFile = args.TryGetResult Config; Sets = args.GetResults Set; Flags = keyFlags args }

/// A starting-point flag replaces the other starting point of the file.
let private startingPoint (args: ParseResults<TrainArgs>) (config: TrainConfig) : TrainConfig =
    if args.Contains Model && args.Contains From_Scratch then
        invalidArg "--model" "give --model DIR or --from-scratch SIZE, not both"
    if args.Contains Model then { config with FromScratch = None }
    elif args.Contains From_Scratch then { config with Model = "" }
    else config

/// The configuration of a new run: the file, then the --set overrides, then the flags. Errors name the file, the
/// --set or the flag, and are usage errors.
let configure (args: ParseResults<TrainArgs>) : TrainConfig = RunCommand.configure ops (sources args) (startingPoint args)

let run (args: ParseResults<TrainArgs>) : int =
    let parsed: RunCommand.Parsed =
        { Sources = sources args; Resume = args.TryGetResult Resume; Output = args.TryGetResult Output
          Device = args.TryGetResult Device; StopAtStep = args.TryGetResult Stop_At_Step }
    let device, stopAt, runDir, resume, config = RunCommand.start "train" ops parsed (startingPoint args)
    use reporter = new TrainProgress.Reporter(not Console.IsErrorRedirected, config.LogEvery)
    use signals = new RunCommand.Signals(reporter.Note)
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
    let result = Supervised.run config runDir resume options events signals.Token
    reporter.Done()
    RunCommand.printEnd "train" runDir config signals.Token.IsCancellationRequested result
    0
