namespace MagnetWhisper.Core.Demo

// `magnet demo` (issue 11 §4): the whole experiment on a corpus and a base model (by default the built-in ones of
// data/demo). 1. the base model is evaluated on dev, test and test-unseen-voice; 2. a predictor (BP2 by default) with mean pooling is added
// before an encoder layer and the model is fine-tuned with phoneme-count targets and a compression schedule by the
// supervised trainer (RUN_DIR/train is an ordinary run folder); 3. both models are evaluated on the test splits (WER,
// CER, compression, boundary precision/recall/F1 against the phone alignments and the random baseline) and their
// encoders are timed side by side; 4. RUN_DIR/summary.json. The command line only parses flags and prints; every
// number of the recipe is a field of DemoSettings.

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open System.Threading
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Data
open MagnetWhisper.Core.Decoding
open MagnetWhisper.Core.Evaluation
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Training
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Synthesis

/// The demo experiment.
[<RequireQualifiedAccess>]
module Experiment =
    /// The file that marks a folder as a demo run (a later run may replace such a folder).
    [<Literal>]
    let MarkerFile = "demo-run.json"

    /// The summary's file name.
    [<Literal>]
    let SummaryFile = "summary.json"

    /// The fine-tuning's run folder inside RUN_DIR.
    [<Literal>]
    let TrainFolder = "train"

    /// The fine-tuned model as the demo evaluates it (final/ with the calibrated inference threshold).
    [<Literal>]
    let ModelFolder = "model"

    /// The evaluations' report folders inside RUN_DIR (eval/base-test, eval/magnet-test, …).
    [<Literal>]
    let EvalFolder = "eval"

    /// The built-in asset `data/demo/<name>` of the repository this assembly was built in: searched upwards from the
    /// assembly's folder (src/Cli/bin/Release/net10.0 and the test projects' output lie inside the checkout), then
    /// from the current folder.
    let builtIn (name: string) : string option =
        let rec up (dir: DirectoryInfo) =
            if isNull dir then None
            else
                let candidate = Path.Combine(dir.FullName, "data", "demo", name)
                if Directory.Exists candidate then Some candidate else up dir.Parent
        match up (DirectoryInfo AppContext.BaseDirectory) with
        | Some d -> Some d
        | None -> up (DirectoryInfo(Directory.GetCurrentDirectory()))

    /// The manifest of a corpus argument: the file itself, or manifest.jsonl in the folder.
    let manifestOf (corpus: string) : string =
        let manifest = SynthCorpus.manifestOf corpus
        if File.Exists manifest then manifest
        elif Directory.Exists corpus then
            raise (FileNotFoundException($"{corpus}: the folder has no {SynthCorpus.ManifestName} (make one with magnet corpus synth)", Path.Combine(corpus, SynthCorpus.ManifestName)))
        else raise (FileNotFoundException($"{corpus}: no such corpus file or folder", corpus))

    /// The supervised configuration of the fine-tuning (docs/TRAINING.md keys): the base model with the predictor before
    /// `Layer` (mean pooling), phoneme-count targets, the compression schedule rising in stairs to the target by
    /// `RampEnd`, no dev evaluation and no intermediate checkpoints (final/ is evaluated).
    let trainConfig (settings: DemoSettings) : TrainConfig =
        let prior = settings.Prior.ToString("R", Globalization.CultureInfo.InvariantCulture)
        { TrainConfig.Default with
            Model = settings.Model
            Predictors = [ $"{settings.Layer}:{PredictorSpec.kindName settings.Predictor}:{prior}:mean" ]
            Data = manifestOf settings.Corpus
            DataSplits = [ settings.TrainSplit ]
            MaxSteps = settings.Steps
            BatchSize = settings.BatchSize
            LearningRate = settings.LearningRate
            PredictorLearningRate = Some settings.PredictorLearningRate
            WarmupRatio = settings.WarmupRatio
            Decay = CosineDecay
            MaxGradientNorm = Some 1.0
            TrainedParts = settings.TrainedParts
            Targets = [ "phonemes" ]
            TemperatureStart = settings.TemperatureStart
            TemperatureEnd = settings.TemperatureEnd
            Schedules =
                Map [ AllPredictors, { CurveOverrides.None with Compression = Some(Stepped(0.0, DemoArithmetic.rampSteps settings.RampEnd settings.RampStairs)) } ]
            LogEvery = max 1 (settings.Steps / 50)
            EvalEvery = 0
            CheckpointEvery = 0
            KeepCheckpoints = 1
            Seed = settings.Seed
            Workers = settings.Workers
            Language = "en" }

    /// Checks the settings before anything runs; raises ArgumentException naming the setting as the flag names it.
    let validate (settings: DemoSettings) : DemoSettings =
        if settings.Steps < 1 then invalidArg "--steps" $"--steps must be at least 1, got {settings.Steps}"
        if settings.BatchSize < 1 then invalidArg "batch size" $"the batch size must be at least 1, got {settings.BatchSize}"
        if not (settings.Prior > 0.0 && settings.Prior < 1.0) then invalidArg "prior" $"the prior must be in (0, 1), got {settings.Prior}"
        if settings.TestSplits.IsEmpty then invalidArg "splits" "at least one test split is needed"
        if not (Directory.Exists settings.Model) then raise (DirectoryNotFoundException $"--model {settings.Model}: folder not found")
        if not (MagnetFormat.isMagnetFolder settings.Model) then
            invalidArg "--model" $"--model {settings.Model}: not a MagnetWhisper folder (it has no magnet.json)"
        manifestOf settings.Corpus |> ignore
        let config, options = MagnetFormat.readOptions settings.Model
        if settings.Layer < 0 || settings.Layer >= config.EncoderLayers then
            invalidArg "--layer" $"--layer must be an encoder layer of the model, 0 to {config.EncoderLayers - 1}, got {settings.Layer}"
        match options.TryFind settings.Layer with
        | Some s -> invalidArg "--layer" $"--layer {settings.Layer}: the base model already has a {Predictors.typeName s.Predictor.Kind} before that layer"
        | None -> ()
        settings

    /// Whether a folder is empty or a previous demo run (which a new run replaces), or neither.
    let canWriteInto (dir: string) : bool =
        not (Directory.Exists dir)
        || Seq.isEmpty (Directory.EnumerateFileSystemEntries dir)
        || File.Exists(Path.Combine(dir, MarkerFile))

    /// The corpus of one split, the first EvalLimit utterances.
    let private splitCorpus (settings: DemoSettings) (split: string) : Corpus =
        let corpus = Corpora.read { Splits = [ split ]; MaxDuration = None; Limit = settings.EvalLimit } (manifestOf settings.Corpus)
        if corpus.Utterances.Length = 0 then
            raise (InvalidDataException $"{settings.Corpus}: the corpus has no utterance in split '{split}'")
        corpus

    let private evaluate (settings: DemoSettings) (events: DemoEvents) (name: string) (model: MagnetWhisperModel) (split: string) (ct: CancellationToken) : DemoEvaluation =
        let options =
            { EvaluationOptions.Default with
                BatchSize = settings.EvalBatchSize; Workers = settings.Workers; MaxTokens = Some settings.MaxTokens }
        let result = Evaluator.evaluate model options (splitCorpus settings split) (events.Evaluating name split) ct
        { Split = split; Result = result; Lengths = result.Utterances |> Array.choose (fun u -> DemoArithmetic.lengthsOf u.Predictors) }

    /// Times both encoders (ISpeechModel.Encode, as decoding runs them) on the same batches of a split's first
    /// TimingUtterances evaluated utterances: one untimed warm-up forward of each, then each batch `TimingRepeats`
    /// times, the models alternating (and swapping which goes first) so that both see the same machine load.
    let private time (settings: DemoSettings) (baseline: MagnetWhisperModel) (magnet: MagnetWhisperModel) (split: string) (ids: string[]) : DemoTiming =
        let corpus = splitCorpus settings split
        let chosen = corpus.Utterances |> Array.filter (fun u -> Array.contains u.Id ids) |> Array.truncate settings.TimingUtterances
        let waves =
            chosen
            |> Array.map (UtteranceAudio.loadUsing (Audio.findFfmpeg ()))
            |> Array.sortByDescending _.Length
        let batches = waves |> Array.chunkBySize settings.EvalBatchSize
        let encode (model: ISpeechModel) (features: LogMel.Features) =
            use _ = torch.NewDisposeScope()
            let watch = Stopwatch.StartNew()
            model.Encode(features.Mel, Some features.Mask) |> ignore
            if model.Device.``type`` = DeviceType.CUDA then torch.cuda.synchronize ()
            watch.Elapsed.TotalSeconds
        use _ = torch.inference_mode()
        let mutable baselineSeconds, magnetSeconds = 0.0, 0.0
        for i, batch in Array.indexed batches do
            use features = LogMel.extract baseline.Config.NumMelBins baseline.Device batch
            if i = 0 then
                encode baseline features |> ignore
                encode magnet features |> ignore
            let b = ResizeArray<float>()
            let m = ResizeArray<float>()
            for r in 1 .. settings.TimingRepeats do
                if r % 2 = 1 then
                    b.Add(encode baseline features)
                    m.Add(encode magnet features)
                else
                    m.Add(encode magnet features)
                    b.Add(encode baseline features)
            baselineSeconds <- baselineSeconds + Statistics.median b
            magnetSeconds <- magnetSeconds + Statistics.median m
        { Split = split; Utterances = chosen.Length; Repeats = settings.TimingRepeats; BaselineSeconds = baselineSeconds; MagnetSeconds = magnetSeconds }

    /// A copy of a model whose predictor before `layer` thresholds at `threshold` at inference (the same tensors).
    let withInferenceThreshold (model: MagnetWhisperModel) (layer: int) (threshold: float) : MagnetWhisperModel =
        let options =
            { model.Options with
                Predictors =
                    [ for s in model.Options.Predictors ->
                          if s.Layer = layer then { s with Predictor = { s.Predictor with InferenceThreshold = Some threshold } } else s ] }
        let copy = model.WithOptions(options, "the fine-tuned model")
        copy.eval()
        copy

    /// The inference threshold of the predictor before `layer` that keeps as many positions as the phoneme counts of
    /// the calibration split's utterances (DemoArithmetic.calibratedThreshold), from each utterance's probabilities.
    let calibrate (settings: DemoSettings) (model: MagnetWhisperModel) (ct: CancellationToken) : float * int =
        let corpus = splitCorpus settings settings.CalibrationSplit
        let ffmpeg = Audio.findFfmpeg ()
        let phonemes = MagnetWhisper.Core.Text.PhonemeOptions.Default
        let probabilities, targets =
            [ for u in corpus.Utterances ->
                  ct.ThrowIfCancellationRequested()
                  let samples = UtteranceAudio.loadUsing ffmpeg u
                  let duration = float (min samples.Length LogMel.NSamples) / float LogMel.SampleRate
                  use features = LogMel.extract model.Config.NumMelBins model.Device [ samples ]
                  let trace = BoundaryTrace.ofFeatures model features.Mel features.Mask duration
                  let p = trace.Predictors |> List.find (fun p -> p.Layer = settings.Layer)
                  p.Probabilities, Targets.count phonemes Phonemes u.Transcript ]
            |> List.unzip
        DemoArithmetic.calibratedThreshold probabilities targets, corpus.Utterances.Length

    let private describe (e: DemoEvaluation) : string =
        let s = e.Result.Score
        let compression =
            if e.Lengths.Length = 0 then ""
            else $", compression {DemoArithmetic.compression e.Lengths:F2}x"
        let boundaries =
            match e.Result.Boundaries with
            | b :: _ -> $", boundary F1 {b.Counts.F1:F3} (random {b.Counts.RandomF1:F3})"
            | [] -> ""
        $"{e.Split}: WER {100.0 * s.Words.Rate:F2}%%, CER {100.0 * s.Characters.Rate:F2}%%{compression}{boundaries} ({e.Result.Utterances.Length} utterances, {e.Result.Timing.TotalSeconds:F0} s)"

    /// Runs the experiment into runDir (created; a previous demo run there is replaced; any other non-empty folder
    /// is refused with ArgumentException naming `outputFlag`). Writes RUN_DIR/summary.json (DemoSummary) at the end;
    /// the report page is the caller's (the run folders hold what it shows).
    let run (settings: DemoSettings) (runDir: string) (outputFlag: string) (events: DemoEvents) (ct: CancellationToken) : DemoResult =
        let settings = validate settings
        if File.Exists runDir then invalidArg outputFlag $"{outputFlag} {runDir} is a file, not a folder"
        if not (canWriteInto runDir) then
            invalidArg outputFlag $"{outputFlag} {runDir}: the folder exists, is not empty and is not a previous demo run; choose another folder"
        if Directory.Exists runDir && not (Seq.isEmpty (Directory.EnumerateFileSystemEntries runDir)) then
            events.Note $"replacing the previous demo run in {runDir}"
            Directory.Delete(runDir, true)
        Directory.CreateDirectory runDir |> ignore
        AtomicWrite.text (Path.Combine(runDir, MarkerFile)) (JsonSerializer.Serialize {| corpus = settings.Corpus; model = settings.Model; seed = settings.Seed; started = DateTime.UtcNow.ToString "o" |})
        let clock = Stopwatch.StartNew()
        let total = 4
        let device = settings.Device
        let evalDir (name: string) (split: string) = Path.Combine(runDir, EvalFolder, $"{name}-{split}")
        // 1. The base model.
        let names (splits: string list) = String.Join(", ", splits)
        events.Stage { Number = 1; Total = total; Title = $"evaluating the base model {settings.Model} on {names settings.BaselineSplits}" }
        use baseline = MagnetFormat.load settings.Model device torch.float32
        let baselineEvaluations =
            [ for split in settings.BaselineSplits ->
                  let e = evaluate settings events "base" baseline split ct
                  Report.write (evalDir "base" split) settings.Model e.Result |> ignore
                  events.Note("base model, " + describe e)
                  e ]
        // 2. Fine-tuning with the predictor.
        let config = trainConfig settings
        let trainDir = Path.Combine(runDir, TrainFolder)
        events.Stage { Number = 2; Total = total; Title = $"fine-tuning with a {(PredictorSpec.kindName settings.Predictor).ToUpperInvariant()} before encoder layer {settings.Layer} (prior {settings.Prior:G3}, mean pooling, phoneme targets): {settings.Steps} updates of {settings.BatchSize}" }
        let options: SupervisedOptions = { Device = device; StopAtStep = None; Ffmpeg = Audio.findFfmpeg () }
        let trainEvents = { SupervisedEvents.ProgressOnly events.Training with Evaluated = events.Evaluated }
        let trained = Supervised.run config trainDir false options trainEvents ct
        if trained.Outcome = Interrupted then raise (OperationCanceledException "the demo was interrupted during fine-tuning")
        let finalDir = Path.Combine(trainDir, TrainingRun.FinalFolder)
        events.Note $"fine-tuned model: {finalDir}"
        let magnetDir = Path.Combine(runDir, ModelFolder)
        let threshold =
            use final = MagnetFormat.load finalDir device torch.float32
            if settings.CalibrateThreshold then
                let threshold, count = calibrate settings final ct
                use calibrated = withInferenceThreshold final settings.Layer threshold
                MagnetFormat.save magnetDir calibrated
                events.Note $"inference threshold {threshold:G4} (keeps as many positions as the phoneme counts of {count} {settings.CalibrationSplit} utterances): {magnetDir}"
                Some threshold
            else
                MagnetFormat.save magnetDir final
                None
        // 3. Both models on the test splits.
        events.Stage { Number = 3; Total = total; Title = $"evaluating the fine-tuned model on {names settings.TestSplits}" }
        use magnet = MagnetFormat.load magnetDir device torch.float32
        let magnetEvaluations =
            [ for split in settings.TestSplits ->
                  let e = evaluate settings events "magnet" magnet split ct
                  Report.write (evalDir "magnet" split) magnetDir e.Result |> ignore
                  events.Note("MagnetWhisper, " + describe e)
                  e ]
        events.Stage { Number = 4; Total = total; Title = "timing both encoders side by side" }
        let timing =
            [ for e in magnetEvaluations ->
                  let t = time settings baseline magnet e.Split (e.Result.Utterances |> Array.map _.Id)
                  let flops = DemoArithmetic.flopReduction baseline.Config settings.Layer e.Lengths
                  events.Note $"{t.Split}: encoder {1000.0 * t.BaselineSeconds:F0} ms → {1000.0 * t.MagnetSeconds:F0} ms for {t.Utterances} utterances (median of {t.Repeats}): speed-up {t.Speedup:F2}x, FLOP reduction {flops:F2}x"
                  t ]
        let headline = List.head settings.TestSplits
        let shown =
            (splitCorpus settings headline).Utterances |> Array.tryFind (fun u -> u.Phones.IsSome)
        let result =
          { RunDir = runDir
            Settings = settings
            BaselineModel = settings.Model
            MagnetModel = magnetDir
            TrainDir = trainDir
            Threshold = threshold
            Baseline = baselineEvaluations
            Magnet = magnetEvaluations
            Timing = timing
            Config = baseline.Config
            Shown = shown
            Seconds = clock.Elapsed.TotalSeconds }
        AtomicWrite.text (Path.Combine(runDir, SummaryFile)) (DemoSummary.json result)
        result
