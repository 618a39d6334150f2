namespace MagnetWhisper.Core.Data

open System
open System.Collections.Generic
open System.IO
open System.Threading
open TorchSharp
open MagnetWhisper.Core.Audio

/// Why an utterance's audio cannot be used: the failures the decoders raise for a file (as opposed to defects).
module internal LoadFailure =
    /// The message of a missing, unreadable, corrupt or unsupported file's exception.
    let (|Unusable|_|) (e: exn) : string option =
        match e with
        | :? IOException
        | :? InvalidDataException
        | :? NotSupportedException
        | :? UnauthorizedAccessException
        | :? InvalidOperationException -> Some e.Message
        | _ -> None

/// How the loader works in the background.
type LoaderOptions =
    { /// Worker tasks that decode, resample and compute log-mel features (at least 1).
      Workers: int
      /// Utterances prepared (or being prepared) ahead of the consumer: the bound of the queue (at least 1).
      Ahead: int
      /// The ffmpeg executable for formats not decoded in-process; None: WAV and FLAC only.
      Ffmpeg: string option
      /// Where the batches' tensors go.
      Device: torch.Device }

    /// Two workers, 64 utterances ahead, ffmpeg from PATH, CPU tensors.
    static member Default = { Workers = 2; Ahead = 64; Ffmpeg = Audio.findFfmpeg (); Device = torch.CPU }

/// One delivered batch.
[<NoEquality; NoComparison>]
type LoadedBatch =
    { /// The position of this batch.
      Position: BatchPosition
      /// The position after it: save this with a checkpoint to resume after this batch.
      Next: BatchPosition
      /// The collated batch (dispose it when done).
      Batch: CollatedBatch
      /// The utterances left out since the previous delivered batch (of this batch, and of batches before it that
      /// ended up empty), each with its file and reason.
      Skipped: Skipped[] }

/// What a loader delivered and left out so far.
type LoadSummary =
    { /// Batches delivered.
      Batches: int
      /// Utterances delivered.
      Utterances: int
      /// Seconds of audio delivered.
      AudioSeconds: float
      /// Planned batches not delivered because every utterance of theirs was left out.
      EmptyBatches: int
      /// Every utterance left out, once each (a bad file is left out again in later epochs but listed once).
      Skipped: Skipped[] }

/// Loads batches of utterances in the background (decode, resample, log-mel on worker tasks with a bounded queue,
/// delivered in order) and collates them. Utterances that cannot be used (unreadable, corrupt, empty or too long
/// audio; empty or too long transcripts) are left out of their batch with their file and reason; a batch left
/// empty is not delivered; nothing stops the run. Every utterance needs a known duration (BatchLoader.measure).
[<Sealed>]
type BatchLoader(collate: CollateOptions, batching: BatchingOptions, options: LoaderOptions, utterances: Utterance[]) =
    do
        if options.Workers < 1 then invalidArg (nameof options) $"the loader needs at least one worker, got {options.Workers}"
        if options.Ahead < 1 then invalidArg (nameof options) $"the loader needs room for at least one utterance ahead, got {options.Ahead}"
        match utterances |> Array.tryFind (fun u -> u.Duration.IsNone) with
        | Some u -> invalidArg (nameof utterances) $"{AudioSource.name u.Audio}: the duration is unknown; measure the corpus first (BatchLoader.measure)"
        | None -> ()

    let durations = utterances |> Array.map (fun u -> Option.get u.Duration)
    let plans = Dictionary<int, int[][]>()
    let gate = obj ()
    let reported = HashSet<int>()
    let skipped = ResizeArray<Skipped>()
    let mutable batches = 0
    let mutable delivered = 0
    let mutable seconds = 0.0
    let mutable empty = 0

    let plan (epoch: int) =
        lock gate (fun () ->
            match plans.TryGetValue epoch with
            | true, p -> p
            | _ ->
                let p = Batching.epoch batching durations epoch
                if plans.Count > 4 then plans.Clear()
                plans.[epoch] <- p
                p)

    /// Decodes and prepares one utterance, or says why it is left out (on a worker task).
    let prepare (_: CancellationToken) (index: int) : Result<PreparedUtterance, Skipped> =
        let u = utterances.[index]
        let source = AudioSource.name u.Audio
        let skip reason = Error { Source = source; Reason = reason }
        match Collate.tokens collate u.Transcript with
        | Error reason -> skip reason
        | Ok tokens ->
            try
                let samples = UtteranceAudio.loadUsing options.Ffmpeg u
                if samples.Length = 0 then skip "the audio holds no samples"
                elif samples.Length > LogMel.NSamples then
                    skip $"%.2f{float samples.Length / float LogMel.SampleRate} s is longer than the {LogMel.ChunkSeconds} s window"
                else Ok(Collate.prepare collate u tokens samples)
            with LoadFailure.Unusable reason -> skip reason

    let record (index: int) (entry: Skipped) =
        lock gate (fun () -> if reported.Add index then skipped.Add entry)

    /// The batches of epoch `epoch` (its plan).
    member _.BatchesIn(epoch: int) : int = (plan epoch).Length

    /// The batches from a position to the end of epoch `lastEpoch` (inclusive), loaded ahead in the background.
    /// Stopping the enumeration stops the workers; `cancel` too.
    member _.Batches(start: BatchPosition, lastEpoch: int, cancel: CancellationToken) : seq<LoadedBatch> =
        let work =
            Batching.from batching durations start lastEpoch
            |> Seq.collect (fun (position, indices) ->
                let next = Batching.next position (plan position.Epoch).Length
                indices |> Seq.mapi (fun k i -> position, next, indices.Length, k, i))
        let prepared =
            Prefetch.ordered options.Workers options.Ahead cancel (fun ct (position, next, size, k, i) -> (position, next, size, k, i), prepare ct i) work
        seq {
            let items = ResizeArray<PreparedUtterance>()
            let left = ResizeArray<Skipped>()
            for (position, next, size, k, i), result in prepared do
                match result with
                | Ok item -> items.Add item
                | Error entry ->
                    left.Add entry
                    record i entry
                if k = size - 1 then
                    if items.Count = 0 then
                        lock gate (fun () -> empty <- empty + 1)
                    else
                        let batch = Collate.stack collate options.Device (items.ToArray())
                        lock gate (fun () ->
                            batches <- batches + 1
                            delivered <- delivered + items.Count
                            seconds <- seconds + Array.sum batch.Durations)
                        let entries = left.ToArray()
                        left.Clear()
                        items.Clear()
                        yield { Position = position; Next = next; Batch = batch; Skipped = entries }
        }

    /// What was delivered and left out so far.
    member _.Summary: LoadSummary =
        lock gate (fun () ->
            { Batches = batches; Utterances = delivered; AudioSeconds = seconds; EmptyBatches = empty
              Skipped = skipped.ToArray() })

/// Durations of utterances whose corpus does not state them.
[<RequireQualifiedAccess>]
module BatchLoader =
    /// Fills in every unknown duration by decoding the audio once (on `workers` background tasks, in order); an
    /// utterance whose audio cannot be decoded or holds no samples moves to the corpus's Skipped with its reason.
    let measure (workers: int) (ffmpeg: string option) (cancel: CancellationToken) (corpus: Corpus) : Corpus =
        let measureOne (_: CancellationToken) (u: Utterance) =
            match u.Duration with
            | Some _ -> Ok u
            | None ->
                let source = AudioSource.name u.Audio
                try
                    let w =
                        match u.Audio with
                        | AudioFile path -> Audio.decodeUsing ffmpeg path
                        | EmbeddedAudio (name, read) -> Audio.decodeBytesUsing ffmpeg name (read ())
                    if w.Length = 0 then Error { Source = source; Reason = "the audio holds no samples" }
                    else Ok { u with Duration = Some w.Duration }
                with LoadFailure.Unusable reason -> Error { Source = source; Reason = reason }
        let results = Prefetch.ordered workers (4 * workers) cancel measureOne corpus.Utterances |> Seq.toArray
        { corpus with
            Utterances = results |> Array.choose (function Ok u -> Some u | Error _ -> None)
            Skipped = Array.append corpus.Skipped (results |> Array.choose (function Error s -> Some s | Ok _ -> None)) }
