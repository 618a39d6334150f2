namespace MagnetWhisper.Core.Whisper

open System
open System.IO
open System.Text
open System.Text.Json

/// The hyper-parameters of a Whisper model, as in a Hugging Face `config.json` (`WhisperConfig`). Nothing in the
/// model code is tied to one size: widths, depths, heads, positions and vocabulary all come from here.
/// Fields the model does not interpret are kept verbatim in `Extra` (raw JSON per key) so a saved folder keeps them.
type WhisperConfig =
    { /// Vocabulary size V (51865 multilingual, 51864 English-only, 51866 large-v3).
      VocabSize: int
      /// Mel bins of the input features (80, or 128 for large-v3).
      NumMelBins: int
      /// Model width D.
      DModel: int
      /// Encoder blocks.
      EncoderLayers: int
      /// Decoder blocks.
      DecoderLayers: int
      /// Encoder attention heads (must divide DModel).
      EncoderAttentionHeads: int
      /// Decoder attention heads (must divide DModel).
      DecoderAttentionHeads: int
      /// Hidden width of the encoder FFN.
      EncoderFfnDim: int
      /// Hidden width of the decoder FFN.
      DecoderFfnDim: int
      /// Encoder positions after the convolutions (1500); the encoder input has 2 × this many mel frames.
      MaxSourcePositions: int
      /// Learned decoder positions (448): the longest token sequence the decoder accepts.
      MaxTargetPositions: int
      /// Padding token (its embedding row gets no gradient, as in Hugging Face).
      PadTokenId: int
      /// Beginning-of-stream token.
      BosTokenId: int
      /// End-of-text token (the first one when config.json lists several).
      EosTokenId: int
      /// First decoder input (`<|startoftranscript|>`).
      DecoderStartTokenId: int
      /// Tokens suppressed at the first sampled position (HF `begin_suppress_tokens`).
      BeginSuppressTokens: int[]
      /// Tokens suppressed at every position (HF `suppress_tokens`).
      SuppressTokens: int[]
      /// FFN activation: "gelu" (exact), "gelu_new"/"gelu_pytorch_tanh"/"gelu_fast" (tanh form), "relu", "silu"/"swish".
      ActivationFunction: string
      /// Read and written for compatibility; like Hugging Face's Whisper, the model never scales embeddings.
      ScaleEmbedding: bool
      /// When true (every released Whisper) `proj_out` shares `model.decoder.embed_tokens.weight`.
      TieWordEmbeddings: bool
      /// Dropout after attention, FFN and embeddings in training mode (0 in every released model).
      Dropout: float
      /// Dropout of the attention probabilities in training mode (0 in every released model).
      AttentionDropout: float
      /// Dropout after the FFN activation in training mode.
      ActivationDropout: float
      /// Standard deviation of the random initialisation (HF `init_std`).
      InitStd: float
      /// Every other key of config.json, as raw JSON text, written back unchanged on save.
      Extra: Map<string, string> }

    /// Head width of the encoder attention, D / encoder heads.
    member c.EncoderHeadDim = c.DModel / c.EncoderAttentionHeads
    /// Head width of the decoder attention, D / decoder heads.
    member c.DecoderHeadDim = c.DModel / c.DecoderAttentionHeads
    /// Mel frames the encoder accepts: 2 × MaxSourcePositions (3000 = 30 s).
    member c.InputFrames = 2 * c.MaxSourcePositions

/// Settings of Hugging Face `generation_config.json` that decoding uses. `alignment_heads`, `forced_decoder_ids` and
/// any other key are not interpreted; they are kept verbatim in `Extra` and written back on save.
type GenerationConfig =
    { /// Tokens never sampled.
      SuppressTokens: int[]
      /// Tokens not sampled at the first position.
      BeginSuppressTokens: int[]
      /// Language token text (e.g. "&lt;|en|&gt;") to id.
      LangToId: Map<string, int>
      /// Task ("transcribe", "translate") to id.
      TaskToId: Map<string, int>
      /// `<|notimestamps|>`.
      NoTimestampsTokenId: int option
      /// `<|startoftranscript|>`.
      DecoderStartTokenId: int option
      /// End-of-text ids (HF allows an int or a list).
      EosTokenIds: int[]
      /// Padding token.
      PadTokenId: int option
      /// Beginning-of-stream token.
      BosTokenId: int option
      /// Longest generated sequence, prompt included.
      MaxLength: int option
      /// True for multilingual checkpoints.
      IsMultilingual: bool option
      /// Latest timestamp token allowed first.
      MaxInitialTimestampIndex: int option
      /// Every other key, as raw JSON text.
      Extra: Map<string, string> }

/// JSON reading helpers with errors that name the file and the field.
module internal Json =
    let kindName (k: JsonValueKind) = k.ToString().ToLowerInvariant()

    let parseDocument (source: string) (text: string) : JsonDocument =
        try
            let doc = JsonDocument.Parse(text, JsonDocumentOptions(AllowTrailingCommas = false, CommentHandling = JsonCommentHandling.Skip))
            if doc.RootElement.ValueKind <> JsonValueKind.Object then
                let kind = kindName doc.RootElement.ValueKind
                doc.Dispose()
                raise (InvalidDataException $"{source}: expected a JSON object at the top level, found {kind}")
            doc
        with :? JsonException as e -> raise (InvalidDataException($"{source}: invalid JSON: {e.Message}", e))

    let tryProp (root: JsonElement) (name: string) =
        match root.TryGetProperty name with
        | true, v when v.ValueKind <> JsonValueKind.Null -> Some v
        | _ -> None

    let asInt (source: string) (name: string) (v: JsonElement) : int =
        match v.ValueKind with
        | JsonValueKind.Number ->
            match v.TryGetInt32() with
            | true, i -> i
            | _ -> raise (InvalidDataException $"{source}: field '{name}' must be an integer, got {v.GetRawText()}")
        | k -> raise (InvalidDataException $"{source}: field '{name}' must be an integer, got {kindName k}")

    let asFloat (source: string) (name: string) (v: JsonElement) : float =
        match v.ValueKind with
        | JsonValueKind.Number -> v.GetDouble()
        | k -> raise (InvalidDataException $"{source}: field '{name}' must be a number, got {kindName k}")

    let asBool (source: string) (name: string) (v: JsonElement) : bool =
        match v.ValueKind with
        | JsonValueKind.True -> true
        | JsonValueKind.False -> false
        | k -> raise (InvalidDataException $"{source}: field '{name}' must be true or false, got {kindName k}")

    let asString (source: string) (name: string) (v: JsonElement) : string =
        match v.ValueKind with
        | JsonValueKind.String -> v.GetString()
        | k -> raise (InvalidDataException $"{source}: field '{name}' must be a string, got {kindName k}")

    let asIntArray (source: string) (name: string) (v: JsonElement) : int[] =
        match v.ValueKind with
        | JsonValueKind.Array -> [| for e in v.EnumerateArray() -> asInt source name e |]
        | k -> raise (InvalidDataException $"{source}: field '{name}' must be an array of integers, got {kindName k}")

    let asIntMap (source: string) (name: string) (v: JsonElement) : Map<string, int> =
        match v.ValueKind with
        | JsonValueKind.Object -> Map [ for p in v.EnumerateObject() -> p.Name, asInt source $"{name}.{p.Name}" p.Value ]
        | k -> raise (InvalidDataException $"{source}: field '{name}' must be an object of integers, got {kindName k}")

    /// Raw JSON of every property whose name is not in known.
    let extras (root: JsonElement) (known: Set<string>) : Map<string, string> =
        Map [ for p in root.EnumerateObject() do
                  if not (known.Contains p.Name) then p.Name, p.Value.GetRawText() ]

    /// Serialises an object with two-space indentation; write fills it in.
    let write (f: Utf8JsonWriter -> unit) : string =
        use stream = new MemoryStream()
        (use w = new Utf8JsonWriter(stream, JsonWriterOptions(Indented = true))
         w.WriteStartObject()
         f w
         w.WriteEndObject())
        Encoding.UTF8.GetString(stream.ToArray()) + "\n"

    let writeIntArray (w: Utf8JsonWriter) (name: string) (values: int[]) =
        w.WriteStartArray name
        for v in values do w.WriteNumberValue v
        w.WriteEndArray()

    let writeIntMap (w: Utf8JsonWriter) (name: string) (m: Map<string, int>) =
        w.WriteStartObject name
        for KeyValue(k, v) in m do w.WriteNumber(k, v)
        w.WriteEndObject()

    let writeExtras (w: Utf8JsonWriter) (extra: Map<string, string>) =
        for KeyValue(k, raw) in extra do
            w.WritePropertyName k
            w.WriteRawValue raw

    let readFile (what: string) (path: string) : string =
        if not (File.Exists path) then raise (FileNotFoundException($"{what} not found: {path}", path))
        File.ReadAllText path

/// Parsing, validation, presets and serialisation of `WhisperConfig`.
[<RequireQualifiedAccess>]
module WhisperConfig =
    let private known =
        set [ "vocab_size"; "num_mel_bins"; "d_model"; "encoder_layers"; "decoder_layers"; "encoder_attention_heads"
              "decoder_attention_heads"; "encoder_ffn_dim"; "decoder_ffn_dim"; "max_source_positions"
              "max_target_positions"; "pad_token_id"; "bos_token_id"; "eos_token_id"; "decoder_start_token_id"
              "begin_suppress_tokens"; "suppress_tokens"; "activation_function"; "scale_embedding"
              "tie_word_embeddings"; "dropout"; "attention_dropout"; "activation_dropout"; "init_std"
              "architectures"; "model_type"; "torch_dtype"; "num_hidden_layers"; "is_encoder_decoder" ]

    /// The activation names the FFN accepts.
    let activations = set [ "gelu"; "gelu_new"; "gelu_pytorch_tanh"; "gelu_fast"; "relu"; "silu"; "swish" ]

    /// Checks the invariants the model relies on; raises ArgumentException naming the offending field.
    let validate (c: WhisperConfig) : WhisperConfig =
        let positive name v = if v <= 0 then invalidArg name $"WhisperConfig.{name} must be positive, got {v}"
        positive "VocabSize" c.VocabSize
        positive "NumMelBins" c.NumMelBins
        positive "DModel" c.DModel
        positive "EncoderLayers" c.EncoderLayers
        positive "DecoderLayers" c.DecoderLayers
        positive "EncoderAttentionHeads" c.EncoderAttentionHeads
        positive "DecoderAttentionHeads" c.DecoderAttentionHeads
        positive "EncoderFfnDim" c.EncoderFfnDim
        positive "DecoderFfnDim" c.DecoderFfnDim
        positive "MaxSourcePositions" c.MaxSourcePositions
        positive "MaxTargetPositions" c.MaxTargetPositions
        if c.DModel % c.EncoderAttentionHeads <> 0 then
            invalidArg "EncoderAttentionHeads" $"d_model {c.DModel} is not divisible by encoder_attention_heads {c.EncoderAttentionHeads}"
        if c.DModel % c.DecoderAttentionHeads <> 0 then
            invalidArg "DecoderAttentionHeads" $"d_model {c.DModel} is not divisible by decoder_attention_heads {c.DecoderAttentionHeads}"
        if c.DModel % 2 <> 0 || c.DModel < 4 then
            invalidArg "DModel" $"d_model must be even and at least 4 (sinusoidal positions), got {c.DModel}"
        if not (activations.Contains c.ActivationFunction) then
            let supported = String.Join(", ", activations)
            invalidArg "ActivationFunction" $"unsupported activation_function '{c.ActivationFunction}' (supported: {supported})"
        c

    /// Parses the text of a Hugging Face Whisper `config.json`. Missing fields take Hugging Face's `WhisperConfig`
    /// defaults; wrong types, a non-Whisper `model_type` and inconsistent sizes raise errors naming the source and field.
    let parse (source: string) (json: string) : WhisperConfig =
        use doc = Json.parseDocument source json
        let root = doc.RootElement
        let int name dflt = Json.tryProp root name |> Option.map (Json.asInt source name) |> Option.defaultValue dflt
        let flt name dflt = Json.tryProp root name |> Option.map (Json.asFloat source name) |> Option.defaultValue dflt
        let bool name dflt = Json.tryProp root name |> Option.map (Json.asBool source name) |> Option.defaultValue dflt
        let ints name dflt = Json.tryProp root name |> Option.map (Json.asIntArray source name) |> Option.defaultValue dflt
        match Json.tryProp root "model_type" |> Option.map (Json.asString source "model_type") with
        | Some t when t <> "whisper" -> raise (InvalidDataException $"{source}: model_type is '{t}', expected 'whisper'")
        | _ -> ()
        let eos =
            match Json.tryProp root "eos_token_id" with
            | Some v when v.ValueKind = JsonValueKind.Array ->
                match Json.asIntArray source "eos_token_id" v with
                | [||] -> raise (InvalidDataException $"{source}: field 'eos_token_id' is an empty list")
                | a -> a.[0]
            | Some v -> Json.asInt source "eos_token_id" v
            | None -> 50256
        let config =
            { VocabSize = int "vocab_size" 51865
              NumMelBins = int "num_mel_bins" 80
              DModel = int "d_model" 256
              EncoderLayers = int "encoder_layers" 6
              DecoderLayers = int "decoder_layers" 6
              EncoderAttentionHeads = int "encoder_attention_heads" 4
              DecoderAttentionHeads = int "decoder_attention_heads" 4
              EncoderFfnDim = int "encoder_ffn_dim" 1536
              DecoderFfnDim = int "decoder_ffn_dim" 1536
              MaxSourcePositions = int "max_source_positions" 1500
              MaxTargetPositions = int "max_target_positions" 448
              PadTokenId = int "pad_token_id" 50256
              BosTokenId = int "bos_token_id" 50257
              EosTokenId = eos
              DecoderStartTokenId = int "decoder_start_token_id" 50257
              BeginSuppressTokens = ints "begin_suppress_tokens" [| 220; 50256 |]
              SuppressTokens = ints "suppress_tokens" [||]
              ActivationFunction =
                Json.tryProp root "activation_function"
                |> Option.map (Json.asString source "activation_function")
                |> Option.defaultValue "gelu"
              ScaleEmbedding = bool "scale_embedding" false
              TieWordEmbeddings = bool "tie_word_embeddings" true
              Dropout = flt "dropout" 0.0
              AttentionDropout = flt "attention_dropout" 0.0
              ActivationDropout = flt "activation_dropout" 0.0
              InitStd = flt "init_std" 0.02
              Extra = Json.extras root known }
        try validate config with :? ArgumentException as e -> raise (InvalidDataException($"{source}: {e.Message}", e))

    /// Reads and parses a `config.json` file; a missing file raises FileNotFoundException naming the path.
    let load (path: string) : WhisperConfig = parse path (Json.readFile "Whisper config.json" path)

    /// The `config.json` text Hugging Face's `WhisperForConditionalGeneration.from_pretrained` reads.
    /// torchDtype names the stored weight dtype ("float32", "float16", "bfloat16").
    let toJson (torchDtype: string) (c: WhisperConfig) : string =
        Json.write (fun w ->
            w.WriteStartArray "architectures"
            w.WriteStringValue "WhisperForConditionalGeneration"
            w.WriteEndArray()
            w.WriteString("model_type", "whisper")
            w.WriteString("torch_dtype", torchDtype)
            w.WriteBoolean("is_encoder_decoder", true)
            w.WriteNumber("vocab_size", c.VocabSize)
            w.WriteNumber("num_mel_bins", c.NumMelBins)
            w.WriteNumber("d_model", c.DModel)
            w.WriteNumber("encoder_layers", c.EncoderLayers)
            w.WriteNumber("decoder_layers", c.DecoderLayers)
            w.WriteNumber("num_hidden_layers", c.EncoderLayers)
            w.WriteNumber("encoder_attention_heads", c.EncoderAttentionHeads)
            w.WriteNumber("decoder_attention_heads", c.DecoderAttentionHeads)
            w.WriteNumber("encoder_ffn_dim", c.EncoderFfnDim)
            w.WriteNumber("decoder_ffn_dim", c.DecoderFfnDim)
            w.WriteNumber("max_source_positions", c.MaxSourcePositions)
            w.WriteNumber("max_target_positions", c.MaxTargetPositions)
            w.WriteNumber("pad_token_id", c.PadTokenId)
            w.WriteNumber("bos_token_id", c.BosTokenId)
            w.WriteNumber("eos_token_id", c.EosTokenId)
            w.WriteNumber("decoder_start_token_id", c.DecoderStartTokenId)
            Json.writeIntArray w "begin_suppress_tokens" c.BeginSuppressTokens
            Json.writeIntArray w "suppress_tokens" c.SuppressTokens
            w.WriteString("activation_function", c.ActivationFunction)
            w.WriteBoolean("scale_embedding", c.ScaleEmbedding)
            w.WriteBoolean("tie_word_embeddings", c.TieWordEmbeddings)
            w.WriteNumber("dropout", c.Dropout)
            w.WriteNumber("attention_dropout", c.AttentionDropout)
            w.WriteNumber("activation_dropout", c.ActivationDropout)
            w.WriteNumber("init_std", c.InitStd)
            Json.writeExtras w c.Extra)

    let private multilingual =
        { VocabSize = 51865; NumMelBins = 80; DModel = 384; EncoderLayers = 4; DecoderLayers = 4
          EncoderAttentionHeads = 6; DecoderAttentionHeads = 6; EncoderFfnDim = 1536; DecoderFfnDim = 1536
          MaxSourcePositions = 1500; MaxTargetPositions = 448; PadTokenId = 50257; BosTokenId = 50257
          EosTokenId = 50257; DecoderStartTokenId = 50258; BeginSuppressTokens = [| 220; 50257 |]
          SuppressTokens = [||]; ActivationFunction = "gelu"; ScaleEmbedding = false; TieWordEmbeddings = true
          Dropout = 0.0; AttentionDropout = 0.0; ActivationDropout = 0.0; InitStd = 0.02; Extra = Map.empty }

    let private sized d layers heads ffn =
        { multilingual with
            DModel = d; EncoderLayers = layers; DecoderLayers = layers; EncoderAttentionHeads = heads
            DecoderAttentionHeads = heads; EncoderFfnDim = ffn; DecoderFfnDim = ffn }

    /// The shapes of the released multilingual models (for random-weight benchmarks; token lists left empty):
    /// tiny 384/4/6/1536, base 512/6/8/2048, small 768/12/12/3072, medium 1024/24/16/4096, large 1280/32/20/5120.
    let preset (name: string) : WhisperConfig =
        match name.Trim().ToLowerInvariant() with
        | "tiny" -> sized 384 4 6 1536
        | "base" -> sized 512 6 8 2048
        | "small" -> sized 768 12 12 3072
        | "medium" -> sized 1024 24 16 4096
        | "large" -> sized 1280 32 20 5120
        | other -> invalidArg "name" $"unknown Whisper size '{other}': use tiny, base, small, medium or large"

/// Parsing and serialisation of `GenerationConfig`.
[<RequireQualifiedAccess>]
module GenerationConfig =
    let private known =
        set [ "suppress_tokens"; "begin_suppress_tokens"; "lang_to_id"; "task_to_id"; "no_timestamps_token_id"
              "decoder_start_token_id"; "eos_token_id"; "pad_token_id"; "bos_token_id"; "max_length"
              "is_multilingual"; "max_initial_timestamp_index" ]

    /// A generation config with nothing set.
    let empty =
        { SuppressTokens = [||]; BeginSuppressTokens = [||]; LangToId = Map.empty; TaskToId = Map.empty
          NoTimestampsTokenId = None; DecoderStartTokenId = None; EosTokenIds = [||]; PadTokenId = None
          BosTokenId = None; MaxLength = None; IsMultilingual = None; MaxInitialTimestampIndex = None; Extra = Map.empty }

    /// Parses the text of a Hugging Face `generation_config.json`.
    let parse (source: string) (json: string) : GenerationConfig =
        use doc = Json.parseDocument source json
        let root = doc.RootElement
        let optInt name = Json.tryProp root name |> Option.map (Json.asInt source name)
        let ints name = Json.tryProp root name |> Option.map (Json.asIntArray source name) |> Option.defaultValue [||]
        let map name = Json.tryProp root name |> Option.map (Json.asIntMap source name) |> Option.defaultValue Map.empty
        { SuppressTokens = ints "suppress_tokens"
          BeginSuppressTokens = ints "begin_suppress_tokens"
          LangToId = map "lang_to_id"
          TaskToId = map "task_to_id"
          NoTimestampsTokenId = optInt "no_timestamps_token_id"
          DecoderStartTokenId = optInt "decoder_start_token_id"
          EosTokenIds =
            match Json.tryProp root "eos_token_id" with
            | Some v when v.ValueKind = JsonValueKind.Array -> Json.asIntArray source "eos_token_id" v
            | Some v -> [| Json.asInt source "eos_token_id" v |]
            | None -> [||]
          PadTokenId = optInt "pad_token_id"
          BosTokenId = optInt "bos_token_id"
          MaxLength = optInt "max_length"
          IsMultilingual = Json.tryProp root "is_multilingual" |> Option.map (Json.asBool source "is_multilingual")
          MaxInitialTimestampIndex = optInt "max_initial_timestamp_index"
          Extra = Json.extras root known }

    /// Reads and parses a `generation_config.json` file.
    let load (path: string) : GenerationConfig = parse path (Json.readFile "generation_config.json" path)

    /// The `generation_config.json` text.
    let toJson (g: GenerationConfig) : string =
        Json.write (fun w ->
            let optInt (name: string) (v: int option) = v |> Option.iter (fun i -> w.WriteNumber(name, i))
            Json.writeIntArray w "suppress_tokens" g.SuppressTokens
            Json.writeIntArray w "begin_suppress_tokens" g.BeginSuppressTokens
            if not g.LangToId.IsEmpty then Json.writeIntMap w "lang_to_id" g.LangToId
            if not g.TaskToId.IsEmpty then Json.writeIntMap w "task_to_id" g.TaskToId
            optInt "no_timestamps_token_id" g.NoTimestampsTokenId
            optInt "decoder_start_token_id" g.DecoderStartTokenId
            match g.EosTokenIds with
            | [||] -> ()
            | [| e |] -> w.WriteNumber("eos_token_id", e)
            | es -> Json.writeIntArray w "eos_token_id" es
            optInt "pad_token_id" g.PadTokenId
            optInt "bos_token_id" g.BosTokenId
            optInt "max_length" g.MaxLength
            g.IsMultilingual |> Option.iter (fun b -> w.WriteBoolean("is_multilingual", b))
            optInt "max_initial_timestamp_index" g.MaxInitialTimestampIndex
            Json.writeExtras w g.Extra)
