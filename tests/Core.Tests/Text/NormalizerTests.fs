module MagnetWhisper.Tests.Text.NormalizerTests

open System.Globalization
open System.Text
open Expecto
open MagnetWhisper.Core.Text
open MagnetWhisper.Tests

/// whisper's tests/test_normalizer.py, `test_number_normalizer`: published input → output pairs that hold for both
/// the number normaliser and the full English normaliser.
let private numberCases =
    [ "two", "2"; "thirty one", "31"; "five twenty four", "524"; "nineteen ninety nine", "1999"; "twenty nineteen", "2019"
      "two point five million", "2500000"; "four point two billions", "4200000000s"; "200 thousand", "200000"
      "200 thousand dollars", "$200000"; "$20 million", "$20000000"; "€52.4 million", "€52400000"
      "£77 thousands", "£77000s"; "two double o eight", "2008"; "three thousand twenty nine", "3029"
      "forty three thousand two hundred sixty", "43260"; "forty three thousand two hundred and sixty", "43260"
      "nineteen fifties", "1950s"; "thirty first", "31st"
      "thirty three thousand and three hundred and thirty third", "33333rd"; "three billion", "3000000000"
      "millions", "1000000s"; "july third twenty twenty", "july 3rd 2020"
      "august twenty sixth twenty twenty one", "august 26th 2021"; "3 14", "3 14"; "3.14", "3.14"; "3 point 2", "3.2"
      "3 point 14", "3.14"; "fourteen point 4", "14.4"; "two point two five dollars", "$2.25"
      "two hundred million dollars", "$200000000"; "$20.1 million", "$20100000"; "ninety percent", "90%"
      "seventy six per cent", "76%"; "double oh seven", "007"; "double zero seven", "007"; "nine one one", "911"
      "nine double one", "911"; "one triple oh one", "10001"; "two thousandth", "2000th"
      "thirty two thousandth", "32000th"; "minus 500", "-500"; "positive twenty thousand", "+20000"
      "two dollars and seventy cents", "$2.70"; "3 cents", "¢3"; "$0.36", "¢36"
      "three euros and sixty five cents", "€3.65"; "three and a half million", "3500000"
      "forty eight and a half dollars", "$48.5"; "b747", "b 747"; "10 th", "10th"; "10th", "10th" ]

/// whisper's `test_text_normalizer`.
let private textCases =
    [ "Let's", "let us"; "he's like", "he is like"; "she's been like", "she has been like"; "10km", "10 km"
      "10mm", "10 mm"; "RC232", "rc 232"
      "Mr. Park visited Assoc. Prof. Kim Jr.", "mister park visited associate professor kim junior" ]

let private isPunctuationOrSymbol (r: Rune) =
    match Rune.GetUnicodeCategory r with
    | UnicodeCategory.ConnectorPunctuation | UnicodeCategory.DashPunctuation | UnicodeCategory.OpenPunctuation
    | UnicodeCategory.ClosePunctuation | UnicodeCategory.InitialQuotePunctuation | UnicodeCategory.FinalQuotePunctuation
    | UnicodeCategory.OtherPunctuation | UnicodeCategory.MathSymbol | UnicodeCategory.CurrencySymbol
    | UnicodeCategory.ModifierSymbol | UnicodeCategory.OtherSymbol -> true
    | _ -> false

[<Tests>]
let tests =
    testList "text" [
        testList "normalizer" [
            testCase "number normaliser: whisper's published cases" <| fun () ->
                for input, expected in numberCases do
                    Expect.equal (Normalizer.englishNumbers input) expected input

            testCase "English normaliser: whisper's published number cases" <| fun () ->
                for input, expected in numberCases do
                    Expect.equal (Normalizer.english input) expected input

            testCase "English normaliser: whisper's published text cases" <| fun () ->
                for input, expected in textCases do
                    Expect.equal (Normalizer.english input) expected input

            testCase "spelling normaliser: whisper's published cases" <| fun () ->
                Expect.equal (Normalizer.englishSpelling "mobilisation") "mobilization" "british"
                Expect.equal (Normalizer.englishSpelling "cancelation") "cancellation" "listed variant"

            // hand-checked, and confirmed with the Python original (leading/trailing spaces are whisper's)
            testCase "English normaliser: brackets, fillers, contractions, spelling, punctuation (hand-checked)" <| fun () ->
                let cases =
                    [ "[MUSIC] Uh, I won't colour it (laughs)!", "i will not color it"
                      "Hmm... we've got twenty one <unk> apples.", " we have got 21 apples"
                      "It costs $5.50, i.e. five fifty", "it costs $5.50 i e 550"
                      "Café Müller's naïve œuvre", "cafe muller is naive oeuvre"
                      "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.",
                      "and so my fellow americans ask not what your country can do for you ask what you can do for your country" ]
                for input, expected in cases do
                    Expect.equal (Normalizer.english input) expected input

            testCase "basic normaliser (hand-checked)" <| fun () ->
                let basic = Normalizer.basic BasicNormalizerOptions.Default
                Expect.equal (basic "Héllo, Wörld! [noise] (laughs) ¿Qué tal?") "héllo wörld qué tal " "symbols to spaces, accents kept"
                let stripped = { BasicNormalizerOptions.Default with RemoveDiacritics = true; SplitLetters = true }
                Expect.equal (Normalizer.basic stripped "Héllo Straße") "h e l l o s t r a s s e" "diacritics removed, letters split"
                // न म स ् त े : the virama and the vowel sign are marks (Mn)
                Expect.equal (basic "नमस्ते") "नमस त " "marks become spaces"
                Expect.equal (Normalizer.basic { BasicNormalizerOptions.Default with PreserveMarks = true } "नमस्ते") "नमस्ते" "marks kept"
                Expect.throws
                    (fun () -> Normalizer.basic { BasicNormalizerOptions.Default with RemoveDiacritics = true; PreserveMarks = true } "x" |> ignore)
                    "incompatible options"

            Generators.prop "English normaliser: never throws, no upper case ASCII, no double white space" <| fun (s: string) ->
                let s = if isNull s then "" else s
                let n = Normalizer.english s
                Expect.isFalse (n |> Seq.exists System.Char.IsAsciiLetterUpper) n
                Expect.isFalse (n.Contains "  ") n

            Generators.prop "basic normaliser: no punctuation or symbols survive, white space collapsed" <| fun (s: string) ->
                let s = if isNull s then "" else s
                let n = Normalizer.basic BasicNormalizerOptions.Default s
                Expect.isFalse (n.EnumerateRunes() |> Seq.exists isPunctuationOrSymbol) n
                Expect.isFalse (n.Contains "  ") n

            Generators.prop "spoken numbers under a thousand become their digits" <| fun (k: int) ->
                let n = abs (k % 999) + 1
                let ones = [| ""; "one"; "two"; "three"; "four"; "five"; "six"; "seven"; "eight"; "nine"; "ten"; "eleven"; "twelve"
                              "thirteen"; "fourteen"; "fifteen"; "sixteen"; "seventeen"; "eighteen"; "nineteen" |]
                let tens = [| ""; ""; "twenty"; "thirty"; "forty"; "fifty"; "sixty"; "seventy"; "eighty"; "ninety" |]
                let below100 m = if m < 20 then ones[m] else (tens[m / 10] + " " + ones[m % 10]).Trim()
                let words = if n < 100 then below100 n else (ones[n / 100] + " hundred " + below100 (n % 100)).Trim()
                let expected = if n = 1 then "one" else string n // whisper writes 1 back as "one"
                Expect.equal (Normalizer.englishNumbers words) expected words
        ]
    ]
