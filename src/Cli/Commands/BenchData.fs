/// `magnet bench data`: how fast the batch loader delivers utterances with 1..N workers, next to how fast an
/// encoder consumes the same batches, so that a trainer's workers can be chosen to never starve it.
module MagnetWhisper.Cli.Commands.BenchData

open System
open System.Diagnostics
open System.IO
open System.Threading
open Argu
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Text
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Data
open MagnetWhisper.Cli

type BenchDataArgs =
    | Data of corpus: string
    | Workers of counts: string
    | Batch_Size of count: int
    | Model of name: string
    | Utterances of count: int
    | Threads of count: int
    | Quiet
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Data _ -> "a corpus folder (audio files with same-name .txt transcripts); default: espeak-ng sentences (or tones) written to a temporary folder."
            | Workers _ -> "loader worker counts to time, e.g. 1,2,4 (default 1,2)."
            | Batch_Size _ -> "utterances per batch (default 8)."
            | Model _ -> "tiny (default: random-weight whisper-tiny as MagnetWhisper), a Hugging Face Whisper folder or a MagnetWhisper folder."
            | Utterances _ -> "without --data: utterances of the built-in corpus (default 48)."
            | Threads _ -> "libtorch intra-op threads (default: libtorch's choice)."
            | Quiet -> "no progress lines on stderr."

/// Sentences of the built-in corpus (read at several speeds, so durations vary).
let private sentences =
    [| "And so my fellow Americans, ask not what your country can do for you."
       "The quick brown fox jumps over the lazy dog."
       "She sells sea shells by the sea shore."
       "A journey of a thousand miles begins with a single step."
       "Twenty one boats sailed into the harbour at dawn."
       "Please call Stella and ask her to bring these things with her from the store."
       "The rain in Spain stays mainly in the plain."
       "It was the best of times, it was the worst of times."
       "Boundary predictors learn where one sound ends and the next begins."
       "Numbers like 1999 and 42 are spelled out before phonemes are counted." |]

/// Writes the built-in corpus: espeak-ng speech when it is installed, otherwise tones of sentence-like lengths (the
/// loader's work, decoding and features, is the same); returns the folder and what it holds.
let private builtInCorpus (count: int) (quiet: bool) : string * string =
    let dir = Path.Combine(Path.GetTempPath(), $"magnet-bench-data-{Guid.NewGuid():N}")
    Directory.CreateDirectory dir |> ignore
    let espeak =
        try
            use p = Process.Start(ProcessStartInfo("espeak-ng", "--version", RedirectStandardOutput = true, UseShellExecute = false))
            p.WaitForExit()
            if p.ExitCode = 0 then Some "espeak-ng" else None
        with _ -> None
    Output.progress quiet $"writing {count} utterances to {dir}"
    for i in 0 .. count - 1 do
        let text = sentences.[i % sentences.Length]
        let wav = Path.Combine(dir, $"u{i:D3}.wav")
        match espeak with
        | Some exe ->
            let psi = ProcessStartInfo(exe, RedirectStandardError = true, UseShellExecute = false)
            for a in [ "-s"; string (130 + 17 * (i % 5)); "-w"; wav; text ] do psi.ArgumentList.Add a
            use p = Process.Start psi
            p.WaitForExit()
            if p.ExitCode <> 0 then failwith $"espeak-ng exited with {p.ExitCode}: {p.StandardError.ReadToEnd().Trim()}"
        | None ->
            // 16-bit 16 kHz mono tone, ~70 ms per character of the sentence.
            let n = 16000 * text.Length * 7 / 100
            use file = File.Create wav
            use w = new BinaryWriter(file)
            let ascii (s: string) = w.Write(Text.Encoding.ASCII.GetBytes s)
            ascii "RIFF"; w.Write(36 + 2 * n); ascii "WAVE"
            ascii "fmt "; w.Write 16; w.Write 1s; w.Write 1s; w.Write 16000; w.Write 32000; w.Write 2s; w.Write 16s
            ascii "data"; w.Write(2 * n)
            for k in 0 .. n - 1 do w.Write(int16 (3000.0 * sin (2.0 * Math.PI * 220.0 * float k / 16000.0)))
        File.WriteAllText(Path.ChangeExtension(wav, ".txt"), text)
    dir, (if espeak.IsSome then "espeak-ng sentences" else "tones (espeak-ng is not installed)")

/// The model whose encoder consumes the batches, and how it is described.
let private loadModel (name: string) (quiet: bool) : MagnetWhisperModel * string =
    if name.Trim().ToLowerInvariant() = "tiny" then
        Output.progress quiet "building a random whisper-tiny as MagnetWhisper (RoPE, no predictors)"
        torch.manual_seed 0L |> ignore
        use whisper = WhisperModel.create (WhisperConfig.preset "tiny")
        let m = MagnetWhisperModel.FromWhisper(whisper, MagnetOptions.Default)
        m.eval()
        m, "whisper-tiny (random weights) as MagnetWhisper"
    elif not (Directory.Exists name) then
        raise (DirectoryNotFoundException $"--model {name}: no such folder (give tiny, a Whisper folder or a MagnetWhisper folder)")
    elif MagnetFormat.isMagnetFolder name then
        Output.progress quiet $"loading {name}"
        MagnetFormat.load name torch.CPU torch.float32, name
    else
        Output.progress quiet $"loading {name} and converting it to MagnetWhisper (no predictors)"
        use whisper = WhisperModel.fromPretrained name torch.CPU torch.float32
        let m = MagnetWhisperModel.FromWhisper(whisper, MagnetOptions.Default)
        m.eval()
        m, $"{name} as MagnetWhisper"

/// Seconds to deliver one epoch with a loader of `workers`, and the utterances and audio seconds delivered.
let private timeLoader (collate: CollateOptions) (batching: BatchingOptions) (workers: int) (batchSize: int) (utterances: Utterance[]) =
    let options = { LoaderOptions.Default with Workers = workers; Ahead = max 4 (2 * batchSize) }
    let loader = BatchLoader(collate, batching, options, utterances)
    let watch = Stopwatch.StartNew()
    for b in loader.Batches(BatchPosition.Start, 0, CancellationToken.None) do
        (b.Batch :> IDisposable).Dispose()
    watch.Elapsed.TotalSeconds, loader.Summary

/// Runs the command: figures on stdout, progress and skipped utterances on stderr.
let run (args: ParseResults<BenchDataArgs>) : int =
    let quiet = args.Contains Quiet
    let workers =
        Args.value "--workers" (fun () ->
            let text = args.GetResult(Workers, defaultValue = "1,2")
            let counts = text.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
            [ for c in counts ->
                  match Int32.TryParse c with
                  | true, n when n >= 1 -> n
                  | _ -> invalidArg "workers" $"'{c}' is not a positive worker count (e.g. 1,2,4)" ])
    Args.require "--workers" (not workers.IsEmpty) "needs at least one worker count"
    let batchSize = args.GetResult(Batch_Size, defaultValue = 8)
    Args.require "--batch-size" (batchSize >= 1) $"must be at least 1, but is {batchSize}"
    let count = args.GetResult(Utterances, defaultValue = 48)
    Args.require "--utterances" (count >= 1) $"must be at least 1, but is {count}"
    Args.require "--utterances" (not (args.Contains Utterances && args.Contains Data)) "sets the size of the built-in corpus: drop it or --data"
    args.TryGetResult Threads |> Option.iter (fun n ->
        Args.require "--threads" (n >= 1) $"must be at least 1, but is {n}"
        torch.set_num_threads n)
    let data = args.TryGetResult Data
    data |> Option.iter (fun d -> if not (Directory.Exists d) then raise (DirectoryNotFoundException $"--data {d}: no such corpus folder"))
    let model, description = loadModel (args.GetResult(Model, defaultValue = "tiny")) quiet
    use model = model
    let folder, what =
        match data with
        | Some d -> d, "corpus"
        | None -> builtInCorpus count quiet
    try
        let ffmpeg = Audio.findFfmpeg ()
        let corpus = Corpora.read CorpusOptions.Default folder
        Output.progress quiet $"measuring the durations of {corpus.Utterances.Length} utterances"
        let corpus = BatchLoader.measure 2 ffmpeg CancellationToken.None corpus
        if corpus.Utterances.Length = 0 then invalidOp $"{folder}: no usable utterance"
        // One phoneme row per count-trained predictor, or one row when there is none (the work of one predictor).
        let kinds = [ for s in model.Options.Predictors -> if s.Targets = NoTargets then NoTarget else Phonemes ]
        let collate = CollateOptions.ForMagnet(model, "en", Transcribe, kinds)
        let collate = if collate.TargetRows.Length = 0 then { collate with TargetRows = [| Phonemes |] } else collate
        let batching = { BatchingOptions.Default with Size = BatchSize.Utterances batchSize; BucketWindow = Some(50 * batchSize) }
        let utterances = corpus.Utterances
        let audio = utterances |> Array.sumBy (fun u -> u.Duration.Value)
        let framesText = match collate.Frames with CutToLongest _ -> "cut to the longest utterance" | FullWindow -> "the full 30 s window"
        printfn "corpus       %d utterances, %.1f s of audio (%s in %s), %d skipped" utterances.Length audio what folder corpus.Skipped.Length
        printfn "batches      %d utterances per batch, bucketed, %d batches; features %s; target rows: %s" batchSize
            (Batching.epoch batching (utterances |> Array.map (fun u -> u.Duration.Value)) 0).Length framesText
            (collate.TargetRows |> Array.map Targets.name |> String.concat ", ")
        printfn "runtime      %d libtorch threads, %d logical CPUs" (torch.get_num_threads ()) Environment.ProcessorCount
        Output.progress quiet "warming up (tokenizer, pronouncing dictionary, JIT)"
        timeLoader collate { batching with Size = BatchSize.Utterances 2 } 1 2 (Array.truncate 2 utterances) |> ignore
        let mutable skipped = corpus.Skipped
        let mutable best = 0.0
        for w in workers do
            Output.progress quiet $"loading one epoch with {w} worker(s)"
            let seconds, summary = timeLoader collate batching w batchSize utterances
            skipped <- Array.append skipped summary.Skipped |> Array.distinct
            let rate = float summary.Utterances / seconds
            best <- max best rate
            printfn "loader       %d worker(s): %6.1f utterances/s, %7.1f audio-s/s (%d utterances in %.2f s)"
                w rate (summary.AudioSeconds / seconds) summary.Utterances seconds
        // The encoder on the same batches (collated once, kept in memory), forward under inference.
        Output.progress quiet "collating the batches once for the encoder"
        let loader = BatchLoader(collate, batching, { LoaderOptions.Default with Workers = List.max workers }, utterances)
        let batches = loader.Batches(BatchPosition.Start, 0, CancellationToken.None) |> Seq.map (fun b -> b.Batch) |> Seq.toArray
        try
            let forward (b: CollatedBatch) = (model.Encode(b.Mel, Some b.FrameMask) :> IDisposable).Dispose()
            Output.progress quiet "timing the encoder"
            forward batches.[0]
            let watch = Stopwatch.StartNew()
            for b in batches do forward b
            let seconds = watch.Elapsed.TotalSeconds
            let delivered = batches |> Array.sumBy (fun b -> b.Ids.Length)
            let consumed = float delivered / seconds
            printfn "encoder      %s forward: %6.1f utterances/s, %7.1f audio-s/s (%d utterances in %.2f s)"
                description consumed ((batches |> Array.sumBy (fun b -> Array.sum b.Durations)) / seconds) delivered seconds
            printfn "margin       the fastest loader delivers %.2f× what the encoder forward consumes (a training step, forward and backward, consumes less)" (best / consumed)
        finally
            for b in batches do (b :> IDisposable).Dispose()
        for s in skipped do eprintfn "skipped      %s: %s" s.Source s.Reason
        if skipped.Length > 0 then 1 else 0
    finally
        if data.IsNone then (try Directory.Delete(folder, true) with _ -> ())
