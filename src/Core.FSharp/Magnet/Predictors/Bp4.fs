namespace MagnetWhisper.Core.Magnet

open TorchSharp
open MagnetWhisper.Core.Tensors

/// BoundaryPredictor4 (SPEC §4.5): a convolutional scorer Conv1d(D→C, k3, no padding) → ReLU → Conv1d(C→1, k1) with
/// C = ⌊D/3⌋ (the original's 256 for 768) and final bias −2.5. Conv output i is the logit of position i+2, the end of
/// its receptive field; positions 0 and 1 have logit −10 (p = σ(−10)). No dropout; mean pooling only (`downsample`).
/// State-dict keys: `boundary_conv.0.{weight,bias}`, `boundary_conv.2.{weight,bias}`.
/// Supervised loss: as BP1, 10 · NLL_Bin(k; n, t_eff)/n with the compression-scheduled targets.
type BoundaryPredictor4(config: PredictorConfig, dim: int) as this =
    inherit BoundaryPredictor("BoundaryPredictor4", config, dim)

    let kernel = int64 PredictorConstants.Bp4Kernel
    let channels = defaultArg config.HiddenDim (dim / PredictorConstants.Bp4Kernel)
    do
        if config.Kind <> Bp4 then invalidArg "config" $"BoundaryPredictor4 needs Kind = Bp4, but has {config.Kind}"
        if config.Pooling <> MeanPooling then
            invalidArg "config" "BoundaryPredictor4 supports MeanPooling only (the original has no attention pooling)"
        if channels < 1 then
            invalidArg "dim" $"BoundaryPredictor4 needs ⌊D/3⌋ ≥ 1 convolution channels (or HiddenDim), but D = {dim}"

    let first = torch.nn.Conv1d(int64 dim, int64 channels, kernel)
    let last = torch.nn.Conv1d(int64 channels, 1L, 1L)
    let conv = torch.nn.Sequential(first, torch.nn.ReLU(), last)

    do
        this.register_module("boundary_conv", conv)
        match config.InitialBoundaryBias with
        | Some bias ->
            use _ = torch.no_grad ()
            last.bias.fill_(bias) |> ignore
        | None -> ()

    /// Logits at the ends of the receptive fields, −10 at positions 0 and 1 (all of them when L < 3).
    override _.Score(hidden: Tensor, _mask: Tensor option, _generator: torch.Generator option) : BoundaryScores =
        let b, l = hidden.shape.[0], hidden.shape.[1]
        let fill = min l (kernel - 1L)
        let head = torch.full([| b; fill |], MagnetWhisper.Core.Segments.Boundaries.sc PredictorConstants.Bp4FillLogit, dtype = hidden.dtype, device = hidden.device)
        let logits =
            if l < kernel then head
            else torch.cat([| head; conv.forward(hidden.transpose(1L, 2L)).squeeze(1L) |], 1L)
        { Probabilities = logits.sigmoid(); Logits = Some logits; Features = hidden }

    /// Segment-mean pooling (`downsample`).
    override _.Pool(boundaries: Tensor, mask: Tensor option, features: Tensor) : Tensor =
        PredictorCore.meanPool config boundaries mask features

    /// 10 · binomial from the compression-scheduled targets, as BP1.
    override this.CountLoss(input: PredictorInput, counts: Tensor, valid: Tensor) : Tensor =
        this.ScheduledTargetLoss(input, counts, valid)
