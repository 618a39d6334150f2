module MagnetWhisper.Tests.Data.TargetsTests

// Target counts of a sentence worked out by hand from its CMU dictionary entries, the letter-rule fallback, and the
// row layout of the target matrix that the encoder reads (DECISIONS #3).

open Expecto
open MagnetWhisper.Core.Text
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Data

// "Hello, wonderful world: 21 zorblat boats!" — numbers are spelled out ("twenty-one") before counting.
// CMU entries (first pronunciation):
//   hello      HH AH0 L OW1              4 phonemes, 2 stressed vowels
//   wonderful  W AH1 N D ER0 F AH0 L     8 phonemes, 3
//   world      W ER1 L D                 4 phonemes, 1
//   twenty     T W EH1 N T IY0           6 phonemes, 2
//   one        W AH1 N                   3 phonemes, 1
//   boats      B OW1 T S                 4 phonemes, 1
//   zorblat    not listed: letter rules z o r b l a t = 7 phonemes (one per letter: no digraph, the o is not r-coloured);
//              vowel-letter groups o, a = 2 syllables
// Phonemes 4 + 8 + 4 + 6 + 3 + 7 + 4 = 36; syllables 2 + 3 + 1 + 2 + 1 + 2 + 1 = 12.
// English normaliser: "hello wonderful world 21 zorblat boats" → characters 5 + 9 + 5 + 2 + 7 + 5 = 33, words 6.
let private sentence = "Hello, wonderful world: 21 zorblat boats!"

let private slot layer kind targets = { PredictorSlot.Create(layer, kind, 0.1) with Targets = targets }

[<Tests>]
let tests =
    testList "data.targets" [
        test "a sentence's counts, worked out by hand from its dictionary entries" {
            let count kind = Targets.count PhonemeOptions.Default kind sentence
            Expect.equal (count Phonemes) 36 "phonemes"
            Expect.equal (count Syllables) 12 "syllables"
            Expect.equal (count Characters) 33 "letters and digits of the normalised text"
            Expect.equal (count Words) 6 "words of the normalised text"
            Expect.equal (count NoTarget) 0 "none"
        }

        test "the letter-rule syllables: vowel groups, a silent final e, but not a syllabic -le" {
            Expect.equal (Targets.letterRuleSyllables "make") 1 "a-e: the e is silent"
            Expect.equal (Targets.letterRuleSyllables "table") 2 "a, -ble"
            Expect.equal (Targets.letterRuleSyllables "zorblat") 2 "o, a"
            Expect.equal (Targets.letterRuleSyllables "strengths") 1 "one group"
            Expect.equal (Targets.letterRuleSyllables "the") 1 "at least one"
        }

        test "a column follows the row kinds" {
            let column = Targets.column PhonemeOptions.Default [| Words; Phonemes; NoTarget; Syllables |] sentence
            Expect.equal column [| 6.0f; 36.0f; 0.0f; 12.0f |] "words, phonemes, zeros, syllables"
        }

        test "rows: next-row slots in layer order, a fixed row, and a slot without targets" {
            // BP1 before 1 (next row → 0), BP3 before 2 (no targets), BP1 before 3 (next row → 1); given out of order.
            let slots = [ slot 3 Bp1 NextRow; slot 1 Bp1 NextRow; slot 2 Bp3 NoTargets ]
            Expect.equal (Targets.rowKinds slots [ Phonemes; NoTarget; Words ]) [| Phonemes; Words |] "rows 0 and 1"
            // A fixed row 2 leaves rows 0 and 1 to nobody: zeros.
            Expect.equal (Targets.rowKinds [ slot 0 Bp1 (Row 2) ] [ Syllables ]) [| NoTarget; NoTarget; Syllables |] "row 2"
            Expect.equal (Targets.rowKinds [ slot 0 Bp3 NoTargets ] [ NoTarget ]) [||] "no rows"
        }

        test "rows: mismatches are errors naming the predictor" {
            let e = Expect.throwsC (fun () -> Targets.rowKinds [ slot 2 Bp3 NoTargets ] [ Phonemes ] |> ignore) id
            Expect.stringContains e.Message "encoder layer 2" "names the slot"
            let e = Expect.throwsC (fun () -> Targets.rowKinds [ slot 2 Bp1 NextRow ] [] |> ignore) id
            Expect.stringContains e.Message "1 predictor(s) but 0 target(s)" "counts"
            let e = Expect.throwsC (fun () -> Targets.rowKinds [ slot 1 Bp1 (Row 0); slot 4 Bp2 (Row 0) ] [ Phonemes; Words ] |> ignore) id
            Expect.stringContains e.Message "target row 0" "names the shared row"
            let e = Expect.throwsC (fun () -> Targets.parse "letters" |> ignore) id
            Expect.stringContains e.Message "unknown target 'letters'" "names the bad name"
        }
    ]
