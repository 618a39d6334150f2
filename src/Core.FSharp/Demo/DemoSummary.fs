namespace MagnetWhisper.Core.Demo

// RUN_DIR/summary.json of `magnet demo` (issue 11 §4.4). Fixed keys, so scripts can read them:
//   baseline.wer, baseline.cer, magnet.wer, magnet.cer, magnet.compression (encoder frames in / out),
//   magnet.encoder_speedup, magnet.flop_reduction, magnet.boundary_f1, magnet.boundary_f1_random,
//   magnet.boundary_precision, magnet.boundary_recall, seconds
// for the headline split (the first test split), and the same under splits.<name> for every evaluated split.
// Rates are fractions. A figure that was not measured (the fine-tuned model on dev, boundaries of a split without
// phone alignments) is null.

open System
open System.Text.Json
open MagnetWhisper.Core.Evaluation

/// The figures of one split.
type SplitFigures =
    { Split: string
      BaselineWer: float
      BaselineCer: float
      MagnetWer: float
      MagnetCer: float
      /// Σ encoder positions in / Σ positions after the predictor.
      Compression: float
      EncoderSpeedup: float
      FlopReduction: float
      BoundaryF1: float
      BoundaryF1Random: float
      BoundaryPrecision: float
      BoundaryRecall: float
      /// Wall-clock seconds of this split's evaluations.
      Seconds: float }

/// The summary's figures and its JSON.
[<RequireQualifiedAccess>]
module DemoSummary =
    /// The figures of every split evaluated (baseline splits first, then test splits not among them).
    let figures (result: DemoResult) : SplitFigures list =
        let splits = (result.Settings.BaselineSplits @ result.Settings.TestSplits) |> List.distinct
        [ for split in splits ->
              let baseline = result.Baseline |> List.tryFind (fun e -> e.Split = split)
              let magnet = result.Magnet |> List.tryFind (fun e -> e.Split = split)
              let timing = result.Timing |> List.tryFind (fun t -> t.Split = split)
              let rate (e: DemoEvaluation option) (f: EvaluationResult -> float) = e |> Option.map (fun e -> f e.Result) |> Option.defaultValue nan
              let boundaries = magnet |> Option.bind (fun e -> List.tryHead e.Result.Boundaries)
              let counts (f: BoundaryAccuracy.BoundaryCounts -> float) =
                  match boundaries with
                  | Some b when b.Utterances > 0 -> f b.Counts
                  | _ -> nan
              let seconds (e: DemoEvaluation option) = e |> Option.map (fun e -> e.Result.Timing.TotalSeconds) |> Option.defaultValue 0.0
              { Split = split
                BaselineWer = rate baseline (fun r -> r.Score.Words.Rate)
                BaselineCer = rate baseline (fun r -> r.Score.Characters.Rate)
                MagnetWer = rate magnet (fun r -> r.Score.Words.Rate)
                MagnetCer = rate magnet (fun r -> r.Score.Characters.Rate)
                Compression = magnet |> Option.map (fun e -> DemoArithmetic.compression e.Lengths) |> Option.defaultValue nan
                EncoderSpeedup = timing |> Option.map _.Speedup |> Option.defaultValue nan
                FlopReduction = magnet |> Option.map (fun e -> DemoArithmetic.flopReduction result.Config result.Settings.Layer e.Lengths) |> Option.defaultValue nan
                BoundaryF1 = counts _.F1
                BoundaryF1Random = counts _.RandomF1
                BoundaryPrecision = counts _.Precision
                BoundaryRecall = counts _.Recall
                Seconds = seconds baseline + seconds magnet } ]

    let private number (w: Utf8JsonWriter) (name: string) (v: float) =
        if Double.IsFinite v then w.WriteNumber(name, v) else w.WriteNull name

    let private writeFigures (w: Utf8JsonWriter) (f: SplitFigures) (seconds: float) =
        w.WriteStartObject "baseline"
        number w "wer" f.BaselineWer
        number w "cer" f.BaselineCer
        w.WriteEndObject()
        w.WriteStartObject "magnet"
        number w "wer" f.MagnetWer
        number w "cer" f.MagnetCer
        number w "compression" f.Compression
        number w "encoder_speedup" f.EncoderSpeedup
        number w "flop_reduction" f.FlopReduction
        number w "boundary_f1" f.BoundaryF1
        number w "boundary_f1_random" f.BoundaryF1Random
        number w "boundary_precision" f.BoundaryPrecision
        number w "boundary_recall" f.BoundaryRecall
        w.WriteEndObject()
        number w "seconds" seconds

    /// The summary of a run: the headline split's figures at the top (with the run's wall-clock seconds), every
    /// split's under splits.<name>, and what the run was.
    let json (result: DemoResult) : string =
        let all = figures result
        let headline = List.head result.Settings.TestSplits
        use stream = new IO.MemoryStream()
        (use w = new Utf8JsonWriter(stream, JsonWriterOptions(Indented = true))
         w.WriteStartObject()
         writeFigures w (all |> List.find (fun f -> f.Split = headline)) result.Seconds
         w.WriteString("headline_split", headline)
         w.WriteStartObject "splits"
         for f in all do
             w.WriteStartObject f.Split
             writeFigures w f f.Seconds
             w.WriteEndObject()
         w.WriteEndObject()
         let s = result.Settings
         w.WriteStartObject "run"
         w.WriteString("corpus", s.Corpus)
         w.WriteString("base_model", result.BaselineModel)
         w.WriteString("magnet_model", result.MagnetModel)
         w.WriteString("train_run", result.TrainDir)
         match result.Threshold with
         | Some t -> w.WriteNumber("inference_threshold", t)
         | None -> w.WriteNull "inference_threshold"
         w.WriteNumber("layer", s.Layer)
         w.WriteString("predictor", MagnetWhisper.Core.Magnet.PredictorSpec.kindName s.Predictor)
         w.WriteNumber("prior", s.Prior)
         w.WriteNumber("steps", s.Steps)
         w.WriteNumber("batch_size", s.BatchSize)
         w.WriteNumber("seed", s.Seed)
         w.WriteNumber("threads", TorchSharp.torch.get_num_threads ())
         w.WriteString("device", string s.Device)
         w.WriteEndObject()
         w.WriteEndObject())
        Text.Encoding.UTF8.GetString(stream.ToArray()) + "\n"
