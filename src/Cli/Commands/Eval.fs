/// `magnet eval --model DIR --data CORPUS`: batched decoding of a whole corpus with a Whisper or MagnetWhisper folder;
/// corpus WER (normalised and raw) and CER, compression per predictor, encoder and total time, real-time factor;
/// `-o DIR` writes summary.json and utterances.tsv.
module MagnetWhisper.Cli.Commands.Eval

open System
open System.IO
open System.Threading
open Argu
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Data
open MagnetWhisper.Core.Evaluation
open MagnetWhisper.Core.Text
open MagnetWhisper.Cli

type EvalArgs =
    | [<Mandatory>] Model of dir: string
    | [<Mandatory>] Data of corpus: string
    | Split of name: string
    | Batch_Size of count: int
    | Beam_Size of count: int
    | [<AltCommandLine("-o")>] Output_Dir of dir: string
    | Limit of count: int
    | Max_Duration of seconds: float
    | Workers of count: int
    | Sample_Len of count: int
    | Device of name: string
    | Threads of count: int
    | No_Progress
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Model _ -> "Hugging Face Whisper folder or MagnetWhisper folder."
            | Data _ -> "the corpus: a folder of audio files with same-name .txt transcripts."
            | Split _ -> "keep only this split or subset (repeatable; default: every utterance)."
            | Batch_Size _ -> "utterances decoded together (default 16); results do not depend on it."
            | Beam_Size _ -> "beams of beam search (default 0 = greedy)."
            | Output_Dir _ -> "folder for summary.json and utterances.tsv (default: print only)."
            | Limit _ -> "evaluate at most this many utterances (the first ones)."
            | Max_Duration _ -> "skip utterances longer than this many seconds (at most 30, the window decoded)."
            | Workers _ -> "background tasks loading audio (default 2)."
            | Sample_Len _ -> "most tokens decoded per utterance (default 224)."
            | Device _ -> "auto (default), cpu, cuda or cuda:N."
            | Threads _ -> "libtorch CPU threads (default: libtorch's choice)."
            | No_Progress -> "no progress on stderr."

/// The progress line: "eval  40% |████████            | 4/10 utterances, 12.3 s of audio, 0:07 elapsed, ETA 0:10".
let progressLine (p: EvaluationProgress) : string =
    let fraction = if p.Total > 0 then float p.Done / float p.Total else 1.0
    let eta = match p.RemainingSeconds with Some r -> Progress.clock r | None -> "?"
    $"eval {int (fraction * 100.0),3}%% |{Progress.bar fraction}| {p.Done}/{p.Total} utterances, {p.AudioSeconds:F1} s of audio, {Progress.clock p.ElapsedSeconds} elapsed, ETA {eta}"

/// The summary lines printed on stdout.
let summaryLines (result: EvaluationResult) : string list =
    let s = result.Score
    let w = s.Words
    let t = result.Timing
    let compression =
        match result.Predictors with
        | [] -> [ "compression: none (stock Whisper, ratio 1)" ]
        | predictors ->
            [ for p in predictors ->
                  $"compression layer {p.Layer}: kept {100.0 * p.KeptFraction:F1}%% (ratio {p.Ratio:F2}), {p.MeanBoundaries:F1} ± {p.StdBoundaries:F1} boundaries per utterance (min {p.MinBoundaries}, max {p.MaxBoundaries})" ]
    [ $"evaluated {result.Utterances.Length} utterances ({result.Skipped.Length} skipped) from {result.Corpus}"
      $"WER {Wer.percent w}%% (S {w.Substitutions}, D {w.Deletions}, I {w.Insertions} of {w.ReferenceLength} words, normalised)"
      $"raw WER {Wer.percent s.RawWords}%% (unnormalised, the original's training-time metric)"
      $"CER {Wer.percent s.Characters}%% (normalised)" ]
    @ compression
    @ [ for b in result.Boundaries ->
          let c = b.Counts
          $"boundaries layer {b.Layer} vs phone alignments (±{1000.0 * BoundaryAccuracy.DefaultTolerance:F0} ms, {b.Utterances} utterances): precision {c.Precision:F3}, recall {c.Recall:F3}, F1 {c.F1:F3} (random at the same rate {c.RandomF1:F3})" ]
    @ [ $"time: encoder {t.EncoderSeconds:F2} s, decode {t.DecodeSeconds:F2} s, total {t.TotalSeconds:F2} s for {t.AudioSeconds:F1} s of audio (real-time factor {t.RealTimeFactor:F3}, encoder {t.EncoderRealTimeFactor:F3})" ]

/// Runs the command: flags, the corpus and the output folder are checked before the model is loaded. Exit 0 when the
/// evaluation ran (even with skipped entries), 1 when no utterance could be evaluated, 2 for usage errors.
let run (args: ParseResults<EvalArgs>) : int =
    let batchSize = args.GetResult(Batch_Size, defaultValue = 16)
    Args.require "--batch-size" (batchSize >= 1) $"must be at least 1, got {batchSize}"
    let beam = args.GetResult(Beam_Size, defaultValue = 0)
    Args.require "--beam-size" (beam >= 0) $"must be 0 (greedy) or more, got {beam}"
    let limit = args.TryGetResult Limit
    limit |> Option.iter (fun n -> Args.require "--limit" (n >= 1) $"must be at least 1, got {n}")
    let maxDuration = args.TryGetResult Max_Duration
    maxDuration |> Option.iter (fun s ->
        Args.require "--max-duration" (s > 0.0 && s <= Evaluator.maxSeconds) $"must be above 0 and at most {Evaluator.maxSeconds} (the window decoded), got {s}")
    let workers = args.GetResult(Workers, defaultValue = 2)
    Args.require "--workers" (workers >= 1) $"must be at least 1, got {workers}"
    let sampleLen = args.TryGetResult Sample_Len
    sampleLen |> Option.iter (fun n -> Args.require "--sample-len" (n >= 1) $"must be at least 1, got {n}")
    let threads = args.TryGetResult Threads
    threads |> Option.iter (fun n -> Args.require "--threads" (n >= 1) $"must be at least 1, got {n}")
    let quiet = args.Contains No_Progress
    let device = Args.value "--device" (fun () -> Device.parse (args.GetResult(Device, defaultValue = "auto")))
    let modelDir = args.GetResult Model
    let config = Transcribe.modelConfig modelDir
    // Half the decoder positions are whisper's sample limit (the other half holds a previous-text prompt).
    let maxSample = config.MaxTargetPositions / 2
    sampleLen |> Option.iter (fun n ->
        Args.require "--sample-len" (n <= maxSample) $"must be at most {maxSample} (half of this model's {config.MaxTargetPositions} decoder positions), got {n}")
    let data = args.GetResult Data
    if not (File.Exists data || Directory.Exists data) then raise (FileNotFoundException($"--data {data}: no such corpus file or folder", data))
    let outputDir = args.TryGetResult Output_Dir
    outputDir |> Option.iter Transcribe.checkOutputDir
    let corpusOptions = { Splits = args.GetResults Split; MaxDuration = maxDuration; Limit = limit }
    let corpus =
        try Corpora.read corpusOptions data
        with :? InvalidDataException as e -> invalidArg "--data" $"--data: {e.Message}"
    threads |> Option.iter torch.set_num_threads
    Output.progress quiet $"corpus {data}: {Corpus.describe corpus}"
    Output.progress quiet $"loading {modelDir} on {device}"
    match Transcribe.loadModel modelDir device with
    | Error message ->
        Output.error message
        2
    | Ok model ->
        use _ = model :?> IDisposable
        let options =
            { EvaluationOptions.Default with
                BatchSize = batchSize
                BeamSize = (if beam > 0 then Some beam else None)
                Workers = workers
                MaxTokens = sampleLen
                MaxDuration = maxDuration }
        let live = not Console.IsErrorRedirected
        let mutable shown = false
        let report (p: EvaluationProgress) =
            if not quiet then
                if live then
                    let width = try max 10 (Console.WindowWidth - 1) with _ -> 79
                    let line = progressLine p
                    eprintf "\r%s\x1b[K" (if line.Length <= width then line else line.Substring(0, width))
                    shown <- true
                else eprintfn "%s" (progressLine p)
        Output.progress quiet $"evaluating {corpus.Utterances.Length} utterances of {data} in batches of {batchSize}"
        let result = Evaluator.evaluate model options corpus report CancellationToken.None
        if shown then eprintf "\r\x1b[K"
        for s in result.Skipped do
            eprintfn "skipped %s: %s" s.Source s.Reason
        for line in summaryLines result do
            stdout.WriteLine line
        outputDir |> Option.iter (fun dir ->
            let written = String.Join(", ", Report.write dir modelDir result)
            Output.progress quiet $"wrote {written}")
        if result.Utterances.Length = 0 then
            Output.error "no utterance could be evaluated"
            1
        else 0
