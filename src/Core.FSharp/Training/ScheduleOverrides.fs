namespace MagnetWhisper.Core.Training

// The `schedules` configuration key (issue 9 §2): per-predictor curves of training progress over whisper.py's, as the
// original's CompressionScheduler, TemperatureScheduler and BoundaryLossWeightScheduler set them. An entry applies to
// "all" predictors or to the predictor before one layer; the layer's entry wins over "all".

open System
open System.IO
open System.Text.Json

/// Which predictors a `schedules` entry applies to.
type ScheduleScope =
    /// Every predictor ("all").
    | AllPredictors
    /// The predictor before this encoder layer ("3").
    | PredictorLayer of layer: int

/// The curves one `schedules` entry sets; None keeps the curve it would have without the entry.
type CurveOverrides =
    { /// `target_progress`: the encoder's target-progress lerp ρ.
      TargetProgress: Curve option
      /// `compression`: BP1/BP4's compression schedule.
      Compression: Curve option
      /// `prior`: the prior schedule of the prior-scheduled losses (without it, the compression curve).
      Prior: Curve option
      /// `temperature`: the Gumbel-sigmoid temperature τ.
      Temperature: Curve option
      /// `boundary_loss_weight`: BP3's prior-loss weight without targets.
      BoundaryLossWeight: Curve option }

    /// An entry that sets nothing.
    static member None: CurveOverrides =
        { TargetProgress = None; Compression = None; Prior = None; Temperature = None; BoundaryLossWeight = None }

/// Reading, writing and applying `schedules` entries.
[<RequireQualifiedAccess>]
module ScheduleOverrides =
    /// The configuration key.
    [<Literal>]
    let Key = "schedules"

    let private fail (where: string) (key: string) (why: string) : 'a =
        raise (InvalidDataException $"{where}: key '{key}' {why}")

    let private number (where: string) (key: string) (v: JsonElement) : float =
        match v.ValueKind with
        | JsonValueKind.Number when Double.IsFinite(v.GetDouble()) -> v.GetDouble()
        | _ -> fail where key $"must be a finite number, got {v.GetRawText()}"

    let private pair (where: string) (key: string) (v: JsonElement) : float * float =
        if v.ValueKind <> JsonValueKind.Array || v.GetArrayLength() <> 2 then
            fail where key $"must be [from, to], got {v.GetRawText()}"
        number where key v.[0], number where key v.[1]

    let private stepped (where: string) (key: string) (v: JsonElement) : Curve =
        if v.ValueKind <> JsonValueKind.Object then fail where key $"must be {{\"initial\": v, \"steps\": [[progress, value], …]}}, got {v.GetRawText()}"
        let mutable initial = None
        let mutable steps = []
        for p in v.EnumerateObject() do
            match p.Name with
            | "initial" -> initial <- Some(number where $"{key}.initial" p.Value)
            | "steps" ->
                if p.Value.ValueKind <> JsonValueKind.Array then fail where $"{key}.steps" $"must be an array of [progress, value], got {p.Value.GetRawText()}"
                steps <- [ for e in p.Value.EnumerateArray() -> pair where $"{key}.steps" e ]
            | other -> fail where key $"has no key '{other}' (it has initial, steps)"
        match initial with
        | Some i -> Stepped(i, steps)
        | None -> fail where key "needs \"initial\""

    /// A curve: a number (constant), {"linear": [from, to]}, {"cosine": [from, to]} or
    /// {"stepped": {"initial": v, "steps": [[progress, value], …]}}; `key` is its path in errors.
    let curveOf (where: string) (key: string) (v: JsonElement) : Curve =
        let curve =
            match v.ValueKind with
            | JsonValueKind.Number -> Constant(number where key v)
            | JsonValueKind.Object when Seq.length (v.EnumerateObject()) = 1 ->
                let p = Seq.head (v.EnumerateObject())
                match p.Name with
                | "linear" -> Linear(pair where $"{key}.linear" p.Value)
                | "cosine" -> Cosine(pair where $"{key}.cosine" p.Value)
                | "stepped" -> stepped where $"{key}.stepped" p.Value
                | other -> fail where key $"has no curve '{other}' (a curve is a number, linear, cosine or stepped)"
            | _ -> fail where key $"must be a number, {{\"linear\": [from, to]}}, {{\"cosine\": [from, to]}} or {{\"stepped\": {{\"initial\": v, \"steps\": [[progress, value], …]}}}}, got {v.GetRawText()}"
        try Curve.validate key curve
        with :? ArgumentException as e -> fail where key ("is not a valid curve: " + e.Message.Split(" (Parameter").[0].Replace($"{key}: ", ""))

    /// Fails unless the curve stays in [lo, hi] on [0, 1].
    let private within (where: string) (key: string) (lo: float) (hi: float) (curve: Curve) =
        let a, b = Curve.range curve
        if a < lo || b > hi then fail where key $"must stay in [{lo}, {hi}], but ranges over [{a}, {b}]"

    /// The temperature must be positive at every trained step (progress < 1); it may reach 0 only at progress 1.
    let private positiveBeforeEnd (where: string) (key: string) (curve: Curve) =
        let ok =
            match curve with
            | Constant v -> v > 0.0
            | Linear(a, b)
            | Cosine(a, b) -> a > 0.0 && b >= 0.0
            | Stepped(initial, steps) -> initial > 0.0 && steps |> List.forall (fun (at, v) -> v > 0.0 || (at >= 1.0 && v >= 0.0))
        if not ok then fail where key $"must stay positive before the end of the run (it may reach 0 at progress 1), got {curve}"

    let private entryOf (where: string) (key: string) (v: JsonElement) : CurveOverrides =
        if v.ValueKind <> JsonValueKind.Object then fail where key $"must be an object of curves, got {v.GetRawText()}"
        v.EnumerateObject()
        |> Seq.fold (fun (o: CurveOverrides) p ->
            let path = $"{key}.{p.Name}"
            let curve () = curveOf where path p.Value
            let unit () =
                let c = curve ()
                within where path 0.0 1.0 c
                c
            match p.Name with
            | "target_progress" -> { o with TargetProgress = Some(unit ()) }
            | "compression" -> { o with Compression = Some(unit ()) }
            | "prior" -> { o with Prior = Some(unit ()) }
            | "temperature" ->
                let c = curve ()
                positiveBeforeEnd where path c
                { o with Temperature = Some c }
            | "boundary_loss_weight" ->
                let c = curve ()
                let lo = Curve.minimum c
                if lo < 0.0 then fail where path $"must stay non-negative, but reaches {lo}"
                { o with BoundaryLossWeight = Some c }
            | other -> fail where key $"has no key '{other}' (it has target_progress, compression, prior, temperature, boundary_loss_weight)")
            CurveOverrides.None

    /// The `schedules` object: keys "all" or a predictor layer, each an object of curves.
    let parse (where: string) (v: JsonElement) : Map<ScheduleScope, CurveOverrides> =
        if v.ValueKind <> JsonValueKind.Object then fail where Key $"must be an object whose keys are \"all\" or predictor layers, got {v.GetRawText()}"
        v.EnumerateObject()
        |> Seq.fold (fun m p ->
            let scope =
                match p.Name, Int32.TryParse(p.Name, Globalization.NumberStyles.None, Globalization.CultureInfo.InvariantCulture) with
                | "all", _ -> AllPredictors
                | _, (true, layer) -> PredictorLayer layer
                | name, _ -> fail where Key $"has key '{name}', which is neither \"all\" nor a predictor layer (a non-negative integer)"
            let path = match scope with AllPredictors -> $"{Key}.all" | PredictorLayer l -> $"{Key}.{l}"
            if Map.containsKey scope m then fail where path "is given twice"
            Map.add scope (entryOf where path p.Value) m) Map.empty

    let private writeCurve (w: Utf8JsonWriter) (name: string) (curve: Curve) =
        let writePair (kind: string) (a: float) (b: float) =
            w.WriteStartObject name
            w.WriteStartArray kind
            w.WriteNumberValue a
            w.WriteNumberValue b
            w.WriteEndArray()
            w.WriteEndObject()
        match curve with
        | Constant v -> w.WriteNumber(name, v)
        | Linear(a, b) -> writePair "linear" a b
        | Cosine(a, b) -> writePair "cosine" a b
        | Stepped(initial, steps) ->
            w.WriteStartObject name
            w.WriteStartObject "stepped"
            w.WriteNumber("initial", initial)
            w.WriteStartArray "steps"
            for at, v in steps do
                w.WriteStartArray()
                w.WriteNumberValue at
                w.WriteNumberValue v
                w.WriteEndArray()
            w.WriteEndArray()
            w.WriteEndObject()
            w.WriteEndObject()

    /// Writes the `schedules` object as `parse` reads it ("all" first, then the layers in order).
    let write (w: Utf8JsonWriter) (schedules: Map<ScheduleScope, CurveOverrides>) : unit =
        w.WriteStartObject Key
        for KeyValue(scope, o) in schedules do
            w.WriteStartObject(match scope with AllPredictors -> "all" | PredictorLayer l -> string l)
            let opt name c = c |> Option.iter (writeCurve w name)
            opt "target_progress" o.TargetProgress
            opt "compression" o.Compression
            opt "prior" o.Prior
            opt "temperature" o.Temperature
            opt "boundary_loss_weight" o.BoundaryLossWeight
            w.WriteEndObject()
        w.WriteEndObject()

    /// The curves with an entry's curves put over them.
    let apply (o: CurveOverrides) (curves: PredictorCurves) : PredictorCurves =
        { TargetProgress = defaultArg o.TargetProgress curves.TargetProgress
          CompressionSchedule = defaultArg o.Compression curves.CompressionSchedule
          PriorSchedule = (match o.Prior with Some p -> Some p | None -> curves.PriorSchedule)
          Temperature = defaultArg o.Temperature curves.Temperature
          BoundaryLossWeight = defaultArg o.BoundaryLossWeight curves.BoundaryLossWeight }

    /// The curves of the predictor before `layer`: `baseline` (whisper.py's with the configured temperature), then
    /// the "all" entry, then the layer's own.
    let curvesFor (baseline: PredictorCurves) (schedules: Map<ScheduleScope, CurveOverrides>) (layer: int) : PredictorCurves =
        let over scope c = match Map.tryFind scope schedules with Some o -> apply o c | None -> c
        baseline |> over AllPredictors |> over (PredictorLayer layer)

    /// Fails unless every layer entry names one of the model's predictor layers, naming the key.
    let checkLayers (schedules: Map<ScheduleScope, CurveOverrides>) (predictorLayers: int list) : unit =
        for KeyValue(scope, _) in schedules do
            match scope with
            | PredictorLayer l when not (List.contains l predictorLayers) ->
                let have = if predictorLayers.IsEmpty then "it has none" else "its predictors are before layers " + String.Join(", ", predictorLayers)
                raise (InvalidDataException $"key '{Key}.{l}': the model has no predictor before layer {l} ({have})")
            | _ -> ()
