module MagnetWhisper.Tests.Text.TokenizerTests

open System.Text
open Expecto
open MagnetWhisper.Core.Text
open MagnetWhisper.Tests
open MagnetWhisper.Tests.Text

let private multilingual = Tokenizer.load Multilingual
let private english = Tokenizer.load English
let private gpt2Ranks = lazy (TextFixtures.ranks "gpt2.tiktoken")
let private v3 = Tokenizer.load MultilingualV3

/// Hugging Face's published `suppress_tokens` of the multilingual Whisper checkpoints: whisper's
/// non-speech tokens followed by the specials its decoder adds (sot, translate … nospeech).
let private publishedSuppressTokens =
    [ 1; 2; 7; 8; 9; 10; 14; 25; 26; 27; 28; 29; 31; 58; 59; 60; 61; 62; 63; 90; 91; 92; 93; 359; 503; 522; 542; 873
      893; 902; 918; 922; 931; 1350; 1853; 1982; 2460; 2627; 3246; 3253; 3268; 3536; 3846; 3961; 4183; 4667; 6585; 6647
      7273; 9061; 9383; 10428; 10929; 11938; 12033; 12331; 12562; 13793; 14157; 14635; 15265; 15618; 16553; 16604; 18362
      18956; 20075; 21675; 22520; 26130; 26161; 26435; 28279; 29464; 31650; 32302; 32470; 36865; 42863; 47425; 49870
      50254; 50258; 50358; 50359; 50360; 50361; 50362 ]

/// Text built from fragments that stress the pre-tokeniser (contractions, space runs, digits, marks, scripts).
let private fragments =
    [| "a"; "the"; " Hello"; "world"; "'s"; "'re"; "'ll"; "'d"; "'"; "'x"; " "; "  "; "   "; "\n"; "\t"; " \n "; "é"
       "ü"; "日本語"; "дом"; "123"; "4"; "٣"; "!"; "?!"; "..."; "—"; "’"; ","; "ß"; "I"; "ing"; " 2024"; "½"; "😀"; "♪" |]

let private textOf (picks: int list) =
    picks |> List.map (fun p -> fragments[abs (p % fragments.Length)]) |> String.concat ""

/// Code points from all planes (surrogates excluded), so every string is valid UTF-16.
let private validText (codes: int list) =
    codes
    |> List.map (fun c ->
        let c = abs (c % 0x10FFFF)
        let c = if c >= 0xD800 && c <= 0xDFFF then c - 0x800 else c
        Rune(c).ToString())
    |> String.concat ""

[<Tests>]
let tests =
    testList "text" [
        testList "tokenizer" [
            testCase "special ids of the multilingual vocabulary are whisper's published ones" <| fun () ->
                let s = multilingual.Specials
                Expect.equal
                    [ s.EndOfText; s.StartOfTranscript; s.FirstLanguage; s.Translate; s.Transcribe; s.StartOfLm
                      s.StartOfPrev; s.NoSpeech; s.NoTimestamps; s.TimestampBegin ]
                    [ 50257; 50258; 50259; 50358; 50359; 50360; 50361; 50362; 50363; 50364 ]
                    "multilingual specials"
                Expect.equal multilingual.VocabSize 51865 "vocab size"

            testCase "special ids of the English-only vocabulary are one lower" <| fun () ->
                let s = english.Specials
                Expect.equal
                    [ s.EndOfText; s.StartOfTranscript; s.FirstLanguage; s.Transcribe; s.NoTimestamps; s.TimestampBegin ]
                    [ 50256; 50257; 50258; 50358; 50362; 50363 ]
                    ".en specials"
                Expect.equal english.VocabSize 51864 "vocab size"

            testCase "large-v3 adds <|yue|> before the task tokens" <| fun () ->
                let s = v3.Specials
                Expect.equal (Tokenizer.languageToken v3 "yue") 50358 "yue"
                Expect.equal [ s.Translate; s.Transcribe; s.StartOfPrev; s.NoTimestamps ] [ 50359; 50360; 50362; 50364 ] "v3"
                Expect.equal v3.VocabSize 51866 "vocab size"
                Expect.throws (fun () -> Tokenizer.languageToken multilingual "yue" |> ignore) "no yue before v3"

            testCase "every vocabulary ends with <|30.00|>" <| fun () ->
                for t in [ english; multilingual; v3 ] do
                    Expect.equal t.Specials.TimestampEnd (t.VocabSize - 1) $"{t.Kind}"
                    Expect.equal (Tokenizer.decodeWithTimestamps t [ t.Specials.TimestampEnd ]) "<|30.00|>" "last"
                    Expect.equal (Tokenizer.decodeWithTimestamps t [ t.Specials.TimestampBegin + 54 ]) "<|1.08|>" "1.08 s"
                    Expect.equal (VocabKind.OfVocabSize t.VocabSize) t.Kind "kind of size"

            testCase "a Korean sentence round-trips, in fewer multilingual than GPT-2 tokens (whisper's test)" <| fun () ->
                let text = "다람쥐 헌 쳇바퀴에 타고파"
                let gpt2 = Tokenizer.encode english text
                let multi = Tokenizer.encode multilingual text
                Expect.equal (Tokenizer.decode english gpt2) text "gpt2 round trip"
                Expect.equal (Tokenizer.decode multilingual multi) text "multilingual round trip"
                Expect.isGreaterThan gpt2.Length multi.Length "gpt2 needs more tokens"

            testCase "split on unicode (whisper's test)" <| fun () ->
                let words = Tokenizer.splitOnUnicode multilingual [ 8404; 871; 287; 6; 246; 526; 3210; 20378 ]
                Expect.equal (words |> List.map _.Text) [ " elle"; " est"; " l"; "'"; "\uFFFD"; "é"; "rit"; "oire" ] "words"
                Expect.equal (words |> List.map _.Tokens) [ [ 8404 ]; [ 871 ]; [ 287 ]; [ 6 ]; [ 246 ]; [ 526 ]; [ 3210 ]; [ 20378 ] ] "tokens"

            testCase "GPT-2 encodes 'Hello world' as its published ids" <| fun () ->
                Expect.equal (Tokenizer.encode english "Hello world") [| 15496; 995 |] "ids"

            testCase "a single-token word encodes to its rank in the rank file" <| fun () ->
                let ranks = TextFixtures.ranks "multilingual.tiktoken"
                for word in [ " country"; " fellow"; " Americans" ] do
                    let key = Encoding.Latin1.GetString(Encoding.UTF8.GetBytes word)
                    Expect.equal (Tokenizer.encode multilingual word) [| ranks[key] |] word

            testCase "non-speech tokens are the published suppress list without the decoder's specials" <| fun () ->
                let expected = publishedSuppressTokens |> List.filter (fun t -> t < multilingual.Specials.EndOfText)
                Expect.equal (Tokenizer.nonSpeechTokens multilingual |> List.ofArray) expected "non-speech tokens"

            testCase "sot sequences" <| fun () ->
                Expect.equal (Tokenizer.sotSequence multilingual (Some "en") (Some Transcribe) true) [| 50258; 50259; 50359; 50363 |] "en transcribe"
                Expect.equal (Tokenizer.sotSequence multilingual (Some "French") (Some Translate) false) [| 50258; 50265; 50358 |] "fr translate"
                Expect.equal (Tokenizer.sotSequence multilingual None None false) [| 50258 |] "bare"
                Expect.equal (Tokenizer.sotSequence english (Some "en") (Some Transcribe) true) [| 50257; 50362 |] ".en ignores language and task"
                Expect.equal (Tokenizer.languageToken multilingual "mandarin") (Tokenizer.languageToken multilingual "zh") "alias"
                Expect.throws (fun () -> Tokenizer.languageToken multilingual "klingon" |> ignore) "unknown language"

            testCase "languages: 100 unique codes, en first, yue last" <| fun () ->
                let codes = Languages.all |> List.map _.Code
                Expect.equal codes.Length 100 "count"
                Expect.equal (List.distinct codes).Length 100 "unique"
                Expect.equal (codes.Head, List.last codes) ("en", "yue") "order"
                Expect.equal (Languages.tryFind "Castilian" |> Option.map _.Code) (Some "es") "alias lookup"
                Expect.equal multilingual.Languages.Length 99 "99 before v3"

            testCase "special-token text is recognised only when asked" <| fun () ->
                let s = multilingual.Specials
                let ids = Tokenizer.encodeWithSpecials multilingual "<|startoftranscript|><|en|> hi<|0.00|> <|bogus|>"
                let expected = Array.concat [ [| s.StartOfTranscript; s.FirstLanguage |]; Tokenizer.encode multilingual " hi"; [| s.TimestampBegin |]; Tokenizer.encode multilingual " <|bogus|>" ]
                Expect.equal ids expected "with specials"
                let plain = Tokenizer.encode multilingual "<|endoftext|>"
                Expect.isTrue (plain |> Array.forall (fun t -> t < s.EndOfText)) "ordinary encoding has no specials"
                Expect.equal (Tokenizer.decode multilingual plain) "<|endoftext|>" "text kept"

            testCase "decode handles specials as asked" <| fun () ->
                let s = multilingual.Specials
                let ids = Array.concat [ [| s.StartOfTranscript; s.FirstLanguage; s.TimestampBegin + 50 |]; Tokenizer.encode multilingual " Hi"; [| s.EndOfText |] ]
                Expect.equal (Tokenizer.decode multilingual ids) " Hi" "skip all"
                Expect.equal (Tokenizer.decodeWith SkipTimestamps multilingual ids) "<|startoftranscript|><|en|> Hi<|endoftext|>" "whisper decode"
                Expect.equal (Tokenizer.decodeWithTimestamps multilingual ids) "<|startoftranscript|><|en|><|1.00|> Hi<|endoftext|>" "with timestamps"
                Expect.throws (fun () -> Tokenizer.decode multilingual [ multilingual.VocabSize ] |> ignore) "id out of range"

            testCase "a character cut between tokens decodes to U+FFFD" <| fun () ->
                // "é" is C3 A9 in UTF-8: the single-byte tokens of the rank file, one at a time
                let ranks = gpt2Ranks.Value
                let lead, trail = ranks["\u00C3"], ranks["\u00A9"]
                Expect.equal (Tokenizer.decode english [ lead ]) "\uFFFD" "lone lead byte"
                Expect.equal (Tokenizer.decode english [ trail; lead ]) "\uFFFD\uFFFD" "misordered bytes"
                Expect.equal (Tokenizer.decode english [ lead; trail ]) "é" "both bytes"
                Expect.equal (Tokenizer.decode multilingual [ 246 ]) "\uFFFD" "whisper's split: 246 alone is invalid"

            testCase "timestamps convert both ways" <| fun () ->
                Expect.equal (Tokenizer.timestampToken multilingual 1.08) 50418 "1.08 s"
                Expect.equal (Tokenizer.timestampToken multilingual 99.0) multilingual.Specials.TimestampEnd "clamped"
                Expect.floatClose Accuracy.veryHigh (Tokenizer.timestampSeconds multilingual 50418) 1.08 "back"

            testCase "word tokens of an English sentence" <| fun () ->
                let ids = Tokenizer.encode multilingual " Ask not, what your country's"
                let words = Tokenizer.splitToWordTokens multilingual (Some "en") ids
                Expect.equal (words |> List.map _.Text) [ " Ask"; " not"; ","; " what"; " your"; " country's" ] "words"
                Expect.equal (words |> List.collect _.Tokens) (List.ofArray ids) "tokens kept in order"

            Generators.prop "encoding equals a naive tiktoken on BMP text" <| fun (picks: int list) ->
                let text = textOf picks
                Expect.equal (Tokenizer.encode english text |> List.ofArray) (TextFixtures.referenceEncode gpt2Ranks.Value text) text

            Generators.prop "decode (encode s) = s for valid text of any plane" <| fun (codes: int list) ->
                let text = validText codes
                for t in [ english; multilingual ] do
                    Expect.equal (Tokenizer.decode t (Tokenizer.encode t text)) text $"{t.Kind}"

            Generators.prop "decode (encode s) = s with lone surrogates read as U+FFFD" <| fun (s: string) ->
                let s = if isNull s then "" else s
                let expected = Encoding.UTF8.GetString(Encoding.UTF8.GetBytes s)
                Expect.equal (Tokenizer.decode multilingual (Tokenizer.encode multilingual s)) expected "round trip"

            Generators.prop "decoding any ids never throws" <| fun (ids: int list) ->
                let ids = ids |> List.map (fun i -> abs (i % multilingual.VocabSize))
                for handling in [ SkipAll; SkipTimestamps; KeepAll ] do
                    Tokenizer.decodeWith handling multilingual ids |> ignore

            Generators.prop "word tokens partition the ids and the text" <| fun (picks: int list) ->
                let ids = Tokenizer.encode multilingual (textOf picks)
                let words = Tokenizer.splitToWordTokens multilingual (Some "en") ids
                Expect.equal (words |> List.collect _.Tokens) (List.ofArray ids) "ids"
                Expect.equal (words |> List.map _.Text |> String.concat "") (Tokenizer.decodeWithTimestamps multilingual ids) "text"
        ]
    ]
