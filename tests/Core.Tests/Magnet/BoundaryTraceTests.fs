module MagnetWhisper.Tests.Magnet.BoundaryTraceTests

// Boundary traces in seconds: the spans of encoder positions from the convolution stride, the spans of pooled
// segments, a whole encoder with two BP4s whose scores are pinned (p = σ(−10) at a BP4's first two positions, 0.9
// after), and the Audacity label file written from a trace. Expected times are worked out by hand in the comments.

open System
open Expecto
open TorchSharp
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Tests.Whisper.WhisperReference
open MagnetWhisper.Tests.Magnet.MagnetFixtures

let private span (s: float) (e: float) : PositionSpan = { Start = s; End = e }

let private expectSpans (actual: PositionSpan[]) (expected: PositionSpan list) (what: string) =
    Expect.equal actual.Length expected.Length $"{what}: count"
    for a, e in Array.zip actual (Array.ofList expected) do
        Expect.floatClose Accuracy.veryHigh a.Start e.Start $"{what}: start"
        Expect.floatClose Accuracy.veryHigh a.End e.End $"{what}: end"

/// Pins a BP4's scores: both convolutions zero, final bias logit(rate), so p = rate from position 2 on.
let private pinBp4 (model: MagnetWhisperModel) (layer: int) (rate: float) =
    use _ = torch.no_grad()
    let prefix = $"model.encoder.boundary_predictors.{layer}.boundary_conv."
    for n, p in model.State do
        if n.StartsWith prefix then
            if n = prefix + "2.bias" then p.fill_(Math.Log(rate / (1.0 - rate))) |> ignore
            else p.zero_() |> ignore

[<Tests>]
let tests =
    testSequenced <| testList "magnet.trace" [
        test "initial spans: position i covers [i·w, (i+1)·w), the last cut at the end of the audio" {
            // Stride 2 → w = 2 × 10 ms; 5 valid positions of 0.093 s of audio.
            expectSpans (BoundaryTrace.initialSpans 0.02 5 0.093)
                [ span 0.0 0.02; span 0.02 0.04; span 0.04 0.06; span 0.06 0.08; span 0.08 0.093 ] "stride 2"
        }

        test "pooled spans: a segment runs from after the previous boundary to its own; nested pooling composes" {
            let positions = BoundaryTrace.initialSpans 0.02 10 0.2
            let flags (n: int) (at: int list) = Array.init n (fun i -> List.contains i at)
            // Boundaries at 2, 5, 9: positions 0–2, 3–5, 6–9.
            let first = BoundaryTrace.pooledSpans positions (flags 10 [ 2; 5; 9 ])
            expectSpans first [ span 0.0 0.06; span 0.06 0.12; span 0.12 0.2 ] "first predictor"
            // A later predictor with boundaries at its inputs 1 and 2: segments 0–1 and 2.
            expectSpans (BoundaryTrace.pooledSpans first (flags 3 [ 1; 2 ])) [ span 0.0 0.12; span 0.12 0.2 ] "second predictor"
            // Positions after the last boundary form no segment.
            expectSpans (BoundaryTrace.pooledSpans (BoundaryTrace.initialSpans 0.02 4 0.08) (flags 4 [ 2 ])) [ span 0.0 0.06 ] "tail"
            Expect.throwsT<ArgumentException> (fun () -> BoundaryTrace.pooledSpans first (flags 2 [ 1 ]) |> ignore) "lengths differ"
        }

        test "an encoder with an extra stride-2 convolution and BP4s before layers 0 and 2: times, probabilities, boundaries" {
            let options = MagnetOptions.Default.WithConvStrides(config.DModel, [ 2 ]).WithPredictor(0, Bp4, 0.5).WithPredictor(2, Bp4, 0.5)
            use model = magnet 7L config options
            pinBp4 model 0 0.9
            pinBp4 model 2 0.9
            use _ = torch.NewDisposeScope()
            let mel = randomMel 3L config 1L
            // 30 valid mel frames (0.295 s: frame 29 starts at 0.29 s) → ⌈30/4⌉ = 8 positions of 40 ms (total stride 4).
            let trace = BoundaryTrace.ofFeatures model mel (frameMask (int64 config.InputFrames) [| 30L |]) 0.295
            Expect.floatClose Accuracy.veryHigh trace.SecondsPerPosition 0.04 "4 mel frames a position"
            match trace.Predictors with
            | [ p0; p2 ] ->
                Expect.equal (p0.Layer, p2.Layer) (0, 2) "layers"
                Expect.equal (p0.Kind, p2.Kind) (Bp4, Bp4) "kinds"
                Expect.equal p0.Threshold 0.5 "threshold"
                expectSpans p0.Spans ([ for i in 0 .. 6 -> span (0.04 * float i) (0.04 * float (i + 1)) ] @ [ span 0.28 0.295 ]) "layer 0 spans"
                // p = σ(−10) at positions 0 and 1, 0.9 from 2 on → boundaries at 2..7; segments 0–2, 3, 4, 5, 6, 7.
                let sigmoidMinus10 = 1.0 / (1.0 + exp 10.0)
                for i, p in Array.indexed p0.Probabilities do
                    Expect.floatClose Accuracy.medium p (if i < 2 then sigmoidMinus10 else 0.9) $"layer 0 p[{i}]"
                Expect.equal p0.Boundaries [| false; false; true; true; true; true; true; true |] "layer 0 boundaries"
                Expect.floatClose Accuracy.veryHigh p0.KeptFraction (6.0 / 8.0) "layer 0 keeps 6 of 8"
                for a, e in Array.zip p0.BoundaryTimes [| 0.12; 0.16; 0.2; 0.24; 0.28; 0.295 |] do
                    Expect.floatClose Accuracy.veryHigh a e "layer 0 boundary times"
                // Layer 2 sees the six segments; boundaries at its inputs 2..5 → segments (0–2), 3, 4, 5.
                expectSpans p2.Spans [ span 0.0 0.12; span 0.12 0.16; span 0.16 0.2; span 0.2 0.24; span 0.24 0.28; span 0.28 0.295 ] "layer 2 spans"
                Expect.equal p2.Boundaries [| false; false; true; true; true; true |] "layer 2 boundaries"
                Expect.floatClose Accuracy.veryHigh p2.KeptFraction (4.0 / 6.0) "layer 2 keeps 4 of 6"
                for a, e in Array.zip p2.BoundaryTimes [| 0.2; 0.24; 0.28; 0.295 |] do
                    Expect.floatClose Accuracy.veryHigh a e "layer 2 boundary times"
            | other -> failtest $"expected two predictors, got {other.Length}"
        }

        test "a model without predictors has an empty trace" {
            use model = magnet 7L config MagnetOptions.Default
            use _ = torch.NewDisposeScope()
            let trace = BoundaryTrace.ofFeatures model (randomMel 3L config 1L) (frameMask (int64 config.InputFrames) [| 48L |]) 0.48
            Expect.isEmpty trace.Predictors "no predictors"
            Expect.floatClose Accuracy.veryHigh trace.SecondsPerPosition 0.02 "Whisper's stride 2"
        }

        test "Audacity labels: a point label at each boundary's end time; layer prefixes when there are several predictors" {
            let predictor layer (spans: PositionSpan list) (boundaries: bool list) : PredictorTrace =
                { Layer = layer; Kind = Bp1; Threshold = 0.5; Spans = Array.ofList spans; Probabilities = Array.zeroCreate spans.Length
                  Boundaries = Array.ofList boundaries; KeptFraction = 0.0 }
            // Padded audio of 0.1 s in a 30 s window with stride 2: the original's t = (rank + 1) · 0.1 / 5 gives
            // 0.06 and 0.1 here too, but after a predictor the second row's spans are not of equal length.
            let one = predictor 0 [ span 0.0 0.02; span 0.02 0.04; span 0.04 0.06; span 0.06 0.08; span 0.08 0.1 ] [ false; false; true; false; true ]
            let trace = { Duration = 0.1; SecondsPerPosition = 0.02; Predictors = [ one ] }
            Expect.equal (AudacityLabels.format (AudacityLabels.ofTrace trace)) "0.060000\t0.060000\tboundary_0\n0.100000\t0.100000\tboundary_1\n" "one predictor"
            let two = predictor 3 [ span 0.0 0.06; span 0.06 0.1 ] [ false; true ]
            let both = { trace with Predictors = [ one; two ] }
            Expect.equal (AudacityLabels.format (AudacityLabels.ofTrace both))
                "0.060000\t0.060000\tlayer0_boundary_0\n0.100000\t0.100000\tlayer0_boundary_1\n0.100000\t0.100000\tlayer3_boundary_0\n" "two predictors"
            use temp = new Temp()
            let path = temp.Sub "labels.txt"
            AudacityLabels.write path trace
            Expect.equal (IO.File.ReadAllText path) "0.060000\t0.060000\tboundary_0\n0.100000\t0.100000\tboundary_1\n" "written"
        }
    ]
