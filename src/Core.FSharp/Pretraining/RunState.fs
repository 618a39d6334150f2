namespace MagnetWhisper.Core.Pretraining

// RUN_DIR/pretrain.json: what a pretraining run was asked to do (so `--resume` continues exactly that) and the wall
// time each stage took so far (summed over the sessions of a resumed run), for PROVENANCE.md.

open System
open System.IO
open System.Text.Json
open MagnetWhisper.Core
open MagnetWhisper.Core.Whisper

/// A pretraining run's request and timings.
type PretrainState =
    { /// The command lines that ran it: the first, then each resume.
      Commands: string list
      /// The corpus manifest or folder training reads (absolute).
      Corpus: string
      /// True when the run synthesised the corpus itself (into RUN_DIR/corpus).
      Synthesised: bool
      /// Utterances synthesised (when Synthesised).
      Utterances: int
      Seed: int64
      /// The step count asked for; None = the recipe's.
      Steps: int option
      /// The `key=value` overrides of the recipe.
      Sets: string list
      /// Wall seconds per stage name, summed over sessions.
      Seconds: Map<string, float> }

    /// Adds seconds to a stage.
    member s.Add(stage: string, seconds: float) =
        { s with Seconds = s.Seconds.Add(stage, seconds + (s.Seconds.TryFind stage |> Option.defaultValue 0.0)) }

/// Reading and writing pretrain.json.
[<RequireQualifiedAccess>]
module PretrainState =
    /// "pretrain.json"
    [<Literal>]
    let FileName = "pretrain.json"

    /// The text of pretrain.json.
    let toJson (s: PretrainState) : string =
        Json.write (fun w ->
            w.WriteStartArray "commands"
            for c in s.Commands do w.WriteStringValue c
            w.WriteEndArray()
            w.WriteString("corpus", s.Corpus)
            w.WriteBoolean("synthesised", s.Synthesised)
            w.WriteNumber("utterances", s.Utterances)
            w.WriteNumber("seed", s.Seed)
            match s.Steps with
            | Some n -> w.WriteNumber("steps", n)
            | None -> w.WriteNull "steps"
            w.WriteStartArray "sets"
            for x in s.Sets do w.WriteStringValue x
            w.WriteEndArray()
            w.WriteStartObject "seconds"
            for KeyValue(stage, seconds) in s.Seconds do w.WriteNumber(stage, seconds)
            w.WriteEndObject())

    /// Parses pretrain.json; errors name the file and the field.
    let parse (source: string) (text: string) : PretrainState =
        use doc = Json.parseDocument source text
        let root = doc.RootElement
        let required name =
            match Json.tryProp root name with
            | Some v -> v
            | None -> raise (InvalidDataException $"{source}: no '{name}'")
        let strings name =
            let v = required name
            if v.ValueKind <> JsonValueKind.Array then raise (InvalidDataException $"{source}: field '{name}' must be an array of strings")
            [ for e in v.EnumerateArray() -> Json.asString source name e ]
        { Commands = strings "commands"
          Corpus = Json.asString source "corpus" (required "corpus")
          Synthesised = Json.asBool source "synthesised" (required "synthesised")
          Utterances = Json.asInt source "utterances" (required "utterances")
          Seed =
            match (required "seed").TryGetInt64() with
            | true, s -> s
            | _ -> raise (InvalidDataException $"{source}: field 'seed' must be an integer")
          Steps = Json.tryProp root "steps" |> Option.map (Json.asInt source "steps")
          Sets = strings "sets"
          Seconds =
            Map [ for p in (required "seconds").EnumerateObject() -> p.Name, Json.asFloat source $"seconds.{p.Name}" p.Value ] }

    /// Reads RUN_DIR/pretrain.json.
    let read (runDir: string) : PretrainState =
        let path = Path.Combine(runDir, FileName)
        if not (File.Exists path) then raise (FileNotFoundException($"{runDir} is not a pretraining run: it has no {FileName}", path))
        parse path (File.ReadAllText path)

    /// Writes RUN_DIR/pretrain.json atomically.
    let save (runDir: string) (s: PretrainState) : unit = AtomicWrite.text (Path.Combine(runDir, FileName)) (toJson s)
