/// `magnet demo`: the built-in default job. Until the Whisper trainers land, it trains a small boundary scorer on
/// synthetic segment data with the tensor core (see MagnetWhisper.Core.Training.SyntheticSegmentation).
module MagnetWhisper.Cli.Commands.Demo

open Argu
open MagnetWhisper.Core
open MagnetWhisper.Core.Training

type DemoArgs =
    | Steps of int
    | Seed of int
    | Device of string
    | Every of int
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Steps _ -> "training steps (default 300)."
            | Seed _ -> "random seed (default 0)."
            | Device _ -> "auto, cpu, cuda or cuda:N (default auto)."
            | Every _ -> "report every N steps (default 25)."

let run (args: ParseResults<DemoArgs>) : int =
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
    let mutable last = None
    let scorer =
        SyntheticSegmentation.train settings device every (fun r ->
            last <- Some r
            printfn "%6d  %14.4f  %10.4f  %7.1f%%  %7.1f%%  %9.3f  %6.3f"
                r.Step r.Impurity r.CountLoss (100.0 * r.KeptFraction) (100.0 * r.TrueFraction) r.Precision r.Recall)
    scorer.Dispose()
    match last with
    | Some r ->
        printfn ""
        printfn "Compression %.1fx (kept %.1f%% of frames; the true segmentation keeps %.1f%%); boundaries within one frame: precision %.2f, recall %.2f."
            (1.0 / max r.KeptFraction 1e-9) (100.0 * r.KeptFraction) (100.0 * r.TrueFraction) r.Precision r.Recall
        0
    | None -> 1
