namespace MagnetWhisper.Core.Training

// The configuration of a supervised run (issue 9 §3): a record with defaults, read from a JSON object whose keys are
// the documented ones (docs/TRAINING.md), overridden by `key=value` pairs, and written resolved to RUN_DIR/config.json.
// Every error names the key (and the file or the `--set` it came from).

open System
open System.Globalization
open System.IO
open System.Text.Json
open MagnetWhisper.Core
open MagnetWhisper.Core.Whisper

/// Everything a supervised run is configured by. `TrainConfig.Default` holds the defaults.
type TrainConfig =
    { /// The folder training starts from: a MagnetWhisper, Hugging Face Whisper or original checkpoint folder; empty
      /// with FromScratch (`model`).
      Model: string
      /// Predictor slots (LAYER:TYPE[:PRIOR[:POOLING]], as `magnet convert --predictor`) added to a Hugging Face
      /// Whisper folder or a fresh model (`predictors`).
      Predictors: string list
      /// Strides of extra convolutions after conv2 (as `magnet convert --conv-strides`), for a Hugging Face Whisper
      /// folder or a fresh model (`conv_strides`).
      ConvStrides: int list
      /// A fresh model of this size (tiny, base or small), initialised as Hugging Face does; None = start from `model`
      /// (`from_scratch`).
      FromScratch: string option
      /// Fresh model: the width instead of the size's (`d_model`).
      DModel: int option
      /// Fresh model: encoder layers instead of the size's (`encoder_layers`).
      EncoderLayers: int option
      /// Fresh model: decoder layers instead of the size's (`decoder_layers`).
      DecoderLayers: int option
      /// Fresh model: heads of every attention instead of the size's (`attention_heads`).
      AttentionHeads: int option
      /// Fresh model: the feed-forward width; None = 4 · d_model when DModel is given, else the size's (`ffn_dim`).
      FfnDim: int option
      /// Fresh model: 51864, 51865 or 51866, the vocabulary and its special tokens (`vocab_size`).
      VocabSize: int option
      /// The training corpus, as `Corpora.read` takes it (`data`).
      Data: string
      /// The dev corpus evaluated every EvalEvery steps; None = no evaluation (`dev_data`).
      DevData: string option
      /// Splits of `data` to train on (a manifest's "split" field, LibriSpeech's split folders); empty = every
      /// utterance (`data_splits`).
      DataSplits: string list
      /// Splits of `dev_data` to evaluate; empty = every utterance (`dev_splits`).
      DevSplits: string list
      /// The test corpus the run's model (best/, or final/ without dev data) is evaluated on at the end of a
      /// completed run; None = no test evaluation (`test_data`).
      TestData: string option
      /// Splits of `test_data` to evaluate; empty = every utterance (`test_splits`).
      TestSplits: string list
      /// Optimizer updates of the run (`max_steps`).
      MaxSteps: int
      /// Utterances per update (`batch_size`).
      BatchSize: int
      /// Micro-batches an update is cut into (gradient accumulation; `micro_batches`).
      MicroBatches: int
      /// Peak learning rate of every trained parameter but the predictors (`lr`).
      LearningRate: float
      /// Peak learning rate of the predictors; None = `lr` (`predictor_lr`).
      PredictorLearningRate: float option
      /// Fraction of the run spent warming up (`warmup_ratio`).
      WarmupRatio: float
      /// linear, cosine or constant after the warmup (`lr_decay`).
      Decay: LearningRateDecay
      /// AdamW's decoupled weight decay (`weight_decay`).
      WeightDecay: float
      /// Global gradient-norm clip; None = no clipping (`max_grad_norm`).
      MaxGradientNorm: float option
      /// Which parameters train (`trained_parts`, a TrainedParts name).
      TrainedParts: TrainedParts
      /// The target count of each predictor, in layer order; empty = the model's own choice (`targets`).
      Targets: string list
      /// Temperature τ at the start and end of the run, linear between (`temperature_start`, `temperature_end`).
      TemperatureStart: float
      TemperatureEnd: float
      /// Per-predictor curves of progress over whisper.py's (with the temperature above): "all" then each layer's
      /// entry; empty = whisper.py's (`schedules`, see ScheduleOverrides).
      Schedules: Map<ScheduleScope, CurveOverrides>
      /// Metrics every this many steps (`log_every`).
      LogEvery: int
      /// Dev evaluation every this many steps; 0 = only at the end (`eval_every`).
      EvalEvery: int
      /// A new run also evaluates the dev data before its first update (step 0), so its curves start from the starting
      /// point and best/ is only replaced by a better model (`eval_at_start`).
      EvalAtStart: bool
      /// Utterances decoded together during evaluation (`eval_batch_size`).
      EvalBatchSize: int
      /// Evaluations without a better dev WER before the run stops; 0 = never stop early (`early_stopping_patience`).
      EarlyStoppingPatience: int
      /// A checkpoint every this many steps; 0 = only at the end (`checkpoint_every`).
      CheckpointEvery: int
      /// Checkpoints kept in checkpoints/ (the newest; `keep_checkpoints`).
      KeepCheckpoints: int
      /// The seed of the data order, the boundary sampling and the global generator (`seed`).
      Seed: int64
      /// The prompt language of multilingual models (`language`).
      Language: string
      /// Background tasks loading audio (`workers`).
      Workers: int
      /// Utterances longer than this many seconds are left out; None = up to the 30 s window (`max_duration`).
      MaxDuration: float option
      /// Updates skipped in a row for a NaN or infinite loss or gradient that the run tolerates; one more stops it
      /// (`max_nonfinite_steps`).
      MaxNonFiniteSteps: int
      /// SpecAugment on the training batches; None = off (`spec_augment`: null, true for the defaults, or an object).
      SpecAugment: SpecAugmentSettings option
      /// Weight w of the auxiliary CTC loss on the encoder: loss = (1 − w)·CE + w·CTC; 0 = off (`ctc_weight`).
      CtcWeight: float }

/// Reading, overriding and writing configurations.
[<RequireQualifiedAccess>]
module TrainConfig =
    /// The defaults (model and data must be given).
    let Default =
        { Model = ""; Predictors = []; ConvStrides = []; FromScratch = None; DModel = None; EncoderLayers = None
          DecoderLayers = None; AttentionHeads = None; FfnDim = None; VocabSize = None; Data = ""; DevData = None; DataSplits = []; DevSplits = []; TestData = None; TestSplits = []; MaxSteps = 1000; BatchSize = 16; MicroBatches = 1; LearningRate = 1e-5
          PredictorLearningRate = Some 1e-3; WarmupRatio = 0.1; Decay = LinearDecay; WeightDecay = 0.01
          MaxGradientNorm = Some 2.0; TrainedParts = Everything; Targets = []; TemperatureStart = 1.0; TemperatureEnd = 0.1; Schedules = Map.empty
          LogEvery = 10; EvalEvery = 500; EvalAtStart = false; EvalBatchSize = 16; EarlyStoppingPatience = 0; CheckpointEvery = 500
          KeepCheckpoints = 3; Seed = 0L; Language = "en"; Workers = 2; MaxDuration = None
          MaxNonFiniteSteps = 10; SpecAugment = None; CtcWeight = 0.0 }

    let private decayName (d: LearningRateDecay) =
        match d with
        | LinearDecay -> "linear"
        | CosineDecay -> "cosine"
        | ConstantAfterWarmup -> "constant"

    /// One key: its name, how it reads a JSON value into the record, and how it writes the record's value.
    type private Key =
        { Name: string
          Read: string -> JsonElement -> TrainConfig -> TrainConfig
          Write: Utf8JsonWriter -> TrainConfig -> unit }

    /// An ArgumentException's message without .NET's " (Parameter 'name')".
    let private messageOf (e: exn) = e.Message.Split(" (Parameter").[0]

    let private fail (where: string) (key: string) (why: string) : 'a =
        raise (InvalidDataException $"{where}: key '{key}' {why}")

    let private str (where: string) (key: string) (v: JsonElement) =
        if v.ValueKind = JsonValueKind.String then v.GetString() else fail where key $"must be a string, got {v.GetRawText()}"

    let private int' (where: string) (key: string) (lo: int) (v: JsonElement) =
        match v.ValueKind, (if v.ValueKind = JsonValueKind.Number then v.TryGetInt32() else (false, 0)) with
        | JsonValueKind.Number, (true, i) when i >= lo -> i
        | _ -> fail where key $"must be an integer of at least {lo}, got {v.GetRawText()}"

    let private num (where: string) (key: string) (ok: float -> bool) (rule: string) (v: JsonElement) =
        match v.ValueKind with
        | JsonValueKind.Number when ok (v.GetDouble()) -> v.GetDouble()
        | _ -> fail where key $"must be {rule}, got {v.GetRawText()}"

    let private optional (v: JsonElement) (read: JsonElement -> 'a) = if v.ValueKind = JsonValueKind.Null then None else Some(read v)

    let private positive (x: float) = x > 0.0 && Double.IsFinite x

    let private writeOption (w: Utf8JsonWriter) (name: string) (value: float option) =
        match value with
        | Some v -> w.WriteNumber(name, v)
        | None -> w.WriteNull name

    let private writeIntOption (w: Utf8JsonWriter) (name: string) (value: int option) =
        match value with
        | Some v -> w.WriteNumber(name, v)
        | None -> w.WriteNull name

    let private array (where: string) (key: string) (what: string) (v: JsonElement) (read: JsonElement -> 'a) : 'a list =
        if v.ValueKind <> JsonValueKind.Array then fail where key $"must be an array of {what}, got {v.GetRawText()}"
        [ for e in v.EnumerateArray() -> read e ]

    /// A fresh model's size key: an integer of at least 1 or null.
    let private sizeKey (name: string) (get: TrainConfig -> int option) (update: int option -> TrainConfig -> TrainConfig) : Key =
        { Name = name
          Read = fun at v c -> update (optional v (int' at name 1)) c
          Write = fun w c -> writeIntOption w name (get c) }

    /// A list of names: a JSON array of strings, or one string.
    let private strings (where: string) (key: string) (v: JsonElement) : string list =
        match v.ValueKind with
        | JsonValueKind.String -> [ v.GetString() ]
        | JsonValueKind.Array -> [ for e in v.EnumerateArray() -> str where key e ]
        | _ -> fail where key $"must be a name or an array of names, got {v.GetRawText()}"

    let private writeStrings (w: Utf8JsonWriter) (name: string) (values: string list) =
        w.WriteStartArray name
        for x in values do w.WriteStringValue x
        w.WriteEndArray()

    /// `spec_augment`: null or false = off, true = the defaults, an object = the defaults with its keys.
    let private specAugmentOf (at: string) (v: JsonElement) : SpecAugmentSettings option =
        match v.ValueKind with
        | JsonValueKind.Null | JsonValueKind.False -> None
        | JsonValueKind.True -> Some SpecAugmentSettings.Default
        | JsonValueKind.Object ->
            let count (name: string) (e: JsonElement) = int' at $"spec_augment.{name}" 0 e
            let settings =
                v.EnumerateObject()
                |> Seq.fold (fun (s: SpecAugmentSettings) p ->
                    match p.Name with
                    | "freq_masks" -> { s with FrequencyMasks = count p.Name p.Value }
                    | "freq_width" -> { s with FrequencyWidth = count p.Name p.Value }
                    | "time_masks" -> { s with TimeMasks = count p.Name p.Value }
                    | "time_width" -> { s with TimeWidth = count p.Name p.Value }
                    | "time_ratio" -> { s with TimeRatio = num at "spec_augment.time_ratio" (fun x -> x >= 0.0 && x <= 1.0) "a number in [0, 1]" p.Value }
                    | other -> fail at "spec_augment" $"has no key '{other}' (it has freq_masks, freq_width, time_masks, time_width, time_ratio)")
                    SpecAugmentSettings.Default
            Some settings
        | _ -> fail at "spec_augment" $"must be null, true, false or an object, got {v.GetRawText()}"

    let private writeSpecAugment (w: Utf8JsonWriter) (value: SpecAugmentSettings option) =
        match value with
        | None -> w.WriteNull "spec_augment"
        | Some s ->
            w.WriteStartObject "spec_augment"
            w.WriteNumber("freq_masks", s.FrequencyMasks)
            w.WriteNumber("freq_width", s.FrequencyWidth)
            w.WriteNumber("time_masks", s.TimeMasks)
            w.WriteNumber("time_width", s.TimeWidth)
            w.WriteNumber("time_ratio", s.TimeRatio)
            w.WriteEndObject()

    let private keys: Key list =
        let k name read write = { Name = name; Read = read; Write = write }
        [ k "model" (fun at v c -> { c with Model = str at "model" v }) (fun w c -> w.WriteString("model", c.Model))
          k "predictors" (fun at v c -> { c with Predictors = array at "predictors" "LAYER:TYPE[:PRIOR[:POOLING]] strings" v (str at "predictors") })
              (fun w c ->
                  w.WriteStartArray "predictors"
                  for p in c.Predictors do w.WriteStringValue p
                  w.WriteEndArray())
          k "conv_strides" (fun at v c -> { c with ConvStrides = array at "conv_strides" "positive integers" v (int' at "conv_strides" 1) })
              (fun w c ->
                  w.WriteStartArray "conv_strides"
                  for p in c.ConvStrides do w.WriteNumberValue p
                  w.WriteEndArray())
          k "from_scratch" (fun at v c -> { c with FromScratch = optional v (str at "from_scratch") }) (fun w c ->
              match c.FromScratch with Some s -> w.WriteString("from_scratch", s) | None -> w.WriteNull "from_scratch")
          sizeKey "d_model" _.DModel (fun x c -> { c with DModel = x })
          sizeKey "encoder_layers" _.EncoderLayers (fun x c -> { c with EncoderLayers = x })
          sizeKey "decoder_layers" _.DecoderLayers (fun x c -> { c with DecoderLayers = x })
          sizeKey "attention_heads" _.AttentionHeads (fun x c -> { c with AttentionHeads = x })
          sizeKey "ffn_dim" _.FfnDim (fun x c -> { c with FfnDim = x })
          sizeKey "vocab_size" _.VocabSize (fun x c -> { c with VocabSize = x })
          k "data" (fun at v c -> { c with Data = str at "data" v }) (fun w c -> w.WriteString("data", c.Data))
          k "dev_data" (fun at v c -> { c with DevData = optional v (str at "dev_data") }) (fun w c ->
              match c.DevData with Some d -> w.WriteString("dev_data", d) | None -> w.WriteNull "dev_data")
          k "data_splits" (fun at v c -> { c with DataSplits = strings at "data_splits" v }) (fun w c -> writeStrings w "data_splits" c.DataSplits)
          k "dev_splits" (fun at v c -> { c with DevSplits = strings at "dev_splits" v }) (fun w c -> writeStrings w "dev_splits" c.DevSplits)
          k "test_data" (fun at v c -> { c with TestData = optional v (str at "test_data") }) (fun w c ->
              match c.TestData with Some d -> w.WriteString("test_data", d) | None -> w.WriteNull "test_data")
          k "test_splits" (fun at v c -> { c with TestSplits = strings at "test_splits" v }) (fun w c -> writeStrings w "test_splits" c.TestSplits)
          k "max_steps" (fun at v c -> { c with MaxSteps = int' at "max_steps" 1 v }) (fun w c -> w.WriteNumber("max_steps", c.MaxSteps))
          k "batch_size" (fun at v c -> { c with BatchSize = int' at "batch_size" 1 v }) (fun w c -> w.WriteNumber("batch_size", c.BatchSize))
          k "micro_batches" (fun at v c -> { c with MicroBatches = int' at "micro_batches" 1 v }) (fun w c -> w.WriteNumber("micro_batches", c.MicroBatches))
          k "lr" (fun at v c -> { c with LearningRate = num at "lr" positive "a positive number" v }) (fun w c -> w.WriteNumber("lr", c.LearningRate))
          k "predictor_lr" (fun at v c -> { c with PredictorLearningRate = optional v (num at "predictor_lr" positive "a positive number or null") })
              (fun w c -> writeOption w "predictor_lr" c.PredictorLearningRate)
          k "warmup_ratio" (fun at v c -> { c with WarmupRatio = num at "warmup_ratio" (fun x -> x >= 0.0 && x <= 1.0) "a number in [0, 1]" v })
              (fun w c -> w.WriteNumber("warmup_ratio", c.WarmupRatio))
          k "lr_decay" (fun at v c ->
              let d =
                  match (str at "lr_decay" v).ToLowerInvariant() with
                  | "linear" -> LinearDecay
                  | "cosine" -> CosineDecay
                  | "constant" -> ConstantAfterWarmup
                  | other -> fail at "lr_decay" $"must be linear, cosine or constant, got '{other}'"
              { c with Decay = d }) (fun w c -> w.WriteString("lr_decay", decayName c.Decay))
          k "weight_decay" (fun at v c -> { c with WeightDecay = num at "weight_decay" (fun x -> x >= 0.0) "a number of at least 0" v })
              (fun w c -> w.WriteNumber("weight_decay", c.WeightDecay))
          k "max_grad_norm" (fun at v c -> { c with MaxGradientNorm = optional v (num at "max_grad_norm" positive "a positive number or null") })
              (fun w c -> writeOption w "max_grad_norm" c.MaxGradientNorm)
          k "trained_parts" (fun at v c ->
              let text = str at "trained_parts" v
              let parts = try TrainedParts.parse text with :? ArgumentException as e -> fail at "trained_parts" (messageOf e)
              { c with TrainedParts = parts }) (fun w c -> w.WriteString("trained_parts", TrainedParts.name c.TrainedParts))
          k "targets" (fun at v c ->
              if v.ValueKind <> JsonValueKind.Array then fail at "targets" $"must be an array of target names, got {v.GetRawText()}"
              { c with Targets = [ for e in v.EnumerateArray() -> str at "targets" e ] }) (fun w c ->
              w.WriteStartArray "targets"
              for t in c.Targets do w.WriteStringValue t
              w.WriteEndArray())
          k "temperature_start" (fun at v c -> { c with TemperatureStart = num at "temperature_start" positive "a positive number" v })
              (fun w c -> w.WriteNumber("temperature_start", c.TemperatureStart))
          k "temperature_end" (fun at v c -> { c with TemperatureEnd = num at "temperature_end" positive "a positive number" v })
              (fun w c -> w.WriteNumber("temperature_end", c.TemperatureEnd))
          k ScheduleOverrides.Key (fun at v c -> { c with Schedules = ScheduleOverrides.parse at v }) (fun w c -> ScheduleOverrides.write w c.Schedules)
          k "log_every" (fun at v c -> { c with LogEvery = int' at "log_every" 1 v }) (fun w c -> w.WriteNumber("log_every", c.LogEvery))
          k "eval_every" (fun at v c -> { c with EvalEvery = int' at "eval_every" 0 v }) (fun w c -> w.WriteNumber("eval_every", c.EvalEvery))
          k "eval_at_start" (fun at v c ->
                match v.ValueKind with
                | JsonValueKind.True -> { c with EvalAtStart = true }
                | JsonValueKind.False -> { c with EvalAtStart = false }
                | _ -> fail at "eval_at_start" $"must be true or false, got {v.GetRawText()}")
              (fun w c -> w.WriteBoolean("eval_at_start", c.EvalAtStart))
          k "eval_batch_size" (fun at v c -> { c with EvalBatchSize = int' at "eval_batch_size" 1 v }) (fun w c -> w.WriteNumber("eval_batch_size", c.EvalBatchSize))
          k "early_stopping_patience" (fun at v c -> { c with EarlyStoppingPatience = int' at "early_stopping_patience" 0 v })
              (fun w c -> w.WriteNumber("early_stopping_patience", c.EarlyStoppingPatience))
          k "checkpoint_every" (fun at v c -> { c with CheckpointEvery = int' at "checkpoint_every" 0 v }) (fun w c -> w.WriteNumber("checkpoint_every", c.CheckpointEvery))
          k "keep_checkpoints" (fun at v c -> { c with KeepCheckpoints = int' at "keep_checkpoints" 1 v }) (fun w c -> w.WriteNumber("keep_checkpoints", c.KeepCheckpoints))
          k "seed" (fun at v c ->
              match v.ValueKind, (if v.ValueKind = JsonValueKind.Number then v.TryGetInt64() else (false, 0L)) with
              | JsonValueKind.Number, (true, s) -> { c with Seed = s }
              | _ -> fail at "seed" $"must be an integer, got {v.GetRawText()}") (fun w c -> w.WriteNumber("seed", c.Seed))
          k "language" (fun at v c -> { c with Language = str at "language" v }) (fun w c -> w.WriteString("language", c.Language))
          k "workers" (fun at v c -> { c with Workers = int' at "workers" 1 v }) (fun w c -> w.WriteNumber("workers", c.Workers))
          k "max_duration" (fun at v c -> { c with MaxDuration = optional v (num at "max_duration" (fun x -> x > 0.0 && x <= 30.0) "a number in (0, 30] or null") })
              (fun w c -> writeOption w "max_duration" c.MaxDuration)
          k "max_nonfinite_steps" (fun at v c -> { c with MaxNonFiniteSteps = int' at "max_nonfinite_steps" 0 v })
              (fun w c -> w.WriteNumber("max_nonfinite_steps", c.MaxNonFiniteSteps))
          k "spec_augment" (fun at v c -> { c with SpecAugment = specAugmentOf at v }) (fun w c -> writeSpecAugment w c.SpecAugment)
          k "ctc_weight" (fun at v c -> { c with CtcWeight = num at "ctc_weight" (fun x -> x >= 0.0 && x <= 1.0) "a number in [0, 1]" v })
              (fun w c -> w.WriteNumber("ctc_weight", c.CtcWeight)) ]

    /// Every key's name, in the order config.json lists them.
    let keyNames: string list = keys |> List.map _.Name

    let private find (where: string) (name: string) : Key =
        match keys |> List.tryFind (fun k -> k.Name = name) with
        | Some k -> k
        | None ->
            let near = keyNames |> List.filter (fun n -> n.Contains(name.Replace("-", "_")) || name.Replace("-", "_").Contains n)
            let hint = match near with n :: _ -> $" (did you mean '{n}'?)" | [] -> ""
            raise (InvalidDataException $"{where}: unknown key '{name}'{hint}; the keys are documented in docs/TRAINING.md")

    /// Applies a JSON object's keys to a configuration; `where` names the source in errors.
    let applyJson (where: string) (text: string) (config: TrainConfig) : TrainConfig =
        use doc = Json.parseDocument where text
        doc.RootElement.EnumerateObject() |> Seq.fold (fun c p -> (find where p.Name).Read where p.Value c) config

    /// Reads a configuration file over the defaults.
    let read (path: string) : TrainConfig =
        if not (File.Exists path) then raise (FileNotFoundException($"{path}: no such configuration file", path))
        applyJson path (File.ReadAllText path) Default

    /// Sets one key from text, `where` naming its source in errors (a flag such as "--lr 3"): the value is read as
    /// JSON when it parses as JSON (numbers, null, true, arrays, quoted strings), as a string otherwise.
    let setValue (where: string) (key: string) (value: string) (config: TrainConfig) : TrainConfig =
        let json =
            try
                use d = JsonDocument.Parse value
                d.RootElement.GetRawText()
            with :? JsonException -> JsonSerializer.Serialize value
        use parsed = JsonDocument.Parse json
        (find where key).Read where parsed.RootElement config

    /// Applies one `key=value` override (see setValue).
    let set (assignment: string) (config: TrainConfig) : TrainConfig =
        let where = $"--set {assignment}"
        match assignment.IndexOf '=' with
        | i when i > 0 -> setValue where (assignment.Substring(0, i).Trim()) (assignment.Substring(i + 1).Trim()) config
        | _ -> raise (InvalidDataException $"{where}: must be key=value")

    /// Fails unless the run can start: one starting point (model or from_scratch) and data given, size keys only
    /// with from_scratch, targets known.
    let validate (config: TrainConfig) : TrainConfig =
        let hasModel = not (String.IsNullOrWhiteSpace config.Model)
        match hasModel, config.FromScratch with
        | false, None ->
            raise (InvalidDataException "key 'model' is not set: give the folder training starts from (MagnetWhisper, Hugging Face Whisper or original checkpoint), or key 'from_scratch' with a size")
        | true, Some _ -> raise (InvalidDataException "keys 'model' and 'from_scratch' are both set: a run starts from a folder or from scratch, not both")
        | _ -> ()
        if config.FromScratch.IsNone then
            let sizes =
                [ "d_model", config.DModel; "encoder_layers", config.EncoderLayers; "decoder_layers", config.DecoderLayers
                  "attention_heads", config.AttentionHeads; "ffn_dim", config.FfnDim; "vocab_size", config.VocabSize ]
            match sizes |> List.filter (fun (_, v) -> v.IsSome) with
            | (name, _) :: _ -> raise (InvalidDataException $"key '{name}' sizes a fresh model: it needs key 'from_scratch' (the size it modifies)")
            | [] -> ()
        if String.IsNullOrWhiteSpace config.Data then raise (InvalidDataException "key 'data' is not set: give the training corpus")
        if config.MicroBatches > config.BatchSize then
            raise (InvalidDataException $"key 'micro_batches' ({config.MicroBatches}) is larger than key 'batch_size' ({config.BatchSize})")
        for t in config.Targets do
            try Data.Targets.parse t |> ignore
            with :? ArgumentException as e -> raise (InvalidDataException("key 'targets': " + messageOf e))
        config

    /// The resolved configuration as JSON (every key).
    let toJson (config: TrainConfig) : string =
        Json.write (fun w ->
            for k in keys do
                k.Write w config)

    /// The curves of every predictor of a model whose predictors are before `predictorLayers`: whisper.py's with the
    /// temperature keys, then `schedules`' "all" entry, then the layer's own. Fails naming the key when a
    /// `schedules` entry names a layer without a predictor.
    let predictorCurves (config: TrainConfig) (predictorLayers: int list) : Map<int, PredictorCurves> =
        ScheduleOverrides.checkLayers config.Schedules predictorLayers
        let baseline = { PredictorCurves.WhisperPy with Temperature = Linear(config.TemperatureStart, config.TemperatureEnd) }
        Map [ for layer in predictorLayers -> layer, PredictorCurves.validate layer (ScheduleOverrides.curvesFor baseline config.Schedules layer) ]

    /// Writes the resolved configuration atomically.
    let save (path: string) (config: TrainConfig) : unit = AtomicWrite.text path (toJson config)
