namespace MagnetWhisper.Core.Training

// The losses of a dev corpus as the trainers log them (eval/loss, eval/asr_loss): the model in evaluation mode
// (thresholded boundaries, no dropout), the corpus in its own order, no gradients.

open System.Threading
open TorchSharp
open MagnetWhisper.Core.Data
open MagnetWhisper.Core.Magnet

/// A dev corpus's losses.
type DevLosses =
    { /// Σ token cross-entropy / Σ tokens.
      CrossEntropy: float
      /// Σ of each utterance's boundary losses over the predictors / utterances.
      BoundaryLoss: float }

[<RequireQualifiedAccess>]
module DevLoss =
    /// The losses of `utterances` under the model in its current mode: batches of `batchSize` in corpus order,
    /// collated by `collate` (its targets feed the boundary losses), each predictor at its schedule in `schedules`.
    let measure
        (model: MagnetWhisperModel)
        (collate: CollateOptions)
        (loader: LoaderOptions)
        (batchSize: int)
        (schedules: Map<int, Schedule>)
        (utterances: Utterance[])
        : DevLosses =
        let batching = { Seed = 0L; Shuffle = false; Size = Utterances batchSize; BucketWindow = None }
        let devLoader = BatchLoader(collate, batching, loader, utterances)
        use _ = torch.no_grad ()
        let mutable ce, tokens, boundary, rows = 0.0, 0L, 0.0, 0L
        for loaded in devLoader.Batches(BatchPosition.Start, 0, CancellationToken.None) do
            use batch = loaded.Batch
            use _ = torch.NewDisposeScope()
            let input =
                { ForwardInput.Evaluation(batch.Mel, Some batch.FrameMask, batch.Labels) with
                    DecoderInputs = Some batch.DecoderInputs
                    TokenMask = Some batch.TokenMask
                    TargetMatrix = batch.TargetMatrix
                    Schedules = schedules }
            let sums = LossSums.magnet model input
            let counts = TrainingStep.countsOf batch.Labels
            ce <- ce + TrainingStep.value sums.TokenCrossEntropy
            boundary <- boundary + TrainingStep.value sums.BoundaryLoss
            tokens <- tokens + counts.Tokens
            rows <- rows + counts.Utterances
        { CrossEntropy = ce / float (max 1L tokens); BoundaryLoss = boundary / float (max 1L rows) }
