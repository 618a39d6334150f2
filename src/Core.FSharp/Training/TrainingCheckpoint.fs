namespace MagnetWhisper.Core.Training

// A training checkpoint folder (issue 9 §2), written atomically: the model in our folder format (`model/`), AdamW's
// state (`optimizer.bin`, TorchSharp's state-dict format) and `trainer.json` with the update number, the data
// position, every generator's state and the run's configuration. Loading a checkpoint into a model and optimizer
// built the same way continues the run bit-identically on CPU.

open System
open System.IO
open System.Text.Json
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Magnet

/// What trainer.json holds.
type CheckpointProgress =
    { /// Updates applied so far.
      Step: int
      /// Where the data stream continues.
      DataPosition: int64
      /// The generators' states.
      Random: RandomState
      /// The run's configuration as JSON (whatever the trainer wrote; "{}" when none).
      Config: string }

/// Writing and reading training checkpoint folders.
[<RequireQualifiedAccess>]
module TrainingCheckpoint =
    /// The model's folder inside a checkpoint.
    [<Literal>]
    let ModelFolder = "model"

    /// AdamW's state.
    [<Literal>]
    let OptimizerFile = "optimizer.bin"

    /// Step, data position, generators and configuration.
    [<Literal>]
    let TrainerFile = "trainer.json"

    /// The value of trainer.json's "format".
    [<Literal>]
    let FormatName = "magnet-whisper-training"

    let private trainerJson (progress: CheckpointProgress) : string =
        Json.write (fun w ->
            w.WriteString("format", FormatName)
            w.WriteNumber("format_version", 1)
            w.WriteNumber("step", progress.Step)
            w.WriteNumber("data_position", progress.DataPosition)
            w.WriteStartObject "random"
            w.WriteString("global", Convert.ToBase64String progress.Random.Global)
            w.WriteStartObject "generators"
            for name, bytes in progress.Random.Generators do
                w.WriteString(name, Convert.ToBase64String bytes)
            w.WriteEndObject()
            w.WriteEndObject()
            w.WritePropertyName "config"
            w.WriteRawValue progress.Config)

    /// Writes a checkpoint folder atomically (AtomicWrite.folder; an existing folder is replaced whole).
    let save (dir: string) (model: MagnetWhisperModel) (optimizer: TrainingOptimizer) (progress: CheckpointProgress) : unit =
        let json = trainerJson progress
        AtomicWrite.folder dir (fun _ -> false) (fun staging ->
            MagnetFormat.save (Path.Combine(staging, ModelFolder)) model
            AtomicWrite.file (Path.Combine(staging, OptimizerFile)) (fun s ->
                let bytes = TrainingSnapshot.optimizerBytes optimizer
                s.Write(bytes, 0, bytes.Length))
            AtomicWrite.text (Path.Combine(staging, TrainerFile)) json)

    /// Reads trainer.json of a checkpoint folder. Errors name the file and the field.
    let read (dir: string) : CheckpointProgress =
        let path = Path.Combine(dir, TrainerFile)
        if not (File.Exists path) then
            raise (FileNotFoundException($"{dir} is not a training checkpoint: it has no {TrainerFile}", path))
        use doc = Json.parseDocument path (File.ReadAllText path)
        let root = doc.RootElement
        let field (e: JsonElement) (where: string) (name: string) =
            match Json.tryProp e name with
            | Some v -> v
            | None -> raise (InvalidDataException $"{path}: {where} has no field '{name}'")
        let format = Json.asString path "format" (field root "the top level" "format")
        if format <> FormatName then
            raise (InvalidDataException $"{path}: field 'format' is '{format}', expected '{FormatName}'")
        let version = Json.asInt path "format_version" (field root "the top level" "format_version")
        if version <> 1 then raise (InvalidDataException $"{path}: format_version {version} is not supported (only 1)")
        let base64 (name: string) (v: JsonElement) =
            try Convert.FromBase64String(Json.asString path name v)
            with :? FormatException -> raise (InvalidDataException $"{path}: field '{name}' is not base64")
        let random = field root "the top level" "random"
        let generators = field random "'random'" "generators"
        let dataPosition = field root "the top level" "data_position"
        { Step = Json.asInt path "step" (field root "the top level" "step")
          DataPosition =
            (match dataPosition.TryGetInt64() with
             | true, p when p >= 0L -> p
             | _ -> raise (InvalidDataException $"{path}: field 'data_position' must be a non-negative integer, got {dataPosition.GetRawText()}"))
          Random =
            { Global = base64 "random.global" (field random "'random'" "global")
              Generators = [ for p in generators.EnumerateObject() -> p.Name, base64 $"random.generators.{p.Name}" p.Value ] }
          Config = (field root "the top level" "config").GetRawText() }

    /// Loads the checkpoint's model (MagnetFormat.load of `model/`, in evaluation mode).
    let loadModel (dir: string) (device: torch.Device) (dtype: torch.ScalarType) : MagnetWhisperModel =
        MagnetFormat.load (Path.Combine(dir, ModelFolder)) device dtype

    /// Restores AdamW's state into an optimizer built over the loaded model as the saved one was, and the generators'
    /// states; returns trainer.json's progress.
    let restore (dir: string) (optimizer: TrainingOptimizer) (generators: (string * torch.Generator) list) : CheckpointProgress =
        let progress = read dir
        let path = Path.Combine(dir, OptimizerFile)
        if not (File.Exists path) then raise (FileNotFoundException($"{dir} is not a training checkpoint: it has no {OptimizerFile}", path))
        try TrainingSnapshot.loadOptimizer optimizer (File.ReadAllBytes path)
        with :? ArgumentException | :? EndOfStreamException as e ->
            raise (InvalidDataException($"{path} does not fit the optimizer (other trained parameters or groups?): {e.Message}", e))
        RandomState.restore progress.Random generators
        progress
