namespace MagnetWhisper.Core.Magnet

// MagnetWhisper's own folder format (SPEC §6.9 with DECISIONS #5): the Hugging Face Whisper files (config.json,
// model.safetensors with the predictor and extra-convolution tensors under the original's state-dict names,
// generation_config.json when present) plus magnet.json (format version, one entry per encoder slot, the extra
// convolutions and the compatibility options). Saving is atomic; loading validates everything and names what is wrong.

open System
open System.IO
open System.Text.Json
open TorchSharp
open MagnetWhisper.Core.Segments
open MagnetWhisper.Core.Whisper

/// Reading and writing `magnet.json`.
[<RequireQualifiedAccess>]
module MagnetJson =
    /// "magnet.json"
    [<Literal>]
    let FileName = "magnet.json"

    /// The value of the "format" field.
    [<Literal>]
    let FormatName = "magnet-whisper"

    let private poolingName = function AttentionPooling -> "attention" | MeanPooling -> "mean"
    let private alignmentName = function Aligned -> "aligned" | OriginalCrop -> "original_crop"
    let private batchingName = function BatchIndependent -> "batch_independent" | OriginalBatching -> "original"
    let private rlPoolingName = function PoolSampled -> "sampled" | PoolAllFrames -> "all_frames"
    let private targetClampName = function Losses.ClampInFloat64 -> "float64" | Losses.ClampInFloat32 -> "float32"
    let private maskName = function QueriesAndKeys -> "queries_and_keys" | QueriesOnly -> "queries_only"
    let private schedulingName = function ScheduleOnce -> "once" | ScheduleTwice -> "twice"
    let private ceName = function MeanOverRealTokens -> "real_tokens" | MeanOverAllPositions -> "all_positions"

    /// "next", "none" or "row:N".
    let targetSourceName =
        function
        | NextRow -> "next"
        | NoTargets -> "none"
        | Row r -> $"row:{r}"

    /// Parses "next", "none" or "row:N".
    let tryParseTargetSource (text: string) : TargetSource option =
        match text with
        | "next" -> Some NextRow
        | "none" -> Some NoTargets
        | t when t.StartsWith "row:" ->
            match Int32.TryParse(t.Substring 4) with
            | true, r when r >= 0 -> Some(Row r)
            | _ -> None
        | _ -> None

    /// The field naming the classes of the auxiliary CTC head (`ctc_head.*`); absent when the model has none.
    [<Literal>]
    let CtcHeadField = "ctc_head_classes"

    /// The text of magnet.json for options, the model's encoder depth and its CTC head's classes (None = no head).
    let writeWith (encoderLayers: int) (options: MagnetOptions) (ctcHeadClasses: int option) : string =
        Json.write (fun w ->
            ctcHeadClasses |> Option.iter (fun n -> w.WriteNumber(CtcHeadField, n))
            w.WriteString("format", FormatName)
            w.WriteNumber("format_version", MagnetConstants.FormatVersion)
            w.WriteNumber("encoder_layers", encoderLayers)
            w.WriteNumber("rope_theta", options.RopeTheta)
            w.WriteStartArray "slots"
            for layer in 0 .. encoderLayers - 1 do
                w.WriteStartObject()
                w.WriteNumber("layer", layer)
                match options.TryFind layer with
                | None -> w.WriteString("type", "Identity")
                | Some slot ->
                    let c = slot.Predictor
                    w.WriteString("type", Predictors.typeName c.Kind)
                    w.WriteNumber("prior", c.Prior)
                    w.WriteNumber("temperature", c.Temperature)
                    w.WriteNumber("threshold", c.Threshold)
                    w.WriteString("pooling", poolingName c.Pooling)
                    w.WriteString("target_source", targetSourceName slot.Targets)
                    match c.HiddenDim with
                    | Some h -> w.WriteNumber("hidden_dim", h)
                    | None -> w.WriteNull "hidden_dim"
                    w.WriteNumber("dropout", c.Dropout)
                    match c.InitialBoundaryBias with
                    | Some b -> w.WriteNumber("initial_boundary_bias", b)
                    | None -> w.WriteNull "initial_boundary_bias"
                    w.WriteString("unet_alignment", alignmentName c.UNetAlignment)
                    match c.RlBinomialCap with
                    | Some cap -> w.WriteNumber("rl_binomial_cap", cap)
                    | None -> w.WriteNull "rl_binomial_cap"
                    w.WriteString("batching", batchingName c.Batching)
                    w.WriteString("rl_pooling", rlPoolingName c.RlPooling)
                    match c.InferenceThreshold with
                    | Some t -> w.WriteNumber("inference_threshold", t)
                    | None -> w.WriteNull "inference_threshold"
                    w.WriteString("target_clamp", targetClampName c.TargetClamp)
                w.WriteEndObject()
            w.WriteEndArray()
            w.WriteStartObject "conv_config"
            w.WriteStartArray "layers"
            for l in options.Convs.Layers do
                w.WriteStartArray()
                w.WriteNumberValue l.OutChannels
                w.WriteNumberValue l.Kernel
                w.WriteNumberValue l.Stride
                w.WriteEndArray()
            w.WriteEndArray()
            w.WriteEndObject()
            w.WriteStartObject "compatibility"
            w.WriteString("encoder_self_attention_mask", maskName options.Compatibility.EncoderSelfAttentionMask)
            w.WriteString("target_scheduling", schedulingName options.Compatibility.TargetScheduling)
            w.WriteString("per_utterance_cross_entropy", ceName options.Compatibility.CrossEntropyPerUtterance)
            w.WriteEndObject())

    /// The text of magnet.json for options and the model's encoder depth (no CTC head).
    let write (encoderLayers: int) (options: MagnetOptions) : string = writeWith encoderLayers options None

    /// The classes of the CTC head magnet.json declares (None: no head).
    let ctcHeadClasses (source: string) (text: string) : int option =
        use doc = Json.parseDocument source text
        Json.tryProp doc.RootElement CtcHeadField |> Option.map (Json.asInt source CtcHeadField)

    let private fail (source: string) (message: string) : 'a = raise (InvalidDataException $"{source}: {message}")

    let private requireKnown (source: string) (where: string) (known: string list) (e: JsonElement) =
        for p in e.EnumerateObject() do
            if not (List.contains p.Name known) then
                let allowed = String.Join(", ", known)
                fail source $"unknown field '{p.Name}' in {where} (known: {allowed})"

    let private required (source: string) (where: string) (e: JsonElement) (name: string) =
        match Json.tryProp e name with
        | Some v -> v
        | None -> fail source $"{where} has no '{name}'"

    let private choice (source: string) (name: string) (options: (string * 'a) list) (v: JsonElement) : 'a =
        let text = Json.asString source name v
        match options |> List.tryFind (fst >> (=) text) with
        | Some(_, x) -> x
        | None ->
            let allowed = String.Join(", ", options |> List.map fst)
            fail source $"field '{name}' is '{text}'; expected one of {allowed}"

    /// Parses magnet.json text for a model with encoderLayers layers; errors name the source and the field.
    let parse (source: string) (encoderLayers: int) (text: string) : MagnetOptions =
        use doc = Json.parseDocument source text
        let root = doc.RootElement
        requireKnown source "the top level" [ "format"; "format_version"; "encoder_layers"; "rope_theta"; "slots"; "conv_config"; "compatibility"; CtcHeadField ] root
        match Json.tryProp root "format" |> Option.map (Json.asString source "format") with
        | Some FormatName -> ()
        | Some other -> fail source $"format is '{other}', expected '{FormatName}'"
        | None -> fail source "no 'format' field"
        let version = Json.asInt source "format_version" (required source "the top level" root "format_version")
        if version <> MagnetConstants.FormatVersion then
            fail source $"format_version {version} is not supported (this build reads version {MagnetConstants.FormatVersion})"
        let layers = Json.asInt source "encoder_layers" (required source "the top level" root "encoder_layers")
        if layers <> encoderLayers then
            fail source $"encoder_layers is {layers} but config.json has encoder_layers = {encoderLayers}"
        let theta = Json.tryProp root "rope_theta" |> Option.map (Json.asFloat source "rope_theta") |> Option.defaultValue MagnetConstants.RopeTheta
        let slotsElement = required source "the top level" root "slots"
        if slotsElement.ValueKind <> JsonValueKind.Array then fail source "field 'slots' must be an array"
        let slots =
            [ for e in slotsElement.EnumerateArray() do
                  if e.ValueKind <> JsonValueKind.Object then fail source "every entry of 'slots' must be an object"
                  let layer = Json.asInt source "slots[].layer" (required source "a slot" e "layer")
                  let where = $"slot {layer}"
                  if layer < 0 || layer >= encoderLayers then fail source $"{where}: layer must be in 0..{encoderLayers - 1}"
                  let typeName = Json.asString source $"slots[{layer}].type" (required source where e "type")
                  if typeName = "Identity" then
                      requireKnown source where [ "layer"; "type" ] e
                  else
                      let kind =
                          match Predictors.tryKindOfTypeName typeName with
                          | Some k -> k
                          | None ->
                              fail source $"{where}: unknown predictor type '{typeName}' (expected Identity, BoundaryPredictor1, BoundaryPredictor2, BoundaryPredictor3 or BoundaryPredictor4)"
                      requireKnown source where
                          [ "layer"; "type"; "prior"; "temperature"; "threshold"; "pooling"; "target_source"; "hidden_dim"; "dropout"
                            "initial_boundary_bias"; "unet_alignment"; "rl_binomial_cap"; "batching"; "rl_pooling"
                            "inference_threshold"; "target_clamp" ] e
                      let field name = $"slots[{layer}].{name}"
                      let prior = Json.asFloat source (field "prior") (required source where e "prior")
                      let d = PredictorConfig.Default(kind, prior)
                      let optFloat name = Json.tryProp e name |> Option.map (Json.asFloat source (field name))
                      // An optional named choice; absent (e.g. in files written before the field existed) → fallback.
                      let optChoice name options fallback =
                          Json.tryProp e name |> Option.map (choice source (field name) options) |> Option.defaultValue fallback
                      // An optional number that may be null (= None); absent → fallback.
                      let nullableFloat name fallback =
                          match e.TryGetProperty(name: string) with
                          | true, v when v.ValueKind = JsonValueKind.Null -> None
                          | true, v -> Some(Json.asFloat source (field name) v)
                          | _ -> fallback
                      let predictor =
                          { d with
                              Temperature = optFloat "temperature" |> Option.defaultValue d.Temperature
                              Threshold = optFloat "threshold" |> Option.defaultValue d.Threshold
                              Pooling = optChoice "pooling" [ "attention", AttentionPooling; "mean", MeanPooling ] d.Pooling
                              HiddenDim = Json.tryProp e "hidden_dim" |> Option.map (Json.asInt source (field "hidden_dim"))
                              Dropout = optFloat "dropout" |> Option.defaultValue d.Dropout
                              InitialBoundaryBias = nullableFloat "initial_boundary_bias" d.InitialBoundaryBias
                              UNetAlignment = optChoice "unet_alignment" [ "aligned", Aligned; "original_crop", OriginalCrop ] d.UNetAlignment
                              RlBinomialCap = nullableFloat "rl_binomial_cap" d.RlBinomialCap
                              Batching = optChoice "batching" [ "batch_independent", BatchIndependent; "original", OriginalBatching ] d.Batching
                              RlPooling = optChoice "rl_pooling" [ "sampled", PoolSampled; "all_frames", PoolAllFrames ] d.RlPooling
                              InferenceThreshold = nullableFloat "inference_threshold" d.InferenceThreshold
                              TargetClamp =
                                optChoice "target_clamp" [ "float64", Losses.ClampInFloat64; "float32", Losses.ClampInFloat32 ] d.TargetClamp }
                      let targets =
                          match Json.tryProp e "target_source" with
                          | None -> (PredictorSlot.Create(layer, kind, prior)).Targets
                          | Some v ->
                              let text = Json.asString source (field "target_source") v
                              match tryParseTargetSource text with
                              | Some t -> t
                              | None -> fail source $"{where}: target_source '{text}' must be 'next', 'none' or 'row:N'"
                      yield { Layer = layer; Predictor = predictor; Targets = targets } ]
        let seen = slotsElement.EnumerateArray() |> Seq.map (fun e -> Json.asInt source "slots[].layer" (e.GetProperty "layer")) |> List.ofSeq
        match seen |> List.countBy id |> List.tryFind (fun (_, n) -> n > 1) with
        | Some(l, _) -> fail source $"slot {l} appears more than once"
        | None -> ()
        let convs =
            match Json.tryProp root "conv_config" with
            | None -> ConvConfig.Empty
            | Some c ->
                if c.ValueKind <> JsonValueKind.Object then fail source "field 'conv_config' must be an object or null"
                requireKnown source "conv_config" [ "layers" ] c
                match Json.tryProp c "layers" with
                | None -> ConvConfig.Empty
                | Some ls ->
                    { Layers =
                        [ for l in ls.EnumerateArray() do
                              match Json.asIntArray source "conv_config.layers[]" l with
                              | [| o; k; s |] -> { OutChannels = o; Kernel = k; Stride = s }
                              | other -> fail source $"conv_config.layers entries must be [out_channels, kernel, stride], got {other.Length} numbers" ] }
        let compatibility =
            match Json.tryProp root "compatibility" with
            | None -> Compatibility.Default
            | Some c ->
                requireKnown source "compatibility" [ "encoder_self_attention_mask"; "target_scheduling"; "per_utterance_cross_entropy" ] c
                let d = Compatibility.Default
                { EncoderSelfAttentionMask =
                    Json.tryProp c "encoder_self_attention_mask"
                    |> Option.map (choice source "compatibility.encoder_self_attention_mask" [ "queries_and_keys", QueriesAndKeys; "queries_only", QueriesOnly ])
                    |> Option.defaultValue d.EncoderSelfAttentionMask
                  TargetScheduling =
                    Json.tryProp c "target_scheduling"
                    |> Option.map (choice source "compatibility.target_scheduling" [ "once", ScheduleOnce; "twice", ScheduleTwice ])
                    |> Option.defaultValue d.TargetScheduling
                  CrossEntropyPerUtterance =
                    Json.tryProp c "per_utterance_cross_entropy"
                    |> Option.map (choice source "compatibility.per_utterance_cross_entropy" [ "real_tokens", MeanOverRealTokens; "all_positions", MeanOverAllPositions ])
                    |> Option.defaultValue d.CrossEntropyPerUtterance }
        { Predictors = slots |> List.sortBy (fun s -> s.Layer); Convs = convs; Compatibility = compatibility; RopeTheta = theta }

/// Saving and loading MagnetWhisper folders.
[<RequireQualifiedAccess>]
module MagnetFormat =
    /// Saves a model atomically (AtomicWrite.folder) with the given options; its CTC head (`ctc_head.*` and magnet.json's
    /// ctc_head_classes) only when withCtcHead.
    let saveAs (withCtcHead: bool) (options: SaveOptions) (dir: string) (model: MagnetWhisperModel) : unit =
        let config = model.Config
        let dtype = options.DType |> Option.defaultValue model.DType
        let configJson = WhisperConfig.toJson (Checkpoint.TorchDtypeName dtype) config
        let generationJson = model.GenerationConfig |> Option.map GenerationConfig.toJson
        let head = if withCtcHead then model.CtcHeadClasses else None
        let magnetJson = MagnetJson.writeWith config.EncoderLayers model.Options head
        let state = model.State |> List.filter (fun (n, _) -> withCtcHead || not (n.StartsWith MagnetWhisperModel.CtcHeadPrefix))
        MagnetWhisper.Core.AtomicWrite.folder dir (Checkpoint.IsModelFile >> not) (fun staging ->
            use _ = torch.no_grad()
            Checkpoint.WriteFiles(staging, configJson, generationJson, state, options)
            File.WriteAllText(Path.Combine(staging, MagnetJson.FileName), magnetJson))

    /// Saves a model atomically (AtomicWrite.folder) with the given options, its CTC head included.
    let saveWith (options: SaveOptions) (dir: string) (model: MagnetWhisperModel) : unit = saveAs true options dir model

    /// Saves a model without its auxiliary CTC head: the folder a model without the head would give (e.g. to ship
    /// a model pretrained with the CTC loss, whose head only served training).
    let saveWithoutCtcHead (dir: string) (model: MagnetWhisperModel) : unit = saveAs false SaveOptions.Default dir model

    /// Saves a MagnetWhisper folder atomically: config.json, generation_config.json (when the model has one),
    /// model.safetensors (every parameter and buffer under its Hugging Face / original name) and magnet.json.
    let save (dir: string) (model: MagnetWhisperModel) : unit = saveWith SaveOptions.Default dir model

    /// True when the folder has a magnet.json.
    let isMagnetFolder (dir: string) = File.Exists(Path.Combine(dir, MagnetJson.FileName))

    /// Reads config.json and magnet.json of a folder (validated against each other).
    let readOptions (dir: string) : WhisperConfig * MagnetOptions =
        let config = Checkpoint.ReadConfig dir
        let path = Path.Combine(dir, MagnetJson.FileName)
        if not (File.Exists path) then
            raise (FileNotFoundException($"{dir} is not a MagnetWhisper folder: it has no {MagnetJson.FileName} (convert a Whisper folder or import an original checkpoint first)", path))
        let options = MagnetJson.parse path config.EncoderLayers (File.ReadAllText path)
        let options =
            try MagnetOptions.validate config options
            with :? ArgumentException as e -> raise (InvalidDataException($"{path}: {e.Message}", e))
        config, options

    /// Loads a MagnetWhisper folder onto device with floating-point tensors of dtype, in evaluation mode. Every
    /// tensor must be present with the right shape and nothing unexpected may be stored; errors name the file, the
    /// field or the tensors.
    let load (dir: string) (device: torch.Device) (dtype: torch.ScalarType) : MagnetWhisperModel =
        let config, options = readOptions dir
        let generation = Checkpoint.ReadGenerationConfig dir
        use weights = CheckpointWeights.Open dir
        let m = new MagnetWhisperModel(config, generation, options, false)
        try
            let path = Path.Combine(dir, MagnetJson.FileName)
            MagnetJson.ctcHeadClasses path (File.ReadAllText path) |> Option.iter m.AttachCtcHead
            m.``to``(device, dtype) |> ignore
            m.LoadState(weights, LoadOptions.Default) |> ignore
            m.eval()
            m
        with _ ->
            m.Dispose()
            reraise ()

/// Functions over MagnetWhisper models for pipelines.
[<RequireQualifiedAccess>]
module MagnetWhisper =
    /// Converts a Whisper model with the given options (SPEC §6.1).
    let fromWhisper (whisper: WhisperModel, options: MagnetOptions) : MagnetWhisperModel = MagnetWhisperModel.FromWhisper(whisper, options)
    /// A randomly initialised MagnetWhisper (float32, CPU; seed with torch.manual_seed first).
    let create (config: WhisperConfig) (options: MagnetOptions) = new MagnetWhisperModel(config, options)
    /// Loads a MagnetWhisper folder (see MagnetFormat.load).
    let load (dir: string) (device: torch.Device) (dtype: torch.ScalarType) = MagnetFormat.load dir device dtype
    /// Saves a MagnetWhisper folder atomically.
    let save (dir: string) (model: MagnetWhisperModel) = MagnetFormat.save dir model
    /// Runs the encoder with its boundary statistics.
    let encode (model: MagnetWhisperModel) (input: EncoderInput) = model.Encode input
    /// Forward pass with labels: loss, logits, boundary statistics.
    let forward (model: MagnetWhisperModel) (input: ForwardInput) = model.Forward input
