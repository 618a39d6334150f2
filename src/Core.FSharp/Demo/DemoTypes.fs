namespace MagnetWhisper.Core.Demo

// The records of a `magnet demo` run (Experiment.run): its settings, what it measured, what callers observe.

open TorchSharp
open MagnetWhisper.Core.Data
open MagnetWhisper.Core.Evaluation
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Training
open MagnetWhisper.Core.Whisper

/// The recipe and the sizes of a demo run. `DemoSettings.Full` is `magnet demo`, `DemoSettings.Quick` its `--quick`.
type DemoSettings =
    { /// The corpus: a folder with manifest.jsonl (splits train, dev, test, test-unseen-voice) or the manifest.
      Corpus: string
      /// The base model: a MagnetWhisper folder whose slot before `Layer` is Identity.
      Model: string
      /// The encoder layer the predictor runs before.
      Layer: int
      /// The predictor's type (mean pooling whatever the type).
      Predictor: PredictorKind
      /// The predictor's prior (expected boundary rate; phones ≈ 12/s against 50 encoder positions/s give ≈ 0.25).
      Prior: float
      /// Fine-tuning updates.
      Steps: int
      /// Utterances per update.
      BatchSize: int
      /// Peak learning rate of the model's parameters.
      LearningRate: float
      /// Peak learning rate of the predictor.
      PredictorLearningRate: float
      /// Warmup fraction of the learning rate.
      WarmupRatio: float
      /// The compression schedule reaches the target count at this training progress, rising from compression 1.
      RampEnd: float
      /// Equal steps of that rise.
      RampStairs: int
      /// After fine-tuning, set the predictor's inference threshold so that it keeps as many positions as the
      /// phoneme targets of the calibration split ask for (DemoArithmetic.calibratedThreshold); false keeps 0.5.
      CalibrateThreshold: bool
      /// The split the threshold is calibrated on (its first EvalLimit utterances).
      CalibrationSplit: string
      /// Which parameters train.
      TrainedParts: TrainedParts
      /// Gumbel-sigmoid temperature at the start and the end of the run.
      TemperatureStart: float
      TemperatureEnd: float
      /// Seed of the data order, the boundary sampling, dropout and the predictor's initial weights.
      Seed: int64
      /// The split trained on.
      TrainSplit: string
      /// Splits the base model is evaluated on.
      BaselineSplits: string list
      /// Splits both models are evaluated and timed on; the first is the summary's headline.
      TestSplits: string list
      /// At most this many utterances of each evaluated split (the first in the manifest); None = all.
      EvalLimit: int option
      /// Utterances decoded together.
      EvalBatchSize: int
      /// Most tokens decoded per utterance (the corpus's sentences are short).
      MaxTokens: int
      /// Utterances of each test split whose encoder is timed (the first evaluated ones).
      TimingUtterances: int
      /// Timed forwards of each batch and model (the median counts).
      TimingRepeats: int
      /// Background tasks loading audio.
      Workers: int
      /// Where everything runs.
      Device: torch.Device }

    /// `magnet demo`: a BP2 before the last of the base model's 4 encoder layers, 400 updates of 16, every test
    /// utterance. Measured on the built-in model (seed 0, test split, base WER 5.6 %): BP2 before layer 3, 4.7 % at
    /// 5.1x, boundary F1 0.40 (random 0.37), 0.3 % of its boundaries in silence; BP1 there, 7.1 % at 4.8x, F1 0.20
    /// (random 0.39), 44 % in silence; BP2 before layer 2, 7.7 % at 5.0x; before layer 1, 11.1 % at 4.9x.
    static member Full =
        { Corpus = ""; Model = ""; Layer = 3; Predictor = Bp2; Prior = 0.25; Steps = 400; BatchSize = 16; LearningRate = 3e-4
          PredictorLearningRate = 1e-3; WarmupRatio = 0.05; RampEnd = 0.4; RampStairs = 8; CalibrateThreshold = true; CalibrationSplit = "dev"
          TrainedParts = Everything
          TemperatureStart = 1.0; TemperatureEnd = 0.1; Seed = 0L; TrainSplit = "train"
          BaselineSplits = [ "dev"; "test"; "test-unseen-voice" ]; TestSplits = [ "test"; "test-unseen-voice" ]
          EvalLimit = None; EvalBatchSize = 24; MaxTokens = 48; TimingUtterances = 48; TimingRepeats = 3; Workers = 1
          Device = torch.CPU }

    /// `magnet demo --quick`: the same stages on 24 utterances per split and 24 updates of 8.
    static member Quick =
        { DemoSettings.Full with Steps = 24; BatchSize = 8; EvalLimit = Some 24; TimingUtterances = 16; TimingRepeats = 2 }

/// One model's evaluation of one split.
type DemoEvaluation =
    { Split: string
      Result: EvaluationResult
      /// Encoder lengths of each evaluated utterance (MagnetWhisper with predictors only).
      Lengths: EncoderLengths[] }

/// The encoders of both models timed on the same batches of one split.
type DemoTiming =
    { Split: string
      Utterances: int
      Repeats: int
      /// Σ over batches of the median seconds of the base model's encoder.
      BaselineSeconds: float
      /// The same for the fine-tuned MagnetWhisper's encoder (predictor included).
      MagnetSeconds: float }

    /// BaselineSeconds / MagnetSeconds.
    member t.Speedup = DemoArithmetic.speedup t.BaselineSeconds t.MagnetSeconds

/// A stage of the experiment, as callers see it begin.
type DemoStage =
    { /// 1-based.
      Number: int
      Total: int
      Title: string }

/// What callers of `Experiment.run` observe (every callback runs on the calling thread).
type DemoEvents =
    { /// A stage begins.
      Stage: DemoStage -> unit
      /// A line worth printing (one per finished part of a stage).
      Note: string -> unit
      /// An evaluation's progress: model name ("base" or "magnet"), split, progress.
      Evaluating: string -> string -> EvaluationProgress -> unit
      /// The fine-tuning's progress after every step.
      Training: SupervisedProgress -> unit
      /// The fine-tuning's dev evaluations (none unless the run has dev data).
      Evaluated: SupervisedEvaluation -> unit }

    /// Observes nothing.
    static member None =
        { Stage = ignore; Note = ignore; Evaluating = (fun _ _ _ -> ()); Training = ignore; Evaluated = ignore }

/// The outcome of a demo run.
type DemoResult =
    { RunDir: string
      Settings: DemoSettings
      /// The base model folder and the fine-tuned one (RUN_DIR/model: train/final with the calibrated threshold).
      BaselineModel: string
      MagnetModel: string
      /// The fine-tuning's run folder.
      TrainDir: string
      /// The calibrated inference threshold (None when not calibrated).
      Threshold: float option
      /// The base model's evaluations, in BaselineSplits order.
      Baseline: DemoEvaluation list
      /// The fine-tuned model's evaluations, in TestSplits order.
      Magnet: DemoEvaluation list
      Timing: DemoTiming list
      /// The base model's configuration (for the FLOP arithmetic).
      Config: WhisperConfig
      /// A test utterance with a phone alignment (the first of the headline split), for the report's figure.
      Shown: Utterance option
      /// Wall-clock seconds of the whole run.
      Seconds: float }

