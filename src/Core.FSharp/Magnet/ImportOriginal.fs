namespace MagnetWhisper.Core.Magnet

// Import of checkpoints saved by the original Python project (SPEC §6.9): a Hugging Face folder (model.safetensors
// or pytorch_model.bin) plus `boundary_params.pt` (slot types, priors, temperatures, thresholds, conv config),
// `boundary_predictors.bin` ({str(layer): state_dict}) and optionally `additional_convs.bin`.

open System
open System.Collections.Generic
open System.IO
open System.Text.Json
open TorchSharp
open MagnetWhisper.Core.Segments
open MagnetWhisper.Core.Whisper

/// The contents of an original `boundary_params.pt`.
type OriginalBoundaryParams =
    { /// (layer, prior) of the predictor slots.
      LayerPriors: (int * float) list
      /// (layer, temperature).
      LayerTemps: (int * float) list
      /// (layer, threshold).
      LayerThresholds: (int * float) list
      /// (layer, class name: "BoundaryPredictor1".."4" or "Identity"); empty in old checkpoints (then every prior
      /// slot is a BoundaryPredictor1).
      LayerTypes: (int * string) list
      /// The extra convolutions, when the checkpoint had any (`conv_config` {"layers": [(out, k, s), …]} or None).
      ConvConfig: ConvConfig option }

/// How an original checkpoint is interpreted.
type ImportOptions =
    { /// Compatibility options written into the imported model (default: the original's, so its weights keep their
      /// meaning).
      Compatibility: Compatibility
      /// BP3's U-Net alignment (default: the original's crop).
      Bp3Alignment: UNetAlignment
      /// Forced boundary and tail rule of every predictor (default: the original's, DECISIONS #1).
      Batching: BatchingRule
      /// What BP1 pools in RL mode (default: the original's all-ones boundaries, DECISIONS #4); other kinds keep
      /// PoolSampled.
      Bp1RlPooling: RlPooling
      /// Precision of the target probability of every predictor's target-count loss (default: the original's
      /// float32, DECISIONS #11).
      TargetClamp: Losses.TargetClamp
      /// Inference threshold of BP1 and BP4: Some 0.5 (default) is what the original always used at inference for
      /// them, whatever `layer_thresholds` says; None uses the saved threshold at inference too (DECISIONS #5).
      /// The saved threshold is kept as `Threshold` (sampling) either way.
      Bp1Bp4InferenceThreshold: float option }

    /// Reproduces the original's numbers: `Compatibility.Original`, BP3 `OriginalCrop`, `OriginalBatching` on every
    /// predictor, BP1's all-ones RL pooling, the float32 target clamp and BP1/BP4's inference threshold 0.5.
    static member Original =
        { Compatibility = Compatibility.Original
          Bp3Alignment = OriginalCrop
          Batching = OriginalBatching
          Bp1RlPooling = PoolAllFrames
          TargetClamp = Losses.ClampInFloat32
          Bp1Bp4InferenceThreshold = Some 0.5 }

    /// The project's behaviour (DECISIONS.md) with the original's weights: every saved threshold used at inference.
    static member Project =
        { Compatibility = Compatibility.Default
          Bp3Alignment = Aligned
          Batching = BatchIndependent
          Bp1RlPooling = PoolSampled
          TargetClamp = Losses.ClampInFloat64
          Bp1Bp4InferenceThreshold = None }

/// Reading original checkpoints.
[<RequireQualifiedAccess>]
module OriginalCheckpoint =
    /// "boundary_params.pt"
    [<Literal>]
    let ParamsFile = "boundary_params.pt"

    /// "boundary_predictors.bin"
    [<Literal>]
    let PredictorsFile = "boundary_predictors.bin"

    /// "additional_convs.bin"
    [<Literal>]
    let ConvsFile = "additional_convs.bin"

    /// "pytorch_model.bin"
    [<Literal>]
    let PytorchWeightsFile = "pytorch_model.bin"

    let private fail (source: string) (message: string) : 'a = raise (InvalidDataException $"{source}: {message}")

    /// True when the folder has the original's boundary files.
    let isOriginalFolder (dir: string) =
        File.Exists(Path.Combine(dir, ParamsFile)) && File.Exists(Path.Combine(dir, PredictorsFile))

    /// Parses the unpickled `boundary_params.pt` object.
    let parseParams (source: string) (root: PickleValue) : OriginalBoundaryParams =
        let entries =
            try Pickle.items root
            with :? ArgumentException -> fail source "expected a dict at the top level"
        let field name =
            entries |> List.tryPick (fun (k, v) -> match k with PString s when s = name -> Some v | _ -> None)
        let pairs name (value: PickleValue -> 'a option) : (int * 'a) list =
            match field name with
            | None
            | Some PNone -> []
            | Some v ->
                let items =
                    try Pickle.elements v
                    with :? ArgumentException -> fail source $"'{name}' must be a list of (layer, value) tuples"
                [ for item in items ->
                      let pair =
                          match item with
                          | PTuple [ a; b ] -> Some(a, b)
                          | PList l when l.Count = 2 -> Some(l.[0], l.[1])
                          | _ -> None
                      match pair with
                      | Some(PInt layer, x) ->
                          match value x with
                          | Some y -> int layer, y
                          | None -> fail source $"'{name}' has an entry for layer {layer} of the wrong type: {x}"
                      | _ -> fail source $"'{name}' must hold (layer, value) tuples, found {item}" ]
        let number =
            function
            | PFloat f -> Some f
            | PInt i -> Some(float i)
            | _ -> None
        let text =
            function
            | PString s -> Some s
            | _ -> None
        if (field "layer_priors").IsNone then fail source "no 'layer_priors' (not a boundary_params.pt of the original project?)"
        let convs =
            match field "conv_config" with
            | None
            | Some PNone -> None
            | Some c ->
                let layers =
                    match (try Pickle.items c with :? ArgumentException -> fail source "'conv_config' must be a dict or None")
                          |> List.tryPick (fun (k, v) -> match k with PString "layers" -> Some v | _ -> None) with
                    | None -> []
                    | Some ls ->
                        [ for l in Pickle.elements ls ->
                              match Pickle.elements l with
                              | [ PInt o; PInt k; PInt s ] -> { OutChannels = int o; Kernel = int k; Stride = int s }
                              | _ -> fail source $"conv_config layers must be (out_channels, kernel, stride) tuples, found {l}" ]
                Some { Layers = layers }
        { LayerPriors = pairs "layer_priors" number
          LayerTemps = pairs "layer_temps" number
          LayerThresholds = pairs "layer_thresholds" number
          LayerTypes = pairs "layer_types" text
          ConvConfig = convs }

    /// Reads `boundary_params.pt` of a folder.
    let readParams (dir: string) : OriginalBoundaryParams =
        let path = Path.Combine(dir, ParamsFile)
        if not (File.Exists path) then raise (FileNotFoundException($"{dir} is not an original MagnetWhisper checkpoint: {ParamsFile} is missing", path))
        use archive = TorchArchive.Open path
        parseParams path archive.Root

    /// Every tensor of a `torch.save`d state dict (a dict of name → tensor) with a name prefix.
    let private stateTensors (archive: TorchArchive) (prefix: string) : (string * TensorSource) list =
        [ for k, v in Pickle.items archive.Root do
              match k, v with
              | PString name, PTensor t ->
                  prefix + name, { Shape = t.Size; Load = fun dtype -> (use x = archive.Tensor t in x.to_type dtype) }
              | PString name, _ -> fail archive.Path $"entry '{name}' is not a tensor"
              | other, _ -> fail archive.Path $"unexpected key {other}" ]

    /// The slots an original checkpoint describes, with options inferred from the predictor tensors (hidden width,
    /// attention or mean pooling).
    let slots (source: string) (p: OriginalBoundaryParams) (predictorStates: IDictionary<int, (string * int64[]) list>) (options: ImportOptions) : PredictorSlot list =
        let priors = dict p.LayerPriors
        let temps = dict p.LayerTemps
        let thresholds = dict p.LayerThresholds
        let types =
            if p.LayerTypes.IsEmpty then [ for l, _ in p.LayerPriors -> l, "BoundaryPredictor1" ]
            else p.LayerTypes |> List.filter (fun (_, t) -> t <> "Identity")
        [ for layer, typeName in types ->
              let kind =
                  match Predictors.tryKindOfTypeName typeName with
                  | Some k -> k
                  | None -> fail source $"layer {layer} has unknown predictor type '{typeName}'"
              let lookup (d: IDictionary<int, float>) what =
                  match d.TryGetValue layer with
                  | true, v -> v
                  | _ -> fail source $"the {typeName} at layer {layer} has no entry in '{what}'"
              let prior = lookup priors "layer_priors"
              let state =
                  match predictorStates.TryGetValue layer with
                  | true, s -> s
                  | _ -> fail source $"{PredictorsFile} has no state for the {typeName} at layer {layer} (key '{layer}')"
              let shapeOf (key: string) = state |> List.tryPick (fun (k, s) -> if k = key then Some s else None)
              let hidden =
                  match kind with
                  | Bp1
                  | Bp2 -> shapeOf "boundary_mlp.0.weight"
                  | Bp3 -> shapeOf "q_mlp.0.weight"
                  | Bp4 -> shapeOf "boundary_conv.0.weight"
                  |> Option.map (fun s -> int s.[0])
              let attention =
                  match kind with
                  | Bp1 -> (shapeOf "pool_query").IsSome
                  | Bp2
                  | Bp3 -> (shapeOf "learned_query").IsSome
                  | Bp4 -> false
              let d = PredictorConfig.Default(kind, prior)
              let config =
                  { d with
                      Temperature = lookup temps "layer_temps"
                      Threshold = lookup thresholds "layer_thresholds"
                      Pooling = (if attention then AttentionPooling else MeanPooling)
                      HiddenDim = hidden
                      UNetAlignment = (if kind = Bp3 then options.Bp3Alignment else d.UNetAlignment)
                      Batching = options.Batching
                      RlPooling = (if kind = Bp1 then options.Bp1RlPooling else d.RlPooling)
                      TargetClamp = options.TargetClamp
                      InferenceThreshold =
                        (match kind with
                         | Bp1 | Bp4 -> options.Bp1Bp4InferenceThreshold
                         | Bp2 | Bp3 -> d.InferenceThreshold) }
              { Layer = layer
                Predictor = config
                Targets = (PredictorSlot.Create(layer, kind, prior)).Targets } ]

    /// Imports an original checkpoint folder as a MagnetWhisper model on device with floating-point tensors of
    /// dtype, in evaluation mode. The Whisper weights come from model.safetensors (or its shards) or
    /// pytorch_model.bin (or its shards); predictor weights from boundary_predictors.bin (they override copies in the main file);
    /// extra-convolution weights from additional_convs.bin when present. Every model tensor must be found with its
    /// shape; unexpected tensors are errors (tied `proj_out.weight` is ignored).
    let import (options: ImportOptions) (dir: string) (device: torch.Device) (dtype: torch.ScalarType) : MagnetWhisperModel =
        let config = Checkpoint.ReadConfig dir
        let generation = Checkpoint.ReadGenerationConfig dir
        let parameters = readParams dir
        let predictorsPath = Path.Combine(dir, PredictorsFile)
        if not (File.Exists predictorsPath) then
            raise (FileNotFoundException($"{dir} is not an original MagnetWhisper checkpoint: {PredictorsFile} is missing", predictorsPath))
        use predictorArchive = TorchArchive.Open predictorsPath
        let predictorStates = Dictionary<int, (string * TensorSource) list>()
        for k, v in Pickle.items predictorArchive.Root do
            match k, v with
            | PString key, state ->
                let layer =
                    match Int32.TryParse key with
                    | true, l -> l
                    | _ -> fail predictorsPath $"key '{key}' is not a layer index"
                predictorStates.[layer] <-
                    [ for name, t in Pickle.items state ->
                          match name, t with
                          | PString n, PTensor r ->
                              n, { Shape = r.Size; Load = fun dt -> (use x = predictorArchive.Tensor r in x.to_type dt) }
                          | _ -> fail predictorsPath $"the state of layer {layer} holds a non-tensor entry {name}" ]
            | other, _ -> fail predictorsPath $"unexpected key {other}"
        let shapes = Dictionary<int, (string * int64[]) list>()
        for KeyValue(l, s) in predictorStates do
            shapes.[l] <- s |> List.map (fun (n, t) -> n, t.Shape)
        let slots = slots (Path.Combine(dir, ParamsFile)) parameters shapes options
        let unused = predictorStates.Keys |> Seq.filter (fun l -> not (slots |> List.exists (fun s -> s.Layer = l))) |> List.ofSeq
        if not unused.IsEmpty then
            let layers = String.Join(", ", unused)
            fail predictorsPath $"holds predictor states for layer(s) {layers}, which boundary_params.pt does not declare"
        let magnetOptions =
            { MagnetOptions.Default with
                Predictors = slots
                Convs = parameters.ConvConfig |> Option.defaultValue ConvConfig.Empty
                Compatibility = options.Compatibility }
        let magnetOptions =
            try MagnetOptions.validate config magnetOptions
            with :? ArgumentException as e -> raise (InvalidDataException($"{dir}: the original checkpoint does not fit its config.json: {e.Message}", e))
        let tensors = Dictionary<string, TensorSource>()
        let disposables = ResizeArray<IDisposable>()
        try
            let safetensors = Path.Combine(dir, Checkpoint.WeightsFile)
            let index = Path.Combine(dir, Checkpoint.IndexFile)
            let pytorch = Path.Combine(dir, PytorchWeightsFile)
            let pytorchIndex = Path.Combine(dir, PytorchWeightsFile + ".index.json")
            let mainSource =
                if File.Exists safetensors || File.Exists index then
                    let w = CheckpointWeights.Open dir
                    disposables.Add w
                    for KeyValue(n, t) in TensorSource.OfCheckpoint w do tensors.[n] <- t
                    w.Source
                elif File.Exists pytorch then
                    let a = TorchArchive.Open pytorch
                    disposables.Add a
                    for n, t in stateTensors a "" do tensors.[n] <- t
                    pytorch
                elif File.Exists pytorchIndex then
                    // Sharded pickles: pytorch_model.bin.index.json maps tensor names to shard files.
                    let shards =
                        use doc = JsonDocument.Parse(File.ReadAllText pytorchIndex)
                        match doc.RootElement.TryGetProperty "weight_map" with
                        | true, m when m.ValueKind = JsonValueKind.Object -> [ for p in m.EnumerateObject() -> p.Value.GetString() ] |> List.distinct
                        | _ -> fail pytorchIndex "no weight_map"
                    for shard in shards do
                        if Path.GetFileName shard <> shard then fail pytorchIndex $"shard name '{shard}' is not a plain file name"
                        let a = TorchArchive.Open(Path.Combine(dir, shard))
                        disposables.Add a
                        for n, t in stateTensors a "" do tensors.[n] <- t
                    pytorchIndex
                else raise (FileNotFoundException($"{dir} has no {Checkpoint.WeightsFile}, {Checkpoint.IndexFile}, {PytorchWeightsFile} or {PytorchWeightsFile}.index.json", safetensors))
            for KeyValue(layer, state) in predictorStates do
                for n, t in state do
                    tensors.[$"model.encoder.boundary_predictors.{layer}.{n}"] <- t
            let convsPath = Path.Combine(dir, ConvsFile)
            if File.Exists convsPath then
                let a = TorchArchive.Open convsPath
                disposables.Add a
                for n, t in stateTensors a "model.encoder.additional_convs." do tensors.[n] <- t
            let m = new MagnetWhisperModel(config, generation, magnetOptions, false)
            try
                m.``to``(device, dtype) |> ignore
                m.LoadTensors($"original checkpoint {dir} ({mainSource}, {PredictorsFile})", tensors, LoadOptions.Default) |> ignore
                m.eval()
                m
            with _ ->
                m.Dispose()
                reraise ()
        finally
            for d in disposables do d.Dispose()
