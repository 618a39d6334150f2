namespace MagnetWhisper.Core.Training

// Which parameters train (issue 9 §2): named choices over the model's parameter groups, by the names a
// configuration or command line uses.

open System
open MagnetWhisper.Core.Magnet

/// The parts of a MagnetWhisper a run trains (`MagnetWhisperModel.SetTrainable` of their groups).
type TrainedParts =
    /// Every parameter (whisper.py: Whisper and the predictors jointly).
    | Everything
    /// The boundary predictors only (the original GRPO trainer's default freezing).
    | PredictorsOnly
    /// The predictors and the extra convolutions (the new parts of a converted model).
    | PredictorsAndConvolutions
    /// The predictors, the extra convolutions and the encoder from the first predictor on.
    | EncoderAfterFirstPredictor
    /// Everything except the text decoder and the output projection.
    | DecoderFrozen

/// Names and groups of the trained parts.
[<RequireQualifiedAccess>]
module TrainedParts =
    /// Every choice with its name.
    let all =
        [ "all", Everything
          "predictors", PredictorsOnly
          "predictors+convs", PredictorsAndConvolutions
          "encoder-after-first-predictor", EncoderAfterFirstPredictor
          "decoder-frozen", DecoderFrozen ]

    /// The choice's name.
    let name (parts: TrainedParts) : string = all |> List.find (snd >> (=) parts) |> fst

    /// The choice of a name (case-insensitive). Raises naming the value and the choices.
    let parse (text: string) : TrainedParts =
        match all |> List.tryFind (fun (n, _) -> String.Equals(n, text.Trim(), StringComparison.OrdinalIgnoreCase)) with
        | Some(_, parts) -> parts
        | None ->
            let names = String.Join(", ", all |> List.map fst)
            invalidArg "text" $"'{text}' names no trained parts; choose one of: {names}"

    /// The model's parameter groups of the choice.
    let groups (parts: TrainedParts) : ParameterGroup list =
        match parts with
        | Everything -> [ AllParameters ]
        | PredictorsOnly -> [ Predictors ]
        | PredictorsAndConvolutions -> [ Predictors; ExtraConvolutions ]
        | EncoderAfterFirstPredictor -> [ Predictors; ExtraConvolutions; ParameterGroup.EncoderAfterFirstPredictor ]
        | DecoderFrozen -> [ Predictors; ExtraConvolutions; EncoderBeforeFirstPredictor; ParameterGroup.EncoderAfterFirstPredictor ]

    /// Makes exactly the choice's parameters trainable; returns their names.
    let apply (parts: TrainedParts) (model: MagnetWhisperModel) : string list = model.SetTrainable(groups parts)
