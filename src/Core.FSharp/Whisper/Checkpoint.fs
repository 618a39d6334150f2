namespace MagnetWhisper.Core.Whisper

open System
open System.Collections.Generic
open System.IO
open System.Text.Json
open TorchSharp

/// How a checkpoint folder is written.
type SaveOptions =
    { /// Element type of the stored floating-point tensors (Float32, Float16 or BFloat16); None keeps each tensor's own.
      DType: torch.ScalarType option
      /// Split the weights into shards of at most this many bytes (plus `model.safetensors.index.json`); None writes
      /// one `model.safetensors`. A tensor larger than the limit gets a shard of its own.
      MaxShardBytes: int64 option }

    /// One model.safetensors in the tensors' own dtype.
    static member Default = { DType = None; MaxShardBytes = None }

/// The weight tensors of a checkpoint folder: `model.safetensors`, or the shards listed by
/// `model.safetensors.index.json`. Files are memory-mapped; dispose to unmap them.
[<Sealed>]
type CheckpointWeights private (source: string, files: SafeTensorsFile[], owners: IReadOnlyDictionary<string, SafeTensorsFile>, names: string[]) =
    /// Where the weights came from (the safetensors file or the index file).
    member _.Source = source
    /// Tensor names, sorted.
    member _.Names: IReadOnlyList<string> = names
    /// True when a tensor of that name exists.
    member _.Contains(name: string) = owners.ContainsKey name
    /// The header entry of a tensor (dtype, shape).
    member _.Info(name: string) : SafeTensorInfo =
        match owners.TryGetValue name with
        | true, f -> f.Info name
        | _ -> raise (KeyNotFoundException $"tensor '{name}' is not in {source}")
    /// Loads a tensor as a new CPU tensor converted to dtype.
    member _.Load(name: string, dtype: torch.ScalarType) : torch.Tensor =
        match owners.TryGetValue name with
        | true, f -> f.Load(name, dtype)
        | _ -> raise (KeyNotFoundException $"tensor '{name}' is not in {source}")

    /// Opens the weights of a folder. Prefers `model.safetensors`, then `model.safetensors.index.json`; raises
    /// FileNotFoundException naming the folder when neither exists (and says so when only PyTorch pickles exist),
    /// InvalidDataException for a bad index, a missing shard or a tensor missing from its shard.
    static member Open(dir: string) : CheckpointWeights =
        let single = Path.Combine(dir, Checkpoint.WeightsFile)
        let index = Path.Combine(dir, Checkpoint.IndexFile)
        if File.Exists single then
            let f = SafeTensorsFile.Open single
            let owners = Dictionary<string, SafeTensorsFile>()
            for n in f.Names do owners.[n] <- f
            new CheckpointWeights(single, [| f |], owners, f.Names |> Seq.sort |> Array.ofSeq)
        elif File.Exists index then
            let weightMap =
                use doc = Json.parseDocument index (File.ReadAllText index)
                match Json.tryProp doc.RootElement "weight_map" with
                | Some m when m.ValueKind = JsonValueKind.Object ->
                    [| for p in m.EnumerateObject() -> p.Name, Json.asString index $"weight_map.{p.Name}" p.Value |]
                | Some _ -> raise (InvalidDataException $"{index}: weight_map is not an object")
                | None -> raise (InvalidDataException $"{index}: no weight_map")
            let opened = Dictionary<string, SafeTensorsFile>()
            try
                let owners = Dictionary<string, SafeTensorsFile>()
                for name, file in weightMap do
                    if Path.GetFileName file <> file then
                        raise (InvalidDataException $"{index}: shard name '{file}' of '{name}' is not a plain file name")
                    let f =
                        match opened.TryGetValue file with
                        | true, f -> f
                        | _ ->
                            let p = Path.Combine(dir, file)
                            if not (File.Exists p) then
                                raise (InvalidDataException $"{index}: shard '{file}' (holding '{name}') is missing")
                            let f = SafeTensorsFile.Open p
                            opened.[file] <- f
                            f
                    if not (f.Contains name) then
                        raise (InvalidDataException $"{index}: tensor '{name}' is not in its shard '{file}'")
                    owners.[name] <- f
                new CheckpointWeights(index, Array.ofSeq opened.Values, owners, weightMap |> Array.map fst |> Array.sort)
            with _ ->
                for f in opened.Values do (f :> IDisposable).Dispose()
                reraise ()
        else
            let pickles = [ "pytorch_model.bin"; "pytorch_model.bin.index.json" ] |> List.filter (fun f -> File.Exists(Path.Combine(dir, f)))
            let hint =
                if pickles.IsEmpty then ""
                else
                    let found = String.Join(", ", pickles)
                    $" (found {found}: PyTorch pickles are not read; convert them to safetensors)"
            raise (FileNotFoundException($"no {Checkpoint.WeightsFile} or {Checkpoint.IndexFile} in {dir}{hint}", single))

    interface IDisposable with
        member _.Dispose() =
            for f in files do (f :> IDisposable).Dispose()

/// A Hugging Face Whisper checkpoint folder: `config.json`, optional `generation_config.json`, and the weights.
and [<AbstractClass; Sealed>] Checkpoint =
    /// "config.json"
    static member ConfigFile = "config.json"
    /// "generation_config.json"
    static member GenerationFile = "generation_config.json"
    /// "model.safetensors"
    static member WeightsFile = "model.safetensors"
    /// "model.safetensors.index.json"
    static member IndexFile = "model.safetensors.index.json"

    /// Reads `config.json` of a folder; FileNotFoundException naming the path when the folder or file is missing.
    static member ReadConfig(dir: string) : WhisperConfig =
        if not (Directory.Exists dir) then raise (DirectoryNotFoundException $"checkpoint folder not found: {dir}")
        WhisperConfig.load (Path.Combine(dir, Checkpoint.ConfigFile))

    /// Reads `generation_config.json` when the folder has one.
    static member ReadGenerationConfig(dir: string) : GenerationConfig option =
        let p = Path.Combine(dir, Checkpoint.GenerationFile)
        if File.Exists p then Some(GenerationConfig.load p) else None

    /// The torch_dtype name of config.json for a stored dtype.
    static member TorchDtypeName(dtype: torch.ScalarType) =
        match dtype with
        | torch.ScalarType.Float16 -> "float16"
        | torch.ScalarType.BFloat16 -> "bfloat16"
        | torch.ScalarType.Float64 -> "float64"
        | _ -> "float32"

    /// True for the files that make up a model folder's weights and configuration (ours, Hugging Face's and the
    /// original project's): a save replaces all of them and never carries an old one over into the new folder.
    static member IsModelFile(name: string) : bool =
        name = Checkpoint.ConfigFile || name = Checkpoint.GenerationFile || name = Checkpoint.WeightsFile || name = Checkpoint.IndexFile
        || name = "magnet.json" || name.StartsWith "pytorch_model" || name = "boundary_predictors.bin"
        || name = "boundary_params.pt" || name = "additional_convs.bin"
        || (name.StartsWith "model-" && name.EndsWith ".safetensors")

    /// Writes the files of a checkpoint into an existing empty folder (no atomicity of its own: see Write):
    /// config.json (the given text), generation_config.json when given, and the tensors as model.safetensors
    /// (metadata {"format": "pt"}) or as shards with an index.
    static member WriteFiles(dir: string, configJson: string, generationJson: string option, tensors: (string * torch.Tensor) seq, options: SaveOptions) =
        let metadata = Map [ "format", "pt" ]
        let stored (t: torch.Tensor) =
            match options.DType with
            | Some d when t.is_floating_point() && t.dtype <> d -> t.to_type d
            | _ -> t
        File.WriteAllText(Path.Combine(dir, Checkpoint.ConfigFile), configJson)
        generationJson |> Option.iter (fun g -> File.WriteAllText(Path.Combine(dir, Checkpoint.GenerationFile), g))
        let tensors = Array.ofSeq tensors
        use _ = torch.NewDisposeScope()
        let converted = tensors |> Array.map (fun (n, t) -> n, stored t)
        let bytesOf (t: torch.Tensor) = t.numel() * t.element_size()
        match options.MaxShardBytes with
        | None -> SafeTensors.write (Path.Combine(dir, Checkpoint.WeightsFile)) metadata converted
        | Some limit ->
            if limit <= 0L then invalidArg "options" "MaxShardBytes must be positive"
            let shards = ResizeArray<ResizeArray<string * torch.Tensor>>()
            let mutable size = 0L
            for n, t in converted do
                let b = bytesOf t
                if shards.Count = 0 || (size + b > limit && shards.[shards.Count - 1].Count > 0) then
                    shards.Add(ResizeArray())
                    size <- 0L
                shards.[shards.Count - 1].Add((n, t))
                size <- size + b
            let count = shards.Count
            let weightMap = SortedDictionary<string, string>(StringComparer.Ordinal)
            for i in 0 .. count - 1 do
                let file = $"model-{i + 1:D5}-of-{count:D5}.safetensors"
                SafeTensors.write (Path.Combine(dir, file)) metadata shards.[i]
                for n, _ in shards.[i] do weightMap.[n] <- file
            let total = converted |> Array.sumBy (snd >> bytesOf)
            let index =
                Json.write (fun w ->
                    w.WriteStartObject "metadata"
                    w.WriteNumber("total_size", total)
                    w.WriteEndObject()
                    w.WriteStartObject "weight_map"
                    for KeyValue(n, f) in weightMap do w.WriteString(n, f)
                    w.WriteEndObject())
            File.WriteAllText(Path.Combine(dir, Checkpoint.IndexFile), index)

    /// Writes a checkpoint folder atomically (AtomicWrite.folder): the files of WriteFiles are staged in a sibling
    /// folder, flushed and renamed into place; a failure leaves an existing folder as it was. Files of an existing
    /// folder that are not model files (e.g. a tokenizer) are kept.
    static member Write(dir: string, configJson: string, generationJson: string option, tensors: (string * torch.Tensor) seq, options: SaveOptions) =
        MagnetWhisper.Core.AtomicWrite.folder dir (Checkpoint.IsModelFile >> not) (fun staging ->
            Checkpoint.WriteFiles(staging, configJson, generationJson, tensors, options))
