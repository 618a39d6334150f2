/// `magnet visualize --model DIR AUDIO -o page.html`: one self-contained HTML page (plotly.js embedded, opens
/// offline) with the log-mel of the first 30 s, each boundary predictor's probabilities and chosen boundaries on the
/// same time axis, reference phone boundaries (`--alignment`), and the greedy transcript with its segment times; and
/// the Audacity label file of the original's visualize_boundaries.py with each boundary at its true end time.
module MagnetWhisper.Cli.Commands.Visualize

open System
open System.Globalization
open System.IO
open Argu
open Giraffe.ViewEngine
open Plotly.NET
open Plotly.NET.LayoutObjects
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Data
open MagnetWhisper.Core.Decoding
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Text
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Cli

type VisualizeArgs =
    | [<MainCommand; ExactlyOnce>] Audio of path: string
    | [<Mandatory>] Model of dir: string
    | [<Mandatory; AltCommandLine("-o")>] Output of path: string
    | Alignment of path: string
    | Labels of path: string
    | Language of name: string
    | Sample_Len of count: int
    | Device of name: string
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Audio _ -> "the audio file (WAV and FLAC natively; other formats need ffmpeg); the page shows its first 30 s."
            | Model _ -> "a MagnetWhisper, original MagnetWhisper or Hugging Face Whisper folder (Whisper: no predictor rows)."
            | Output _ -> "the HTML page to write."
            | Alignment _ -> "reference phones: festival's utt.save.segs file or 'end_time phone' lines."
            | Labels _ -> "the Audacity label file (default: <audio name>_boundaries.txt next to the page)."
            | Language _ -> "language spoken (code or name); detected when omitted."
            | Sample_Len _ -> "most tokens per 30 s window of the transcript (default 224)."
            | Device _ -> "auto (default), cpu, cuda or cuda:N."

/// A loaded model: MagnetWhisper (with a boundary trace) or plain Whisper.
type private Loaded =
    | Magnet of MagnetWhisperModel
    | Whisper of WhisperModel

    member l.Speech: ISpeechModel =
        match l with
        | Magnet m -> m :> ISpeechModel
        | Whisper w -> w :> ISpeechModel

    member l.Dispose() =
        match l with
        | Magnet m -> m.Dispose()
        | Whisper w -> w.Dispose()

/// "BP1".
let private shortName (kind: PredictorKind) =
    match kind with
    | Bp1 -> "BP1"
    | Bp2 -> "BP2"
    | Bp3 -> "BP3"
    | Bp4 -> "BP4"

/// The name of a predictor everywhere on the page.
let private predictorName (p: PredictorTrace) = $"{shortName p.Kind} before layer {p.Layer}"

/// Seconds as "12.345".
let private seconds (t: float) = t.ToString("F3", CultureInfo.InvariantCulture)

/// The vertical domains of the rows, top to bottom, from their relative heights (gap between rows).
let private domains (heights: float list) : (float * float) list =
    let gap = 0.035
    let usable = 1.0 - gap * float (heights.Length - 1)
    let total = List.sum heights
    heights
    |> List.fold (fun (top, acc) h ->
        let size = usable * h / total
        let bottom = max 0.0 (top - size)
        bottom - gap, (bottom, top) :: acc) (1.0, [])
    |> snd
    |> List.rev

/// One row of the figure: its traces (already anchored to its y axis), its axis title and range, extra shapes.
type private Row =
    { Charts: GenericChart list
      Title: string
      Range: (float * float) option
      ShowTicks: bool
      Height: float }

/// Thin vertical lines at the given times over one row's y axis (by its id) or the whole figure (None).
let private verticalLines (times: float seq) (axis: int option) (color: string) (dash: StyleParam.DrawingStyle) =
    let yref = match axis with Some 1 -> "y domain" | Some k -> $"y{k} domain" | None -> "paper"
    [ for t in times ->
          Shape.init (
              ShapeType = StyleParam.ShapeType.Line, X0 = t, X1 = t, Y0 = 0.0, Y1 = 1.0, Xref = "x", Yref = yref,
              Line = Line.init (Color = Color.fromString color, Width = 1.0, Dash = dash), Layer = StyleParam.Layer.Above) ]

/// The log-mel heatmap of the valid frames: frame f drawn over [f, f+1) × 10 ms.
let private melRow (mel: float[][]) : Row =
    let frames = if mel.Length = 0 then 0 else mel.[0].Length
    let x = [ for f in 0 .. frames - 1 -> (float f + 0.5) * BoundaryTrace.secondsPerMelFrame ]
    let heatmap =
        Chart.Heatmap(
            zData = (mel |> Array.map (Array.map (fun v -> Math.Round(v, 3)))),
            X = x,
            Y = [ 0 .. mel.Length - 1 ],
            Name = "log-mel",
            ColorScale = StyleParam.Colorscale.Viridis,
            ShowScale = false)
    { Charts = [ heatmap ]; Title = "mel bin"; Range = None; ShowTicks = true; Height = 3.0 }

/// A predictor's probabilities (a point at the end of each input position's span), its chosen boundaries and its
/// threshold.
let private predictorRow (duration: float) (p: PredictorTrace) : Row =
    let name = predictorName p
    let ends = p.Spans |> Array.map (fun s -> s.End)
    let hover =
        Array.map2 (fun (s: PositionSpan) (prob: float) -> $"{name}<br>{seconds s.Start}–{seconds s.End} s<br>p = {prob:F3}") p.Spans p.Probabilities
    let chosen = Array.zip3 ends p.Probabilities p.Boundaries |> Array.filter (fun (_, _, b) -> b)
    let kept = $"{100.0 * p.KeptFraction:F1}%%"
    let probability =
        Chart.Line(x = ends, y = p.Probabilities, Name = $"{name}: p(boundary)", ShowMarkers = (ends.Length <= 200), MultiText = hover)
    let boundaries =
        Chart.Point(
            x = (chosen |> Array.map (fun (t, _, _) -> t)),
            y = (chosen |> Array.map (fun (_, prob, _) -> prob)),
            Name = $"{name}: {chosen.Length} boundaries (keeps {kept})",
            MarkerSymbol = StyleParam.MarkerSymbol.TriangleDown,
            MarkerColor = Color.fromString "crimson")
        |> Chart.withMarkerStyle (Size = 9)
    let threshold =
        Chart.Line(x = [ 0.0; duration ], y = [ p.Threshold; p.Threshold ], Name = $"{name}: threshold {p.Threshold:G3}", LineDash = StyleParam.DrawingStyle.Dash, LineColor = Color.fromString "gray")
    { Charts = [ probability; boundaries; threshold ]; Title = $"{name}<br>p(boundary)"; Range = Some(-0.05, 1.1); ShowTicks = true; Height = 1.6 }

/// Phone labels at the middle of each phone.
let private phoneRow (phones: PhoneAlignment.Phone list) : Row =
    let text =
        Chart.Scatter(
            x = (phones |> List.map (fun p -> (p.Start + p.End) / 2.0)),
            // Alternate heights so that short neighbouring phones do not print over each other.
            y = (phones |> List.mapi (fun i _ -> if i % 2 = 0 then 0.3 else 0.75)),
            mode = StyleParam.Mode.Text,
            Name = "reference phones",
            MultiText = (phones |> List.map (fun p -> p.Label)),
            TextPosition = StyleParam.TextPosition.MiddleCenter)
    { Charts = [ text ]; Title = "phones"; Range = Some(0.0, 1.0); ShowTicks = false; Height = 0.55 }

/// The transcript's segments: a bar over each segment's time span with its text.
let private transcriptRow (segments: Segment list) : Row =
    let short (s: string) = let s = s.Trim() in if s.Length > 60 then s.Substring(0, 57) + "…" else s
    let bars =
        [ for s in segments ->
              Chart.Line(x = [ s.Start; s.End ], y = [ 0.3; 0.3 ], ShowLegend = false, LineColor = Color.fromString "steelblue", LineWidth = 6.0,
                         MultiText = [ s.Text.Trim(); s.Text.Trim() ]) ]
    let texts =
        Chart.Scatter(
            x = (segments |> List.map (fun s -> (s.Start + s.End) / 2.0)),
            y = (segments |> List.map (fun _ -> 0.65)),
            mode = StyleParam.Mode.Text,
            Name = "transcript",
            MultiText = (segments |> List.map (fun s -> short s.Text)),
            TextPosition = StyleParam.TextPosition.MiddleCenter)
    { Charts = texts :: bars; Title = "transcript"; Range = Some(0.0, 1.0); ShowTicks = false; Height = 0.6 }

/// The HTML under the figure: what was shown and the transcript with its segment times.
let private description (audio: string) (modelDir: string) (trace: BoundaryTrace option) (duration: float) (transcript: Transcript) (labels: string option) =
    let predictors =
        match trace with
        | None -> [ p [] [ str "A Whisper folder: no boundary predictors." ] ]
        | Some t when t.Predictors.IsEmpty -> [ p [] [ str "This MagnetWhisper folder has no boundary predictors." ] ]
        | Some t ->
            [ table [ _style "border-collapse: collapse" ] [
                  yield tr [] [ for h in [ "predictor"; "input positions"; "boundaries"; "kept"; "threshold" ] -> th [ _style "text-align: left; padding: 2px 12px" ] [ str h ] ]
                  for p in t.Predictors ->
                      let cell (s: string) = td [ _style "padding: 2px 12px" ] [ str s ]
                      tr [] [ cell (predictorName p); cell (string p.Spans.Length); cell (string p.BoundaryTimes.Length)
                              cell $"{100.0 * p.KeptFraction:F1}%%"; cell $"{p.Threshold:G3}" ] ] ]
    let cell (s: string) = td [ _style "padding: 2px 12px; vertical-align: top" ] [ str s ]
    div [ _style "font-family: sans-serif; margin: 0 40px" ] [
        yield p [] [ str $"Audio {audio} ({seconds duration} s shown), model {modelDir}. Times are seconds from the start of the audio; a boundary is drawn at the end of the position (frame or pooled segment) that ends its segment." ]
        yield! predictors
        match labels with
        | Some path -> yield p [] [ str $"Audacity labels: {path}" ]
        | None -> ()
        yield h3 [] [ str $"Transcript (greedy, language {transcript.Language})" ]
        yield
            table [ _style "border-collapse: collapse" ] [
                yield tr [] [ for h in [ "start"; "end"; "text" ] -> th [ _style "text-align: left; padding: 2px 12px" ] [ str h ] ]
                for s in transcript.Segments -> tr [] [ cell (seconds s.Start); cell (seconds s.End); cell (s.Text.Trim()) ] ] ]

/// The figure: rows top to bottom on one shared time axis (seconds), reference phone boundaries over every row.
let private figure (title: string) (rows: Row list) (phoneEnds: float list) (predictorRows: int list) (boundaryTimes: float[] list) (duration: float) (below: XmlNode) : GenericChart =
    let doms = domains (rows |> List.map (fun r -> r.Height))
    let bottom = rows.Length
    let anchored =
        rows
        |> List.mapi (fun i r -> r.Charts |> List.map (Chart.withAxisAnchor (X = 1, Y = i + 1)))
        |> List.concat
        |> Chart.combine
    let withAxes =
        List.zip rows doms
        |> List.indexed
        |> List.fold (fun chart (i, (r, (lo, hi))) ->
            let axis =
                LinearAxis.init (
                    Title = Title.init (Text = r.Title), Domain = StyleParam.Range.MinMax(lo, hi), Anchor = StyleParam.LinearAxisId.X 1,
                    ShowTickLabels = r.ShowTicks, ShowGrid = r.ShowTicks, ZeroLine = false,
                    ?Range = (r.Range |> Option.map (fun (a, b) -> StyleParam.Range.MinMax(a, b))))
            chart |> Chart.withYAxis (axis, Id = StyleParam.SubPlotId.YAxis(i + 1))) anchored
    let shapes =
        [ yield! verticalLines phoneEnds None "rgba(255,255,255,0.55)" StyleParam.DrawingStyle.Dot
          for row, times in List.zip predictorRows boundaryTimes do
              yield! verticalLines times (Some row) "rgba(220,20,60,0.35)" StyleParam.DrawingStyle.Solid ]
    let height = 140 + (rows |> List.sumBy (fun r -> int (r.Height * 110.0)))
    withAxes
    |> Chart.withXAxis (
        LinearAxis.init (Title = Title.init (Text = "time (s)"), Anchor = StyleParam.LinearAxisId.Y bottom, Range = StyleParam.Range.MinMax(0.0, duration)),
        Id = StyleParam.SubPlotId.XAxis 1)
    |> Chart.withShapes shapes
    // The title sits at the top of the page, the legend between it and the first row.
    |> Chart.withTitle (Title.init (Text = title, Y = 0.995, YAnchor = StyleParam.YAnchorPosition.Top, YRef = "container"))
    |> Chart.withSize (1320, height)
    |> Chart.withLegendStyle (Orientation = StyleParam.Orientation.Horizontal, Y = 1.0, YAnchor = StyleParam.YAnchorPosition.Bottom)
    |> Chart.withMargin (Margin.init (Left = 110, Right = 30, Top = 140, Bottom = 60))
    |> Chart.withDescription [ below ]
    // plotly.js is embedded, so the page opens without a network connection.
    |> Chart.withDisplayOptionsStyle (PlotlyJSReference = PlotlyJSReference.Full)

/// Loads the folder as a MagnetWhisper model (own or original format) or a Whisper model.
let private load (dir: string) (device: torch.Device) : Loaded =
    if MagnetFormat.isMagnetFolder dir then Magnet(MagnetFormat.load dir device torch.float32)
    elif OriginalCheckpoint.isOriginalFolder dir then Magnet(OriginalCheckpoint.import ImportOptions.Original dir device torch.float32)
    else Whisper(WhisperModel.FromPretrained(dir, device, torch.float32))

/// The default label file: `<audio name>_boundaries.txt` in the page's folder (the original's name).
let private defaultLabels (audio: string) (pagePath: string) =
    Path.Combine(Path.GetDirectoryName(Path.GetFullPath pagePath), Path.GetFileNameWithoutExtension audio + "_boundaries.txt")

/// Fails with a usage error unless path can be a file that is written (not a folder).
let private requireWritableFile (flag: string) (path: string) =
    if Directory.Exists path then invalidArg flag $"{flag} {path} is a folder, not a file"

/// The figure of one audio (its first 30 s) for a model (`magnet` when it is a MagnetWhisper model: then with its
/// predictors' rows): log-mel, predictor rows, reference phones, the greedy transcript; with the boundary trace and
/// the transcript. `labels` writes the Audacity labels of a trace with predictors and returns their path.
let figureOf (model: ISpeechModel) (magnet: MagnetWhisperModel option) (audio: string) (modelDir: string) (samples: float32[])
             (phones: PhoneAlignment.Phone list option) (language: string option) (sampleLen: int option)
             (labels: BoundaryTrace -> string option) : GenericChart * BoundaryTrace option * Transcript * string option =
    use _ = torch.NewDisposeScope()
    let config = model.Config
    let duration = float (min samples.Length LogMel.NSamples) / float LogMel.SampleRate
    use features = LogMel.extract config.NumMelBins model.Device [ samples ]
    let validFrames = int (Tensors.toFloat (features.Mask.sum()))
    let mel =
        use rows = features.Mel.[0].narrow(1L, 0L, int64 validFrames).cpu()
        Array.init config.NumMelBins (fun m -> Tensors.toFloatArray rows.[m])
    let trace = magnet |> Option.map (fun m -> BoundaryTrace.ofFeatures m features.Mel features.Mask duration)
    let tokenizer = Search.tokenizerOf model
    let language = if Search.isMultilingual tokenizer then language else Some "en"
    let options =
        { TranscribeOptions.defaults with
            Decoding = { DecodingOptions.defaults with Language = language; SampleLen = sampleLen }
            Temperatures = [ 0.0 ] }
    let transcript = Transcriber(model).Transcribe(samples, options)
    let predictors = trace |> Option.map (fun t -> t.Predictors) |> Option.defaultValue []
    let labelsPath =
        match trace with
        | Some t when not t.Predictors.IsEmpty -> labels t
        | _ -> None
    let rows =
        [ yield melRow mel
          for p in predictors -> predictorRow duration p
          match phones with
          | Some ps -> yield phoneRow ps
          | None -> ()
          yield transcriptRow transcript.Segments ]
    let title = $"{Path.GetFileName audio}: {Path.GetFileName(Path.GetFullPath(modelDir).TrimEnd('/'))}"
    let chart =
        figure title rows (phones |> Option.map (List.map (fun p -> p.End)) |> Option.defaultValue [])
            [ for i in 1 .. predictors.Length -> i + 1 ] [ for p in predictors -> p.BoundaryTimes ] duration
            (description audio modelDir trace duration transcript labelsPath)
    chart, trace, transcript, labelsPath

let run (args: ParseResults<VisualizeArgs>) : int =
    let audio = args.GetResult Audio
    let modelDir = args.GetResult Model
    let output = args.GetResult Output
    let outputFlag = Args.typed [ "-o"; "--output" ]
    requireWritableFile outputFlag output
    let labelsPath = args.TryGetResult Labels
    labelsPath |> Option.iter (requireWritableFile "--labels")
    let device = Args.value "--device" (fun () -> Device.parse (args.GetResult(Device, defaultValue = "auto")))
    let sampleLen = args.TryGetResult Sample_Len
    if not (File.Exists audio) then raise (FileNotFoundException($"audio file not found: {audio}", audio))
    if not (Directory.Exists modelDir) then raise (DirectoryNotFoundException $"--model {modelDir}: folder not found")
    let config =
        try Checkpoint.ReadConfig modelDir
        with
        | :? IOException
        | :? InvalidDataException as e -> invalidArg "--model" $"--model {modelDir}: {e.Message}"
    sampleLen |> Option.iter (fun n ->
        let most = config.MaxTargetPositions / 2
        Args.require "--sample-len" (n >= 1 && n <= most) $"must be between 1 and {most}, got {n}")
    let language = args.TryGetResult Language |> Option.map Transcribe.languageCode
    // Read the alignment before the model: a bad file is reported at once.
    let phones =
        args.TryGetResult Alignment
        |> Option.map (fun path ->
            if not (File.Exists path) then raise (FileNotFoundException($"--alignment {path}: file not found", path))
            PhoneAlignment.read path)
    let samples =
        try MagnetWhisper.Core.Audio.Audio.load audio
        with
        | :? InvalidDataException
        | :? IOException as e when not (e :? FileNotFoundException) ->
            raise (InvalidDataException(if e.Message.StartsWith audio then e.Message else $"{audio}: {e.Message}"))
    if samples.Length = 0 then raise (InvalidDataException $"{audio}: the audio holds no samples")
    eprintfn "loading %s on %O" modelDir device
    let loaded =
        try load modelDir device
        with
        | :? IOException
        | :? InvalidDataException
        | :? UnauthorizedAccessException as e -> invalidArg "--model" $"--model {modelDir}: {e.Message}"
    try
        let magnet = match loaded with Magnet m -> Some m | Whisper _ -> None
        let writeLabels (t: BoundaryTrace) =
            let path = labelsPath |> Option.defaultWith (fun () -> defaultLabels audio output)
            AudacityLabels.write path t
            Some path
        let chart, trace, transcript, labels = figureOf loaded.Speech magnet audio modelDir samples phones language sampleLen writeLabels
        let predictors = trace |> Option.map (fun t -> t.Predictors) |> Option.defaultValue []
        let html = GenericChart.toEmbeddedHTML chart
        AtomicWrite.text output html
        for p in predictors do
            printfn "%s: %d of %d positions are boundaries (keeps %.1f%%)" (predictorName p) p.BoundaryTimes.Length p.Spans.Length (100.0 * p.KeptFraction)
        labels |> Option.iter (printfn "labels      %s")
        printfn "page        %s" output
        printfn "transcript  %s" (transcript.Text.Trim())
        if labelsPath.IsSome && labels.IsNone then Output.error "--labels: the model has no boundary predictors, so no label file was written"
        0
    finally
        loaded.Dispose()
