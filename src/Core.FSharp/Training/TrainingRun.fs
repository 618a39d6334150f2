namespace MagnetWhisper.Core.Training

// What the supervised and the GRPO loops do the same way (issue 9 §3, issue 10): the run folder (config.json,
// checkpoints/step-N keeping the newest K, best/ by dev WER, final/, metrics), a new run or a resume from the newest
// checkpoint, the starting model (StartingPoint), the dev evaluation with its best/early-stopping standing, the stop
// after too many non-finite updates, the test evaluation at the end, and the events callers observe. Each trainer
// keeps only its step.

open System
open System.IO
open System.Threading
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Data
open MagnetWhisper.Core.Evaluation
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Text
open MagnetWhisper.Core.Whisper

/// How a run is carried out (not part of its configuration: a resumed run may change them).
type SupervisedOptions =
    { /// Where the model and batches live.
      Device: torch.Device
      /// End the run after this step with a checkpoint, exactly as an interruption would.
      StopAtStep: int option
      /// ffmpeg for formats other than WAV and FLAC.
      Ffmpeg: string option }

/// A metrics line as the trainer logged it (every log_every steps, at the last step, and the test evaluation).
type SupervisedLog =
    { Step: int
      /// The line's keys (MetricKeys' train/… names) and values, in the order written.
      Values: (string * float) list }

/// A dev evaluation (every eval_every steps and at the end, when the run has dev data).
type SupervisedEvaluation =
    { Step: int
      /// Word error rate after normalisation (fraction).
      Wer: float
      /// Character error rate (fraction).
      Cer: float
      /// Mean kept fraction over the predictors (NaN without predictors).
      Compression: float
      /// This evaluation is the run's best so far (best/ was just written).
      IsBest: bool }

/// A checkpoint folder the trainer has just written (complete: it can be resumed from).
type SupervisedCheckpoint =
    { Step: int
      Folder: string }

/// What callers of a trainer observe; every callback runs on the training thread between steps. 'Progress is the
/// trainer's own progress record.
type RunEvents<'Progress> =
    { /// After every step.
      Progress: 'Progress -> unit
      /// After a metrics line was written.
      Logged: SupervisedLog -> unit
      /// After a dev evaluation.
      Evaluated: SupervisedEvaluation -> unit
      /// After a checkpoint was written.
      CheckpointWritten: SupervisedCheckpoint -> unit }

    /// Observes nothing.
    static member None: RunEvents<'Progress> = { Progress = ignore; Logged = ignore; Evaluated = ignore; CheckpointWritten = ignore }

    /// Observes the progress after every step only.
    static member ProgressOnly(progress: 'Progress -> unit) : RunEvents<'Progress> = { RunEvents<'Progress>.None with Progress = progress }

/// How a run ended.
type SupervisedOutcome =
    /// max_steps reached: final/ written.
    | Completed
    /// Cancelled, or StopAtStep reached: a checkpoint holds the state to resume.
    | Interrupted
    /// Early stopping: the dev WER did not improve for `early_stopping_patience` evaluations.
    | StoppedEarly

/// The evaluation of the run's model on `test_data` at the end of a run.
type TestEvaluation =
    { /// The model folder evaluated (best/, or final/ without dev data).
      Model: string
      /// Word error rate after normalisation (fraction).
      Wer: float
      /// Character error rate (fraction).
      Cer: float
      /// Mean kept fraction over the predictors (NaN without predictors).
      Compression: float
      /// Utterances evaluated.
      Utterances: int }

/// The end of a run.
type SupervisedResult =
    { Outcome: SupervisedOutcome
      /// Updates applied in total.
      Step: int
      /// The newest checkpoint folder.
      Checkpoint: string option
      /// The best dev WER (fraction) and its step.
      Best: (float * int) option
      /// The test evaluation (a run that was not interrupted, with `test_data`).
      Test: TestEvaluation option }

/// The run folder's conventions and the parts of a run both trainers share.
[<RequireQualifiedAccess>]
module TrainingRun =
    /// The resolved configuration of a run folder.
    [<Literal>]
    let ConfigFile = "config.json"

    /// The folder of the checkpoints.
    [<Literal>]
    let CheckpointsFolder = "checkpoints"

    /// The model with the best dev WER.
    [<Literal>]
    let BestFolder = "best"

    /// The model at the end of a run that was not interrupted.
    [<Literal>]
    let FinalFolder = "final"

    /// The generator of boundary sampling, as named in trainer.json.
    [<Literal>]
    let SamplingGenerator = "boundary_sampling"

    /// `checkpoints/step-00000042`: zero-padded so names sort by step.
    let checkpointName (step: int) = $"step-%08d{step}"

    /// The checkpoint folders of a run, oldest first (only complete ones: each has trainer.json).
    let checkpoints (runDir: string) : string list =
        let dir = Path.Combine(runDir, CheckpointsFolder)
        if not (Directory.Exists dir) then []
        else
            Directory.GetDirectories(dir, "step-*")
            |> Array.filter (fun d -> File.Exists(Path.Combine(d, TrainingCheckpoint.TrainerFile)))
            |> Array.sort
            |> List.ofArray

    /// A BatchPosition as trainer.json's data_position: epoch · 2³² + batch.
    let encodePosition (p: BatchPosition) : int64 = (int64 p.Epoch <<< 32) ||| int64 p.Batch

    /// The BatchPosition of a data_position.
    let decodePosition (v: int64) : BatchPosition = { Epoch = int (v >>> 32); Batch = int (v &&& 0xFFFFFFFFL) }

    /// How a trainer reads, checks and writes its configuration, and finds the common keys in it.
    type ConfigFormat<'Config> =
        { Read: string -> 'Config
          Validate: 'Config -> 'Config
          Save: string -> 'Config -> unit
          Common: 'Config -> TrainConfig }

    /// The configuration a run goes on with and the checkpoint it resumes from. A new run needs a runDir without a
    /// config.json (the configuration is written there, after its starting point was resolved, so a bad one leaves no
    /// run folder behind); `resume` reads the run's own config.json and takes its newest checkpoint.
    let openRun (format: ConfigFormat<'Config>) (config: 'Config) (runDir: string) (resume: bool) : 'Config * string option =
        let configPath = Path.Combine(runDir, ConfigFile)
        if resume then
            if not (File.Exists configPath) then raise (FileNotFoundException($"{runDir} is not a training run: it has no {ConfigFile}", configPath))
            match checkpoints runDir |> List.tryLast with
            | None -> raise (FileNotFoundException($"{runDir} has no checkpoint to resume from (in {CheckpointsFolder}/)", Path.Combine(runDir, CheckpointsFolder)))
            | Some c -> format.Read configPath |> format.Validate, Some c
        else
            let config = format.Validate config
            if File.Exists configPath then
                raise (IOException $"{runDir} already holds a run ({ConfigFile}); resume it or choose another folder")
            StartingPoint.ofConfig (format.Common config) |> ignore
            Directory.CreateDirectory runDir |> ignore
            format.Save configPath config
            config, None

    /// The model a run goes on with: the checkpoint's, or the configuration's starting point (new weights drawn from
    /// the global generator, seeded by the caller).
    let loadModel (config: TrainConfig) (start: string option) (device: torch.Device) : MagnetWhisperModel =
        match start with
        | Some c -> TrainingCheckpoint.loadModel c device torch.float32
        | None -> StartingPoint.load (StartingPoint.ofConfig config) device torch.float32

    /// The optimizer's learning rates and weight decay of a configuration.
    let optimizerSettings (config: TrainConfig) : OptimizerSettings =
        let settings =
            match config.PredictorLearningRate with
            | Some p -> OptimizerSettings.PredictorsAndRest(p, config.LearningRate)
            | None -> OptimizerSettings.Default config.LearningRate
        { settings with WeightDecay = config.WeightDecay }

    /// A corpus of the configuration, measured; errors name the key.
    let readCorpus (config: TrainConfig) (ffmpeg: string option) (key: string) (splits: string list) (path: string) : Corpus =
        let corpus =
            try Corpora.read { CorpusOptions.Default with MaxDuration = config.MaxDuration; Splits = splits } path
            with :? InvalidDataException as e -> raise (InvalidDataException $"key '{key}' ({path}): {e.Message}")
        let measured = BatchLoader.measure config.Workers ffmpeg CancellationToken.None corpus
        if measured.Utterances.Length = 0 then raise (InvalidDataException $"key '{key}' ({path}): the corpus holds no usable utterance")
        measured

    /// The fractional epoch of a delivered batch (epoch + batches done / batches of the epoch).
    let epochOf (loader: BatchLoader) (loaded: LoadedBatch) : float =
        float loaded.Position.Epoch + float (loaded.Position.Batch + 1) / float (loader.BatchesIn loaded.Position.Epoch)

    /// What the trainer keeps beside the configuration in trainer.json: the best dev WER and the evaluations since.
    type Standing =
        { Best: (float * int) option
          SinceBest: int }

    /// trainer.json's configuration part: the configuration under `configKey`, then the standing.
    let standingJson (configKey: string) (configJson: string) (s: Standing) : string =
        Json.write (fun w ->
            w.WritePropertyName configKey
            w.WriteRawValue configJson
            match s.Best with
            | Some(wer, step) ->
                w.WriteNumber("best_wer", wer)
                w.WriteNumber("best_step", step)
            | None -> ()
            w.WriteNumber("evaluations_since_best", s.SinceBest))

    /// The standing of trainer.json's configuration part (none and 0 when absent).
    let standingOf (path: string) (json: string) : Standing =
        use doc = Json.parseDocument path json
        let root = doc.RootElement
        let best =
            match Json.tryProp root "best_wer", Json.tryProp root "best_step" with
            | Some w, Some s -> Some(Json.asFloat path "best_wer" w, Json.asInt path "best_step" s)
            | _ -> None
        { Best = best
          SinceBest = Json.tryProp root "evaluations_since_best" |> Option.map (Json.asInt path "evaluations_since_best") |> Option.defaultValue 0 }

    /// An evaluation's WER, CER and mean kept fraction, and its metrics under the given keys.
    let private scores (result: EvaluationResult) =
        let kept = result.Predictors |> List.map _.KeptFraction
        result.Score.Words.Rate, result.Score.Characters.Rate, (if kept.IsEmpty then nan else List.average kept)

    /// An evaluation's metrics under the keys (WER, CER, raw WER, utterances, kept fraction), rates in percent as the
    /// original logged its WERs.
    let private scoreValues (wer, cer, raw, samples, kept) (result: EvaluationResult) : (string * float) list =
        let w, c, compression = scores result
        [ wer, 100.0 * w
          cer, 100.0 * c
          raw, 100.0 * result.Score.RawWords.Rate
          samples, float result.Utterances.Length
          kept, compression ]

    /// A run in progress: the state both loops share (step, data position, dev standing, the newest checkpoint, the
    /// metrics sink) once the model and optimizer exist. Created after them: it restores a resumed run's checkpoint
    /// into them, then reads the corpora (train, dev, test) and opens the metrics.
    type Session<'Progress>
        (runDir: string, config: TrainConfig, configKey: string, configJson: string, start: string option,
         model: MagnetWhisperModel, optimizer: TrainingOptimizer, generators: (string * torch.Generator) list,
         options: SupervisedOptions, events: RunEvents<'Progress>) =
        let saved = start |> Option.map (fun c -> c, TrainingCheckpoint.restore c optimizer generators)
        let mutable step = saved |> Option.map (fun (_, s) -> s.Step) |> Option.defaultValue 0
        let mutable position = saved |> Option.map (fun (_, s) -> decodePosition s.DataPosition) |> Option.defaultValue BatchPosition.Start
        let mutable standing =
            match saved with
            | Some(c, s) -> standingOf (Path.Combine(c, TrainingCheckpoint.TrainerFile)) s.Config
            | None -> { Best = None; SinceBest = 0 }
        let firstStep = step
        let train = readCorpus config options.Ffmpeg "data" config.DataSplits config.Data
        let dev = config.DevData |> Option.map (readCorpus config options.Ffmpeg "dev_data" config.DevSplits)
        let test = config.TestData |> Option.map (readCorpus config options.Ffmpeg "test_data" config.TestSplits)
        let sink = MetricsSinks.runFolder runDir (if start.IsSome then Some(int64 step) else None)
        let evaluation =
            { EvaluationOptions.Default with BatchSize = config.EvalBatchSize; Workers = config.Workers; Language = config.Language; Ffmpeg = options.Ffmpeg }
        let mutable lastCheckpoint = start
        let mutable nonFinite = 0
        let mutable outcome = if step >= config.MaxSteps then Some Completed else None

        /// Updates applied in total.
        member _.Step = step
        /// The step this session started from (0, or the resumed checkpoint's).
        member _.FirstStep = firstStep
        /// The training corpus.
        member _.Train = train
        /// The dev corpus (dev_data), if any.
        member _.Dev = dev
        /// The dev losses of the model as it is (a trainer's own, e.g. eval/loss and eval/asr_loss), logged with each dev
        /// evaluation's scores.
        member val DevLoss: (Corpus -> (string * float) list) option = None with get, set
        /// The newest checkpoint folder.
        member _.LastCheckpoint = lastCheckpoint
        /// The data position to go on from.
        member _.Position = position

        /// The batches of the run from its data position until the run ends (the loop's body decides that through
        /// EndStep); fails when the data runs out first.
        member s.Batches(loader: BatchLoader) : seq<LoadedBatch> =
            seq {
                // eval_at_start: a new run's step-0 evaluation, after the trainer has set DevLoss.
                if config.EvalAtStart && step = 0 && dev.IsSome then s.Evaluate()
                // The loader's epochs: enough for max_steps batches of a corpus whose every epoch has at least one batch.
                use e = loader.Batches(position, position.Epoch + config.MaxSteps, CancellationToken.None).GetEnumerator()
                while outcome.IsNone do
                    if not (e.MoveNext()) then
                        raise (InvalidDataException $"key 'data' ({config.Data}): the training data ran out at step {step}: every utterance of the later epochs was left out")
                    yield e.Current
            }

        /// Counts an update and moves the data position past its batch.
        member _.Advance(next: BatchPosition) =
            step <- step + 1
            position <- next

        /// True at the steps that write a metrics line (every log_every steps and the last).
        member _.IsLogStep = step % config.LogEvery = 0 || step = config.MaxSteps

        /// Writes a metrics line of the current step and tells the caller.
        member _.Log(values: (string * float) list) =
            sink.Log(int64 step, values)
            events.Logged { Step = step; Values = values }

        /// Writes a checkpoint of the current step, keeping the newest keep_checkpoints.
        member _.Checkpoint() =
            let dir = Path.Combine(runDir, CheckpointsFolder, checkpointName step)
            TrainingCheckpoint.save dir model optimizer
                { Step = step; DataPosition = encodePosition position; Random = RandomState.capture generators
                  Config = standingJson configKey configJson standing }
            lastCheckpoint <- Some dir
            // Keep the newest K (the one just written is the newest).
            let all = checkpoints runDir
            for old in all |> List.take (max 0 (all.Length - config.KeepCheckpoints)) do
                Directory.Delete(old, true)
            events.CheckpointWritten { Step = step; Folder = dir }

        /// Evaluates the dev data (in evaluation mode, the model's mode restored after), writes best/ on a better WER.
        member s.Evaluate() =
            match dev with
            | None -> ()
            | Some corpus ->
                let training = model.training
                model.eval()
                let result = Evaluator.evaluate model evaluation corpus ignore CancellationToken.None
                let losses = s.DevLoss |> Option.map (fun f -> f corpus) |> Option.defaultValue []
                if training then model.train() else model.eval()
                let wer, cer, compression = scores result
                let values =
                    scoreValues (MetricKeys.EvalWer, MetricKeys.EvaluationCer, MetricKeys.EvaluationRawWer, MetricKeys.EvalNumSamples, MetricKeys.EvalCompressionRatio) result
                sink.Log(int64 step, losses @ values)
                let isBest =
                    match standing.Best with
                    | Some(best, _) when not (wer < best) ->
                        standing <- { standing with SinceBest = standing.SinceBest + 1 }
                        false
                    | _ ->
                        MagnetFormat.save (Path.Combine(runDir, BestFolder)) model
                        standing <- { Best = Some(wer, step); SinceBest = 0 }
                        true
                events.Evaluated { Step = step; Wer = wer; Cer = cer; Compression = compression; IsBest = isBest }

        /// After a step's metrics and progress: stops the run on too many non-finite updates in a row (without a
        /// checkpoint of this state), evaluates the dev data when due (stopping early when it did not improve for
        /// early_stopping_patience evaluations), ends the run at max_steps, on cancellation or at StopAtStep, and
        /// writes a checkpoint when due or at the end.
        member s.EndStep(skipped: SkipReason option, ct: CancellationToken) =
            nonFinite <- NonFiniteStreak.next nonFinite skipped
            if NonFiniteStreak.exceeds config.MaxNonFiniteSteps nonFinite then
                // No checkpoint of this state: the newest one stays the last good one.
                sink.Flush()
                let message = NonFiniteStreak.message step nonFinite config.MaxNonFiniteSteps skipped.Value lastCheckpoint
                raise (NonFiniteTrainingException(message, step, lastCheckpoint))
            let finished = step >= config.MaxSteps
            if dev.IsSome && ((config.EvalEvery > 0 && step % config.EvalEvery = 0) || finished) then
                s.Evaluate()
                if config.EarlyStoppingPatience > 0 && standing.SinceBest >= config.EarlyStoppingPatience then
                    outcome <- Some StoppedEarly
            let stopHere = ct.IsCancellationRequested || options.StopAtStep = Some step
            if finished then outcome <- Some Completed
            elif stopHere then outcome <- Some Interrupted
            if outcome.IsSome || (config.CheckpointEvery > 0 && step % config.CheckpointEvery = 0) then
                s.Checkpoint()

        /// Ends the run: final/ unless interrupted, then the test evaluation of best/ (final/ without dev data).
        member _.Finish() : SupervisedResult =
            sink.Flush()
            let outcome = outcome.Value
            let tested =
                if outcome = Interrupted then None
                else
                    MagnetFormat.save (Path.Combine(runDir, FinalFolder)) model
                    test |> Option.map (fun corpus ->
                        let folder = Path.Combine(runDir, if standing.Best.IsSome then BestFolder else FinalFolder)
                        use tested = MagnetFormat.load folder options.Device torch.float32
                        let result = Evaluator.evaluate tested evaluation corpus ignore CancellationToken.None
                        let wer, cer, compression = scores result
                        let values =
                            scoreValues (MetricKeys.TestWer, MetricKeys.TestCer, MetricKeys.TestRawWer, MetricKeys.TestNumSamples, MetricKeys.TestCompressionRatio) result
                        sink.Log(int64 step, values)
                        sink.Flush()
                        events.Logged { Step = step; Values = values }
                        { Model = folder; Wer = wer; Cer = cer; Compression = compression; Utterances = result.Utterances.Length })
            { Outcome = outcome; Step = step; Checkpoint = lastCheckpoint; Best = standing.Best; Test = tested }

        interface IDisposable with
            member _.Dispose() = sink.Dispose()
