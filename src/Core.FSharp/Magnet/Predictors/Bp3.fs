namespace MagnetWhisper.Core.Magnet

open TorchSharp
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Segments

/// BP3's one-level 1-D U-Net over (B, L, D) (SPEC §4.4) with bottleneck width H = D/2 (the original's 384 for 768,
/// DECISIONS #10): encoder Conv1d(D→H, k3, s2, p1)+BN+GELU+dropout (L → E = ⌈L/2⌉); bottleneck Conv1d(H→H, k3, p1)
/// +BN+GELU+dropout; ConvTranspose1d(H→H, k4, s2, p1) (E → 2E); concatenation with the encoder skip (2H = D
/// channels)+BN+GELU+dropout; refine Conv1d(D→D, k3, p1) initialised N(0, 0.01²) with bias 0; final BN.
/// With `Aligned` (DECISIONS #6) the skip is repeated to full resolution (encoder step j covers frames 2j and 2j+1),
/// the transposed-convolution output is trimmed or padded to L and both are joined at full resolution; padded
/// frames are zeroed before each convolution, so with BatchNorm's running statistics (eval) a row's output does not
/// depend on its batch. With `OriginalCrop` the upsampled branch is cut to its first E steps, joined with the skip,
/// and linearly interpolated to L, as the original did. BatchNorm uses batch statistics in training mode (all
/// frames of the batch) and running statistics in eval mode.
/// Parameter names (under the owner's `unet.`): `encoder_conv`, `encoder_norm`, `bottleneck_conv`,
/// `bottleneck_norm`, `decoder_conv`, `decoder_norm1`, `refine_conv`, `decoder_norm2` (BatchNorm running statistics
/// included).
type UNet1D(dim: int, dropoutP: float, alignment: UNetAlignment) as this =
    inherit torch.nn.Module<Tensor, Tensor>("UNet1D")

    do
        if dim < 2 || dim % 2 <> 0 then
            invalidArg "dim" $"BP3's U-Net needs an even width D (its bottleneck is D/2), but D = {dim}"

    let hidden = int64 (dim / 2)
    let d = int64 dim
    let encoderConv = torch.nn.Conv1d(d, hidden, 3L, stride = 2L, padding = 1L)
    let encoderNorm = torch.nn.BatchNorm1d(hidden)
    let bottleneckConv = torch.nn.Conv1d(hidden, hidden, 3L, stride = 1L, padding = 1L)
    let bottleneckNorm = torch.nn.BatchNorm1d(hidden)
    let decoderConv = torch.nn.ConvTranspose1d(hidden, hidden, 4L, stride = 2L, padding = 1L)
    let decoderNorm1 = torch.nn.BatchNorm1d(2L * hidden)
    let refineConv = torch.nn.Conv1d(d, d, 3L, stride = 1L, padding = 1L)
    let decoderNorm2 = torch.nn.BatchNorm1d(d)

    do
        this.register_module("encoder_conv", encoderConv)
        this.register_module("encoder_norm", encoderNorm)
        this.register_module("bottleneck_conv", bottleneckConv)
        this.register_module("bottleneck_norm", bottleneckNorm)
        this.register_module("decoder_conv", decoderConv)
        this.register_module("decoder_norm1", decoderNorm1)
        this.register_module("refine_conv", refineConv)
        this.register_module("decoder_norm2", decoderNorm2)
        use _ = torch.no_grad ()
        refineConv.weight.normal_(0.0, PredictorConstants.RefineInitStd) |> ignore
        refineConv.bias.zero_() |> ignore

    /// Components are registered explicitly under the original's names (see `BoundaryPredictor.RegisterComponents`).
    override _.RegisterComponents() = ()

    /// Trims or zero-pads the last dimension of x (B, C, T) to length.
    static member private Fit (length: int64) (x: Tensor) : Tensor =
        let t = x.shape.[2]
        if t > length then x.narrow(2L, 0L, length)
        elif t < length then torch.nn.functional.pad(x, [| 0L; length - t |])
        else x

    /// The U-Net output (B, L, D) for x (B, L, D), an optional 0/1 mask (B, L) (used by `Aligned` only) and the
    /// generator its dropout draws from while training (None: TorchSharp's global generator).
    member this.Run(x: Tensor, mask: Tensor option, generator: torch.Generator option) : Tensor =
        requireRank "x" 3 x
        requireDim "x" 2 d x
        use _ = torch.NewDisposeScope()
        let l = x.shape.[1]
        let dropout = PredictorCore.dropout this.training dropoutP generator
        let block (conv: torch.nn.Module<Tensor, Tensor>) (norm: torch.nn.Module<Tensor, Tensor>) (input: Tensor) =
            dropout (torch.nn.functional.gelu(norm.forward(conv.forward input)))
        let channelsFirst = x.transpose(1L, 2L)
        let output =
            match alignment with
            | Aligned ->
                // (B, 1, L) and (B, 1, ⌈L/2⌉) masks; an encoder step is valid when its centre frame 2j is.
                let full = mask |> Option.map (fun m -> m.to_type(x.dtype).unsqueeze(1L))
                let half = mask |> Option.map (fun m -> Positions.poolFrameMask 2 m |> fun h -> h.to_type(x.dtype).unsqueeze(1L))
                let masked (m: Tensor option) (t: Tensor) =
                    match m with
                    | Some m -> t * m
                    | None -> t
                let encoded = block encoderConv encoderNorm (masked full channelsFirst) |> masked half
                let bottle = block bottleneckConv bottleneckNorm encoded |> masked half
                let upsampled = UNet1D.Fit l (decoderConv.forward bottle)
                let skip = UNet1D.Fit l (encoded.repeat_interleave(2L, dim = 2L))
                let joined =
                    dropout (torch.nn.functional.gelu(decoderNorm1.forward(torch.cat([| upsampled; skip |], 1L))))
                    |> masked full
                decoderNorm2.forward(refineConv.forward joined)
            | OriginalCrop ->
                let encoded = block encoderConv encoderNorm channelsFirst
                let bottle = block bottleneckConv bottleneckNorm encoded
                let upsampled = UNet1D.Fit encoded.shape.[2] (decoderConv.forward bottle)
                let joined =
                    dropout (torch.nn.functional.gelu(decoderNorm1.forward(torch.cat([| upsampled; encoded |], 1L))))
                let stretched =
                    if joined.shape.[2] <> l then
                        torch.nn.functional.interpolate(joined, [| l |], mode = torch.InterpolationMode.Linear, align_corners = false)
                    else joined
                decoderNorm2.forward(refineConv.forward stretched)
        output.transpose(1L, 2L).MoveToOuterDisposeScope()

    /// The U-Net output (B, L, D) for x (B, L, D) without a mask.
    override this.forward(x: Tensor) : Tensor = this.Run(x, None, None)

/// BoundaryPredictor3 (SPEC §4.4): BP2's consecutive-frame dissimilarity on enhanced = hidden + UNet(hidden), with
/// separate q/k GELU MLPs and no residual: q = W_q norm(MLP_q(norm(dropout(e_t)))), k likewise from e_{t+1},
/// β = −0.126; pooling (8-head attention by default) also uses the enhanced states.
/// State-dict keys: `unet.*` (see `UNet1D`), `q_mlp.{0,2}.*`, `k_mlp.{0,2}.*`, `q_proj_layer.weight`,
/// `k_proj_layer.weight`, `similarity_bias` and, with attention pooling, `learned_query`,
/// `pool_{key,value,output}.weight`, `pool_layernorm.{weight,bias}`.
/// Loss: with targets 10 · NLL_Bin(k; n, t)/n; without, 10 · NLL_Bin(k; n, prior(s))/max(n, 1) · BoundaryLossWeight
/// with the prior schedule s.
type BoundaryPredictor3(config: PredictorConfig, dim: int) as this =
    inherit BoundaryPredictor("BoundaryPredictor3", config, dim)

    let width = defaultArg config.HiddenDim dim
    let unet = new UNet1D(dim, config.Dropout, config.UNetAlignment)
    let makeMlp () =
        torch.nn.Sequential(torch.nn.Linear(int64 dim, int64 width), torch.nn.GELU(), torch.nn.Linear(int64 width, int64 dim))
    let qMlp = makeMlp ()
    let kMlp = makeMlp ()
    let qProj = PredictorCore.identityLinear dim
    let kProj = PredictorCore.identityLinear dim

    do
        if config.Kind <> Bp3 then invalidArg "config" $"BoundaryPredictor3 needs Kind = Bp3, but has {config.Kind}"
        this.register_module("unet", unet)
        this.register_module("q_mlp", qMlp)
        this.register_module("k_mlp", kMlp)
        this.register_module("q_proj_layer", qProj)
        this.register_module("k_proj_layer", kProj)
        this.register_parameter(
            "similarity_bias",
            PredictorCore.parameter (fun () -> torch.tensor(float32 PredictorConstants.Bp3SimilarityBias)))

    let pool =
        match config.Pooling with
        | AttentionPooling -> Some(MultiHeadPool(this, config, dim))
        | MeanPooling -> None

    /// The U-Net.
    member _.UNet: UNet1D = unet

    /// Similarity of enhanced frames t and t+1; the pooled features are the enhanced states.
    override this.Score(hidden: Tensor, mask: Tensor option, generator: torch.Generator option) : BoundaryScores =
        let l = hidden.shape.[1]
        let enhanced = hidden + unet.Run(hidden, mask, generator)
        let side (mlp: Modules.Sequential) (projection: Modules.Linear) (frames: Tensor) =
            let x = PredictorCore.normalize (PredictorCore.dropout this.training config.Dropout generator frames)
            projection.forward(PredictorCore.normalize (mlp.forward x))
        let q = side qMlp qProj (enhanced.narrow(1L, 0L, max 0L (l - 1L)))
        let k = side kMlp kProj (enhanced.narrow(1L, min 1L l, max 0L (l - 1L)))
        let p = PredictorCore.similarityProbabilities ((q * k).sum(-1L)) (this.get_parameter "similarity_bias") mask
        { Probabilities = p; Logits = None; Features = enhanced }

    /// 8-head attention pooling over LayerNorm(enhanced) (or segment mean with MeanPooling).
    override _.Pool(boundaries: Tensor, mask: Tensor option, features: Tensor) : Tensor =
        match pool with
        | Some pool -> pool.Pool(boundaries, mask, features)
        | None -> PredictorCore.meanPool config boundaries mask features

    /// With targets: 10 · binomial from the raw targets. Without: the prior-scheduled binomial times
    /// Schedule.BoundaryLossWeight (0 by default, as the original).
    override this.CountLoss(input: PredictorInput, counts: Tensor, valid: Tensor) : Tensor =
        match input.Targets with
        | Some targets -> Losses.binomialFromTargetsWith this.Config.TargetClamp counts valid targets * PredictorConstants.LossMultiplier
        | None ->
            let prior = Losses.scheduledPrior this.Config.Prior input.Schedule.PriorSchedule
            Losses.binomialPerUtterance prior counts valid
            * (PredictorConstants.LossMultiplier * input.Schedule.BoundaryLossWeight)
