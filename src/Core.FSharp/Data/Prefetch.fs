namespace MagnetWhisper.Core.Data

open System
open System.Collections.Generic
open System.Runtime.ExceptionServices
open System.Threading
open System.Threading.Tasks

/// Work done ahead of its consumer: decoding, resampling and feature extraction run on background tasks while the
/// model trains on the previous batch.
module Prefetch =
    /// Maps `work` over `items` on at most `workers` background tasks, keeping at most `ahead` results (finished or
    /// running) ahead of the consumer, and yields the results in the order of `items`. An exception in `work`
    /// is rethrown, with its own stack, when the consumer reaches that item (so `work` that should skip bad items
    /// returns a Result instead). Stopping the enumeration early cancels the token passed to the work still
    /// queued; `cancel` stops everything.
    let ordered (workers: int) (ahead: int) (cancel: CancellationToken) (work: CancellationToken -> 'a -> 'b) (items: 'a seq) : 'b seq =
        if workers < 1 then invalidArg (nameof workers) $"needs at least one worker, got {workers}"
        if ahead < 1 then invalidArg (nameof ahead) $"needs room for at least one result ahead, got {ahead}"
        seq {
            use stop = CancellationTokenSource.CreateLinkedTokenSource cancel
            use slots = new SemaphoreSlim(workers)
            use source = items.GetEnumerator()
            let pending = Queue<Task<'b>>()
            let start (item: 'a) =
                Task.Run<'b>(fun () ->
                    task {
                        do! slots.WaitAsync stop.Token
                        try return work stop.Token item
                        finally slots.Release() |> ignore
                    })
            let fill () =
                while pending.Count < ahead && source.MoveNext() do
                    pending.Enqueue(start source.Current)
            try
                fill ()
                while pending.Count > 0 do
                    let next = pending.Dequeue()
                    let result =
                        try next.GetAwaiter().GetResult()
                        with e -> ExceptionDispatchInfo.Capture(e).Throw(); Unchecked.defaultof<'b>
                    fill ()
                    yield result
            finally
                stop.Cancel()
                // The work already running must finish before the semaphore and token it uses are disposed.
                for t in pending do
                    try t.Wait() with _ -> ()
        }
