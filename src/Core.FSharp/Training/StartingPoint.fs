namespace MagnetWhisper.Core.Training

// What a run starts from (issue 9 §1): a MagnetWhisper folder as saved; a Hugging Face Whisper folder converted with
// predictor slots and extra convolutions exactly as `magnet convert --whisper` does (same parsing, same random draws
// for the new weights after torch.manual_seed); an original project's checkpoint imported as `magnet convert
// --original` does (the original's numbers); or a fresh model of a named or custom size initialised as Hugging
// Face's `_init_weights` does. Errors name the configuration key.

open System
open System.IO
open TorchSharp
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Text

/// The model a run starts from.
type StartingPoint =
    /// A MagnetWhisper folder (it has magnet.json): loaded as saved, with its own predictors.
    | MagnetFolder of dir: string
    /// A MagnetWhisper folder with new predictors in slots that are Identity in it (`predictors` with a
    /// MagnetWhisper folder): its tensors as saved, the new predictors freshly initialised. The options are the
    /// folder's with the new slots added.
    | MagnetFolderWithPredictors of dir: string * options: MagnetOptions
    /// A Hugging Face Whisper folder, converted with these predictors and convolutions.
    | WhisperFolder of dir: string * options: MagnetOptions
    /// An original project's checkpoint folder (boundary_params.pt and boundary_predictors.bin), imported.
    | OriginalFolder of dir: string
    /// A fresh model of this configuration with these predictors and convolutions.
    | FreshModel of config: WhisperConfig * options: MagnetOptions

/// Resolving and loading starting points.
[<RequireQualifiedAccess>]
module StartingPoint =
    let private messageOf (e: exn) = e.Message.Split(" (Parameter").[0]

    /// The predictor slots and convolutions of the `predictors` and `conv_strides` keys for a model of `whisper`'s shape.
    let options (config: TrainConfig) (whisper: WhisperConfig) : MagnetOptions =
        let slots =
            config.Predictors
            |> List.map (fun spec ->
                let slot =
                    try PredictorSpec.parse "key 'predictors':" spec
                    with :? ArgumentException as e -> raise (InvalidDataException(messageOf e))
                if slot.Layer < 0 || slot.Layer >= whisper.EncoderLayers then
                    raise (InvalidDataException $"key 'predictors': '{spec}': layer {slot.Layer} is not an encoder layer of the model (0 to {whisper.EncoderLayers - 1})")
                slot)
        let layers = slots |> List.map _.Layer
        if (List.distinct layers).Length <> layers.Length then
            let given = String.Join(", ", config.Predictors)
            raise (InvalidDataException $"key 'predictors': two predictors before the same layer ({given})")
        let options =
            { MagnetOptions.Default with
                Predictors = slots |> List.sortBy _.Layer
                Convs = ConvConfig.FromStrides(config.ConvStrides, whisper.DModel) }
        try MagnetOptions.validate whisper options
        with :? ArgumentException as e -> raise (InvalidDataException("keys 'predictors'/'conv_strides': " + messageOf e))

    /// The Whisper configuration of a fresh model: the `from_scratch` size with the size keys over it, the special
    /// tokens of the vocabulary of `vocab_size`, feed-forward width 4 · d_model unless `ffn_dim` is given.
    let freshConfig (config: TrainConfig) : WhisperConfig =
        let size = defaultArg config.FromScratch "tiny"
        let preset =
            match size.Trim().ToLowerInvariant() with
            | "tiny" | "base" | "small" | "medium" | "large" as name -> WhisperConfig.preset name
            | other -> raise (InvalidDataException $"key 'from_scratch': unknown size '{other}': use tiny, base, small, medium or large (and the size keys d_model, encoder_layers, … for others)")
        let dModel = defaultArg config.DModel preset.DModel
        let heads = defaultArg config.AttentionHeads preset.EncoderAttentionHeads
        let ffn = config.FfnDim |> Option.defaultValue (if config.DModel.IsSome then 4 * dModel else preset.EncoderFfnDim)
        let vocab = defaultArg config.VocabSize preset.VocabSize
        let specials =
            try (Tokenizer.ofVocabSize vocab).Specials
            with :? ArgumentException as e -> raise (InvalidDataException("key 'vocab_size': " + messageOf e))
        let whisper =
            { preset with
                DModel = dModel
                EncoderLayers = defaultArg config.EncoderLayers preset.EncoderLayers
                DecoderLayers = defaultArg config.DecoderLayers preset.DecoderLayers
                EncoderAttentionHeads = heads
                DecoderAttentionHeads = heads
                EncoderFfnDim = ffn
                DecoderFfnDim = ffn
                VocabSize = vocab
                PadTokenId = specials.EndOfText
                BosTokenId = specials.EndOfText
                EosTokenId = specials.EndOfText
                DecoderStartTokenId = specials.StartOfTranscript
                // Whisper's: no leading space or end of text as the first sampled token.
                BeginSuppressTokens = [| 220; specials.EndOfText |] }
        try WhisperConfig.validate whisper
        with :? ArgumentException as e -> raise (InvalidDataException($"key 'from_scratch' ({size} with the size keys): " + messageOf e))

    /// The starting point of a configuration (validated first). Raises InvalidDataException naming the key, or
    /// DirectoryNotFoundException for a `model` folder that does not exist.
    let ofConfig (config: TrainConfig) : StartingPoint =
        let config = TrainConfig.validate config
        match config.FromScratch with
        | Some _ ->
            let whisper = freshConfig config
            FreshModel(whisper, options config whisper)
        | None ->
            let dir = config.Model
            if not (Directory.Exists dir) then raise (DirectoryNotFoundException $"key 'model': {dir} is not a folder")
            let noSlots (kind: string) =
                if not config.Predictors.IsEmpty || not config.ConvStrides.IsEmpty then
                    raise (InvalidDataException $"keys 'predictors' and 'conv_strides' apply to a Hugging Face Whisper folder or a fresh model; key 'model' ({dir}) is {kind} with its own")
            if MagnetFormat.isMagnetFolder dir then
                if not config.ConvStrides.IsEmpty then
                    raise (InvalidDataException $"key 'conv_strides' applies to a Hugging Face Whisper folder or a fresh model; key 'model' ({dir}) is a MagnetWhisper folder with its own convolutions")
                if config.Predictors.IsEmpty then MagnetFolder dir
                else
                    let whisper, own =
                        try MagnetFormat.readOptions dir
                        with :? ArgumentException as e -> raise (InvalidDataException($"key 'model' ({dir}): " + messageOf e))
                    let added = (options config whisper).Predictors
                    for slot in added do
                        match own.TryFind slot.Layer with
                        | Some existing ->
                            let spec = config.Predictors |> List.find (fun p -> (PredictorSpec.parse "" p).Layer = slot.Layer)
                            raise (InvalidDataException $"key 'predictors': '{spec}': the MagnetWhisper folder {dir} already has a {Predictors.typeName existing.Predictor.Kind} before layer {slot.Layer}; new predictors go only where its slots are Identity")
                        | None -> ()
                    let combined = added |> List.fold (fun (o: MagnetOptions) s -> o.WithSlot s) own
                    let combined =
                        try MagnetOptions.validate whisper combined
                        with :? ArgumentException as e -> raise (InvalidDataException("key 'predictors': " + messageOf e))
                    MagnetFolderWithPredictors(dir, combined)
            elif OriginalCheckpoint.isOriginalFolder dir then
                noSlots "an original checkpoint"
                OriginalFolder dir
            elif File.Exists(Path.Combine(dir, "config.json")) then
                let whisper =
                    try Checkpoint.ReadConfig dir
                    with :? ArgumentException as e -> raise (InvalidDataException($"key 'model' ({dir}): " + messageOf e))
                WhisperFolder(dir, options config whisper)
            else
                raise (InvalidDataException $"key 'model': {dir} is neither a MagnetWhisper folder (magnet.json), an original checkpoint (boundary_params.pt) nor a Hugging Face Whisper folder (config.json)")

    /// Loads the model of a starting point onto device with floating-point tensors of dtype (evaluation mode). New
    /// weights (predictors, convolutions, a fresh model) are drawn from the global generator: seed it first.
    let load (start: StartingPoint) (device: torch.Device) (dtype: torch.ScalarType) : MagnetWhisperModel =
        let moved (m: MagnetWhisperModel) =
            try
                m.``to``(device, dtype) |> ignore
                m.eval()
                m
            with _ ->
                m.Dispose()
                reraise ()
        match start with
        | MagnetFolder dir -> MagnetFormat.load dir device dtype
        | MagnetFolderWithPredictors(dir, options) ->
            use saved = MagnetFormat.load dir torch.CPU torch.float32
            // The new slots' modules are drawn here, in slot order, from the global generator.
            moved (saved.WithOptions(options, dir))
        | OriginalFolder dir -> OriginalCheckpoint.import ImportOptions.Original dir device dtype
        | WhisperFolder(dir, options) ->
            use whisper = WhisperModel.fromPretrained dir torch.CPU torch.ScalarType.Float32
            moved (MagnetWhisperModel.FromWhisper(whisper, options))
        | FreshModel(config, options) -> moved (new MagnetWhisperModel(config, options))

    /// One line for the user: "the Hugging Face Whisper folder X with predictors before layers 3".
    let describe (start: StartingPoint) : string =
        let slots (o: MagnetOptions) =
            let ps = o.Predictors |> List.map (fun s -> $"{Predictors.typeName s.Predictor.Kind} before layer {s.Layer}")
            let convs = o.Convs.Layers |> List.map (fun l -> string l.Stride)
            [ if not ps.IsEmpty then "predictors " + String.Join(", ", ps)
              if not convs.IsEmpty then "extra convolutions of strides " + String.Join(",", convs) ]
            |> function [] -> "" | parts -> " with " + String.Join(" and ", parts)
        match start with
        | MagnetFolder dir -> $"the MagnetWhisper folder {dir}"
        | MagnetFolderWithPredictors(dir, o) -> $"the MagnetWhisper folder {dir}{slots o}"
        | OriginalFolder dir -> $"the original checkpoint {dir} (imported with the original's numbers)"
        | WhisperFolder(dir, o) -> $"the Hugging Face Whisper folder {dir}{slots o}"
        | FreshModel(c, o) ->
            $"a fresh model (d_model {c.DModel}, {c.EncoderLayers}+{c.DecoderLayers} layers, {c.EncoderAttentionHeads} heads, ffn {c.EncoderFfnDim}, vocabulary {c.VocabSize}){slots o}"
