namespace MagnetWhisper.Core.Magnet

// What each boundary predictor of a MagnetWhisper encoder did to one utterance, in seconds of the audio: the encoder
// runs in evaluation (threshold) mode, and every input position of every predictor gets the time span it covers. An
// initial encoder position covers the mel frames of its convolution stride; a position of a later predictor is a
// segment pooled by an earlier one and covers the span from its first to its last pooled position.

open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Audio

/// The part of the audio an encoder position covers, in seconds.
[<Struct>]
type PositionSpan =
    { Start: float
      End: float }

/// What one predictor did to one utterance (its valid input positions only).
type PredictorTrace =
    { /// The encoder layer the predictor runs before.
      Layer: int
      Kind: PredictorKind
      /// The threshold of inference: a position is a boundary when its probability is above it.
      Threshold: float
      /// The span of each valid input position, in order.
      Spans: PositionSpan[]
      /// Boundary probability of each valid input position ("a segment ends here").
      Probabilities: float[]
      /// The boundaries that were pooled (thresholded, with the forced boundary at the last valid position).
      Boundaries: bool[]
      /// Boundaries / valid positions.
      KeptFraction: float }

    /// The end time of each boundary's position, in seconds: where a segment ends.
    member t.BoundaryTimes: float[] =
        Array.zip t.Spans t.Boundaries |> Array.choose (fun (s, b) -> if b then Some s.End else None)

/// The boundary predictors of one utterance, first to last.
type BoundaryTrace =
    { /// Seconds of audio the encoder saw (the first 30 s window at most).
      Duration: float
      /// Seconds of one initial encoder position (the convolutions' total stride × the mel hop).
      SecondsPerPosition: float
      /// One entry per predictor, in layer order.
      Predictors: PredictorTrace list }

/// Building boundary traces.
[<RequireQualifiedAccess>]
module BoundaryTrace =
    /// Seconds between mel frames (the hop, 10 ms).
    let secondsPerMelFrame = 1.0 / float LogMel.FramesPerSecond

    /// The spans of the first `valid` initial encoder positions: position i covers [i·w, (i+1)·w) for w seconds a
    /// position, the last one cut at the end of the audio.
    let initialSpans (secondsPerPosition: float) (valid: int) (duration: float) : PositionSpan[] =
        Array.init valid (fun i ->
            { Start = float i * secondsPerPosition
              End = min duration (float (i + 1) * secondsPerPosition) })

    /// The spans of the segments a predictor pools: segment k runs from the position after boundary k−1 to boundary k
    /// (positions after the last boundary form no segment). spans and boundaries have one entry per valid position.
    let pooledSpans (spans: PositionSpan[]) (boundaries: bool[]) : PositionSpan[] =
        if spans.Length <> boundaries.Length then
            invalidArg "boundaries" $"there are {spans.Length} spans but {boundaries.Length} boundary flags"
        [| let mutable first = 0
           for i in 0 .. spans.Length - 1 do
               if boundaries.[i] then
                   yield { Start = spans.[first].Start; End = spans.[i].End }
                   first <- i + 1 |]

    /// For row `row` of a batch's encoder output (evaluation mode), each predictor's layer, the end time in seconds of
    /// each valid input position, and its boundary flags; `duration` is the row's seconds of audio. The first
    /// predictor's valid count gives the row's initial positions (its input mask is the pooled frame mask).
    let rowBoundaries (secondsPerPosition: float) (output: EncoderOutput) (row: int) (duration: float) : (int * float[] * bool[]) list =
        let valid (layer: EncoderPredictorLayer) = int (Tensors.toFloat layer.Output.ValidCounts.[int64 row])
        match output.Layers with
        | [] -> []
        | first :: _ ->
            let mutable spans = initialSpans secondsPerPosition (valid first) duration
            [ for layer in output.Layers do
                  let n = valid layer
                  if n <> spans.Length then
                      invalidOp $"the predictor before layer {layer.Index} saw {n} valid positions in row {row}, but the spans give {spans.Length}"
                  let flags =
                      Tensors.toFloatArray (layer.Output.Boundaries.[int64 row].narrow(0L, 0L, int64 n).to_type(torch.float64))
                      |> Array.map (fun b -> b > 0.5)
                  yield layer.Index, spans |> Array.map _.End, flags
                  spans <- pooledSpans spans flags ]

    /// The trace of one utterance from its features: mel (1, n_mels, F) and frame mask (1, F) as LogMel.extract gives
    /// them, duration the seconds of audio they hold. The encoder runs in evaluation mode with thresholded boundaries.
    let ofFeatures (model: MagnetWhisperModel) (mel: torch.Tensor) (frameMask: torch.Tensor) (duration: float) : BoundaryTrace =
        if mel.shape.[0] <> 1L then invalidArg "mel" $"a boundary trace is of one utterance, but mel has a batch of {mel.shape.[0]}"
        use _ = torch.NewDisposeScope()
        let encoder = model.Model.Encoder
        let secondsPerPosition = float encoder.TotalStride * secondsPerMelFrame
        use encoded = model.Encode(mel, Some frameMask)
        let initialValid =
            let pooled = Segments.Positions.poolFrameMask encoder.TotalStride frameMask
            int (Tensors.toFloat (pooled.narrow(1L, 0L, min pooled.shape.[1] (int64 encoder.InitialLength)).sum()))
        let mutable spans = initialSpans secondsPerPosition initialValid duration
        let traces =
            [ for layer in encoded.Layers do
                  let out = layer.Output
                  let valid = int (Tensors.toFloat out.ValidCounts.[0])
                  if valid <> spans.Length then
                      invalidOp $"the predictor before layer {layer.Index} saw {valid} valid positions, but the spans give {spans.Length}"
                  let row (t: torch.Tensor) = Tensors.toFloatArray (t.[0].narrow(0L, 0L, int64 valid).to_type(torch.float64))
                  let boundaries = row out.Boundaries |> Array.map (fun b -> b > 0.5)
                  let config = (encoder.Options.TryFind layer.Index).Value.Predictor
                  yield
                      { Layer = layer.Index
                        Kind = layer.Kind
                        Threshold = config.EffectiveInferenceThreshold
                        Spans = spans
                        Probabilities = row out.Probabilities
                        Boundaries = boundaries
                        KeptFraction = layer.KeptFraction }
                  spans <- pooledSpans spans boundaries ]
        { Duration = duration; SecondsPerPosition = secondsPerPosition; Predictors = traces }

    /// The trace of the first 30 s of 16 kHz mono samples.
    let ofSamples (model: MagnetWhisperModel) (samples: float32[]) : BoundaryTrace =
        use _ = torch.NewDisposeScope()
        use features = LogMel.extract model.Config.NumMelBins model.Device [ samples ]
        let duration = float (min samples.Length LogMel.NSamples) / float LogMel.SampleRate
        ofFeatures model features.Mel features.Mask duration
