namespace MagnetWhisper.Core.Training

// One optimizer update (issue 9 §2): forward and backward over the micro-batches of an accumulated batch with the
// loss normalised over the whole batch (label tokens for the cross-entropy, utterances for the boundary losses), so
// 4 micro-batches of B/4 give the update of one batch of B; global-norm clipping over the trained parameters; the
// AdamW step at the scheduled learning rate; gradients cleared. A non-finite loss or gradient skips the update.

open System
open TorchSharp
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Magnet

/// What one micro-batch contributes to the loss of its accumulated batch, as sums (the step normalises them).
type LossSums =
    { /// () Σ over the counted label tokens (label ≠ −100) of the cross-entropy, differentiable.
      TokenCrossEntropy: Tensor
      /// () Σ over the micro-batch's utterances of their boundary losses (Σ over predictors), differentiable; a zero
      /// for stock Whisper.
      BoundaryLoss: Tensor
      /// The auxiliary CTC loss and its weight w, when on: () Σ over the micro-batch's utterances of their CTC losses,
      /// differentiable. The step's loss becomes (1 − w)·CE + w·CTC + boundary, CTC per character
      /// and normalised by utterances.
      Ctc: (float * Tensor) option }

/// The sizes a micro-batch adds to the normalisers of its accumulated batch.
type BatchCounts =
    { /// Counted label tokens (label ≠ −100).
      Tokens: int64
      /// Utterances.
      Utterances: int64 }

/// Why an update was not applied.
type SkipReason =
    /// The loss of a micro-batch was NaN or infinite (the remaining micro-batches were not run).
    | NonFiniteLoss
    /// The gradient's global norm was NaN or infinite.
    | NonFiniteGradient

/// What one update did.
type StepReport =
    { /// The accumulated batch's loss: token-mean cross-entropy + utterance-mean boundary loss.
      Loss: float
      /// Token-mean cross-entropy over the accumulated batch.
      CrossEntropy: float
      /// Utterance-mean boundary loss (Σ over predictors) over the accumulated batch.
      BoundaryLoss: float
      /// Utterance-mean CTC loss over the accumulated batch (unweighted); NaN when the CTC loss is off.
      CtcLoss: float
      /// Global L2 norm of the trained parameters' gradient before clipping (NaN when the loss was not finite).
      GradientNorm: float
      /// The learning-rate multiplier the update used.
      LearningRateMultiplier: float
      /// Label tokens and utterances of the accumulated batch.
      Counts: BatchCounts
      /// None when the update was applied.
      Skipped: SkipReason option }

/// Settings of an update.
type StepSettings =
    { /// Clip the gradient to this global L2 norm (whisper.py: 2.0); None = no clipping.
      MaxGradientNorm: float option }

/// The pieces of an update, each usable alone.
[<RequireQualifiedAccess>]
module TrainingStep =
    /// The `+ 1e-6` of torch's clip_grad_norm_ (keeps the coefficient finite for a zero gradient).
    [<Literal>]
    let ClipEpsilon = 1e-6

    /// Σ of the token cross-entropies over the counted labels: logits (B, T, V), labels (B, T) int64 (−100 ignored)
    /// → (), in float32 (float64 for float64 logits).
    let tokenCrossEntropySum (logits: Tensor) (labels: Tensor) : Tensor =
        let v = logits.shape.[2]
        torch.nn.functional.cross_entropy(
            logits.reshape(-1L, v).to_type(computeType logits),
            labels.reshape(-1L).``to``(logits.device).to_type(torch.int64),
            ignore_index = -100L,
            reduction = torch.nn.Reduction.Sum)

    /// A 0-d tensor's value as a float64 (any floating dtype).
    let value (t: Tensor) : float =
        use _ = torch.NewDisposeScope()
        t.detach().to_type(torch.float64).item<float>()

    /// Label tokens (≠ −100) and rows of labels (B, T).
    let countsOf (labels: Tensor) : BatchCounts =
        use _ = torch.NewDisposeScope()
        { Tokens = labels.ne(torch.tensor(-100L, device = labels.device)).sum().item<int64>(); Utterances = labels.shape.[0] }

    /// The global L2 norm √(Σ‖g‖²) of gradients (each reduced in its own dtype, float32 at least, combined in
    /// float64) → float. Each norm reads its gradient in place, as torch's clip_grad_norm_ does: no float64 copy
    /// of every gradient (which cost as much as the AdamW step on whisper-tiny).
    let globalNorm (gradients: Tensor seq) : float =
        use _ = torch.NewDisposeScope()
        let norms =
            [ for g in gradients ->
                  let g = g.detach()
                  let g = if g.dtype = torch.float64 || g.dtype = torch.float32 then g else g.to_type(torch.float32)
                  torch.linalg.vector_norm(g).to_type(torch.float64).item<float>() ]
        sqrt (norms |> List.sumBy (fun n -> n * n))

    /// torch's clip_grad_norm_ factor: min(1, maxNorm / (norm + 1e-6)).
    let clipCoefficient (maxNorm: float) (norm: float) : float = min 1.0 (maxNorm / (norm + ClipEpsilon))

    /// The present gradients of parameters.
    let gradients (parameters: Modules.Parameter seq) : Tensor list =
        [ for p in parameters do
              match p.grad with
              | null -> ()
              | g -> g ]

    /// Drops every parameter's gradient (torch's zero_grad(set_to_none=True)), so a parameter no loss reaches is
    /// left alone by the next update, whether or not it had a gradient before (a resumed run starts without any).
    let clearGradients (parameters: Modules.Parameter seq) =
        for p in parameters do
            p.grad <- null

    /// The counts of micro-batches added up.
    let totalCounts (microBatches: 'b list) (counts: 'b -> BatchCounts) : BatchCounts =
        microBatches
        |> List.map counts
        |> List.fold (fun a c -> { Tokens = a.Tokens + c.Tokens; Utterances = a.Utterances + c.Utterances }) { Tokens = 0L; Utterances = 0L }

    /// Runs forward and backward over the micro-batches, accumulating into the parameters' gradients the gradient of
    /// Σ_i (TokenCrossEntropy_i / N + BoundaryLoss_i / U), N and U the accumulated batch's label tokens and
    /// utterances. Each micro-batch runs in its own dispose scope. Returns (loss, cross-entropy, boundary loss,
    /// counts), or NonFiniteLoss at the first micro-batch whose loss is NaN or infinite.
    /// With the CTC loss on (LossSums.Ctc), the micro-batch's loss is (1 − w)·CE_i / N + w·CTC_i / U + boundary_i / U
    /// and the result's loss is their sum; the CTC value is the unweighted utterance mean (NaN when off).
    let accumulateWithCtc (microBatches: 'b list) (counts: 'b -> BatchCounts) (loss: 'b -> LossSums) : Result<float * float * float * float * BatchCounts, SkipReason> =
        if microBatches.IsEmpty then invalidArg "microBatches" "an update needs at least one micro-batch"
        let total = totalCounts microBatches counts
        if total.Tokens <= 0L then invalidArg "microBatches" "the accumulated batch has no counted label token (every label is -100)"
        let rec run (batches: 'b list) (ce: float) (boundary: float) (ctc: float option) (weighted: float) =
            match batches with
            | [] ->
                // Without CTC the loss is ce + boundary exactly as before the CTC loss existed.
                Ok((if ctc.IsSome then weighted else ce + boundary), ce, boundary, Option.defaultValue nan ctc, total)
            | batch :: rest ->
                let ceI, boundaryI, ctcI, lossI =
                    use _ = torch.NewDisposeScope()
                    let sums = loss batch
                    let ceTerm = sums.TokenCrossEntropy / float total.Tokens
                    let boundaryTerm = sums.BoundaryLoss.to_type(ceTerm.dtype) / float total.Utterances
                    let l, ctcValue =
                        match sums.Ctc with
                        | None -> ceTerm + boundaryTerm, None
                        | Some(w, ctcSum) ->
                            let ctcTerm = ctcSum.to_type(ceTerm.dtype) / float total.Utterances
                            ceTerm * (1.0 - w) + ctcTerm * w + boundaryTerm, Some(value ctcTerm)
                    let lv = value l
                    if Double.IsFinite lv then l.backward()
                    value ceTerm, value boundaryTerm, ctcValue, lv
                if Double.IsFinite(ceI + boundaryI) && Double.IsFinite lossI then
                    let ctc = match ctc, ctcI with
                              | _, None -> ctc
                              | None, Some c -> Some c
                              | Some a, Some c -> Some(a + c)
                    run rest (ce + ceI) (boundary + boundaryI) ctc (weighted + lossI)
                else Error NonFiniteLoss
        run microBatches 0.0 0.0 None 0.0

    /// accumulate without the CTC value: (loss, cross-entropy, boundary loss, counts).
    let accumulate (microBatches: 'b list) (counts: 'b -> BatchCounts) (loss: 'b -> LossSums) : Result<float * float * float * BatchCounts, SkipReason> =
        accumulateWithCtc microBatches counts loss |> Result.map (fun (l, ce, b, _, total) -> l, ce, b, total)

    /// Scales the parameters' gradients in place to a global norm of at most maxNorm (torch's clip_grad_norm_);
    /// returns the norm before clipping. Gradients with a non-finite norm are left as they are.
    let clip (maxNorm: float option) (parameters: Modules.Parameter seq) : float =
        let grads = gradients parameters
        let norm = globalNorm grads
        match maxNorm with
        | Some m when Double.IsFinite norm ->
            let c = clipCoefficient m norm
            if c < 1.0 then
                use _ = torch.no_grad()
                use factor = c.ToScalar()
                for g in grads do
                    g.mul_(factor) |> ignore
        | _ -> ()
        for g in grads do
            g.Dispose()
        norm

    /// optimizer.step() inside a no-GC region when the runtime grants one. TorchSharp's AdamW passes implicitly
    /// converted Scalars to libtorch; once their handles are read they are unreachable, and a collection during the
    /// native call lets the finalizer free one still in use (libtorch then fails "Expected false to be true" at
    /// Scalar.h:140 — seen intermittently on a loaded machine). No collection runs inside the region.
    let optimizerStep (optimizer: torch.optim.Optimizer) : unit =
        let region =
            try GC.TryStartNoGCRegion(16L * 1024L * 1024L)
            with :? InvalidOperationException -> false
        try optimizer.step() |> ignore
        finally
            if region && Runtime.GCSettings.LatencyMode = Runtime.GCLatencyMode.NoGCRegion then GC.EndNoGCRegion()

    /// One update: clears stale gradients, accumulates over the micro-batches (see accumulate), clips the trained
    /// parameters' gradient by global norm, sets the learning rate to peak × multiplier and steps AdamW, then clears
    /// the gradients. A non-finite loss or gradient norm skips the step (the parameters and moments are unchanged) and
    /// is reported.
    let run (optimizer: TrainingOptimizer) (settings: StepSettings) (multiplier: float) (microBatches: 'b list) (counts: 'b -> BatchCounts) (loss: 'b -> LossSums) : StepReport =
        match settings.MaxGradientNorm with
        | Some m when not (m > 0.0) -> invalidArg "settings" $"MaxGradientNorm must be positive, but is {m}"
        | _ -> ()
        if not (multiplier >= 0.0 && Double.IsFinite multiplier) then
            invalidArg "multiplier" $"the learning-rate multiplier must be finite and non-negative, but is {multiplier}"
        let parameters = optimizer.Parameters |> List.map snd
        clearGradients parameters
        let report =
            match accumulateWithCtc microBatches counts loss with
            | Error reason ->
                { Loss = nan; CrossEntropy = nan; BoundaryLoss = nan; CtcLoss = nan; GradientNorm = nan; LearningRateMultiplier = multiplier
                  Counts = totalCounts microBatches counts
                  Skipped = Some reason }
            | Ok(l, ce, boundary, ctc, total) ->
                let norm = clip settings.MaxGradientNorm parameters
                let skipped =
                    if Double.IsFinite norm then
                        optimizer.SetLearningRate multiplier
                        optimizerStep optimizer.AdamW
                        None
                    else Some NonFiniteGradient
                { Loss = l; CrossEntropy = ce; BoundaryLoss = boundary; CtcLoss = ctc; GradientNorm = norm; LearningRateMultiplier = multiplier
                  Counts = total; Skipped = skipped }
        clearGradients parameters
        report

/// The loss sums of the two models.
[<RequireQualifiedAccess>]
module LossSums =
    /// MagnetWhisper's loss sums (see `magnet`), showing the forward's result to `observe` first (the trainer reads
    /// its compression there).
    let magnetObserved (observe: ForwardResult -> unit) (model: MagnetWhisperModel) (input: ForwardInput) : LossSums =
        use result = model.Forward input
        observe result
        let ce = TrainingStep.tokenCrossEntropySum result.Logits input.Labels
        let boundary =
            result.Encoder.Layers
            |> List.fold (fun (acc: Tensor) l -> acc + l.Output.LossPerUtterance.to_type(ce.dtype).sum()) (torch.zeros([||], dtype = ce.dtype, device = ce.device))
        { TokenCrossEntropy = ce; BoundaryLoss = boundary; Ctc = None }

    /// magnetObserved plus the auxiliary CTC loss with weight w on the same forward: the model's CTC head on the final
    /// encoder states (valid lengths from the encoder's mask, i.e. after the convolution stride and any predictor)
    /// against `targets` (one character-class array per row, CtcAlphabet.encode), each utterance's CTC loss divided by
    /// its number of characters (at least 1). w = 0 is exactly magnetObserved.
    let magnetCtc (observe: ForwardResult -> unit) (model: MagnetWhisperModel) (input: ForwardInput) (w: float) (targets: int[][]) : LossSums =
        if not (w >= 0.0 && w <= 1.0) then invalidArg (nameof w) $"the CTC weight must be in [0, 1], got {w}"
        if w = 0.0 then magnetObserved observe model input
        else
            let head =
                match model.CtcHead with
                | Some h -> h
                | None -> invalidOp "the CTC loss needs the model's CTC head (MagnetWhisperModel.AttachCtcHead)"
            use result = model.Forward input
            observe result
            let ce = TrainingStep.tokenCrossEntropySum result.Logits input.Labels
            let boundary =
                result.Encoder.Layers
                |> List.fold (fun (acc: Tensor) l -> acc + l.Output.LossPerUtterance.to_type(ce.dtype).sum()) (torch.zeros([||], dtype = ce.dtype, device = ce.device))
            use logits = head.forward result.Encoder.Hidden
            let lengths =
                use valid = result.Encoder.Mask.ne((0).ToScalar()).sum(1L).cpu()
                [| for i in 0L .. valid.shape.[0] - 1L -> valid.[i].item<int64>() |]
            // Per character, as PyTorch's "mean" reduction: an utterance's CTC sum grows with its length, and unnormalised
            // it outweighs the token-mean cross-entropy tens of times, so gradient clipping would starve the decoder.
            let losses = Ctc.perUtterance logits lengths targets
            use perCharacter =
                torch.tensor(targets |> Array.map (fun t -> 1.0 / float (max 1 t.Length)), dtype = losses.dtype, device = losses.device)
            let ctc = (losses * perCharacter).sum()
            { TokenCrossEntropy = ce; BoundaryLoss = boundary; Ctc = Some(w, ctc) }

    /// MagnetWhisper's forward (`MagnetWhisperModel.Forward`): Σ token cross-entropy of its logits and Σ of each
    /// utterance's boundary losses over the predictor layers, both in the model's precision (float32 at least; the
    /// encoder's own totals are float32).
    let magnet (model: MagnetWhisperModel) (input: ForwardInput) : LossSums = magnetObserved ignore model input

    /// Stock Whisper's teacher-forced loss: mel (B, n_mels, 2·S), decoder inputs and labels (B, T), optional masks as
    /// in `WhisperModel.Logits`; no boundary loss.
    let whisper (model: WhisperModel) (mel: Tensor) (tokens: Tensor) (labels: Tensor) (tokenMask: Tensor option) (encoderMask: Tensor option) : LossSums =
        use logits = model.Logits(mel, tokens, tokenMask, encoderMask)
        let ce = TrainingStep.tokenCrossEntropySum logits labels
        { TokenCrossEntropy = ce; BoundaryLoss = torch.zeros([||], dtype = ce.dtype, device = ce.device); Ctc = None }
