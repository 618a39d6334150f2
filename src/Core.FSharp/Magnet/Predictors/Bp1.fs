namespace MagnetWhisper.Core.Magnet

open TorchSharp
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Segments

/// BoundaryPredictor1 (SPEC §4.2): a per-frame MLP scorer p = σ(MLP(dropout(h))) with ReLU, final bias −2.5, and by
/// default single-head attention pooling (query ~ N(0, 0.02²), identity projections, scale D^−1/2).
/// State-dict keys: `boundary_mlp.0.{weight,bias}`, `boundary_mlp.2.{weight,bias}` and, with attention pooling,
/// `pool_query`, `pool_key.weight`, `pool_value.weight`, `pool_output.weight`.
/// Supervised loss: 10 · NLL_Bin(k; n, t_eff)/n with the targets after the compression schedule.
type BoundaryPredictor1(config: PredictorConfig, dim: int) as this =
    inherit BoundaryPredictor("BoundaryPredictor1", config, dim)

    let width = defaultArg config.HiddenDim dim
    let first = torch.nn.Linear(int64 dim, int64 width)
    let last = torch.nn.Linear(int64 width, 1L)
    let mlp = torch.nn.Sequential(first, torch.nn.ReLU(), last)

    let attention =
        match config.Pooling with
        | AttentionPooling -> Some(PredictorCore.AttentionPoolModules.Create dim)
        | MeanPooling -> None

    do
        if config.Kind <> Bp1 then invalidArg "config" $"BoundaryPredictor1 needs Kind = Bp1, but has {config.Kind}"
        this.register_module("boundary_mlp", mlp)
        match attention with
        | Some modules ->
            this.register_parameter(
                "pool_query",
                PredictorCore.parameter (fun () -> torch.randn(int64 dim) * PredictorConstants.PoolQueryStd))
            this.register_module("pool_key", modules.Key)
            this.register_module("pool_value", modules.Value)
            this.register_module("pool_output", modules.Output)
        | None -> ()
        match config.InitialBoundaryBias with
        | Some bias ->
            use _ = torch.no_grad ()
            last.bias.fill_(bias) |> ignore
        | None -> ()

    /// p = σ(MLP(dropout(hidden))), with its logits; the pooled features are hidden itself.
    override this.Score(hidden: Tensor, _mask: Tensor option, generator: torch.Generator option) : BoundaryScores =
        let logits = mlp.forward(PredictorCore.dropout this.training config.Dropout generator hidden).squeeze(-1L)
        { Probabilities = logits.sigmoid(); Logits = Some logits; Features = hidden }

    /// Single-head attention pooling (or segment mean with MeanPooling).
    override this.Pool(boundaries: Tensor, mask: Tensor option, features: Tensor) : Tensor =
        match attention with
        | Some modules -> Pooling.attentionPoolWithTail (PredictorCore.tailRule config) (modules.Params(this.get_parameter "pool_query")) boundaries mask features
        | None -> PredictorCore.meanPool config boundaries mask features

    /// 10 · binomial from the compression-scheduled targets (SPEC §4.2 steps 6–7).
    override this.CountLoss(input: PredictorInput, counts: Tensor, valid: Tensor) : Tensor =
        this.ScheduledTargetLoss(input, counts, valid)
