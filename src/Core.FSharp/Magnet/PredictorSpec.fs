namespace MagnetWhisper.Core.Magnet

// The text forms of predictor slots and extra convolutions shared by `magnet convert` (--predictor, --conv-strides)
// and training configurations (the `predictors` and `conv_strides` keys): LAYER:TYPE[:PRIOR[:POOLING]] and "2,2".

open System
open System.Globalization

/// Parsing of predictor slots and convolution strides as the command line and configurations write them.
[<RequireQualifiedAccess>]
module PredictorSpec =
    /// The prior of a spec that gives none (the original's default).
    [<Literal>]
    let DefaultPrior = 0.08

    /// The short name of a kind, as specs and flags write it ("bp1" … "bp4").
    let kindName (kind: PredictorKind) : string =
        match kind with
        | Bp1 -> "bp1"
        | Bp2 -> "bp2"
        | Bp3 -> "bp3"
        | Bp4 -> "bp4"

    /// Parses a predictor type (bp1..bp4, or the original's class names); `source` names the flag or key in errors.
    let parseKind (source: string) (text: string) : PredictorKind =
        match text.Trim().ToLowerInvariant() with
        | "bp1" | "boundarypredictor1" -> Bp1
        | "bp2" | "boundarypredictor2" -> Bp2
        | "bp3" | "boundarypredictor3" -> Bp3
        | "bp4" | "boundarypredictor4" -> Bp4
        | other -> invalidArg "predictor" $"{source}: unknown type '{other}' (bp1, bp2, bp3 or bp4)"

    /// Parses LAYER:TYPE[:PRIOR[:POOLING]] (TYPE bp1..bp4, POOLING attention|mean); `source` names where the text came
    /// from in errors ("--predictor", "key 'predictors'"). Raises ArgumentException.
    let parse (source: string) (spec: string) : PredictorSlot =
        let parts = spec.Split(':')
        if parts.Length < 2 || parts.Length > 4 then
            invalidArg "predictor" $"{source} '{spec}' must be LAYER:TYPE[:PRIOR[:POOLING]]"
        let layer =
            match Int32.TryParse parts.[0] with
            | true, l -> l
            | _ -> invalidArg "predictor" $"{source} '{spec}': layer '{parts.[0]}' is not an integer"
        let kind = parseKind $"{source} '{spec}'" parts.[1]
        let prior =
            if parts.Length >= 3 then
                match Double.TryParse(parts.[2], NumberStyles.Float, CultureInfo.InvariantCulture) with
                | true, p -> p
                | _ -> invalidArg "predictor" $"{source} '{spec}': prior '{parts.[2]}' is not a number"
            else DefaultPrior
        let slot = PredictorSlot.Create(layer, kind, prior)
        if parts.Length = 4 then
            let pooling =
                match parts.[3].Trim().ToLowerInvariant() with
                | "attention" -> AttentionPooling
                | "mean" -> MeanPooling
                | other -> invalidArg "predictor" $"{source} '{spec}': pooling '{other}' must be attention or mean"
            { slot with Predictor = { slot.Predictor with Pooling = pooling } }
        else slot

    /// Parses comma-separated positive strides ("2,2"); `source` names the flag or key in errors.
    let parseStrides (source: string) (text: string) : int list =
        [ for s in text.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) ->
              match Int32.TryParse s with
              | true, v when v >= 1 -> v
              | _ -> invalidArg "conv-strides" $"{source} '{text}': '{s}' is not a positive integer" ]
