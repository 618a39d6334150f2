namespace MagnetWhisper.Core.Data

open System

/// SplitMix64 (Steele, Lea and Flood 2014; Vigna's reference `splitmix64.c`): a specified 64-bit generator, so an
/// epoch's order is the same on every run, machine and .NET version (System.Random's algorithm is unspecified).
[<Sealed>]
type SplitMix64(seed: uint64) =
    let mutable state = seed

    /// One output of the finaliser applied to a state (also a good 64-bit hash).
    static member Mix(z: uint64) : uint64 =
        let z = (z ^^^ (z >>> 30)) * 0xBF58476D1CE4E5B9UL
        let z = (z ^^^ (z >>> 27)) * 0x94D049BB133111EBUL
        z ^^^ (z >>> 31)

    /// The next 64-bit output.
    member _.Next() : uint64 =
        state <- state + 0x9E3779B97F4A7C15UL
        SplitMix64.Mix state

    /// A uniform integer in [0, n), without modulo bias (draws above the largest multiple of n are rejected).
    member this.Below(n: int) : int =
        if n < 1 then invalidArg (nameof n) $"needs a positive bound, got {n}"
        let n64 = uint64 n
        // 2^64 mod n, computed in 64 bits: (2^64 − n) mod n.
        let rejectBelow = (0UL - n64) % n64
        let mutable x = this.Next()
        while x < rejectBelow do
            x <- this.Next()
        int (x % n64)

    /// The generator of one epoch of a seed: the two are hashed together, so epochs are independent streams.
    static member ForEpoch(seed: int64, epoch: int) : SplitMix64 =
        SplitMix64(SplitMix64.Mix(SplitMix64.Mix(uint64 seed) + uint64 epoch))

/// How many utterances a batch holds.
type BatchSize =
    /// A fixed number of utterances (the last batch of an epoch may hold fewer).
    | Utterances of count: int
    /// As many utterances as fit in this many seconds of padded audio: the batch's size times its longest
    /// duration, which bounds the features of a batch cut to its longest utterance (the sum of the durations is
    /// never larger). An utterance longer than the limit gets a batch of its own.
    | Seconds of limit: float

/// How an epoch is cut into batches.
type BatchingOptions =
    { /// The seed of every epoch's order (with the epoch number).
      Seed: int64
      /// False keeps the corpus order (evaluation); true shuffles each epoch.
      Shuffle: bool
      /// A fixed number of utterances, or a padded-seconds limit, per batch.
      Size: BatchSize
      /// Length bucketing: the shuffled order is cut into windows of this many utterances, each window is sorted by
      /// duration and cut into batches, and the batches are shuffled again (as Hugging Face's length-grouped sampler,
      /// with its 50 × batch-size windows). Batches hold utterances of similar length but still vary per epoch.
      /// None: batches follow the shuffled order.
      BucketWindow: int option }

    /// Shuffled batches of 16 utterances, seed 0, bucketed in windows of 800 (50 batches).
    static member Default = { Seed = 0L; Shuffle = true; Size = Utterances 16; BucketWindow = Some 800 }

/// Where a run is in its batches: the next batch to deliver. Saving it with a checkpoint and passing it back gives
/// exactly the batches that were not trained on.
[<Struct>]
type BatchPosition =
    { /// 0-based epoch.
      Epoch: int
      /// 0-based index of the next batch within the epoch.
      Batch: int }

    /// The start of training.
    static member Start = { Epoch = 0; Batch = 0 }

/// Batches of utterance indices: a pure function of the options, the durations and the epoch.
[<RequireQualifiedAccess>]
module Batching =
    /// 0 .. n−1 in the epoch's order: a Fisher–Yates shuffle driven by SplitMix64.ForEpoch(seed, epoch).
    let permutation (seed: int64) (epoch: int) (n: int) : int[] =
        let order = Array.init n id
        let random = SplitMix64.ForEpoch(seed, epoch)
        for i in n - 1 .. -1 .. 1 do
            let j = random.Below(i + 1)
            let t = order.[i]
            order.[i] <- order.[j]
            order.[j] <- t
        order

    /// Cuts indices, in their order, into consecutive batches of the size.
    let private cut (size: BatchSize) (durations: float[]) (indices: int[]) : int[][] =
        match size with
        | Utterances count -> Array.chunkBySize count indices
        | Seconds limit ->
            let batches = ResizeArray<int[]>()
            let current = ResizeArray<int>()
            let mutable longest = 0.0
            for i in indices do
                let d = durations.[i]
                let wouldBe = float (current.Count + 1) * max longest d
                if current.Count > 0 && wouldBe > limit then
                    batches.Add(current.ToArray())
                    current.Clear()
                    longest <- 0.0
                current.Add i
                longest <- max longest d
            if current.Count > 0 then batches.Add(current.ToArray())
            batches.ToArray()

    let private check (options: BatchingOptions) (durations: float[]) =
        match options.Size with
        | Utterances count when count < 1 -> invalidArg "options" $"a batch needs at least one utterance, got {count}"
        | Seconds limit when not (limit > 0.0) -> invalidArg "options" $"the seconds per batch must be positive, got {limit}"
        | _ -> ()
        match options.BucketWindow with
        | Some w when w < 1 -> invalidArg "options" $"the bucketing window needs at least one utterance, got {w}"
        | _ -> ()
        durations
        |> Array.tryFindIndex (fun d -> Double.IsNaN d || d < 0.0)
        |> Option.iter (fun i -> invalidArg "durations" $"utterance {i} has duration {durations.[i]}; durations must be known and non-negative")

    /// The batches of one epoch, as indices into the utterances whose durations (seconds) are given. Every index
    /// appears in exactly one batch. Bucketing sorts each window by duration, longest first (ties keep the shuffled
    /// order), so the order depends on nothing but (seed, epoch) and the durations.
    let epoch (options: BatchingOptions) (durations: float[]) (epoch: int) : int[][] =
        check options durations
        if epoch < 0 then invalidArg (nameof epoch) $"epochs start at 0, got {epoch}"
        let n = durations.Length
        let order = if options.Shuffle then permutation options.Seed epoch n else Array.init n id
        match options.BucketWindow with
        | None -> cut options.Size durations order
        | Some window ->
            let batches =
                order
                |> Array.chunkBySize window
                |> Array.collect (fun w ->
                    // (−duration, place in the window) is a total order: the sort is deterministic though not stable.
                    w |> Array.mapi (fun k i -> k, i) |> Array.sortBy (fun (k, i) -> -durations.[i], k) |> Array.map snd
                    |> cut options.Size durations)
            if not options.Shuffle then batches
            else
                // A second stream of the same epoch orders the batches (so long and short ones alternate at random).
                let batchOrder = permutation (int64 (SplitMix64.Mix(uint64 options.Seed))) epoch batches.Length
                batchOrder |> Array.map (fun b -> batches.[b])

    /// The batches from a position to the end of epoch `lastEpoch` (inclusive), each with its position. Resuming from
    /// the position after a delivered batch yields exactly the batches that followed it.
    let from (options: BatchingOptions) (durations: float[]) (start: BatchPosition) (lastEpoch: int) : seq<BatchPosition * int[]> =
        if start.Epoch < 0 || start.Batch < 0 then invalidArg (nameof start) $"positions start at epoch 0, batch 0; got epoch {start.Epoch}, batch {start.Batch}"
        seq {
            for e in start.Epoch .. lastEpoch do
                let batches = epoch options durations e
                let first = if e = start.Epoch then start.Batch else 0
                for b in first .. batches.Length - 1 do
                    yield { Epoch = e; Batch = b }, batches.[b]
        }

    /// The position after a batch of an epoch that has `batchesInEpoch` batches.
    let next (position: BatchPosition) (batchesInEpoch: int) : BatchPosition =
        if position.Batch + 1 >= batchesInEpoch then { Epoch = position.Epoch + 1; Batch = 0 }
        else { position with Batch = position.Batch + 1 }
