/// `magnet demo`: the whole experiment of issue 11 §4 on the built-in corpus and base model (data/demo): the base
/// model evaluated, a boundary predictor (BP2 by default) added and fine-tuned with phoneme-count targets and a compression schedule, both models
/// evaluated and timed, RUN_DIR/summary.json and RUN_DIR/report.html written and a summary table printed. The
/// experiment itself is MagnetWhisper.Core.Demo.Experiment; this file parses flags and prints. `magnet demo toy` is
/// the tensor-core demonstration on synthetic vectors (DemoToy.fs).
module MagnetWhisper.Cli.Commands.Demo

open System
open System.Globalization
open System.IO
open System.Threading
open Argu
open Giraffe.ViewEngine
open Plotly.NET
open MagnetWhisper.Core
open MagnetWhisper.Core.Data
open MagnetWhisper.Core.Decoding
open MagnetWhisper.Core.Demo
open MagnetWhisper.Core.Evaluation
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Cli

type DemoArgs =
    | [<CliPrefix(CliPrefix.None)>] Toy of ParseResults<DemoToy.ToyArgs>
    | [<AltCommandLine("-o")>] Output of run_dir: string
    | Quick
    | Seed of int64
    | Layer of int
    | Predictor of kind: string
    | Steps of int
    | Device of name: string
    | Corpus of dir: string
    | Model of dir: string
    | [<CliPrefix(CliPrefix.None)>] Pretrain of ParseResults<DemoPretrain.DemoPretrainArgs>
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Toy _ -> "the tensor core on synthetic vectors (the former `magnet demo`)."
            | Output _ -> "the run folder (default demo-run): summary.json, report.html, train/, eval/; a previous demo run there is replaced."
            | Quick -> "the same stages on 24 utterances per split and 24 updates (about 2 minutes on 2 cores)."
            | Seed _ -> "seed of the data order, boundary sampling and the predictor's weights (default 0)."
            | Layer _ -> "the encoder layer the predictor runs before (default 3)."
            | Predictor _ -> "the predictor's type: bp2 (default), bp1, bp3 or bp4, with mean pooling."
            | Steps _ -> "fine-tuning updates (default 400; 24 with --quick)."
            | Device _ -> "auto (default), cpu, cuda or cuda:N."
            | Corpus _ -> "a corpus folder with manifest.jsonl (splits train, dev, test, test-unseen-voice); default data/demo/corpus."
            | Model _ -> "the base model: a MagnetWhisper folder without a predictor before --layer; default data/demo/base-model."
            | Pretrain _ -> "pretrain the built-in base model: synthetic corpus, training, float16 export with PROVENANCE.md (docs/PRETRAINING.md)."

/// Unknown flags of `magnet demo` or of its subcommand.
let rejectUnknownFlags (tokens: string list) : unit =
    match tokens with
    | sub :: _ when not (sub.StartsWith "-") -> Args.rejectUnknownInSubcommand<DemoArgs> "demo" tokens
    | _ -> Args.rejectUnknown<DemoArgs> "demo" tokens

/// The folder given by a flag, or the built-in asset.
let private asset (args: ParseResults<DemoArgs>) (case: Quotations.Expr<string -> DemoArgs>) (flag: string) (name: string) : string =
    match args.TryGetResult case with
    | Some dir ->
        if not (Directory.Exists dir || File.Exists dir) then raise (DirectoryNotFoundException $"{flag} {dir}: not found")
        dir
    | None ->
        match Experiment.builtIn name with
        | Some dir -> dir
        | None -> raise (DirectoryNotFoundException $"the built-in data/demo/{name} was not found above {AppContext.BaseDirectory} or the current folder; give {flag} DIR")

let private number (v: float) (format: string) = if Double.IsFinite v then v.ToString(format, CultureInfo.InvariantCulture) else "–"
let private percent (v: float) = if Double.IsFinite v then (100.0 * v).ToString("F2", CultureInfo.InvariantCulture) + "%" else "–"

/// The summary table, one row per split.
let tableLines (figures: SplitFigures list) : string list =
    let header = $"""{"split",-18} {"base WER",9} {"base CER",9} {"magnet WER",11} {"magnet CER",11} {"compression",12} {"speed-up",9} {"FLOP red.",10} {"boundary F1",12} {"random F1",10}"""
    [ yield header
      for f in figures ->
          let times (v: float) (format: string) = if Double.IsFinite v then number v format + "x" else "–"
          let c, s, r = times f.Compression "F2", times f.EncoderSpeedup "F2", times f.FlopReduction "F2"
          let f1, random = number f.BoundaryF1 "F3", number f.BoundaryF1Random "F3"
          $"{f.Split,-18} {percent f.BaselineWer,9} {percent f.BaselineCer,9} {percent f.MagnetWer,11} {percent f.MagnetCer,11} {c,12} {s,9} {r,10} {f1,12} {random,10}" ]

/// WER against encoder compression: per test split, the base model at compression 1 and the fine-tuned model.
let private werChart (figures: SplitFigures list) : GenericChart =
    [ for f in figures do
          if Double.IsFinite f.MagnetWer && Double.IsFinite f.Compression then
              Chart.Line(
                  x = [ 1.0; f.Compression ], y = [ 100.0 * f.BaselineWer; 100.0 * f.MagnetWer ], Name = f.Split, ShowMarkers = true,
                  MultiText = [ "base model"; "MagnetWhisper" ], TextPosition = StyleParam.TextPosition.TopCenter) ]
    |> Chart.combine
    |> Chart.withXAxisStyle "encoder compression (frames in / frames out)"
    |> Chart.withYAxisStyle "WER, %"
    |> Chart.withTitle "WER against compression: base model (compression 1) and MagnetWhisper"
    |> Chart.withSize (1300, 420)

/// report.html: the training curves (magnet report's panels), WER against compression, and one test utterance's
/// log-mel with predicted and true phone boundaries (magnet visualize's figure), with the summary table. plotly.js is
/// embedded once, so the page opens offline.
let private writeReport (path: string) (result: DemoResult) (figures: SplitFigures list) (magnet: MagnetWhisperModel) =
    let run = Report.readRun result.TrainDir
    let curves = Report.stepCharts [ run ]
    let training =
        curves
        |> Chart.Grid(curves.Length, 1, YGap = 0.35)
        |> Chart.withTitle $"fine-tuning ({result.TrainDir})"
        |> Chart.withSize (1300, 120 + 300 * curves.Length)
    let utterance =
        result.Shown
        |> Option.map (fun u ->
            let samples = UtteranceAudio.loadUsing (Audio.Audio.findFfmpeg ()) u
            let phones = u.Phones |> Option.map PhoneAlignment.read
            let chart, _, _, _ = Visualize.figureOf magnet (Some magnet) (AudioSource.name u.Audio) result.MagnetModel samples phones (Some "en") None (fun _ -> None)
            chart)
    let cell (s: string) = td [ _style "padding: 2px 10px; text-align: right" ] [ str s ]
    let table =
        let f = figures
        table [ _style "border-collapse: collapse; font-family: monospace" ] [
            yield tr [] [ for h in [ "split"; "base WER"; "base CER"; "magnet WER"; "magnet CER"; "compression"; "encoder speed-up"; "FLOP reduction"; "boundary F1"; "random F1"; "precision"; "recall" ] ->
                              th [ _style "padding: 2px 10px" ] [ str h ] ]
            for x in f ->
                tr [] [ cell x.Split; cell (percent x.BaselineWer); cell (percent x.BaselineCer); cell (percent x.MagnetWer); cell (percent x.MagnetCer)
                        cell (number x.Compression "F2"); cell (number x.EncoderSpeedup "F2"); cell (number x.FlopReduction "F2")
                        cell (number x.BoundaryF1 "F3"); cell (number x.BoundaryF1Random "F3"); cell (number x.BoundaryPrecision "F3"); cell (number x.BoundaryRecall "F3") ] ]
    let intro =
        div [ _style "font-family: sans-serif; margin: 20px 40px" ] [
            h2 [] [ str "magnet demo" ]
            p [] [ str $"Base model {result.BaselineModel}; a {(PredictorSpec.kindName result.Settings.Predictor).ToUpperInvariant()} before encoder layer {result.Settings.Layer} (prior {result.Settings.Prior}, mean pooling, phoneme-count targets) fine-tuned for {result.Settings.Steps} updates of {result.Settings.BatchSize} on {result.Settings.Corpus} (seed {result.Settings.Seed}); {result.Seconds:F0} s in all." ]
            table
            p [] [ str "Compression: encoder positions in / positions after the predictor. Speed-up: the base model's encoder time over MagnetWhisper's, measured side by side on the same batches; FLOP reduction: the same ratio of matrix-product FLOPs. Boundaries: precision, recall and F1 within ±20 ms of festival's phone boundaries, and the F1 of random boundaries at the same rate." ] ]
    // The first chart's page carries plotly.js; the other charts join it as div + script.
    let withPlotly = training |> Chart.withDisplayOptionsStyle (PlotlyJSReference = PlotlyJSReference.Full) |> GenericChart.toEmbeddedHTML
    let others = [ werChart figures; yield! Option.toList utterance ] |> List.map GenericChart.toChartHTML
    let at = withPlotly.LastIndexOf "</body>"
    let html =
        if at < 0 then invalidOp "plotly's page has no </body>"
        else
            withPlotly.Substring(0, at) + RenderView.AsString.htmlNode intro + String.Join("\n", others) + withPlotly.Substring at
    AtomicWrite.text path html

let run (args: ParseResults<DemoArgs>) : int =
    match args.TryGetResult Toy, args.TryGetResult Pretrain with
    | Some toy, _ -> DemoToy.run toy
    | None, Some pretrain -> DemoPretrain.run pretrain
    | None, None ->
    let quick = args.Contains Quick
    let defaults = if quick then DemoSettings.Quick else DemoSettings.Full
    let steps = args.GetResult(Steps, defaults.Steps)
    Args.require "--steps" (steps >= 1) $"must be at least 1, got {steps}"
    let layer = args.GetResult(Layer, defaults.Layer)
    Args.require "--layer" (layer >= 0) $"must be an encoder layer (0 or more), got {layer}"
    let predictor = Args.value "--predictor" (fun () -> PredictorSpec.parseKind "--predictor" (args.GetResult(Predictor, PredictorSpec.kindName defaults.Predictor)))
    let device = Args.value "--device" (fun () -> Device.parse (args.GetResult(Device, "auto")))
    let outputFlag = Args.typed [ "-o"; "--output" ]
    let runDir = args.GetResult(Output, "demo-run")
    if File.Exists runDir then invalidArg outputFlag $"{outputFlag} {runDir} is a file, not a folder"
    if not (Experiment.canWriteInto runDir) then
        invalidArg outputFlag $"{outputFlag} {runDir}: the folder exists, is not empty and is not a previous demo run; choose another folder"
    let corpus = asset args <@ Corpus @> "--corpus" "corpus"
    let model = asset args <@ Model @> "--model" "base-model"
    let settings =
        { defaults with Corpus = corpus; Model = model; Steps = steps; Layer = layer; Predictor = predictor; Seed = args.GetResult(Seed, defaults.Seed); Device = device }
    let settings =
        try Experiment.validate settings
        with :? InvalidDataException as e -> invalidArg "--model" $"--model {model}: {e.Message}"
    let live = not Console.IsErrorRedirected
    use reporter = new TrainProgress.Reporter(live, max 1 (settings.Steps / 10))
    let mutable shown = false
    let evaluating (name: string) (split: string) (p: EvaluationProgress) =
        if live then
            let width = try max 10 (Console.WindowWidth - 1) with _ -> 79
            let line = $"{name} {split}: " + Eval.progressLine p
            eprintf "\r%s\x1b[K" (if line.Length <= width then line else line.Substring(0, width))
            shown <- true
    let clearBar () =
        if shown then
            eprintf "\r\x1b[K"
            shown <- false
    let events: DemoEvents =
        { Stage = fun s -> clearBar (); reporter.Done(); eprintfn "[%d/%d] %s" s.Number s.Total s.Title
          Note = fun text -> clearBar (); reporter.Note("      " + text)
          Evaluating = evaluating
          Training = reporter.Step
          Evaluated = ignore }
    eprintfn "magnet demo%s: corpus %s, base model %s, on %O, into %s" (if quick then " --quick" else "") corpus model device runDir
    let result = Experiment.run settings runDir outputFlag events CancellationToken.None
    clearBar ()
    reporter.Done()
    let figures = DemoSummary.figures result
    let reportPath = Path.Combine(runDir, "report.html")
    eprintfn "writing %s" reportPath
    (use magnet = MagnetFormat.load result.MagnetModel device TorchSharp.torch.float32
     writeReport reportPath result figures magnet)
    printfn ""
    for line in tableLines figures do printfn "%s" line
    printfn ""
    printfn "headline split %s; rates are normalised WER/CER; compression = encoder frames in / out; speed-up = encoder time base / MagnetWhisper (side by side), FLOP red. = the same for matrix-product FLOPs; boundary F1 within ±20 ms of the phone alignments, random = random boundaries at the same rate" (List.head settings.TestSplits)
    printfn "summary     %s" (Path.Combine(runDir, Experiment.SummaryFile))
    printfn "report      %s" reportPath
    printfn "training    %s (magnet report, magnet eval --model %s)" result.TrainDir result.MagnetModel
    printfn "time        %.0f s" result.Seconds
    0
