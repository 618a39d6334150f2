/// `magnet demo toy`: the tensor core end to end on synthetic data: a small boundary scorer learns to segment
/// piecewise-constant sequences (see MagnetWhisper.Core.Training.SyntheticSegmentation). `magnet demo` itself is
/// the whole experiment on speech (Demo.fs).
module MagnetWhisper.Cli.Commands.DemoToy

open System
open Argu
open Plotly.NET
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Training

type ToyArgs =
    | Steps of int
    | Seed of int
    | Device of string
    | Every of int
    | Plot of path: string
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Steps _ -> "training steps (default 300)."
            | Seed _ -> "random seed (default 0)."
            | Device _ -> "auto, cpu, cuda or cuda:N (default auto)."
            | Every _ -> "report every N steps (default 25)."
            | Plot _ -> "write an HTML report (training curves and the boundaries found in one utterance)."

/// Training curves and, for the first utterance of a fresh batch, the boundary probabilities with the true and
/// predicted boundaries.
let private report (path: string) (history: SyntheticSegmentation.StepReport list) (scorer: SyntheticSegmentation.Scorer) settings device =
    let steps = history |> List.map (fun r -> r.Step)
    let curves =
        [ Chart.Line(x = steps, y = (history |> List.map (fun r -> r.Impurity)), Name = "impurity")
          Chart.Line(x = steps, y = (history |> List.map (fun r -> r.CountLoss)), Name = "count loss")
          Chart.Line(x = steps, y = (history |> List.map (fun r -> r.Recall)), Name = "recall (±1 frame)")
          Chart.Line(x = steps, y = (history |> List.map (fun r -> r.Precision)), Name = "precision (±1 frame)") ]
        |> Chart.combine
        |> Chart.withXAxisStyle "step"
    use _ = torch.NewDisposeScope()
    use batch = SyntheticSegmentation.makeBatch settings (Random(int settings.Seed + 1)) device
    let p, predicted = SyntheticSegmentation.infer scorer batch
    let valid = int (Tensors.toFloat (batch.Mask.[0].sum()))
    let row (t: torch.Tensor) = Tensors.toFloatArray t.[0] |> Array.take valid
    let frames = [ 0 .. valid - 1 ]
    let marks (b: float[]) y = frames |> List.filter (fun f -> b.[f] > 0.5), frames |> List.filter (fun f -> b.[f] > 0.5) |> List.map (fun _ -> y)
    let trueX, trueY = marks (row batch.Boundaries) 1.05
    let predX, predY = marks (row predicted) 1.1
    let boundaries =
        [ Chart.Line(x = frames, y = row p, Name = "boundary probability")
          Chart.Point(x = trueX, y = trueY, Name = "true boundary")
          Chart.Point(x = predX, y = predY, Name = "predicted boundary") ]
        |> Chart.combine
        |> Chart.withXAxisStyle "frame"
    [ curves; boundaries ]
    |> Chart.Grid(2, 1)
    |> Chart.withTitle "magnet demo: learning segment boundaries"
    |> Chart.withSize (1000, 800)
    // plotly.js is embedded, so the report opens without a network connection.
    |> Chart.withDisplayOptionsStyle (PlotlyJSReference = PlotlyJSReference.Full)
    |> Chart.saveHtml path

let run (args: ParseResults<ToyArgs>) : int =
    let defaults = SyntheticSegmentation.Settings.Default
    let settings =
        { defaults with
            Steps = args.GetResult(Steps, defaults.Steps)
            Seed = int64 (args.GetResult(Seed, int defaults.Seed)) }
    if settings.Steps < 1 then invalidArg "steps" "--steps must be at least 1"
    let device = Device.parse (args.GetResult(Device, "auto"))
    let every = max 1 (args.GetResult(Every, 25))
    printfn "Segmenting synthetic 'phone' sequences: %d utterances x %d frames x %d dims per batch, segments of %d-%d frames, on %O."
        settings.Batch settings.Frames settings.Dim settings.MinSegment settings.MaxSegment device
    printfn "A scorer samples boundaries (Gumbel-sigmoid, straight-through), frames are averaged per segment (downsample),"
    printfn "and it learns to make every segment pure (one phone) through downsample's boundary gradient,"
    printfn "plus the binomial count loss toward the true number of segments."
    printfn ""
    printfn "%6s  %14s  %10s  %8s  %8s  %9s  %6s" "step" "impurity" "count loss" "kept" "true" "precision" "recall"
    let history = ResizeArray<SyntheticSegmentation.StepReport>()
    use scorer =
        SyntheticSegmentation.train settings device every (fun r ->
            history.Add r
            printfn "%6d  %14.4f  %10.4f  %7.1f%%  %7.1f%%  %9.3f  %6.3f"
                r.Step r.Impurity r.CountLoss (100.0 * r.KeptFraction) (100.0 * r.TrueFraction) r.Precision r.Recall)
    args.TryGetResult Plot
    |> Option.iter (fun path ->
        report path (List.ofSeq history) scorer settings device
        printfn "Report written to %s" path)
    match Seq.tryLast history with
    | Some r ->
        printfn ""
        printfn "Compression %.1fx (kept %.1f%% of frames; the true segmentation keeps %.1f%%); boundaries within one frame: precision %.2f, recall %.2f."
            (1.0 / max r.KeptFraction 1e-9) (100.0 * r.KeptFraction) (100.0 * r.TrueFraction) r.Precision r.Recall
        0
    | None -> 1
