module MagnetWhisper.Tests.Data.PrefetchTests

// Prefetch.ordered must deliver results in input order whatever the workers' timing, never run more than the
// configured number of items ahead of its consumer, rethrow a failure at the failing item, and stop queued work
// when the consumer stops.

open System
open System.Threading
open Expecto
open MagnetWhisper.Core.Data

[<Tests>]
let tests =
    testList "data.prefetch" [
        test "results arrive in input order although later items finish first" {
            let delays = [| 40; 1; 30; 0; 20; 5; 0; 10 |]
            let results =
                Prefetch.ordered 3 4 CancellationToken.None (fun _ (i: int) -> Thread.Sleep delays.[i]; i * i) [ 0 .. 7 ]
                |> Seq.toArray
            Expect.equal results [| for i in 0 .. 7 -> i * i |] "squares in input order"
        }

        test "never more than `ahead` items started beyond those consumed, nor more than `workers` running" {
            let started = ref 0
            let running = ref 0
            let maxRunning = ref 0
            let ahead = 3
            let work _ (i: int) =
                Interlocked.Increment started |> ignore
                let now = Interlocked.Increment running
                lock maxRunning (fun () -> maxRunning.Value <- max maxRunning.Value now)
                Thread.Sleep 5
                Interlocked.Decrement running |> ignore
                i
            use e = (Prefetch.ordered 2 ahead CancellationToken.None work [ 1 .. 20 ]).GetEnumerator()
            let mutable consumed = 0
            while e.MoveNext() do
                consumed <- consumed + 1
                Thread.Sleep 10
                // `consumed` delivered, at most `ahead` queued behind them.
                Expect.isLessThanOrEqual started.Value (consumed + ahead) $"started after {consumed} consumed"
            Expect.equal consumed 20 "every item delivered"
            Expect.isLessThanOrEqual maxRunning.Value 2 "at most two workers at a time"
        }

        test "a failure is rethrown (same exception type and message) when the consumer reaches that item" {
            let delivered = Collections.Generic.List<int>()
            let work _ (i: int) = if i = 3 then raise (IO.InvalidDataException "item 3 is corrupt") else i
            let e =
                Expect.throwsC
                    (fun () -> for r in Prefetch.ordered 2 2 CancellationToken.None work [ 0 .. 6 ] do delivered.Add r)
                    id
            Expect.isTrue (e :? IO.InvalidDataException) $"the work's own exception type, got {e.GetType().Name}"
            Expect.equal e.Message "item 3 is corrupt" "the work's own message"
            Expect.equal (List.ofSeq delivered) [ 0; 1; 2 ] "the items before the failure were delivered"
        }

        test "stopping early cancels the work still queued and waits for what runs" {
            let started = ref 0
            let work (ct: CancellationToken) (i: int) =
                Interlocked.Increment started |> ignore
                ct.ThrowIfCancellationRequested()
                Thread.Sleep 2
                i
            let firstTwo = Prefetch.ordered 1 4 CancellationToken.None work (Seq.initInfinite id) |> Seq.take 2 |> Seq.toList
            Expect.equal firstTwo [ 0; 1 ] "the first two"
            let afterStop = started.Value
            Thread.Sleep 50
            Expect.equal started.Value afterStop "nothing starts after the consumer stopped"
            Expect.isLessThanOrEqual afterStop 6 "an infinite source is read only `ahead` items past the consumer"
        }

        test "bad settings are refused with the setting's name" {
            let e = Expect.throwsC (fun () -> Prefetch.ordered 0 1 CancellationToken.None (fun _ x -> x) [ 1 ] |> Seq.iter ignore) id
            Expect.stringContains e.Message "worker" "names the workers"
        }
    ]
