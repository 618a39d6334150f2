namespace MagnetWhisper.Core.Whisper

open System
open System.Collections.Generic
open System.IO
open TorchSharp
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Transformer
open MagnetWhisper.Core.Decoding

/// What a weight load found, by checkpoint (Hugging Face) name.
type LoadReport =
    { /// Model parameters the checkpoint lacks (they keep their initial values; a strict load fails instead).
      Missing: string list
      /// Checkpoint tensors the model has no parameter for (a strict load fails instead).
      Unexpected: string list
      /// Checkpoint tensors deliberately not loaded (`proj_out.weight` when embeddings are tied).
      Ignored: string list }

/// How a checkpoint is loaded.
type LoadOptions =
    { /// Fail when parameters are missing or tensors unexpected (listing them by name). Default true.
      Strict: bool }

    static member Default = { Strict = true }

/// A stored tensor: its shape, and how to load it as a new CPU tensor of a dtype.
type TensorSource =
    { Shape: int64[]
      Load: torch.ScalarType -> Tensor }

    /// Every tensor of a checkpoint folder by name.
    static member OfCheckpoint(weights: CheckpointWeights) : IReadOnlyDictionary<string, TensorSource> =
        let d = Dictionary<string, TensorSource>()
        for n in weights.Names do
            d.[n] <- { Shape = (weights.Info n).Shape; Load = fun dtype -> weights.Load(n, dtype) }
        d :> IReadOnlyDictionary<_, _>

/// Copying stored tensors into a model's state, shared by Whisper and MagnetWhisper.
module StateLoad =
    /// Copies `available` ((model name, (stored name, tensor)) in the order errors list them) into `state` (model
    /// name, tensor), converting dtype. Shape mismatches always fail, naming each stored tensor with both shapes; with
    /// Strict, missing and unexpected names fail (`mismatch` opens that message, `noun` names the entries). A stored
    /// `proj_out.weight` is ignored when the embeddings are tied.
    let copy (mismatch: string) (source: string) (noun: string) (tied: bool) (state: (string * Tensor) list) (available: (string * (string * TensorSource)) list) (options: LoadOptions) : LoadReport =
        let byModelName = Dictionary<string, string * TensorSource>()
        for n, stored in available do byModelName.[n] <- stored
        let expected = HashSet<string>(state |> List.map fst)
        let ignored = [ for n, (s, _) in available do if tied && n = "proj_out.weight" then s ]
        let missing = [ for n, _ in state do if not (byModelName.ContainsKey n) then n ]
        let unexpected = [ for n, (s, _) in available do if not (expected.Contains n) && not (List.contains s ignored) then s ]
        if options.Strict && not (missing.IsEmpty && unexpected.IsEmpty) then
            let list (xs: string list) = if xs.IsEmpty then "none" else String.Join(", ", xs)
            raise (InvalidDataException $"{mismatch}: missing {noun}: {list missing}; unexpected {noun}: {list unexpected}")
        let mismatched =
            [ for n, p in state do
                  match byModelName.TryGetValue n with
                  | true, (s, t) when t.Shape <> p.shape -> $"{s}: checkpoint {showShape t.Shape}, model {showShape p.shape}"
                  | _ -> () ]
        if not mismatched.IsEmpty then
            let all = String.Join("; ", mismatched)
            raise (InvalidDataException $"{source} has tensors of the wrong shape: {all}")
        use _ = torch.no_grad()
        for n, p in state do
            match byModelName.TryGetValue n with
            | true, (_, t) ->
                use src = t.Load p.dtype
                p.copy_(src) |> ignore
            | _ -> ()
        { Missing = missing; Unexpected = unexpected; Ignored = ignored }

/// Hugging Face's `_init_weights` for Whisper, shared by every model built on Whisper's parameter names.
module WhisperInit =
    /// Re-draws the selected parameters: weights normal(0, init_std), biases 0, LayerNorms 1/0, the pad token's
    /// embedding row 0, encoder positions = sinusoids(S, D).
    let huggingFace (config: WhisperConfig) (parameters: struct (string * TorchSharp.Modules.Parameter) seq) (selected: string -> bool) =
        use _ = torch.no_grad()
        let std = config.InitStd
        for struct (name, p) in parameters do
            if selected name then
                if name = "model.encoder.embed_positions.weight" then
                    use s = Sinusoids.create p.shape.[0] p.shape.[1]
                    p.copy_(s) |> ignore
                elif name.Contains "layer_norm" then
                    (if name.EndsWith ".weight" then p.fill_(1.0) else p.zero_()) |> ignore
                elif name.EndsWith ".bias" then p.zero_() |> ignore
                else
                    p.normal_(0.0, std) |> ignore
                    if name = "model.decoder.embed_tokens.weight" && config.PadTokenId >= 0 && config.PadTokenId < config.VocabSize then
                        use row = p.select(0, int64 config.PadTokenId)
                        row.zero_() |> ignore

/// Whisper for speech recognition (HF `WhisperForConditionalGeneration`): `model.encoder`, `model.decoder`, and the
/// output projection — `model.decoder.embed_tokens.weight` when `tie_word_embeddings` (no `proj_out` parameter),
/// else a separate `proj_out.weight`. Parameter names equal the Hugging Face checkpoint keys.
/// `new WhisperModel(config)` initialises randomly as Hugging Face does (normal(0, init_std) weights, zero biases,
/// unit LayerNorms, sinusoidal encoder positions); `WhisperModel.FromPretrained` loads a checkpoint folder.
/// Public methods run in their own dispose scope: only their results reach the caller's scope.
type WhisperModel private (config: WhisperConfig, generation: GenerationConfig option) =
    inherit SpeechTransformerModel<WhisperEncoder>("WhisperForConditionalGeneration", WhisperConfig.validate config, generation, new WhisperEncoder(WhisperConfig.validate config), Absolute)

    /// A randomly initialised model of the given configuration (float32, CPU).
    new(config: WhisperConfig) as m =
        new WhisperModel(config, None)
        then m.InitialiseWeights()

    /// A randomly initialised model that carries a generation config.
    new(config: WhisperConfig, generation: GenerationConfig) as m =
        new WhisperModel(config, Some generation)
        then m.InitialiseWeights()

    /// Re-draws every parameter as Hugging Face's `_init_weights` does: weights normal(0, init_std), biases 0,
    /// LayerNorms 1/0, the pad token's embedding row 0, encoder positions = sinusoids(S, D).
    member this.InitialiseWeights() = WhisperInit.huggingFace this.Config (this.named_parameters()) (fun _ -> true)

    /// Log-mel features (B, n_mels, 2·max_source_positions) → encoder hidden states (B, max_source_positions, D).
    /// Raises ArgumentException when the frame count is not 2·max_source_positions (3000).
    member this.Encode(mel: Tensor) : Tensor =
        use scope = torch.NewDisposeScope()
        let h = this.Encoder.forward mel
        keep scope [ h ]
        h

    /// Teacher-forced logits: mel (B, n_mels, 2·S) and decoder input tokens (B, T) → (B, T, V), with optional
    /// tokenMask (B, T) and encoderMask (B, S).
    member this.Logits(mel: Tensor, tokens: Tensor, tokenMask: Tensor option, encoderMask: Tensor option) : Tensor =
        use scope = torch.NewDisposeScope()
        let hidden = this.Encoder.forward mel
        let out = this.Decoder.call(tokens, this.Decoder.StartCache(hidden, encoderMask), tokenMask)
        let logits = this.Logits out.Hidden
        keep scope [ logits ]
        logits

    /// mel (B, n_mels, 2·S), tokens (B, T) → logits (B, T, V).
    override this.forward(mel: Tensor, tokens: Tensor) : Tensor = this.Logits(mel, tokens, None, None)

    /// Token-mean cross-entropy of the next-token logits against labels (B, T) int64 (−100 = ignored), computed in
    /// float32 → a scalar. tokens (B, T) are the decoder inputs (see DecoderInputs); tokenMask and encoderMask as in
    /// Logits. Raises when no label is counted.
    member this.Loss(mel: Tensor, tokens: Tensor, labels: Tensor, tokenMask: Tensor option, encoderMask: Tensor option) : Tensor =
        requireRank "labels" 2 labels
        if labels.shape <> tokens.shape then
            invalidArg "labels" $"labels have shape {showShape labels.shape} but tokens have shape {showShape tokens.shape}"
        use scope = torch.NewDisposeScope()
        let counted = labels.ne(torch.tensor(-100L, device = labels.device)).to_type(torch.float32)
        let total = counted.sum()
        if total.item<float32>() = 0.0f then invalidArg "labels" "every label is -100: nothing to average"
        let logits = this.Logits(mel, tokens, tokenMask, encoderMask)
        let loss = (SpeechTransformer.tokenCrossEntropy logits labels).sum() / total
        keep scope [ loss ]
        loss

    /// Loss without masks.
    member this.Loss(mel: Tensor, tokens: Tensor, labels: Tensor) : Tensor = this.Loss(mel, tokens, labels, None, None)

    /// Copies checkpoint tensors into the parameters (converting dtype and device). Names are Hugging Face keys;
    /// a checkpoint of the bare `WhisperModel` (keys `encoder.*`, `decoder.*`) is accepted too. Shape mismatches
    /// always fail, naming every tensor with both shapes; with Strict, missing and unexpected keys fail by name.
    member this.LoadWeights(weights: CheckpointWeights, options: LoadOptions) : LoadReport =
        let stored = weights.Names |> List.ofSeq
        let bare = not (stored |> List.exists (fun n -> n.StartsWith "model.")) && stored |> List.exists (fun n -> n.StartsWith "encoder." || n.StartsWith "decoder.")
        let toModelName (n: string) = if bare && (n.StartsWith "encoder." || n.StartsWith "decoder.") then "model." + n else n
        let sources = TensorSource.OfCheckpoint weights
        let available = [ for n in stored -> toModelName n, (n, sources.[n]) ]
        let parameters = [ for struct (name, p) in this.named_parameters() -> name, (p :> Tensor) ]
        StateLoad.copy $"checkpoint {weights.Source} does not match the model" $"checkpoint {weights.Source}" "keys" this.Config.TieWordEmbeddings parameters available options

    /// Writes a Hugging Face checkpoint folder (config.json with architectures ["WhisperForConditionalGeneration"] and
    /// model_type "whisper", generation_config.json when the model has one, model.safetensors or shards with HF names
    /// and metadata {"format": "pt"}), atomically.
    member this.Save(dir: string, options: SaveOptions) : unit =
        let parameters = [ for struct (name, p) in this.named_parameters() -> name, (p :> Tensor) ]
        let dtype = options.DType |> Option.defaultValue this.DType
        use _ = torch.no_grad()
        Checkpoint.Write(dir, WhisperConfig.toJson (Checkpoint.TorchDtypeName dtype) this.Config, this.GenerationConfig |> Option.map GenerationConfig.toJson, parameters, options)

    /// Saves with the default options (one model.safetensors in the parameters' dtype).
    member this.Save(dir: string) : unit = this.Save(dir, SaveOptions.Default)

    /// Deterministic inference (evaluation mode, no gradients): the speech-model contract of the decoding strategies.
    /// The encoder ignores the frame mask (Whisper has no encoder mask).
    interface ISpeechModel with
        member this.Config = this.Config
        member this.Generation = this.GenerationConfig
        member this.Device = this.Device

        member this.Encode(mel: Tensor, _frameMask: Tensor option) : EncodedAudio =
            this.InInference(fun () ->
                use scope = torch.NewDisposeScope()
                let hidden = this.Encoder.forward (mel.``to``(this.DType, this.Device))
                keep scope [ hidden ]
                { Hidden = hidden; Mask = None })

        member this.Decode(tokens: Tensor, audio: EncodedAudio, cache: DecoderCache option, tokenMask: Tensor option) : DecodeResult =
            this.InInference(fun () -> this.Decode(tokens, audio.Hidden, audio.Mask, cache, tokenMask))

    /// Loads a Hugging Face Whisper checkpoint folder (config.json, model.safetensors or a sharded index, optional
    /// generation_config.json) onto device with parameters of dtype (stored F32/F16/BF16 tensors are converted), in
    /// evaluation mode. Errors name the missing file, the bad JSON field, the mismatched tensors or the missing and
    /// unexpected keys.
    static member FromPretrained(dir: string, device: torch.Device, dtype: torch.ScalarType, options: LoadOptions) : WhisperModel =
        let config = Checkpoint.ReadConfig dir
        let generation = Checkpoint.ReadGenerationConfig dir
        use weights = CheckpointWeights.Open dir
        let m = new WhisperModel(config, generation)
        try
            m.``to``(device, dtype) |> ignore
            m.LoadWeights(weights, options) |> ignore
            m.eval()
            m
        with _ ->
            m.Dispose()
            reraise ()

    /// Strict load (see the full overload).
    static member FromPretrained(dir: string, device: torch.Device, dtype: torch.ScalarType) : WhisperModel =
        WhisperModel.FromPretrained(dir, device, dtype, LoadOptions.Default)

/// Functions over WhisperModel for pipelines.
[<RequireQualifiedAccess>]
module WhisperModel =
    /// A randomly initialised model (float32, CPU; seed with torch.manual_seed first).
    let create (config: WhisperConfig) = new WhisperModel(config)
    /// Strictly loads a Hugging Face checkpoint folder onto device with parameters of dtype.
    let fromPretrained (dir: string) (device: torch.Device) (dtype: torch.ScalarType) = WhisperModel.FromPretrained(dir, device, dtype)
    /// mel (B, n_mels, 2·S) → (B, S, D).
    let encode (model: WhisperModel) (mel: Tensor) = model.Encode mel
    /// tokens (B, T), encoder output (B, S, D), cache → logits (B, T, V) and the new cache.
    let decode (model: WhisperModel) (tokens: Tensor) (encoderHidden: Tensor) (cache: DecoderCache option) = model.Decode(tokens, encoderHidden, cache)
    /// mel, tokens → logits (B, T, V).
    let forward (model: WhisperModel) (mel: Tensor) (tokens: Tensor) = model.forward (mel, tokens)
    /// mel, decoder inputs, labels (−100 ignored) → token-mean cross-entropy.
    let loss (model: WhisperModel) (mel: Tensor) (tokens: Tensor) (labels: Tensor) = model.Loss(mel, tokens, labels)
    /// Saves a Hugging Face checkpoint folder.
    let save (dir: string) (options: SaveOptions) (model: WhisperModel) = model.Save(dir, options)
