namespace MagnetWhisper.Core.Magnet

open TorchSharp
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Segments

/// The 8-head learned-query attention pooling of BP2 and BP3 (`learned_query` ~ N(0, 1), `pool_layernorm`,
/// identity-initialised `pool_key`/`pool_value`/`pool_output`), registered on the owning predictor under the
/// original's names.
type internal MultiHeadPool(owner: torch.nn.Module, config: PredictorConfig, dim: int) =
    let kind = config.Kind
    do PredictorCore.requireHeads kind PredictorConstants.PoolingHeads dim
    let modules = PredictorCore.AttentionPoolModules.Create dim
    let layerNorm = torch.nn.LayerNorm(int64 dim, PredictorConstants.LayerNormEps)

    do
        owner.register_parameter("learned_query", PredictorCore.parameter (fun () -> torch.randn(int64 dim)))
        owner.register_module("pool_key", modules.Key)
        owner.register_module("pool_value", modules.Value)
        owner.register_module("pool_output", modules.Output)
        owner.register_module("pool_layernorm", layerNorm)

    /// LayerNorm, then 8-head segment attention pooling with the configuration's tail rule. boundaries (B, L), mask (B, L) or None, features (B, L, D)
    /// → (B, S, D).
    member _.Pool(boundaries: Tensor, mask: Tensor option, features: Tensor) : Tensor =
        let norm: Pooling.LayerNormParams = { Weight = layerNorm.weight; Bias = layerNorm.bias; Eps = PredictorConstants.LayerNormEps }
        let query = owner.get_parameter "learned_query"
        Pooling.multiHeadAttentionPoolWithTail (PredictorCore.tailRule config) PredictorConstants.PoolingHeads (Some norm) (modules.Params query) boundaries mask features

/// BoundaryPredictor2 (SPEC §4.3, H-Net style): p_t = clamp((1 − (q_t·k_{t+1} + β))/2, 0, 1) from consecutive frames,
/// q = W_q norm(q̂ + MLP(q̂)) with q̂ = norm(dropout(h_t)) and likewise k from h_{t+1} (one shared GELU MLP), identity
/// W_q, W_k, β = −0.7; p = 0 at the last frame and at each row's last valid frame (whose boundary is forced).
/// State-dict keys: `boundary_mlp.{0,2}.{weight,bias}`, `q_proj_layer.weight`, `k_proj_layer.weight`,
/// `similarity_bias` and, with attention pooling, `learned_query`, `pool_{key,value,output}.weight`,
/// `pool_layernorm.{weight,bias}`. Supervised loss: 10 · NLL_Bin(k; n, t)/n with the raw targets.
type BoundaryPredictor2(config: PredictorConfig, dim: int) as this =
    inherit BoundaryPredictor("BoundaryPredictor2", config, dim)

    let width = defaultArg config.HiddenDim dim
    let mlp =
        torch.nn.Sequential(torch.nn.Linear(int64 dim, int64 width), torch.nn.GELU(), torch.nn.Linear(int64 width, int64 dim))
    let qProj = PredictorCore.identityLinear dim
    let kProj = PredictorCore.identityLinear dim

    do
        if config.Kind <> Bp2 then invalidArg "config" $"BoundaryPredictor2 needs Kind = Bp2, but has {config.Kind}"
        this.register_module("boundary_mlp", mlp)
        this.register_module("q_proj_layer", qProj)
        this.register_module("k_proj_layer", kProj)
        this.register_parameter(
            "similarity_bias",
            PredictorCore.parameter (fun () -> torch.tensor(float32 PredictorConstants.Bp2SimilarityBias)))

    let pool =
        match config.Pooling with
        | AttentionPooling -> Some(MultiHeadPool(this, config, dim))
        | MeanPooling -> None

    /// Similarity of frames t and t+1 through the shared residual MLP; the pooled features are hidden itself.
    override this.Score(hidden: Tensor, mask: Tensor option, generator: torch.Generator option) : BoundaryScores =
        let l = hidden.shape.[1]
        let enhance (frames: Tensor) =
            let x = PredictorCore.normalize (PredictorCore.dropout this.training config.Dropout generator frames)
            PredictorCore.normalize (x + mlp.forward x)
        let first (t: Tensor) = t.narrow(1L, 0L, max 0L (l - 1L))
        let rest (t: Tensor) = t.narrow(1L, min 1L l, max 0L (l - 1L))
        let q, k =
            if this.training && config.Dropout > 0.0 then
                // Each side draws its own dropout mask, as the original does: the MLP runs on both.
                qProj.forward (enhance (first hidden)), kProj.forward (enhance (rest hidden))
            else
                // Without dropout both sides are the same frames' MLP output shifted by one: run it once, half the cost.
                let enhanced = enhance hidden
                qProj.forward (first enhanced), kProj.forward (rest enhanced)
        let p = PredictorCore.similarityProbabilities ((q * k).sum(-1L)) (this.get_parameter "similarity_bias") mask
        { Probabilities = p; Logits = None; Features = hidden }

    /// 8-head attention pooling over LayerNorm(hidden) (or segment mean with MeanPooling).
    override _.Pool(boundaries: Tensor, mask: Tensor option, features: Tensor) : Tensor =
        match pool with
        | Some pool -> pool.Pool(boundaries, mask, features)
        | None -> PredictorCore.meanPool config boundaries mask features

    /// 10 · binomial from the raw targets (SPEC §4.3 step 6; no internal schedule).
    override this.CountLoss(input: PredictorInput, counts: Tensor, valid: Tensor) : Tensor =
        Losses.binomialFromTargetsWith this.Config.TargetClamp counts valid (this.RequireTargets input) * PredictorConstants.LossMultiplier
