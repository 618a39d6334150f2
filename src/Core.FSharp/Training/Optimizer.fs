namespace MagnetWhisper.Core.Training

// AdamW over the trained parameters (issue 9 §2): decoupled weight decay except on biases, norm weights and
// embeddings; one peak learning rate per named group of parameters (e.g. predictors vs the rest), each split into a
// decayed and an undecayed TorchSharp ParamGroup. The schedule multiplies every peak by the same factor per update.

open System
open TorchSharp
open TorchSharp.Modules
open MagnetWhisper.Core.Magnet

/// A peak learning rate for the trained parameters in some of the model's named groups.
type LearningRateGroup =
    { /// Shown in logs and errors ("predictors", "rest", …).
      Name: string
      /// The model's groups whose parameters take this rate (`MagnetWhisperModel.InGroup`).
      Members: ParameterGroup list
      /// The peak learning rate (> 0), multiplied by the schedule's factor at every update.
      LearningRate: float }

/// AdamW's settings (torch's defaults and whisper.py's weight decay).
type OptimizerSettings =
    { Beta1: float
      Beta2: float
      Epsilon: float
      /// Decoupled weight decay λ: every decayed parameter is multiplied by 1 − lr·λ before the Adam update.
      WeightDecay: float
      /// Learning-rate groups, tried in order: a trained parameter takes the first group it belongs to; a trained
      /// parameter that belongs to none is an error.
      Groups: LearningRateGroup list }

    /// β = (0.9, 0.999), ε = 1e-8, weight decay 0.01, one group of every parameter at the given rate.
    static member Default(learningRate: float) : OptimizerSettings =
        { Beta1 = 0.9
          Beta2 = 0.999
          Epsilon = 1e-8
          WeightDecay = 0.01
          Groups = [ { Name = "all"; Members = [ AllParameters ]; LearningRate = learningRate } ] }

    /// Predictors at one rate, every other trained parameter at another.
    static member PredictorsAndRest(predictorRate: float, restRate: float) : OptimizerSettings =
        { OptimizerSettings.Default restRate with
            Groups =
                [ { Name = "predictors"; Members = [ Predictors ]; LearningRate = predictorRate }
                  { Name = "rest"; Members = [ AllParameters ]; LearningRate = restRate } ] }

/// One TorchSharp parameter group of the optimizer.
type OptimizerGroup =
    { /// The learning-rate group's name.
      Name: string
      /// True when the group's parameters are weight-decayed.
      Decayed: bool
      /// The peak learning rate.
      PeakLearningRate: float
      /// The parameters, by name, in the optimizer's order.
      Parameters: (string * Parameter) list
      /// The TorchSharp group (its LearningRate is set at every update).
      Group: AdamW.ParamGroup }

/// AdamW with its groups. Dispose it to free the moments.
type TrainingOptimizer =
    { AdamW: AdamW
      Groups: OptimizerGroup list }

    /// Every optimized parameter by name, in the optimizer's order.
    member o.Parameters: (string * Parameter) list = o.Groups |> List.collect (fun g -> g.Parameters)

    /// Sets every group's learning rate to its peak times the multiplier.
    member o.SetLearningRate(multiplier: float) =
        for g in o.Groups do
            g.Group.LearningRate <- g.PeakLearningRate * multiplier

    interface IDisposable with
        member o.Dispose() = o.AdamW.Dispose()

/// Building the optimizer.
[<RequireQualifiedAccess>]
module Optimizer =
    /// True when a parameter is weight-decayed: not a bias (name ends in "bias"), not a norm's scale or any other
    /// vector or scalar (rank ≤ 1: LayerNorm and BatchNorm weights, pool queries, similarity biases), and not an
    /// embedding table (`embed_tokens`, `embed_positions`).
    let decays (name: string) (parameter: torch.Tensor) : bool =
        not (name.EndsWith "bias" || parameter.dim () <= 1L || name.Contains "embed_tokens" || name.Contains "embed_positions")

    /// Fails unless the settings are usable.
    let validate (settings: OptimizerSettings) : OptimizerSettings =
        let check name ok value = if not ok then invalidArg "settings" $"{name} is {value}, which is out of range"
        check "Beta1 (must be in [0, 1))" (settings.Beta1 >= 0.0 && settings.Beta1 < 1.0) settings.Beta1
        check "Beta2 (must be in [0, 1))" (settings.Beta2 >= 0.0 && settings.Beta2 < 1.0) settings.Beta2
        check "Epsilon (must be ≥ 0)" (settings.Epsilon >= 0.0) settings.Epsilon
        check "WeightDecay (must be ≥ 0)" (settings.WeightDecay >= 0.0) settings.WeightDecay
        if settings.Groups.IsEmpty then invalidArg "settings" "there must be at least one learning-rate group"
        for g in settings.Groups do
            if not (g.LearningRate > 0.0 && Double.IsFinite g.LearningRate) then
                invalidArg "settings" $"the learning rate of group '{g.Name}' must be positive and finite, but is {g.LearningRate}"
            if g.Members.IsEmpty then invalidArg "settings" $"the learning-rate group '{g.Name}' has no members"
        settings

    /// The learning-rate group of each trained parameter: the first whose members contain it (inGroup as
    /// `MagnetWhisperModel.InGroup`). Raises for a parameter no group takes, naming it.
    let assign (settings: OptimizerSettings) (inGroup: ParameterGroup -> string -> bool) (trained: (string * Parameter) list) =
        [ for name, p in trained ->
              match settings.Groups |> List.tryFind (fun g -> g.Members |> List.exists (fun m -> inGroup m name)) with
              | Some g -> g, name, p
              | None ->
                  let groups = String.Join(", ", settings.Groups |> List.map (fun g -> g.Name))
                  invalidArg "trained" $"the trained parameter '{name}' belongs to none of the learning-rate groups ({groups}); add a group with AllParameters last" ]

    /// AdamW over the trained parameters: per learning-rate group (in the settings' order), the decayed parameters
    /// then the undecayed ones (weight decay 0), each in the order given; empty groups are left out.
    let create (settings: OptimizerSettings) (inGroup: ParameterGroup -> string -> bool) (trained: (string * Parameter) list) : TrainingOptimizer =
        let settings = validate settings
        if trained.IsEmpty then invalidArg "trained" "no parameter is trained: make some trainable (SetTrainable) first"
        let assigned = assign settings inGroup trained
        let groups =
            [ for g in settings.Groups do
                  for decayed in [ true; false ] do
                      let members =
                          [ for owner, name, p in assigned do
                                if obj.ReferenceEquals(owner, g) && decays name p = decayed then name, p ]
                      if not members.IsEmpty then
                          let group =
                              AdamW.ParamGroup(
                                  members |> List.map snd,
                                  lr = g.LearningRate,
                                  beta1 = settings.Beta1,
                                  beta2 = settings.Beta2,
                                  eps = settings.Epsilon,
                                  weight_decay = (if decayed then settings.WeightDecay else 0.0))
                          { Name = g.Name; Decayed = decayed; PeakLearningRate = g.LearningRate; Parameters = members; Group = group } ]
        let adamw = torch.optim.AdamW(groups |> List.map (fun g -> g.Group), lr = settings.Groups.Head.LearningRate)
        { AdamW = adamw; Groups = groups }

    /// AdamW over a MagnetWhisper's trainable parameters (`TrainableParameters`), grouped by its `InGroup`.
    let forMagnet (settings: OptimizerSettings) (model: MagnetWhisperModel) : TrainingOptimizer =
        create settings (fun g n -> model.InGroup(g, n)) model.TrainableParameters
