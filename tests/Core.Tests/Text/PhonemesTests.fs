module MagnetWhisper.Tests.Text.PhonemesTests

open System
open Expecto
open MagnetWhisper.Core.Text
open MagnetWhisper.Tests.Text

let private jfk =
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."

let private espeakAvailable =
    lazy
        (Environment.GetEnvironmentVariable("PATH").Split(IO.Path.PathSeparator)
         |> Array.exists (fun dir -> IO.File.Exists(IO.Path.Combine(dir, "espeak-ng"))))

[<Tests>]
let tests =
    testList "text" [
        testList "phonemes" [
            testCase "dictionary words count their first pronunciation" <| fun () ->
                for word in [ "and"; "americans"; "for"; "your"; "country"; "what" ] do
                    let r = Phonemes.count word
                    Expect.equal r.Total TextFixtures.cmu.Value[word].Length word
                    Expect.equal (r.Words |> List.map _.Pronunciation) [ List.ofArray TextFixtures.cmu.Value[word] ] word

            testCase "the JFK sentence: every word from the dictionary, punctuation not counted" <| fun () ->
                let expected =
                    TextFixtures.dictionaryCount
                        "and so my fellow americans ask not what your country can do for you ask what you can do for your country"
                let r = Phonemes.count jfk
                Expect.equal r.Total expected "total"
                Expect.isEmpty r.OutOfVocabulary "no OOV"
                Expect.equal r.Words.Length 22 "22 words"

            testCase "numbers are spelled out as g2p_en does (hand-checked)" <| fun () ->
                let cases =
                    [ "I have $250 in my pocket.", "I have two hundred fifty dollars in my pocket."
                      "In 1999 and 2005 and 1900 and 1905", "In nineteen ninety-nine and two thousand five and nineteen hundred and nineteen oh five"
                      "the 21st of 1,000,000", "the twenty-first of one million"
                      "$2.50 or £3 or 3.14", "two dollars, fifty cents or three pounds or three point fourteen"
                      "42 and 3000 and 0", "forty-two and three thousand and zero" ]
                for input, expected in cases do
                    Expect.equal (Phonemes.spellOutNumbers input) expected input
                let r = Phonemes.count "$250"
                Expect.equal r.Total (TextFixtures.dictionaryCount "two hundred fifty dollars") "spelled-out count"
                Expect.equal (Phonemes.countWith { PhonemeOptions.Default with SpellOutNumbers = false } "$250").Total 0 "digits alone count nothing"

            testCase "words are lower-cased letters and apostrophes" <| fun () ->
                Expect.equal (Phonemes.words true "Don’t tell 'em, i.e. Zoë's—well-known") [ "don't"; "tell"; "'em"; "that"; "is"; "zoe's"; "well"; "known" ] "words"

            testCase "a possessive missing from the dictionary counts its stem plus the 's" <| fun () ->
                let cmu = TextFixtures.cmu.Value
                let stem =
                    cmu.Keys
                    |> Seq.find (fun w -> w.Length > 3 && Seq.forall Char.IsAsciiLetterLower w && Array.last cmu[w] = "K" && not (cmu.ContainsKey(w + "'s")))
                let r = Phonemes.count (stem + "'s")
                Expect.equal r.Total (cmu[stem].Length + 1) $"{stem}'s: stem + S"
                Expect.equal r.OutOfVocabulary [ stem + "'s" ] "reported as OOV"

            testCase "unknown words use the letter rules and are reported" <| fun () ->
                let r = Phonemes.count "the zorbling"
                Expect.equal r.OutOfVocabulary [ "zorbling" ] "OOV"
                Expect.equal (r.Words |> List.map _.Source) [ CmuDict; LetterRules ] "sources"
                Expect.equal r.Total (TextFixtures.cmu.Value["the"].Length + Phonemes.letterRulesCount "zorbling") "total"

            testCase "letter rules approximate the dictionary's counts" <| fun () ->
                // every 7th purely alphabetic dictionary word; the rules never see the dictionary
                let sample =
                    TextFixtures.cmu.Value
                    |> Seq.filter (fun kv -> Seq.forall Char.IsAsciiLetterLower kv.Key)
                    |> Seq.mapi (fun i kv -> i, kv)
                    |> Seq.filter (fun (i, _) -> i % 7 = 0)
                    |> Seq.map (fun (_, kv) -> Phonemes.letterRulesCount kv.Key - kv.Value.Length)
                    |> Seq.toArray
                let meanAbs = sample |> Array.averageBy (fun e -> float (abs e))
                let bias = sample |> Array.averageBy float
                let withinOne = float (sample |> Array.filter (fun e -> abs e <= 1) |> Array.length) / float sample.Length
                Expect.isGreaterThan sample.Length 15000 "sample size"
                Expect.isLessThan meanAbs 0.3 "mean absolute error"
                Expect.isLessThan (abs bias) 0.1 "bias"
                Expect.isGreaterThan withinOne 0.97 "share within one phoneme"

            testCase "espeak-ng counts unknown words when asked and falls back when missing" <| fun () ->
                let missing = Phonemes.countWith { PhonemeOptions.Default with Fallback = UseEspeak "/nonexistent/espeak-ng" } "zorbling"
                Expect.equal (missing.Words |> List.map _.Source) [ LetterRules ] "fallback"
                if not espeakAvailable.Value then
                    skiptest "espeak-ng is not installed"
                let r = Phonemes.countWith { PhonemeOptions.Default with Fallback = UseEspeak "espeak-ng" } "the zorbling"
                Expect.equal (r.Words |> List.map _.Source) [ CmuDict; EspeakNg ] "sources"
                Expect.isGreaterThanOrEqual r.Words[1].Count 5 "z-o-r-b-l-i-ng has at least five phonemes"
                Expect.isLessThanOrEqual r.Words[1].Count 8 "and at most eight"

            testCase "empty and punctuation-only texts count zero" <| fun () ->
                for text in [ ""; "   "; "?!, ..."; "'" ] do
                    Expect.equal (Phonemes.count text).Total 0 text
        ]
    ]
