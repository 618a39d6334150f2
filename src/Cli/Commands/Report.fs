/// `magnet report RUN_DIR... -o page.html`: one self-contained HTML page (plotly.js embedded, opens offline) of
/// training runs read from their metrics.jsonl: loss (total, cross-entropy, boundary loss), learning rate, dev WER,
/// compression and temperature over steps, one colour per run; with several runs, dev WER against compression (the
/// Pareto view). Runs still being written are read up to their last complete line.
module MagnetWhisper.Cli.Commands.Report

open System
open System.IO
open Argu
open Giraffe.ViewEngine
open Plotly.NET
open MagnetWhisper.Core
open MagnetWhisper.Core.Training
open MagnetWhisper.Cli

type ReportArgs =
    | [<MainCommand; Mandatory>] Runs of dirs: string list
    | [<Mandatory; AltCommandLine("-o")>] Output of path: string
    | Title of text: string
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Runs _ -> "run folders (each with a metrics.jsonl, as `magnet train -o` writes them)."
            | Output _ -> "the HTML page to write."
            | Title _ -> "the page's title (default: the run names)."

/// The metrics file of a run folder.
[<Literal>]
let MetricsFile = "metrics.jsonl"

/// One run's metrics: per key, its finite values by step in file order.
type RunMetrics =
    { /// The name shown in legends (the folder's name, or the path as typed when names repeat).
      Name: string
      /// The folder as typed.
      Dir: string
      /// Lines read.
      Lines: int
      /// The end of the file was left out: a line without its newline, or a last line that does not parse (a run
    /// being written).
      SkippedLast: bool
      Series: Map<string, (int64 * float) list> }

    /// The points of a key (empty when the run never logged it).
    member r.Points(key: string) = r.Series |> Map.tryFind key |> Option.defaultValue []

    /// The last step logged.
    member r.LastStep =
        r.Series |> Map.toList |> List.collect (snd >> List.map fst) |> function [] -> None | steps -> Some(List.max steps)

/// Per key, the finite values by step, in line order (NaN, written as null, is "not measured").
let seriesOf (lines: MetricsLine list) : Map<string, (int64 * float) list> =
    lines
    |> List.collect (fun l -> l.Values |> List.filter (fun (_, v) -> Double.IsFinite v) |> List.map (fun (k, v) -> k, (l.Step, v)))
    |> List.groupBy fst
    |> List.map (fun (k, pts) -> k, pts |> List.map snd)
    |> Map.ofList

/// Reads a run folder's metrics.jsonl. A torn last line (no newline) is left out by MetricsJsonl; a last line that
/// ends but does not parse is left out too (reported in SkippedLast); any other bad line is an error naming it.
let readRun (dir: string) : RunMetrics =
    if not (Directory.Exists dir) then raise (DirectoryNotFoundException $"run folder {dir}: not found")
    let path = Path.Combine(dir, MetricsFile)
    if not (File.Exists path) then raise (FileNotFoundException($"run folder {dir}: it has no {MetricsFile} (not a training run)", path))
    let lines = MetricsJsonl.completeLines path
    // Text after the last newline: a line still being written (MetricsJsonl leaves it out).
    let torn =
        let text = File.ReadAllText path
        text.Substring(text.LastIndexOf '\n' + 1).Trim() <> ""
    let where i = $"{path} line {i + 1}"
    let parsed, skipped =
        match List.rev lines with
        | [] -> [], false
        | last :: before ->
            let before = List.rev before |> List.mapi (fun i l -> MetricsJsonl.parseLine (where i) l)
            try before @ [ MetricsJsonl.parseLine (where before.Length) last ], false
            with :? InvalidDataException -> before, true
    { Name = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath dir))
      Dir = dir
      Lines = parsed.Length
      SkippedLast = skipped || torn
      Series = seriesOf parsed }

/// Names that tell runs apart: folder names, or the paths as typed where folder names repeat.
let distinctNames (runs: RunMetrics list) : RunMetrics list =
    let counts = runs |> List.countBy _.Name |> Map.ofList
    runs |> List.map (fun r -> if counts.[r.Name] > 1 then { r with Name = r.Dir } else r)

/// A run's point on the Pareto view: its dev WER at an evaluation and the compression it ran at (the evaluation's
/// eval/compression_ratio, else the newest train/compression_ratio logged at or before that step).
type ParetoPoint =
    { Step: int64
      Wer: float
      Compression: float }

/// The run's final and best (lowest WER, earliest on ties) evaluations, when it has any with a known compression.
let paretoPoints (r: RunMetrics) : (ParetoPoint * ParetoPoint) option =
    let evalCompression = Map.ofList (r.Points MetricKeys.EvalCompressionRatio)
    let train = r.Points MetricKeys.TrainCompressionRatio
    let compressionAt step =
        match Map.tryFind step evalCompression with
        | Some c -> Some c
        | None -> train |> List.filter (fun (s, _) -> s <= step) |> List.tryLast |> Option.map snd
    let points =
        [ for step, wer in r.Points MetricKeys.EvalWer do
              match compressionAt step with
              | Some c -> { Step = step; Wer = wer; Compression = c }
              | None -> () ]
    match points with
    | [] -> None
    | _ -> Some(List.last points, points |> List.minBy _.Wer)

/// Colours of the runs (D3's category10), reused past ten runs.
let private palette =
    [| "#1f77b4"; "#ff7f0e"; "#2ca02c"; "#d62728"; "#9467bd"; "#8c564b"; "#e377c2"; "#7f7f7f"; "#bcbd22"; "#17becf" |]

/// A panel over steps: the traces of each (key, line style) for each run that logged it.
type private Panel =
    { Title: string
      Keys: (string * string * StyleParam.DrawingStyle) list }

let private panels =
    [ { Title = "loss"
        Keys =
          [ MetricKeys.TrainLoss, "loss", StyleParam.DrawingStyle.Solid
            MetricKeys.TrainAsrLoss, "cross-entropy", StyleParam.DrawingStyle.Dash
            MetricKeys.EvalLoss, "dev loss", StyleParam.DrawingStyle.DashDot ] }
      // Apart from the loss: the dev cross-entropy moves by a few percent, the boundary loss is often ten times larger.
      { Title = "dev cross-entropy (eval/asr_loss)"; Keys = [ MetricKeys.EvalAsrLoss, "dev cross-entropy", StyleParam.DrawingStyle.Solid ] }
      { Title = "boundary loss"; Keys = [ MetricKeys.TrainBoundaryLoss, "boundary loss", StyleParam.DrawingStyle.Solid ] }
      { Title = "GRPO reward (mean over the rollout)"; Keys = [ MetricKeys.TrainGrpoRewardMean, "reward", StyleParam.DrawingStyle.Solid ] }
      { Title = "learning rate"; Keys = [ MetricKeys.TrainLearningRate, "learning rate", StyleParam.DrawingStyle.Solid ] }
      { Title = "dev WER, % (eval/wer)"; Keys = [ MetricKeys.EvalWer, "dev WER", StyleParam.DrawingStyle.Solid ] }
      { Title = "compression (kept fraction)"
        Keys =
          [ MetricKeys.TrainCompressionRatio, "train", StyleParam.DrawingStyle.Solid
            MetricKeys.EvalCompressionRatio, "dev", StyleParam.DrawingStyle.Dash ] }
      { Title = "temperature"; Keys = [ MetricKeys.TrainBoundaryTemperature, "temperature", StyleParam.DrawingStyle.Solid ] } ]

/// The chart of a panel, or None when no run logged any of its keys.
let private panelChart (runs: RunMetrics list) (panel: Panel) : GenericChart option =
    let traces =
        [ for i, r in List.indexed runs do
              for key, label, dash in panel.Keys do
                  match r.Points key with
                  | [] -> ()
                  | pts ->
                      let xs = pts |> List.map fst
                      let ys = pts |> List.map snd
                      Chart.Line(
                          x = xs, y = ys, Name = $"{r.Name}: {label}", LineColor = Color.fromString palette.[i % palette.Length],
                          LineDash = dash, ShowMarkers = (pts.Length <= 60)) ]
    match traces with
    | [] -> None
    | _ ->
        Some(
            Chart.combine traces
            |> Chart.withXAxisStyle "step"
            |> Chart.withYAxisStyle panel.Title)

/// The charts over steps of the runs: one per panel (loss, learning rate, dev WER, compression, temperature) that
/// some run logged.
let stepCharts (runs: RunMetrics list) : GenericChart list = panels |> List.choose (panelChart runs)

/// WER against compression: each run's final evaluation (filled) and its best (open), labelled with the run's name.
let private paretoChart (runs: RunMetrics list) : GenericChart option =
    let traces =
        [ for i, r in List.indexed runs do
              match paretoPoints r with
              | None -> ()
              | Some(final, best) ->
                  let colour = Color.fromString palette.[i % palette.Length]
                  yield
                      Chart.Point(
                          x = [ final.Compression ], y = [ final.Wer ], Name = $"{r.Name}: final (step {final.Step})",
                          MultiText = [ r.Name ], TextPosition = StyleParam.TextPosition.TopCenter, MarkerColor = colour)
                      |> Chart.withMarkerStyle (Size = 12)
                  yield
                      Chart.Point(
                          x = [ best.Compression ], y = [ best.Wer ], Name = $"{r.Name}: best (step {best.Step})", MarkerColor = colour,
                          MarkerSymbol = StyleParam.MarkerSymbol.Modified(StyleParam.MarkerSymbol.Circle, StyleParam.SymbolStyle.Open))
                      |> Chart.withMarkerStyle (Size = 16) ]
    match traces with
    | [] -> None
    | _ ->
        Some(
            Chart.combine traces
            |> Chart.withXAxisStyle "compression (kept fraction of the dev evaluation)"
            |> Chart.withYAxisStyle "dev WER, % (eval/wer)")

let private number (v: float) = v.ToString("G6", Globalization.CultureInfo.InvariantCulture)

/// The table under the figure: per run, its folder, steps, last loss, final and best dev WER and compression.
let private summary (runs: RunMetrics list) (missing: string list) : XmlNode =
    let last (r: RunMetrics) key = r.Points key |> List.tryLast |> Option.map (snd >> number) |> Option.defaultValue "–"
    let cell (s: string) = td [ _style "padding: 2px 12px" ] [ str s ]
    div [ _style "font-family: sans-serif; margin: 0 40px" ] [
        yield
            table [ _style "border-collapse: collapse" ] [
                yield tr [] [ for h in [ "run"; "folder"; "last step"; "train/loss"; "final dev WER"; "best dev WER"; "train/compression_ratio" ] ->
                                  th [ _style "text-align: left; padding: 2px 12px" ] [ str h ] ]
                for r in runs ->
                    let best =
                        match r.Points MetricKeys.EvalWer with
                        | [] -> "–"
                        | pts -> let s, w = pts |> List.minBy snd in $"{number w} (step {s})"
                    tr [] [ cell r.Name; cell r.Dir; cell (r.LastStep |> Option.map string |> Option.defaultValue "none yet")
                            cell (last r MetricKeys.TrainLoss); cell (last r MetricKeys.EvalWer); cell best
                            cell (last r MetricKeys.TrainCompressionRatio) ] ]
        for r in runs do
            if r.Lines = 0 then yield p [] [ str $"{r.Name}: {MetricsFile} holds no complete line yet." ]
            if r.SkippedLast then yield p [] [ str $"{r.Name}: the last line of {MetricsFile} is incomplete (a run being written) and was left out." ]
        if not missing.IsEmpty then
            yield p [] [ str ("Not logged by these runs: " + String.Join("; ", missing) + ".") ]
        yield p [] [ str "Compression is the kept fraction (kept positions / valid positions): lower keeps fewer frames. The WER is shown as the run logged it: in percent, as the trainers and the original log eval/wer." ] ]

/// The page of the runs (at least one).
let page (title: string) (runs: RunMetrics list) : string =
    let over = [ for panel in panels -> panel, panelChart runs panel ]
    let pareto = if runs.Length > 1 then [ "dev WER against compression", paretoChart runs ] else []
    let charts = [ for _, c in over do match c with Some c -> c | None -> () ] @ [ for _, c in pareto do match c with Some c -> c | None -> () ]
    let missing = [ for p, c in over do if c.IsNone then p.Title ] @ [ for t, c in pareto do if c.IsNone then t + " (no evaluation with a compression)" ]
    let below = summary runs missing
    match charts with
    | [] ->
        // No metric yet: the page still names the runs.
        let body = html [] [ head [] [ meta [ _charset "utf-8" ]; Giraffe.ViewEngine.HtmlElements.title [] [ str title ] ]
                             body [] [ h2 [ _style "font-family: sans-serif; margin: 20px 40px" ] [ str title ]; below ] ]
        RenderView.AsString.htmlDocument body
    | _ ->
        charts
        |> Chart.Grid(charts.Length, 1, YGap = 0.35)
        |> Chart.withTitle title
        |> Chart.withSize (1300, 120 + 330 * charts.Length)
        |> Chart.withDescription [ below ]
        // plotly.js is embedded, so the page opens without a network connection.
        |> Chart.withDisplayOptionsStyle (PlotlyJSReference = PlotlyJSReference.Full)
        |> GenericChart.toEmbeddedHTML

let run (args: ParseResults<ReportArgs>) : int =
    let dirs = args.GetResult Runs
    let output = args.GetResult Output
    let outputFlag = Args.typed [ "-o"; "--output" ]
    if Directory.Exists output then invalidArg outputFlag $"{outputFlag} {output} is a folder, not a file"
    if dirs.IsEmpty then invalidArg "RUN_DIR" "give at least one run folder"
    let runs = dirs |> List.map readRun |> distinctNames
    let title = args.GetResult(Title, defaultValue = "training runs: " + String.Join(", ", runs |> List.map _.Name))
    AtomicWrite.text output (page title runs)
    for r in runs do
        let step = r.LastStep |> Option.map string |> Option.defaultValue "none"
        let wer =
            match paretoPoints r with
            | Some(final, best) -> $", final dev WER {number final.Wer} at compression {number final.Compression}, best {number best.Wer} (step {best.Step})"
            | None -> ""
        printfn "%s: %d lines, last step %s%s" r.Name r.Lines step wer
    printfn "page        %s" output
    0
