module MagnetWhisper.Tests.Synthesis.SentencesTests

// The sentence grammar and the corpus plan, without any engine: seeded determinism, disjoint splits, the held-out
// voice, spelled numbers that Whisper's normaliser reads as the digits a transcript would write.

open System
open System.Text.RegularExpressions
open Expecto
open MagnetWhisper.Core.Synthesis
open MagnetWhisper.Core.Text

/// Voices of all three engines (only their names matter to the plan).
let private voices = Voices.catalogue

[<Tests>]
let tests =
    testList "synthesis.sentences" [
        test "the same seed gives the same sentences; another seed other sentences" {
            let draw seed = [ for i in 0 .. 49 -> Sentences.sentenceFor seed i Sentences.Train ]
            Expect.equal (draw 7L) (draw 7L) "same seed"
            let differing = List.zip (draw 7L) (draw 8L) |> List.filter (fun (a, b) -> a <> b) |> List.length
            Expect.isGreaterThan differing 40 "another seed changes almost every sentence"
        }

        test "utterance i's sentence, voice, rate and pitch do not depend on the corpus size" {
            let (seen, unseen) = Voices.holdOut voices
            let small = SynthCorpus.plan 3L 10 seen unseen
            let large = SynthCorpus.plan 3L 500 seen unseen
            Expect.sequenceEqual large.[0..9] small "the first ten of 500 are the ten of 10"
        }

        test "train, dev and test share no sentence; test-unseen-voice speaks test sentences with a voice no other split hears" {
            let (seen, unseen) = Voices.holdOut voices
            let planned = SynthCorpus.plan 11L 3000 seen unseen
            let textsOf split = planned |> Array.filter (fun u -> u.Split = split) |> Array.map (fun u -> u.Text) |> Set.ofArray
            let train, dev, test, hard = textsOf "train", textsOf "dev", textsOf "test", textsOf "test-unseen-voice"
            // 3000 utterances in a cycle of 10: 7 train, 1 dev, 1 test, 1 test-unseen-voice (counts written out).
            let countOf split = planned |> Array.filter (fun u -> u.Split = split) |> Array.length
            Expect.equal (countOf "train", countOf "dev", countOf "test", countOf "test-unseen-voice") (2100, 300, 300, 300) "split sizes"
            Expect.isEmpty (Set.intersect train dev) "train ∩ dev"
            Expect.isEmpty (Set.intersect train test) "train ∩ test"
            Expect.isEmpty (Set.intersect dev test) "dev ∩ test"
            Expect.isEmpty (Set.intersect hard (Set.union train dev)) "test-unseen-voice ∩ (train ∪ dev)"
            // Variety: the grammar is large enough that the splits are not a handful of sentences repeated.
            Expect.isGreaterThan train.Count 1500 "distinct train sentences"
            let heldOut = unseen.Value
            Expect.equal heldOut.Speaker "flite-awb" "the preferred held-out voice"
            for u in planned do
                if u.Split = "test-unseen-voice" then Expect.equal u.Delivery.Voice heldOut $"{u.Id} is spoken by the held-out voice"
                else Expect.notEqual u.Delivery.Voice heldOut $"{u.Id} ({u.Split}) never hears the held-out voice"
        }

        test "every engine speaks a share of the seen utterances; rates and pitches stay in their ranges" {
            let (seen, unseen) = Voices.holdOut voices
            let planned = SynthCorpus.plan 5L 900 seen unseen
            for engine in Engine.all do
                let n = planned |> Array.filter (fun u -> u.Delivery.Voice.Engine = engine) |> Array.length
                // Engines drawn uniformly: about 900/3 each (the held-out flite voice adds 90 to flite).
                Expect.isGreaterThan n 200 $"{Engine.command engine} speaks {n} of 900"
            for u in planned do
                let lo, hi = u.Delivery.Voice.Pitch
                Expect.isTrue (u.Delivery.Rate >= 0.85 && u.Delivery.Rate <= 1.2) $"{u.Id} rate {u.Delivery.Rate}"
                Expect.isTrue (u.Delivery.Pitch >= lo && u.Delivery.Pitch <= hi) $"{u.Id} pitch {u.Delivery.Pitch} in [{lo}, {hi}]"
        }

        test "with one voice there is nothing to hold out: those utterances become test" {
            let one = [ voices.Head ]
            let (seen, unseen) = Voices.holdOut one
            Expect.isNone unseen "no held-out voice"
            let planned = SynthCorpus.plan 0L 20 seen unseen
            Expect.isFalse (planned |> Array.exists (fun u -> u.Split = "test-unseen-voice")) "no test-unseen-voice"
            Expect.equal (planned |> Array.filter (fun u -> u.Split = "test") |> Array.length) 4 "2 test + 2 moved"
        }

        test "sentences are lower-case words only; capitalised and punctuated as Whisper writes them they normalise alike" {
            let (seen, unseen) = Voices.holdOut voices
            for u in SynthCorpus.plan 2L 400 seen unseen do
                Expect.isTrue (Regex.IsMatch(u.Text, "^[a-z]+( [a-z]+)*$")) $"'{u.Text}' is lower-case words"
                let written = string (Char.ToUpperInvariant u.Text.[0]) + u.Text.Substring 1 + "."
                Expect.equal (Normalizer.english written) (Normalizer.english u.Text) $"'{u.Text}'"
        }

        test "counts are spelled so that the normaliser gives the digits a transcript would write" {
            // By hand: 19 → nineteen, 40 → forty, 45 → forty five (no hyphen), 99 → ninety nine.
            Expect.equal (Sentences.spell 19) "nineteen" "19"
            Expect.equal (Sentences.spell 40) "forty" "40"
            Expect.equal (Sentences.spell 45) "forty five" "45"
            Expect.equal (Sentences.spell 99) "ninety nine" "99"
            for n in 2 .. 99 do
                Expect.equal (Normalizer.english $"set a timer for {Sentences.spell n} minutes") $"set a timer for {n} minutes" $"{n}"
        }
    ]
