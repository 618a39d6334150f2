namespace MagnetWhisper.Core.Magnet

/// Construction of boundary predictors from their configuration.
[<RequireQualifiedAccess>]
module Predictors =
    /// The original's class name of a kind ("BoundaryPredictor1" … "BoundaryPredictor4", as saved in `layer_types`).
    let typeName (kind: PredictorKind) : string =
        match kind with
        | Bp1 -> "BoundaryPredictor1"
        | Bp2 -> "BoundaryPredictor2"
        | Bp3 -> "BoundaryPredictor3"
        | Bp4 -> "BoundaryPredictor4"

    /// The kind of an original class name, or None.
    let tryKindOfTypeName (name: string) : PredictorKind option =
        match name with
        | "BoundaryPredictor1" -> Some Bp1
        | "BoundaryPredictor2" -> Some Bp2
        | "BoundaryPredictor3" -> Some Bp3
        | "BoundaryPredictor4" -> Some Bp4
        | _ -> None

    /// A new predictor of config.Kind for states of width dim (D from the model config), on the CPU with fresh
    /// parameters; move it with `.``to``(device)` and load weights with `load_state_dict`. Fails with a clear
    /// message when the configuration does not fit D (e.g. 8 pooling heads must divide D for BP2/BP3, BP3 needs an
    /// even D, BP4 mean pooling only).
    let create (config: PredictorConfig) (dim: int) : BoundaryPredictor =
        match config.Kind with
        | Bp1 -> new BoundaryPredictor1(config, dim)
        | Bp2 -> new BoundaryPredictor2(config, dim)
        | Bp3 -> new BoundaryPredictor3(config, dim)
        | Bp4 -> new BoundaryPredictor4(config, dim)
