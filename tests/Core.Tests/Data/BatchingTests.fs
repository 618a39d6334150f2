module MagnetWhisper.Tests.Data.BatchingTests

// The batch plan is a pure function of (seed, epoch) and the durations: SplitMix64 matches its published outputs,
// every utterance appears once per epoch, the seconds-per-batch limit holds, bucketing groups similar lengths, and
// resuming from a position yields exactly the batches after it.

open Expecto
open FsCheck
open FsCheck.FSharp
open MagnetWhisper.Core.Data
open MagnetWhisper.Tests.Generators

/// A random plan: durations in (0, 20] s (distinct, in 0.01 s steps), options of either size rule, with or without
/// bucketing and shuffling.
type PlanCase =
    { Durations: float[]
      Options: BatchingOptions
      Epoch: int }

type PlanArbs =
    static member Case() : Arbitrary<PlanCase> =
        gen {
            let! n = Gen.choose (0, 120)
            let! cents = Gen.shuffle [| 1 .. 2000 |]
            let durations = cents |> Array.truncate n |> Array.map (fun c -> float c / 100.0)
            let! seed = Gen.choose (0, 1_000_000)
            let! shuffle = Gen.elements [ true; false ]
            let! bySeconds = Gen.elements [ true; false ]
            let! count = Gen.choose (1, 9)
            let! limit = Gen.choose (5, 80)
            let! window = Gen.elements [ None; Some 1; Some 7; Some 40; Some 1000 ]
            let! epoch = Gen.choose (0, 5)
            return
                { Durations = durations
                  Options =
                    { Seed = int64 seed; Shuffle = shuffle; BucketWindow = window
                      Size = if bySeconds then Seconds(float limit) else Utterances count }
                  Epoch = epoch }
        }
        |> Arb.fromGen

let private planConfig = configWith [ typeof<PlanArbs> ]
let private planProp name (f: PlanCase -> unit) = testPropertyWithConfig planConfig name f

let private noBuckets size = { Seed = 0L; Shuffle = false; Size = size; BucketWindow = None }

[<Tests>]
let tests =
    testList "data.batching" [
        test "SplitMix64 from state 0 gives the published first outputs (Vigna's splitmix64.c)" {
            let g = SplitMix64(0UL)
            let outputs = [ g.Next(); g.Next(); g.Next() ]
            Expect.equal outputs [ 0xE220A8397B1DCDAFUL; 0x6E789E6AA1B965F4UL; 0x06C45D188009454FUL ] "first three outputs"
        }

        test "Below(n) stays in [0, n) and hits every value" {
            let g = SplitMix64(42UL)
            let draws = Array.init 6000 (fun _ -> g.Below 6)
            Expect.isTrue (draws |> Array.forall (fun d -> d >= 0 && d < 6)) "in range"
            // Each face ~1000 times; 800..1200 is more than 6 standard deviations (σ ≈ 29).
            for face, count in Array.countBy id draws do
                Expect.isTrue (count > 800 && count < 1200) $"face {face} drawn {count} times"
        }

        planProp "every utterance appears exactly once per epoch, and the plan is the same when computed again" (fun c ->
            let plan = Batching.epoch c.Options c.Durations c.Epoch
            let flat = Array.concat plan |> Array.sort
            Expect.equal flat (Array.init c.Durations.Length id) "a permutation of the utterances"
            Expect.isTrue (plan |> Array.forall (fun b -> b.Length > 0)) "no empty batch"
            Expect.equal (Batching.epoch c.Options c.Durations c.Epoch) plan "deterministic")

        planProp "the size rule holds: fixed counts, or size × longest ≤ the limit unless one utterance is alone" (fun c ->
            let plan = Batching.epoch c.Options c.Durations c.Epoch
            for batch in plan do
                match c.Options.Size with
                | Utterances count -> Expect.isLessThanOrEqual batch.Length count "at most count utterances"
                | Seconds limit ->
                    let longest = batch |> Array.map (fun i -> c.Durations.[i]) |> Array.max
                    if batch.Length > 1 then
                        Expect.isLessThanOrEqual (float batch.Length * longest) limit "padded seconds within the limit"
                    else Expect.isTrue true "a single utterance may exceed the limit")

        planProp "resuming from any position yields exactly the remaining batches (across epochs)" (fun c ->
            let all = Batching.from c.Options c.Durations BatchPosition.Start 2 |> Seq.toArray
            for k in 0 .. all.Length - 1 do
                let position, _ = all.[k]
                let resumed = Batching.from c.Options c.Durations position 2 |> Seq.toArray
                Expect.equal resumed all.[k..] $"from batch {k} ({position.Epoch}, {position.Batch})"
                let next = Batching.next position (Batching.epoch c.Options c.Durations position.Epoch).Length
                if k + 1 < all.Length then Expect.equal next (fst all.[k + 1]) "next is the following batch's position")

        test "epochs and seeds give different orders; the same (seed, epoch) the same" {
            let p seed epoch = Batching.permutation seed epoch 50
            Expect.notEqual (p 1L 0) (p 1L 1) "epoch 0 vs 1"
            Expect.notEqual (p 1L 0) (p 2L 0) "seed 1 vs 2"
            Expect.equal (p 7L 3) (p 7L 3) "same inputs"
            Expect.equal (Array.sort (p 7L 3)) (Array.init 50 id) "a permutation"
        }

        test "seconds per batch, worked by hand: durations 4 4 3 6 2 with a 10 s limit" {
            // [0] 4 s; +1 → 2 × 4 = 8 ≤ 10; +2 → 3 × 4 = 12 > 10, new batch [2]; +3 → 2 × 6 = 12 > 10, new [3];
            // +4 → 2 × 6 = 12 > 10, new [4].
            let plan = Batching.epoch (noBuckets (Seconds 10.0)) [| 4.0; 4.0; 3.0; 6.0; 2.0 |] 0
            Expect.equal plan [| [| 0; 1 |]; [| 2 |]; [| 3 |]; [| 4 |] |] "greedy in order"
            let alone = Batching.epoch (noBuckets (Seconds 10.0)) [| 12.0; 1.0 |] 0
            Expect.equal alone [| [| 0 |]; [| 1 |] |] "a 12 s utterance alone, never dropped"
        }

        test "bucketing over the whole epoch: batches are runs of the durations sorted longest first" {
            let durations = Array.init 40 (fun i -> float ((i * 17) % 40) + 0.5)
            let options = { Seed = 3L; Shuffle = true; Size = Utterances 4; BucketWindow = Some 40 }
            let plan = Batching.epoch options durations 0
            let sortedDesc = Array.init 40 id |> Array.sortByDescending (fun i -> durations.[i])
            let expected = sortedDesc |> Array.chunkBySize 4 |> Array.map Array.sort |> Array.sort
            Expect.equal (plan |> Array.map Array.sort |> Array.sort) expected "the same groups"
            Expect.notEqual (plan |> Array.map Array.sort) (sortedDesc |> Array.chunkBySize 4 |> Array.map Array.sort) "but in a shuffled order"
        }

        test "without shuffling the corpus order is kept" {
            let plan = Batching.epoch (noBuckets (Utterances 2)) [| 1.0; 2.0; 3.0 |] 4
            Expect.equal plan [| [| 0; 1 |]; [| 2 |] |] "in order"
        }

        test "bad options and unknown durations are errors that say what is wrong" {
            let e = Expect.throwsC (fun () -> Batching.epoch (noBuckets (Utterances 0)) [| 1.0 |] 0 |> ignore) id
            Expect.stringContains e.Message "at least one utterance" "batch size"
            let e = Expect.throwsC (fun () -> Batching.epoch (noBuckets (Seconds 0.0)) [| 1.0 |] 0 |> ignore) id
            Expect.stringContains e.Message "seconds per batch" "limit"
            let e = Expect.throwsC (fun () -> Batching.epoch (noBuckets (Utterances 2)) [| 1.0; nan |] 0 |> ignore) id
            Expect.stringContains e.Message "utterance 1" "names the utterance"
        }
    ]
