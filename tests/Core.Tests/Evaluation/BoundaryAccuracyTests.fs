module MagnetWhisper.Tests.Evaluation.BoundaryAccuracyTests

// Boundary precision/recall/F1 against reference times (±tolerance, one-to-one): hand-worked cases, the greedy count
// against an exhaustive maximum matching written here (Kuhn's augmenting paths), the random baseline against an exact
// expectation and a Monte-Carlo estimate written here, and the readers carrying phone alignment paths.

open System
open System.IO
open Expecto
open FsCheck
open FsCheck.FSharp
open MagnetWhisper.Core.Data
open MagnetWhisper.Core.Evaluation
open MagnetWhisper.Tests.Audio.Tools
open MagnetWhisper.Tests.Data.CorpusFixtures

/// Maximum one-to-one matching by augmenting paths over every pair within the tolerance (no ordering argument).
let private maximumMatching (tolerance: float) (predicted: float[]) (reference: float[]) : int =
    let near p r = abs (predicted.[p] - reference.[r]) <= tolerance + 1e-9
    let owner = Array.create reference.Length -1
    let rec augment (p: int) (seen: bool[]) =
        seq { 0 .. reference.Length - 1 }
        |> Seq.exists (fun r ->
            if near p r && not seen.[r] then
                seen.[r] <- true
                if owner.[r] < 0 || augment owner.[r] seen then
                    owner.[r] <- p
                    true
                else false
            else false)
    [ 0 .. predicted.Length - 1 ] |> List.filter (fun p -> augment p (Array.create reference.Length false)) |> List.length

/// Times on a 5 ms grid inside 1 s (ties and exact-tolerance distances are common), unsorted.
type GridTimes = GridTimes of float[]

type GridArbs =
    static member Times() : Arbitrary<GridTimes> =
        Gen.choose (0, 200) |> Gen.map (fun i -> float i * 0.005) |> Gen.arrayOf |> Gen.map GridTimes |> Arb.fromGen

let private config = { FsCheckConfig.defaultConfig with arbitrary = [ typeof<GridArbs> ]; maxTest = 300 }

[<Tests>]
let tests =
    testList "evaluation.boundaries" [
        test "hand-worked precision, recall and F1" {
            // References 0.10, 0.20, 0.30; predictions 0.11, 0.125, 0.29, 0.50 at ±20 ms:
            // 0.10 ↔ 0.11, 0.20 has none in [0.18, 0.22], 0.30 ↔ 0.29 → 2 matched of 4 predicted and 3 references.
            let counts: BoundaryAccuracy.BoundaryCounts =
                { Predicted = 4; Reference = 3
                  Matched = BoundaryAccuracy.matches 0.02 [| 0.50; 0.11; 0.125; 0.29 |] [| 0.30; 0.10; 0.20 |]
                  RandomMatched = 0.0 }
            Expect.equal counts.Matched 2 "matched"
            let p, r = 2.0 / 4.0, 2.0 / 3.0
            Expect.floatClose Accuracy.veryHigh counts.Precision p "precision"
            Expect.floatClose Accuracy.veryHigh counts.Recall r "recall"
            Expect.floatClose Accuracy.veryHigh counts.F1 (2.0 * p * r / (p + r)) "F1 = harmonic mean"
        }

        test "one-to-one: one prediction serves one reference; the maximum matching, not nearest-first" {
            Expect.equal (BoundaryAccuracy.matches 0.02 [| 0.105 |] [| 0.10; 0.11 |]) 1 "a prediction counts once"
            Expect.equal (BoundaryAccuracy.matches 0.02 [| 0.10; 0.11 |] [| 0.105 |]) 1 "a reference counts once"
            // Nearest pair first would take 0.135 ↔ 0.12 (15 ms) and leave 0.10 alone; the maximum pairs
            // 0.10 ↔ 0.12 (20 ms, at the tolerance) and 0.135 ↔ 0.155 (20 ms).
            Expect.equal (BoundaryAccuracy.matches 0.02 [| 0.12; 0.155 |] [| 0.10; 0.135 |]) 2 "two matches"
            Expect.equal (BoundaryAccuracy.matches 0.02 [| 0.121 |] [| 0.10 |]) 0 "21 ms is outside ±20 ms"
            Expect.equal (BoundaryAccuracy.matches 0.02 [||] [| 0.10 |]) 0 "no predictions"
        }

        testPropertyWithConfig config "the greedy count equals an exhaustive maximum matching" (fun (GridTimes p) (GridTimes r) ->
            let p, r = Array.truncate 12 p, Array.truncate 12 r
            BoundaryAccuracy.matches 0.02 p r = maximumMatching 0.02 p r)

        testPropertyWithConfig config "predictions equal to the references give F1 = 1" (fun (GridTimes r) ->
            let r = Array.distinct r
            r.Length = 0
            || (let c: BoundaryAccuracy.BoundaryCounts =
                    { Predicted = r.Length; Reference = r.Length
                      Matched = BoundaryAccuracy.matches 0.02 (Array.rev r) r; RandomMatched = 0.0 }
                c.F1 = 1.0 && c.Precision = 1.0 && c.Recall = 1.0))

        test "random baseline: one boundary among 49 candidates, one reference: expectation 3/49" {
            // Candidates every 20 ms from 0.02 to 0.98; the reference 0.50 is within ±20 ms of 0.48, 0.50, 0.52.
            let candidates = Array.init 49 (fun i -> float (i + 1) * 0.02)
            let draws = 20000
            let mean = BoundaryAccuracy.randomMatches 5 draws 0.02 candidates 1 [| 0.50 |]
            let expected = 3.0 / 49.0
            let se = sqrt (expected * (1.0 - expected) / float draws)
            Expect.isLessThan (abs (mean - expected)) (5.0 * se) $"mean {mean} vs {expected}"
        }

        test "random baseline matches a Monte-Carlo estimate of its own (sampling by random keys, exhaustive matching)" {
            let candidates = Array.init 49 (fun i -> float (i + 1) * 0.02)
            let reference = [| 0.07; 0.13; 0.2; 0.26; 0.41; 0.5; 0.55; 0.62; 0.71; 0.83; 0.9; 0.97 |]
            let k = 10
            let draws = 4000
            let random = Random 2024
            let samples =
                Array.init draws (fun _ ->
                    let keys = candidates |> Array.map (fun c -> random.NextDouble(), c)
                    let chosen = keys |> Array.sortBy fst |> Array.truncate k |> Array.map snd
                    float (maximumMatching 0.02 chosen reference))
            let estimate = Array.average samples
            let variance = samples |> Array.averageBy (fun x -> (x - estimate) ** 2.0)
            let product = BoundaryAccuracy.randomMatches 11 draws 0.02 candidates k reference
            // Both are means of `draws` draws of the same distribution: their difference has variance 2·var/draws.
            let se = sqrt (2.0 * variance / float draws)
            Expect.isLessThan (abs (product - estimate)) (5.0 * se) $"product {product} vs test {estimate}"
            Expect.equal (BoundaryAccuracy.randomMatches 11 draws 0.02 candidates k reference) product "seeded: the same again"
            Expect.equal (BoundaryAccuracy.randomMatches 1 3 0.02 reference reference.Length reference) (float reference.Length)
                "every candidate drawn: every reference matched"
        }

        test "reference boundaries: phone ends but the last, inside the audio; predicted: flags but the forced last" {
            let phones = PhoneAlignment.parse "t" "0.1 pau\n0.2 h\n0.35 ay\n0.5 pau\n"
            Expect.equal (BoundaryAccuracy.referenceBoundaries phones 1.0) [| 0.1; 0.2; 0.35 |] "the end of the utterance is no boundary"
            Expect.equal (BoundaryAccuracy.referenceBoundaries phones 0.3) [| 0.1; 0.2 |] "inside the audio seen"
            let p = BoundaryAccuracy.predictorBoundaries 1 [| 0.02; 0.04; 0.06; 0.08 |] [| false; true; false; true |]
            Expect.equal p.Candidates [| 0.02; 0.04; 0.06 |] "candidates: every position but the last"
            Expect.equal p.Predicted [| 0.04 |] "predicted: the forced last boundary excluded"
        }

        test "corpus counts are sums per layer (micro-average); F1 and random F1 from the sums" {
            let row layer p r m x : BoundaryAccuracy.LayerBoundaryCounts =
                { Layer = layer; Utterances = 1; Counts = { Predicted = p; Reference = r; Matched = m; RandomMatched = x } }
            let total = BoundaryAccuracy.summarize [| [| row 3 4 5 2 1.0; row 1 2 2 2 0.5 |]; [||]; [| row 1 6 8 3 1.5 |] |]
            Expect.equal (total |> List.map _.Layer) [ 1; 3 ] "layer order"
            let l1 = total.Head
            Expect.equal (l1.Utterances, l1.Counts.Predicted, l1.Counts.Reference, l1.Counts.Matched) (2, 8, 10, 5) "sums"
            Expect.floatClose Accuracy.veryHigh l1.Counts.F1 (2.0 * 5.0 / 18.0) "F1 = 2·5 / (8 + 10)"
            Expect.floatClose Accuracy.veryHigh l1.Counts.RandomF1 (2.0 * 2.0 / 18.0) "random F1 = 2·2 / (8 + 10)"
        }

        test "readers carry the alignment: a manifest's \"phones\" and a folder's ID.phones" {
            use dir = new TempDir()
            tone (dir.File "c/a.wav") 0.5 16000 440.0 |> ignore
            tone (dir.File "c/b.wav") 0.5 16000 440.0 |> ignore
            File.WriteAllText(dir.File "c/a.txt", "a")
            File.WriteAllText(dir.File "c/b.txt", "b")
            File.WriteAllText(dir.File "c/a.phones", "0.2 pau\n0.5 a\n")
            let manifest = dir.File "c/manifest.jsonl"
            File.WriteAllLines(manifest, [ """{"audio": "a.wav", "text": "a", "phones": "a.phones"}"""; """{"audio": "b.wav", "text": "b"}""" ])
            let jsonl = JsonlCorpus.read manifest
            Expect.equal (jsonl.Utterances |> Array.map _.Phones) [| Some(Path.Combine(Path.GetDirectoryName(Path.GetFullPath manifest), "a.phones")); None |] "jsonl"
            let folder = FolderCorpus.read (dir.File "c")
            Expect.equal (folder.Utterances |> Array.map (fun u -> u.Id, u.Phones)) [| "a", Some(dir.File "c/a.phones"); "b", None |] "folder"
        }
    ]
