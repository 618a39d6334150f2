namespace MagnetWhisper.Core.Training

// The configuration of a GRPO run (issue 10): the common keys of a supervised run (TrainConfig: model, data, steps,
// batch, learning rates, clipping, evaluation, checkpoints, seed, …) plus GRPO's own keys (docs/GRPO.md). One JSON
// object holds both; each key is read by the part that owns it, and errors name the key and its source.

open System
open System.IO
open System.Text.Json
open MagnetWhisper.Core
open MagnetWhisper.Core.Whisper

/// Everything a GRPO run is configured by. `GrpoConfig.Default` holds the defaults.
type GrpoConfig =
    { /// The keys shared with supervised training (docs/TRAINING.md). For GRPO, `batch_size` counts audios (each
      /// sampled K times) and `micro_batches` must be 1.
      Common: TrainConfig
      /// K, boundary sets sampled per audio (`group_size`).
      GroupSize: int
      /// μ, optimizer steps per rollout (`inner_epochs`).
      InnerEpochs: int
      /// PPO clip ε; None = no ratio clipping (`clip_epsilon`).
      ClipEpsilon: float option
      /// β of the k3 KL penalty to the starting model's policy; 0 = none (`kl_coef`).
      KlCoefficient: float
      /// Weight of the entropy bonus (`entropy_coef`).
      EntropyCoefficient: float
      /// λ, weight of the kept fraction in the reward (`kept_fraction_weight`).
      KeptFractionWeight: float
      /// μ, weight of the sample's WER (greedy decode of its own pooled encoder output) in the reward; 0 = off
      /// (`wer_reward_weight`).
      WerRewardWeight: float
      /// w, weight of each utterance's own boundary loss in the reward (`boundary_loss_weight`).
      BoundaryLossWeight: float
      /// group, global (the original) or none (`advantage_normalization`).
      Normalisation: AdvantageNormalisation }

    /// The algorithm's settings of the configuration.
    member c.Settings: GrpoSettings =
        { GroupSize = c.GroupSize
          InnerEpochs = c.InnerEpochs
          Normalisation = c.Normalisation
          Objective = { ClipEpsilon = c.ClipEpsilon; KlCoefficient = c.KlCoefficient; EntropyCoefficient = c.EntropyCoefficient }
          BoundaryLossWeight = c.BoundaryLossWeight
          KeptFractionWeight = c.KeptFractionWeight
          WerRewardWeight = c.WerRewardWeight
          MaxGradientNorm = c.Common.MaxGradientNorm }

/// Reading, overriding and writing GRPO configurations.
[<RequireQualifiedAccess>]
module GrpoConfig =
    /// The defaults: GrpoSettings.Default, and for the common keys the predictors only at 1e-5 (the original's
    /// BP learning rate), a constant learning rate without warmup (the original had no schedule), clip norm 1,
    /// 1000 steps of 4 audios.
    let Default: GrpoConfig =
        let s = GrpoSettings.Default
        { Common =
            { TrainConfig.Default with
                TrainedParts = PredictorsOnly
                LearningRate = 1e-5
                PredictorLearningRate = Some 1e-5
                WarmupRatio = 0.0
                Decay = ConstantAfterWarmup
                MaxGradientNorm = s.MaxGradientNorm
                BatchSize = 4 }
          GroupSize = s.GroupSize
          InnerEpochs = s.InnerEpochs
          ClipEpsilon = s.Objective.ClipEpsilon
          KlCoefficient = s.Objective.KlCoefficient
          EntropyCoefficient = s.Objective.EntropyCoefficient
          KeptFractionWeight = s.KeptFractionWeight
          WerRewardWeight = s.WerRewardWeight
          BoundaryLossWeight = s.BoundaryLossWeight
          Normalisation = s.Normalisation }

    let private fail (where: string) (key: string) (why: string) : 'a =
        raise (InvalidDataException $"{where}: key '{key}' {why}")

    let private num (where: string) (key: string) (ok: float -> bool) (rule: string) (v: JsonElement) =
        match v.ValueKind with
        | JsonValueKind.Number when ok (v.GetDouble()) -> v.GetDouble()
        | _ -> fail where key $"must be {rule}, got {v.GetRawText()}"

    let private int' (where: string) (key: string) (lo: int) (v: JsonElement) =
        match v.ValueKind, (if v.ValueKind = JsonValueKind.Number then v.TryGetInt32() else (false, 0)) with
        | JsonValueKind.Number, (true, i) when i >= lo -> i
        | _ -> fail where key $"must be an integer of at least {lo}, got {v.GetRawText()}"

    let private finite (x: float) = Double.IsFinite x

    /// GRPO's own keys: name, reader, writer.
    let private keys: (string * (string -> JsonElement -> GrpoConfig -> GrpoConfig) * (Utf8JsonWriter -> GrpoConfig -> unit)) list =
        [ "group_size", (fun at v c -> { c with GroupSize = int' at "group_size" 2 v }), (fun w c -> w.WriteNumber("group_size", c.GroupSize))
          "inner_epochs", (fun at v c -> { c with InnerEpochs = int' at "inner_epochs" 1 v }), (fun w c -> w.WriteNumber("inner_epochs", c.InnerEpochs))
          "clip_epsilon",
          (fun at v c ->
              { c with
                  ClipEpsilon =
                    if v.ValueKind = JsonValueKind.Null then None
                    else Some(num at "clip_epsilon" (fun x -> x > 0.0 && x < 1.0) "a number in (0, 1) or null" v) }),
          (fun w c ->
              match c.ClipEpsilon with
              | Some e -> w.WriteNumber("clip_epsilon", e)
              | None -> w.WriteNull "clip_epsilon")
          "kl_coef", (fun at v c -> { c with KlCoefficient = num at "kl_coef" (fun x -> x >= 0.0 && finite x) "a number of at least 0" v }),
          (fun w c -> w.WriteNumber("kl_coef", c.KlCoefficient))
          "entropy_coef", (fun at v c -> { c with EntropyCoefficient = num at "entropy_coef" finite "a finite number" v }),
          (fun w c -> w.WriteNumber("entropy_coef", c.EntropyCoefficient))
          "kept_fraction_weight", (fun at v c -> { c with KeptFractionWeight = num at "kept_fraction_weight" finite "a finite number" v }),
          (fun w c -> w.WriteNumber("kept_fraction_weight", c.KeptFractionWeight))
          "wer_reward_weight",
          (fun at v c -> { c with WerRewardWeight = num at "wer_reward_weight" (fun x -> x >= 0.0 && finite x) "a number of at least 0" v }),
          (fun w c -> w.WriteNumber("wer_reward_weight", c.WerRewardWeight))
          "boundary_loss_weight", (fun at v c -> { c with BoundaryLossWeight = num at "boundary_loss_weight" finite "a finite number" v }),
          (fun w c -> w.WriteNumber("boundary_loss_weight", c.BoundaryLossWeight))
          "advantage_normalization",
          (fun at v c ->
              if v.ValueKind <> JsonValueKind.String then fail at "advantage_normalization" $"must be a string, got {v.GetRawText()}"
              let n =
                  try GrpoAdvantages.parse (v.GetString())
                  with :? ArgumentException as e -> fail at "advantage_normalization" (e.Message.Split(" (Parameter").[0])
              { c with Normalisation = n }),
          (fun w c -> w.WriteString("advantage_normalization", GrpoAdvantages.name c.Normalisation)) ]

    /// GRPO's own key names, in the order config.json lists them (after the common keys).
    let keyNames: string list = keys |> List.map (fun (n, _, _) -> n)

    let private unknown (where: string) (name: string) : 'a =
        raise (InvalidDataException $"{where}: unknown key '{name}'; the keys are documented in docs/GRPO.md and docs/TRAINING.md")

    /// Applies one key's JSON value.
    let private applyKey (where: string) (name: string) (value: JsonElement) (config: GrpoConfig) : GrpoConfig =
        match keys |> List.tryFind (fun (n, _, _) -> n = name) with
        | Some(_, read, _) -> read where value config
        | None when List.contains name TrainConfig.keyNames ->
            let json = Json.write (fun w -> w.WritePropertyName name; value.WriteTo w)
            { config with Common = TrainConfig.applyJson where json config.Common }
        | None -> unknown where name

    /// Applies a JSON object's keys to a configuration; `where` names the source in errors.
    let applyJson (where: string) (text: string) (config: GrpoConfig) : GrpoConfig =
        use doc = Json.parseDocument where text
        doc.RootElement.EnumerateObject() |> Seq.fold (fun c p -> applyKey where p.Name p.Value c) config

    /// Reads a configuration file over the defaults.
    let read (path: string) : GrpoConfig =
        if not (File.Exists path) then raise (FileNotFoundException($"{path}: no such configuration file", path))
        applyJson path (File.ReadAllText path) Default

    /// Sets one key from text, `where` naming its source in errors (a flag such as "--group-size 1"): the value is
    /// read as JSON when it parses as JSON, as a string otherwise.
    let setValue (where: string) (key: string) (value: string) (config: GrpoConfig) : GrpoConfig =
        let json =
            try
                use d = JsonDocument.Parse value
                d.RootElement.GetRawText()
            with :? JsonException -> JsonSerializer.Serialize value
        use d = JsonDocument.Parse json
        applyKey where key d.RootElement config

    /// Applies one `key=value` override (see setValue).
    let set (assignment: string) (config: GrpoConfig) : GrpoConfig =
        let where = $"--set {assignment}"
        match assignment.IndexOf '=' with
        | i when i > 0 -> setValue where (assignment.Substring(0, i).Trim()) (assignment.Substring(i + 1).Trim()) config
        | _ -> raise (InvalidDataException $"{where}: must be key=value")

    /// Fails unless the run can start (the common checks, then GRPO's).
    let validate (config: GrpoConfig) : GrpoConfig =
        let common = TrainConfig.validate config.Common
        if common.MicroBatches <> 1 then
            raise (InvalidDataException $"key 'micro_batches' must be 1 for GRPO (the K·B samples of a rollout run in one forward), got {common.MicroBatches}")
        { config with Common = common }

    /// The resolved configuration as JSON: every common key, then GRPO's.
    let toJson (config: GrpoConfig) : string =
        use common = JsonDocument.Parse(TrainConfig.toJson config.Common)
        Json.write (fun w ->
            for p in common.RootElement.EnumerateObject() do
                p.WriteTo w
            for _, _, write in keys do
                write w config)

    /// Writes the resolved configuration atomically.
    let save (path: string) (config: GrpoConfig) : unit = AtomicWrite.text path (toJson config)
