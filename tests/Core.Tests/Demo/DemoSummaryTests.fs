module MagnetWhisper.Tests.Demo.DemoSummaryTests

// The arithmetic of `magnet demo`'s summary against figures worked out here from the per-utterance numbers of
// hand-made evaluations: compression = Σ frames in / Σ frames out, the FLOP reduction from the matrix-product count
// written out in float64, the speed-up, the compression ramp; and summary.json's fixed keys, its headline (the first
// test split) and its per-split entries, with null for what a split did not measure.

open System
open System.Text.Json
open Expecto
open TorchSharp
open MagnetWhisper.Core.Data
open MagnetWhisper.Core.Demo
open MagnetWhisper.Core.Evaluation
open MagnetWhisper.Core.Whisper

/// The built-in base model's shape: d_model 192, 4 + 4 layers, FFN 768, 80 mel bins.
let private config =
    { WhisperConfig.preset "tiny" with DModel = 192; EncoderLayers = 4; DecoderLayers = 4; EncoderFfnDim = 768; DecoderFfnDim = 768 }

/// One predictor before layer 2 that saw `positions` and kept `kept`.
let private counts (positions: int) (kept: int) = [| { Layer = 2; Boundaries = kept; Positions = positions } |]

/// An evaluated utterance with its reference, hypothesis and predictor counts (and boundary counts).
let private utterance (id: string) (reference: string) (hypothesis: string) (predictors: PredictorCount[]) (boundaries: BoundaryAccuracy.BoundaryCounts option) =
    { Id = id; Source = id; Duration = 2.0; Score = Scoring.utterance reference hypothesis; Predictors = predictors
      Boundaries = match boundaries with Some c -> [| { Layer = 2; Utterances = 1; Counts = c } |] | None -> [||] }

let private result (utterances: UtteranceResult[]) (encoderSeconds: float) : EvaluationResult =
    { Corpus = "hand-made"
      Utterances = utterances
      Skipped = [||]
      Score = Scoring.corpus (utterances |> Array.map _.Score)
      Predictors = Compression.summarize (utterances |> Array.map _.Predictors)
      Boundaries = BoundaryAccuracy.summarize (utterances |> Array.map _.Boundaries)
      Timing = { AudioSeconds = 4.0; EncoderSeconds = encoderSeconds; DecodeSeconds = 1.0; TotalSeconds = 3.0 }
      Options = EvaluationOptions.Default }

let private evaluation (split: string) (r: EvaluationResult) =
    { Split = split; Result = r; Lengths = r.Utterances |> Array.choose (fun u -> DemoArithmetic.lengthsOf u.Predictors) }

/// The FLOPs of one utterance, written out: conv1 over 2T mel frames (kernel 3, 80 → D), conv2 (kernel 3, D → D),
/// layers 0 and 1 on T positions, layers 2 and 3 on S: each 4 projections 2·t·D·D, scores and values 2·2·t·t·D,
/// FFN 2·2·t·D·F.
let private flopsWrittenOut (t: float) (s: float) =
    let d, f, m = 192.0, 768.0, 80.0
    let layer (n: float) = 4.0 * (2.0 * n * d * d) + 2.0 * (2.0 * n * n * d) + 2.0 * (2.0 * n * d * f)
    2.0 * (2.0 * t) * d * m * 3.0 + 2.0 * t * d * d * 3.0 + layer t + layer t + layer s + layer s

[<Tests>]
let tests =
    testList "demo.summary" [
        test "compression is Σ frames in / Σ frames out of the utterances, first predictor in, last out" {
            let lengths =
                [ counts 150 40; counts 101 25; counts 77 19 ] |> List.choose DemoArithmetic.lengthsOf
            Expect.floatClose Accuracy.veryHigh (DemoArithmetic.compression lengths) (float (150 + 101 + 77) / float (40 + 25 + 19)) "328 / 84"
            let two = [| { Layer = 3; Boundaries = 10; Positions = 30 }; { Layer = 1; Boundaries = 30; Positions = 120 } |]
            Expect.equal (DemoArithmetic.lengthsOf two) (Some { FramesIn = 120; FramesOut = 10 }) "the first predictor's positions, the last one's boundaries"
            Expect.equal (DemoArithmetic.lengthsOf [||]) None "stock Whisper has none"
            Expect.isTrue (Double.IsNaN(DemoArithmetic.compression [])) "no utterance: NaN"
        }

        test "the FLOP reduction is the written-out matrix-product count without over with the predictor" {
            let pairs = [ 150, 40; 101, 25; 77, 19 ]
            let lengths = pairs |> List.map (fun (t, s) -> { FramesIn = t; FramesOut = s })
            let full = pairs |> List.sumBy (fun (t, _) -> flopsWrittenOut (float t) (float t))
            let reduced = pairs |> List.sumBy (fun (t, s) -> flopsWrittenOut (float t) (float s))
            Expect.floatClose Accuracy.veryHigh (DemoArithmetic.flopReduction config 2 lengths) (full / reduced) "Σ full / Σ reduced"
            Expect.floatClose Accuracy.veryHigh (DemoArithmetic.encoderFlops config 2 lengths.Head) (flopsWrittenOut 150.0 40.0) "one utterance"
            Expect.floatClose Accuracy.veryHigh (DemoArithmetic.flopReduction config 2 [ { FramesIn = 90; FramesOut = 90 } ]) 1.0 "nothing pooled: 1"
            Expect.floatClose Accuracy.veryHigh (DemoArithmetic.speedup 3.0 1.5) 2.0 "3 s over 1.5 s"
            Expect.isTrue (Double.IsNaN(DemoArithmetic.speedup 3.0 0.0)) "no time measured: NaN"
        }

        test "the compression ramp rises in equal stairs to 1 at its end" {
            Expect.equal (DemoArithmetic.rampSteps 0.4 4) [ 0.1, 0.25; 0.2, 0.5; 0.30000000000000004, 0.75; 0.4, 1.0 ] "four stairs to 0.4"
            Expect.throwsT<ArgumentException> (fun () -> DemoArithmetic.rampSteps 0.0 4 |> ignore) "a ramp must end after 0"
        }

        test "the calibrated threshold keeps exactly as many positions as the targets ask for" {
            let probabilities = [ [| 0.9; 0.2; 0.45; 0.3 |]; [| 0.05; 0.6; 0.35 |] ]
            let above (t: float) = probabilities |> List.sumBy (Array.filter (fun p -> p > t) >> Array.length)
            // Sorted: 0.9 0.6 0.45 0.35 0.3 0.2 0.05; three targets: between 0.45 and 0.35.
            let t = DemoArithmetic.calibratedThreshold probabilities [ 2; 1 ]
            Expect.floatClose Accuracy.veryHigh t 0.4 "(0.45 + 0.35) / 2"
            Expect.equal (above t) 3 "three positions above it"
            for k in 1 .. 6 do
                Expect.equal (above (DemoArithmetic.calibratedThreshold probabilities [ k ])) k $"{k} targets keep {k}"
            Expect.equal (DemoArithmetic.calibratedThreshold probabilities [ 0 ]) 1.0 "no target: nothing kept"
            Expect.equal (DemoArithmetic.calibratedThreshold probabilities [ 9 ]) 0.0 "more targets than positions: everything kept"
        }

        test "summary.json: fixed keys at the top for the headline split, every split under splits, null where not measured" {
            let boundary = { BoundaryAccuracy.BoundaryCounts.Zero with Predicted = 10; Reference = 12; Matched = 6; RandomMatched = 2.5 }
            let baseDev = result [| utterance "d1" "turn on the light" "turn on the lights" [||] None |] 1.0
            let baseTest = result [| utterance "t1" "set an alarm for nine" "set an alarm for nine" [||] None; utterance "t2" "call anna" "call hannah" [||] None |] 2.0
            let baseUnseen = result [| utterance "u1" "open the door" "open door" [||] None |] 1.0
            let magnetTest =
                result [| utterance "t1" "set an alarm for nine" "set an alarm for nine" (counts 150 40) (Some boundary)
                          utterance "t2" "call anna" "call anna" (counts 101 25) None |] 1.0
            let magnetUnseen = result [| utterance "u1" "open the door" "open the floor" (counts 77 19) None |] 0.5
            // Layer 2 as flopsWrittenOut assumes (two layers at full length, two pooled), whatever the default is.
            let settings = { DemoSettings.Quick with Corpus = "c"; Model = "m"; Layer = 2 }
            let demo =
                { RunDir = "run"; Settings = settings; BaselineModel = "m"; MagnetModel = "run/model"; TrainDir = "run/train"; Threshold = Some 0.3
                  Baseline = [ evaluation "dev" baseDev; evaluation "test" baseTest; evaluation "test-unseen-voice" baseUnseen ]
                  Magnet = [ evaluation "test" magnetTest; evaluation "test-unseen-voice" magnetUnseen ]
                  Timing =
                    [ { Split = "test"; Utterances = 2; Repeats = 2; BaselineSeconds = 0.9; MagnetSeconds = 0.6 }
                      { Split = "test-unseen-voice"; Utterances = 1; Repeats = 2; BaselineSeconds = 0.5; MagnetSeconds = 0.4 } ]
                  Config = config; Shown = None; Seconds = 42.5 }
            use doc = JsonDocument.Parse(DemoSummary.json demo)
            let at (path: string) = path.Split('.') |> Array.fold (fun (e: JsonElement) k -> e.GetProperty k) doc.RootElement
            let value (path: string) = (at path).GetDouble()
            // Hand-worked rates: test base 1 substitution of 7 words (anna/hannah), magnet 0 of 7.
            Expect.floatClose Accuracy.veryHigh (value "baseline.wer") (1.0 / 7.0) "base test WER 1/7"
            Expect.floatClose Accuracy.veryHigh (value "magnet.wer") 0.0 "magnet test WER 0"
            Expect.floatClose Accuracy.veryHigh (value "splits.test-unseen-voice.baseline.wer") (1.0 / 3.0) "one deletion of 3 words"
            Expect.floatClose Accuracy.veryHigh (value "splits.test-unseen-voice.magnet.wer") (1.0 / 3.0) "one substitution of 3 words"
            Expect.floatClose Accuracy.veryHigh (value "splits.dev.baseline.wer") (1.0 / 4.0) "light/lights"
            Expect.floatClose Accuracy.veryHigh (value "magnet.compression") (251.0 / 65.0) "(150 + 101) / (40 + 25)"
            Expect.floatClose Accuracy.veryHigh (value "splits.test-unseen-voice.magnet.compression") (77.0 / 19.0) "77 / 19"
            Expect.floatClose Accuracy.veryHigh (value "magnet.encoder_speedup") (0.9 / 0.6) "0.9 s / 0.6 s"
            let full = flopsWrittenOut 150.0 150.0 + flopsWrittenOut 101.0 101.0
            let reduced = flopsWrittenOut 150.0 40.0 + flopsWrittenOut 101.0 25.0
            Expect.floatClose Accuracy.veryHigh (value "magnet.flop_reduction") (full / reduced) "the written-out FLOPs"
            Expect.floatClose Accuracy.veryHigh (value "magnet.boundary_precision") 0.6 "6 of 10 predictions"
            Expect.floatClose Accuracy.veryHigh (value "magnet.boundary_recall") 0.5 "6 of 12 references"
            Expect.floatClose Accuracy.veryHigh (value "magnet.boundary_f1") (12.0 / 22.0) "2·6 / (10 + 12)"
            Expect.floatClose Accuracy.veryHigh (value "magnet.boundary_f1_random") (5.0 / 22.0) "2·2.5 / (10 + 12)"
            Expect.floatClose Accuracy.veryHigh (value "seconds") 42.5 "the run's seconds"
            Expect.floatClose Accuracy.veryHigh (value "splits.test.seconds") 6.0 "the test split's evaluations: 3 s + 3 s"
            Expect.equal ((at "headline_split").GetString()) "test" "the first test split"
            Expect.floatClose Accuracy.veryHigh (value "run.inference_threshold") 0.3 "the calibrated threshold"
            for key in [ "wer"; "cer"; "compression"; "encoder_speedup"; "boundary_f1"; "boundary_f1_random"; "boundary_precision"; "boundary_recall" ] do
                Expect.equal (at $"splits.dev.magnet.{key}").ValueKind JsonValueKind.Null $"dev: magnet.{key} not measured"
            for key in [ "boundary_f1"; "boundary_f1_random"; "boundary_precision"; "boundary_recall" ] do
                Expect.equal (at $"splits.test-unseen-voice.magnet.{key}").ValueKind JsonValueKind.Null $"no alignments: {key} null"
        }
    ]
