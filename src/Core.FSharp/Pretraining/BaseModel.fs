namespace MagnetWhisper.Core.Pretraining

// `magnet demo pretrain` (issue 11 §3): the built-in base model made reproducibly in three stages in one run folder:
// (1) a synthetic corpus (SynthCorpus, WAV) in RUN_DIR/corpus unless one is given; (2) the supervised trainer with the
// recipe (PretrainRecipe) in RUN_DIR/train; (3) the run's best/ (final/ without dev data) exported to
// RUN_DIR/base-model in float16 without the CTC head, evaluated split by split as stored, with PROVENANCE.md. A run
// interrupted in any stage continues with Resume; an already trained run can be exported on its own (TrainedRun).

open System
open System.Diagnostics
open System.IO
open System.Runtime.InteropServices
open System.Security.Cryptography
open System.Threading
open TorchSharp
open MagnetWhisper.Core.Data
open MagnetWhisper.Core.Evaluation
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Synthesis
open MagnetWhisper.Core.Training
open MagnetWhisper.Core.Whisper

/// What a pretraining run is asked to do.
type PretrainOptions =
    { /// The run folder (corpus/, train/, base-model/, pretrain.json).
      RunDir: string
      /// An existing corpus (a manifest, or a folder holding manifest.jsonl) with the splits the recipe names; None
      /// synthesises one into RUN_DIR/corpus.
      Corpus: string option
      /// Utterances to synthesise.
      Utterances: int
      /// Seed of the synthesis and of the training.
      Seed: int64
      /// Training steps; None = the recipe's.
      Steps: int option
      /// `key=value` overrides of the recipe (as `magnet train --set`).
      Sets: string list
      /// Continue the run in RunDir (its own pretrain.json decides what it does); the other request fields are ignored.
      Resume: bool
      /// Export this already trained run folder (e.g. one `magnet train --config data/demo/pretrain.json` made)
      /// instead of synthesising and training: RunDir receives base-model/ only.
      TrainedRun: string option
      /// The command line, for the provenance.
      CommandLine: string
      /// Where training and evaluation run.
      Device: torch.Device
      /// ffmpeg for corpora in formats other than WAV and FLAC.
      Ffmpeg: string option
      /// Utterances synthesised at once.
      SynthesisWorkers: int }

/// What a pretraining run tells its caller as it goes.
type PretrainEvents =
    { /// A stage starts: one line.
      Stage: string -> unit
      /// Anything else worth a line (synthesis progress, skipped stages, evaluation results).
      Note: string -> unit
      /// The trainer's events.
      Training: SupervisedEvents }

/// How a pretraining run ended.
type PretrainResult =
    { /// The training's outcome (None when no training ran in this call: already complete, or TrainedRun).
      Training: SupervisedOutcome option
      /// The exported base model (None when training was interrupted).
      BaseModel: string option
      /// What PROVENANCE.md states (None when training was interrupted).
      Provenance: Provenance option }

/// The pretraining of the built-in base model.
[<RequireQualifiedAccess>]
module Pretrain =
    /// RUN_DIR/corpus: the synthesised corpus.
    [<Literal>]
    let CorpusFolder = "corpus"

    /// RUN_DIR/train: the training run.
    [<Literal>]
    let TrainFolder = "train"

    /// RUN_DIR/base-model: the exported model with PROVENANCE.md.
    [<Literal>]
    let BaseModelFolder = "base-model"

    /// Stage names of pretrain.json's seconds and PROVENANCE.md's time table.
    [<Literal>]
    let CorpusStage = "corpus synthesis"

    /// See CorpusStage.
    [<Literal>]
    let TrainStage = "training (with dev and test evaluations)"

    /// See CorpusStage.
    [<Literal>]
    let ExportStage = "export and evaluation"

    /// The base model's stored dtype.
    let baseModelDType = torch.float16

    /// The manifest of a corpus argument (SynthCorpus.manifestOf) as a full path.
    let corpusPath (corpus: string) : string = Path.GetFullPath(SynthCorpus.manifestOf corpus)

    /// True when the folder is missing or empty (a new run may start there).
    let isFresh (runDir: string) : bool =
        not (Directory.Exists runDir) || Seq.isEmpty (Directory.EnumerateFileSystemEntries runDir)

    /// The model folder of a finished training run: best/ (by dev WER), else final/.
    let exportSource (trainDir: string) : string =
        let best = Path.Combine(trainDir, TrainingRun.BestFolder)
        let final = Path.Combine(trainDir, TrainingRun.FinalFolder)
        if MagnetFormat.isMagnetFolder best then best
        elif MagnetFormat.isMagnetFolder final then final
        else raise (FileNotFoundException($"{trainDir} holds no trained model (neither {TrainingRun.BestFolder}/ nor {TrainingRun.FinalFolder}/)", final))

    /// True when the training run in trainDir completed (final/ written).
    let isTrained (trainDir: string) = MagnetFormat.isMagnetFolder (Path.Combine(trainDir, TrainingRun.FinalFolder))

    /// The machine: CPU model (when /proc/cpuinfo names it), OS, architecture and torch's threads.
    let machine () : string =
        let cpu =
            try
                File.ReadLines "/proc/cpuinfo"
                |> Seq.tryFind (fun l -> l.StartsWith "model name")
                |> Option.map (fun l -> l.Substring(l.IndexOf ':' + 1).Trim())
            with _ -> None
        let parts =
            [ yield! Option.toList cpu
              RuntimeInformation.OSDescription
              string RuntimeInformation.ProcessArchitecture
              $"{torch.get_num_threads ()} torch threads" ]
        String.Join(", ", parts)

    let private sha256 (path: string) =
        use s = File.OpenRead path
        Convert.ToHexString(SHA256.HashData s).ToLowerInvariant()

    /// Evaluates a model folder split by split (each split of dev_data's dev_splits, then of test_data's test_splits;
    /// all of a corpus when it names no split). A split without a usable utterance is left out with a note.
    let evaluateSplits (config: TrainConfig) (model: MagnetWhisperModel) (options: EvaluationOptions) (ffmpeg: string option)
                       (note: string -> unit) (ct: CancellationToken) : SplitScore list =
        let parts (key: string) (path: string option) (splits: string list) =
            match path with
            | None -> []
            | Some p ->
                match splits with
                | [] -> [ key, p, (if key = "dev_data" then "dev" else "test"), [] ]
                | names -> [ for s in names -> key, p, s, [ s ] ]
        [ for key, path, name, splits in parts "dev_data" config.DevData config.DevSplits @ parts "test_data" config.TestData config.TestSplits do
              let corpus =
                  try Some(TrainingRun.readCorpus config ffmpeg key splits path)
                  with :? InvalidDataException as e ->
                      note $"{name}: not evaluated ({e.Message})"
                      None
              match corpus with
              | Some c ->
                  let result = Evaluator.evaluate model options c ignore ct
                  let score = { Split = name; Utterances = result.Utterances.Length; Wer = result.Score.Words.Rate; Cer = result.Score.Characters.Rate }
                  note $"{name}: WER {100.0 * score.Wer:F2}%%, CER {100.0 * score.Cer:F2}%% ({score.Utterances} utterances)"
                  score
              | None -> () ]

    /// Stage 3: exports the training run's model to baseModel (float16, no CTC head), evaluates it as stored on each
    /// split and writes PROVENANCE.md. Returns the provenance.
    let export (trainDir: string) (baseModel: string) (commands: string list) (corpus: string) (stages: (string * float) list)
               (timingNote: string option) (device: torch.Device) (ffmpeg: string option) (note: string -> unit) (ct: CancellationToken) : Provenance =
        let watch = Stopwatch.StartNew()
        let source = exportSource trainDir
        let config = TrainConfig.read (Path.Combine(trainDir, TrainingRun.ConfigFile))
        let report = MagnetResave.run { DType = Some baseModelDType; DropCtcHead = true } source baseModel
        note $"exported {source} to {baseModel}: {Checkpoint.TorchDtypeName report.DType}, no CTC head, {float report.Bytes / 1048576.0:F1} MB"
        let scores, parameters =
            use model = MagnetFormat.load baseModel device torch.float32
            let evaluation =
                { EvaluationOptions.Default with BatchSize = config.EvalBatchSize; Workers = config.Workers; Language = config.Language; Ffmpeg = ffmpeg }
            let scores = evaluateSplits config model evaluation ffmpeg note ct
            scores, model.parameters () |> Seq.sumBy (fun p -> p.numel ())
        let metricsPath = Path.Combine(trainDir, "metrics.jsonl")
        let lines = if File.Exists metricsPath then MetricsJsonl.read metricsPath |> List.map (fun l -> l.Step, l.Values) else []
        let steps =
            lines |> List.filter (fun (_, v) -> v |> List.exists (fun (k, _) -> k = MetricKeys.TrainLoss)) |> List.map fst
            |> List.fold max 0L
        let provenance =
            { Commands = commands
              Written = DateTime.UtcNow
              Seed = config.Seed
              Steps = int steps
              MaxSteps = config.MaxSteps
              Corpus = corpus
              Cores = Environment.ProcessorCount
              Machine = machine ()
              Stages = stages @ [ ExportStage, watch.Elapsed.TotalSeconds ]
              TimingNote = timingNote
              Tools = ToolVersions.collect ()
              Source = source
              DType = Checkpoint.TorchDtypeName report.DType
              Parameters = parameters
              Bytes = report.Bytes
              Sha256 = sha256 (Path.Combine(baseModel, Checkpoint.WeightsFile))
              Metrics = Provenance.metricsOf lines
              Scores = scores
              ConfigJson = TrainConfig.toJson config }
        Provenance.write baseModel provenance
        provenance

    /// Exports an already trained run folder (TrainedRun): the training's wall time is read from the run folder's
    /// file times, since this command did not run it.
    let private exportTrained (options: PretrainOptions) (trained: string) (events: PretrainEvents) (ct: CancellationToken) : PretrainResult =
        let configPath = Path.Combine(trained, TrainingRun.ConfigFile)
        if not (File.Exists configPath) then raise (FileNotFoundException($"{trained} is not a training run: it has no {TrainingRun.ConfigFile}", configPath))
        if not (isTrained trained) then
            raise (InvalidOperationException $"{trained} has not completed its training (no {TrainingRun.FinalFolder}/): finish it with 'magnet train --resume {trained}' first")
        let config = TrainConfig.read configPath
        let started = File.GetLastWriteTimeUtc configPath
        let ended =
            [ Path.Combine(trained, "metrics.jsonl"); Path.Combine(trained, TrainingRun.FinalFolder, Checkpoint.WeightsFile) ]
            |> List.filter File.Exists
            |> List.map File.GetLastWriteTimeUtc
            |> List.max
        let note =
            $"The training was run before this command, in {Path.GetFullPath trained}; its wall time is read from that folder's file times ({TrainingRun.ConfigFile} written → metrics.jsonl last written), so it includes any pause between an interruption and its resume."
        events.Stage $"exporting the trained run {trained} to {Path.Combine(options.RunDir, BaseModelFolder)}"
        Directory.CreateDirectory options.RunDir |> ignore
        let provenance =
            export trained (Path.Combine(options.RunDir, BaseModelFolder)) [ options.CommandLine ] $"the corpus at {config.Data} (training run {Path.GetFullPath trained})"
                [ TrainStage, (ended - started).TotalSeconds ] (Some note) options.Device options.Ffmpeg events.Note ct
        { Training = None; BaseModel = Some(Path.Combine(options.RunDir, BaseModelFolder)); Provenance = Some provenance }

    /// Runs (or, with Resume, continues) a pretraining run: corpus, training, export. An interrupted training (the
    /// token, or StopAtStep of `supervised`) returns without exporting; resuming continues it.
    let run (options: PretrainOptions) (supervised: SupervisedOptions) (events: PretrainEvents) (ct: CancellationToken) : PretrainResult =
        match options.TrainedRun with
        | Some trained -> exportTrained options trained events ct
        | None ->
        let runDir = Path.GetFullPath options.RunDir
        let state =
            if options.Resume then
                let s = PretrainState.read runDir
                { s with Commands = s.Commands @ [ options.CommandLine ] }
            else
                if not (isFresh runDir) then
                    raise (IOException $"{options.RunDir} is not empty: continue a pretraining run there with --resume, or choose a new folder")
                Directory.CreateDirectory runDir |> ignore
                { Commands = [ options.CommandLine ]
                  Corpus = (match options.Corpus with Some c -> corpusPath c | None -> Path.Combine(runDir, CorpusFolder, SynthCorpus.ManifestName))
                  Synthesised = options.Corpus.IsNone
                  Utterances = options.Utterances
                  Seed = options.Seed
                  Steps = options.Steps
                  Sets = options.Sets
                  Seconds = Map.empty }
        // The recipe is checked before anything is made, so a bad --set leaves nothing behind but this folder.
        let config = PretrainRecipe.config state.Corpus state.Sets (Some state.Seed) state.Steps
        let mutable state = state
        PretrainState.save runDir state
        let timed (stage: string) (work: unit -> 'a) : 'a =
            let watch = Stopwatch.StartNew()
            try work ()
            finally
                state <- state.Add(stage, watch.Elapsed.TotalSeconds)
                PretrainState.save runDir state
        // 1. The corpus.
        if state.Synthesised then
            if File.Exists state.Corpus then events.Stage $"1/3 corpus: {state.Corpus} is already synthesised"
            else
                let folder = Path.GetDirectoryName state.Corpus
                events.Stage $"1/3 corpus: synthesising {state.Utterances} utterances (seed {state.Seed}, WAV) into {folder}"
                let synthesis =
                    { SynthesisOptions.Default with Utterances = state.Utterances; Seed = state.Seed; Workers = options.SynthesisWorkers; Format = Wav }
                let report = timed CorpusStage (fun () -> SynthCorpus.synthesise synthesis folder events.Note ct)
                for f in report.Failed do events.Note $"not synthesised: {f.Source}: {f.Reason}"
        else
            if not (File.Exists state.Corpus || Directory.Exists state.Corpus) then
                raise (FileNotFoundException($"the corpus {state.Corpus} is missing", state.Corpus))
            events.Stage $"1/3 corpus: {state.Corpus} (given)"
        // 2. Training.
        let trainDir = Path.Combine(runDir, TrainFolder)
        let outcome =
            if isTrained trainDir then
                events.Stage $"2/3 training: {trainDir} has completed"
                None
            else
                let resume = File.Exists(Path.Combine(trainDir, TrainingRun.ConfigFile))
                events.Stage(
                    if resume then $"2/3 training: resuming {trainDir}"
                    else $"2/3 training: {config.MaxSteps} steps of {config.BatchSize} (seed {config.Seed}) into {trainDir}")
                let result = timed TrainStage (fun () -> Supervised.run config trainDir resume supervised events.Training ct)
                Some result.Outcome
        if outcome = Some Interrupted then
            { Training = outcome; BaseModel = None; Provenance = None }
        else
            // 3. Export.
            let baseModel = Path.Combine(runDir, BaseModelFolder)
            events.Stage $"3/3 export: {exportSource trainDir} → {baseModel} ({Checkpoint.TorchDtypeName baseModelDType}, no CTC head), evaluated split by split"
            let corpus =
                if state.Synthesised then
                    $"{state.Utterances} utterances synthesised with seed {state.Seed} (WAV; as `magnet corpus synth -o corpus --utterances {state.Utterances} --seed {state.Seed}`)"
                else $"the corpus at {state.Corpus}"
            let stages = [ for stage in [ CorpusStage; TrainStage ] do
                               match state.Seconds.TryFind stage with
                               | Some s -> stage, s
                               | None -> () ]
            let watch = Stopwatch.StartNew()
            let provenance = export trainDir baseModel state.Commands corpus stages None options.Device options.Ffmpeg events.Note ct
            state <- state.Add(ExportStage, watch.Elapsed.TotalSeconds)
            PretrainState.save runDir state
            { Training = outcome; BaseModel = Some baseModel; Provenance = Some provenance }
