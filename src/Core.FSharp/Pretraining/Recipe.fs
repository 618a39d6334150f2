namespace MagnetWhisper.Core.Pretraining

// The recipe of the built-in base model (issue 11 §3): the supervised trainer's configuration stored in the repository
// as data/demo/pretrain.json and embedded in this assembly, without the machine-specific corpus paths, which the
// pretraining fills in (data, dev_data and test_data are one synthetic corpus with its splits).

open System.IO
open MagnetWhisper.Core.Training

/// The base model's training configuration.
[<RequireQualifiedAccess>]
module PretrainRecipe =
    /// Where the recipe lives in the repository (also its name in errors).
    [<Literal>]
    let RepositoryPath = "data/demo/pretrain.json"

    /// The embedded resource holding data/demo/pretrain.json.
    [<Literal>]
    let ResourceName = "MagnetWhisper.Core.Pretraining.pretrain.json"

    /// The recipe's JSON text.
    let text () : string =
        let assembly = typeof<TrainConfig>.Assembly
        use stream = assembly.GetManifestResourceStream ResourceName
        if isNull stream then raise (FileNotFoundException $"the embedded recipe {ResourceName} is missing from {assembly.GetName().Name}")
        use reader = new StreamReader(stream)
        reader.ReadToEnd()

    /// The recipe over TrainConfig's defaults, its corpus keys (data, dev_data, test_data) set to `corpus`; then the
    /// `key=value` overrides (errors name the --set), then the seed and step count when given; validated.
    let config (corpus: string) (sets: string list) (seed: int64 option) (steps: int option) : TrainConfig =
        let recipe = TrainConfig.applyJson RepositoryPath (text ()) TrainConfig.Default
        let withCorpus = { recipe with Data = corpus; DevData = Some corpus; TestData = Some corpus }
        let overridden = sets |> List.fold (fun c s -> TrainConfig.set s c) withCorpus
        let seeded = match seed with Some s -> { overridden with Seed = s } | None -> overridden
        let sized = match steps with Some n -> { seeded with MaxSteps = n } | None -> seeded
        TrainConfig.validate sized
