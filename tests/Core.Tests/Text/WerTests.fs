module MagnetWhisper.Tests.Text.WerTests

open Expecto
open MagnetWhisper.Core.Text
open MagnetWhisper.Tests

/// Plain recursive-by-rows Levenshtein distance, the textbook recurrence without backtrace.
let private distance (a: 'T[]) (b: 'T[]) =
    let mutable row = Array.init (b.Length + 1) id
    for i in 1 .. a.Length do
        let next = Array.zeroCreate (b.Length + 1)
        next[0] <- i
        for j in 1 .. b.Length do
            next[j] <- List.min [ row[j] + 1; next[j - 1] + 1; row[j - 1] + (if a[i - 1] = b[j - 1] then 0 else 1) ]
        row <- next
    row[b.Length]

/// Short word sequences over a four-word alphabet, so that hits, substitutions and gaps all occur.
let private wordsOf (picks: int list) =
    picks |> List.truncate 12 |> List.map (fun p -> [| "a"; "b"; "c"; "d" |][abs (p % 4)]) |> Array.ofList

let private expectCounts (r: ErrorRate) (h, s, d, i) message =
    Expect.equal (r.Hits, r.Substitutions, r.Deletions, r.Insertions) (h, s, d, i) message

[<Tests>]
let tests =
    testList "text" [
        testList "wer" [
            testCase "one substitution and one deletion in six words (hand-checked)" <| fun () ->
                let r = Wer.wer "the cat sat on the mat" "the cat sit on mat"
                expectCounts r (4, 1, 1, 0) "counts"
                Expect.equal r.ReferenceLength 6 "N"
                Expect.floatClose Accuracy.veryHigh r.Rate (2.0 / 6.0) "rate"

            testCase "insertions can push WER above one (hand-checked)" <| fun () ->
                let r = Wer.wer "a b c" "a x b c d"
                expectCounts r (3, 0, 0, 2) "two insertions"
                let r = Wer.wer "yes" "no no no"
                expectCounts r (0, 1, 0, 2) "one substitution, two insertions"
                Expect.floatClose Accuracy.veryHigh r.Rate 3.0 "rate 3"

            testCase "empty sides" <| fun () ->
                expectCounts (Wer.wer "a b c" "") (0, 0, 3, 0) "all deleted"
                Expect.equal (Wer.wer "" "").Rate 0.0 "both empty"
                Expect.equal (Wer.wer "  " "a").Rate infinity "only the reference empty"

            testCase "alignment steps (hand-checked)" <| fun () ->
                let steps reference hypothesis =
                    Wer.align reference hypothesis |> List.map (fun s -> s.Operation, s.ReferenceIndex, s.HypothesisIndex)
                Expect.equal (steps [| "a"; "b"; "c" |] [| "a"; "c" |]) [ Hit, 0, 0; Deletion, 1, -1; Hit, 2, 1 ] "b deleted"
                Expect.equal (steps [| "a" |] [| "x"; "a" |]) [ Insertion, -1, 0; Hit, 0, 1 ] "x inserted"
                // two minimal alignments (S S or D … I): the documented preference takes the diagonal
                Expect.equal (steps [| "a"; "b"; "c" |] [| "a"; "c"; "d" |]) [ Hit, 0, 0; Substitution, 1, 1; Substitution, 2, 2 ] "tie"

            testCase "CER of kitten → sitting is 3/6 (hand-checked)" <| fun () ->
                let r = Wer.cer "kitten" "sitting"
                expectCounts r (4, 2, 0, 1) "k→s, e→i, +g"
                Expect.floatClose Accuracy.veryHigh r.Rate 0.5 "rate"
                Expect.equal (Wer.cer " ab c " "ab c").Rate 0.0 "ends trimmed, inner spaces count"
                expectCounts (Wer.cer "ab c" "abc") (3, 0, 1, 0) "a missing space is a deletion"

            testCase "corpus WER sums counts instead of averaging rates (hand-checked)" <| fun () ->
                let r = Wer.corpusWer [ "a b c", "a b c"; "d e", "d" ]
                Expect.equal (r.Errors, r.ReferenceLength) (1, 5) "1 error in 5 words"
                Expect.floatClose Accuracy.veryHigh r.Rate 0.2 "not the mean 0.25"
                Expect.equal (Wer.combine [ Wer.wer "a b c" "a b c"; Wer.wer "d e" "d" ]) r "combine"
                Expect.floatClose Accuracy.veryHigh (Wer.corpusCer [ "ab", "ab"; "cd", "c" ]).Rate 0.25 "corpus CER"
                Expect.equal (Wer.percent r) "20.00" "percent"

            Generators.prop "identical texts have WER 0" <| fun (picks: int list) ->
                let text = wordsOf picks |> String.concat " "
                Expect.equal (Wer.wer text text).Rate 0.0 text
                Expect.equal (Wer.cer text text).Rate 0.0 text

            Generators.prop "errors equal the Levenshtein distance, and the counts add up on both sides" <| fun (a: int list, b: int list) ->
                let reference, hypothesis = wordsOf a, wordsOf b
                let r = Wer.ofSequences reference hypothesis
                Expect.equal r.Errors (distance reference hypothesis) "minimal"
                Expect.equal (r.Hits + r.Substitutions + r.Deletions) reference.Length "reference side"
                Expect.equal (r.Hits + r.Substitutions + r.Insertions) hypothesis.Length "hypothesis side"

            Generators.prop "the edit distance is symmetric and bounded by the lengths" <| fun (a: int list, b: int list) ->
                let reference, hypothesis = wordsOf a, wordsOf b
                let forward, backward = Wer.ofSequences reference hypothesis, Wer.ofSequences hypothesis reference
                Expect.equal forward.Errors backward.Errors "symmetric"
                Expect.isGreaterThanOrEqual forward.Errors (abs (reference.Length - hypothesis.Length)) "at least the length gap"
                Expect.isLessThanOrEqual forward.Errors (max reference.Length hypothesis.Length) "at most the longer length"

            Generators.prop "alignment indices walk both sequences in order" <| fun (a: int list, b: int list) ->
                let reference, hypothesis = wordsOf a, wordsOf b
                let steps = Wer.align reference hypothesis
                let refs = steps |> List.map _.ReferenceIndex |> List.filter (fun i -> i >= 0)
                let hyps = steps |> List.map _.HypothesisIndex |> List.filter (fun i -> i >= 0)
                Expect.equal refs [ 0 .. reference.Length - 1 ] "reference indices"
                Expect.equal hyps [ 0 .. hypothesis.Length - 1 ] "hypothesis indices"
                for s in steps do
                    if s.Operation = Hit then Expect.equal reference[s.ReferenceIndex] hypothesis[s.HypothesisIndex] "hit"
                    if s.Operation = Substitution then Expect.notEqual reference[s.ReferenceIndex] hypothesis[s.HypothesisIndex] "substitution"
        ]
    ]
