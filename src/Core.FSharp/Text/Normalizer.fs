namespace MagnetWhisper.Core.Text

open System
open System.Globalization
open System.Numerics
open System.Text
open System.Text.Json
open System.Text.RegularExpressions

/// Python-compatible text primitives the normalisers are written in (Python's `str.split`, `\s`, categories).
module internal PyText =
    /// Python's `str.isspace` for one UTF-16 unit: .NET's white space plus the separators U+001C–U+001F.
    let isSpace (c: char) = Char.IsWhiteSpace c || (c >= '\u001C' && c <= '\u001F')

    /// Python's `str.split()`: split on runs of white space, no empty words.
    let split (s: string) : string[] =
        let words = ResizeArray()
        let mutable start = -1
        for i in 0 .. s.Length - 1 do
            if isSpace s[i] then
                if start >= 0 then
                    words.Add(s.Substring(start, i - start))
                    start <- -1
            elif start < 0 then
                start <- i
        if start >= 0 then words.Add(s.Substring start)
        words.ToArray()

    /// Python's Unicode word character: letters, numbers of every kind (², ½ too) and the underscore;
    /// .NET's `\w` differs (no ² or ½, but combining marks).
    let private word = @"[\p{L}\p{N}_]"

    /// A regex written in the Python subset used here, with Python's meaning of `\s` (adds U+001C–U+001F)
    /// and of `\b` (a boundary between Python word and non-word characters).
    let regex (pattern: string) =
        let pattern =
            pattern
                .Replace(@"\s", @"[\s\x1C-\x1F]")
                .Replace(@"\b", $@"(?:(?<={word})(?!{word})|(?<!{word})(?={word}))")
        Regex(pattern, RegexOptions.CultureInvariant)

    /// The text with lone surrogates replaced by U+FFFD, so that Unicode normalisation cannot fail.
    let wellFormed (s: string) =
        let b = StringBuilder(s.Length)
        for r in s.EnumerateRunes() do
            b.Append(r.ToString()) |> ignore
        b.ToString()

    let private isCased (c: char) = Char.IsUpper c || Char.IsLower c || CharUnicodeInfo.GetUnicodeCategory c = UnicodeCategory.TitlecaseLetter

    let private isCaseIgnorable (c: char) =
        match CharUnicodeInfo.GetUnicodeCategory c with
        | UnicodeCategory.NonSpacingMark
        | UnicodeCategory.EnclosingMark
        | UnicodeCategory.Format
        | UnicodeCategory.ModifierLetter
        | UnicodeCategory.ModifierSymbol -> true
        | _ -> c = '\'' || c = '.' || c = ':' || c = '\u2019' || c = '\u00B7'

    /// Python's `str.lower()`: the simple lower case, plus its two special cases: İ → i̇ and a word-final Σ → ς.
    let lower (s: string) : string =
        let b = StringBuilder(s.Length)
        let rec casedAt step i =
            if i < 0 || i >= s.Length then false
            elif isCaseIgnorable s[i] then casedAt step (i + step)
            else isCased s[i]
        for i in 0 .. s.Length - 1 do
            match s[i] with
            | '\u0130' -> b.Append("i\u0307") |> ignore
            | '\u03A3' when casedAt -1 (i - 1) && not (casedAt 1 (i + 1)) -> b.Append '\u03C2' |> ignore
            | c -> b.Append(Char.ToLowerInvariant c) |> ignore
        b.ToString()

    /// The first letter of Python's `unicodedata.category`: M(ark), S(ymbol), P(unctuation) or other.
    let majorCategory (r: Rune) : char =
        match Rune.GetUnicodeCategory r with
        | UnicodeCategory.NonSpacingMark
        | UnicodeCategory.SpacingCombiningMark
        | UnicodeCategory.EnclosingMark -> 'M'
        | UnicodeCategory.MathSymbol
        | UnicodeCategory.CurrencySymbol
        | UnicodeCategory.ModifierSymbol
        | UnicodeCategory.OtherSymbol -> 'S'
        | UnicodeCategory.ConnectorPunctuation
        | UnicodeCategory.DashPunctuation
        | UnicodeCategory.OpenPunctuation
        | UnicodeCategory.ClosePunctuation
        | UnicodeCategory.InitialQuotePunctuation
        | UnicodeCategory.FinalQuotePunctuation
        | UnicodeCategory.OtherPunctuation -> 'P'
        | _ -> '-'

/// Whisper's `EnglishNumberNormalizer`: spelled-out numbers become arabic numbers ("twenty one" → "21"),
/// keeping suffixes ("1960s", "32nd"), moving currency symbols before the number ("$20000000"), turning
/// "percent" into "%", and reading successive digits as a nominal number ("one oh one" → "101").
module internal EnglishNumbers =
    /// A number being built: an integer, or a string once it stops being arithmetic ("007", "3.", "19 90").
    type private Value =
        | Int of BigInteger
        | Str of string

    let private show value =
        match value with
        | Int i -> i.ToString(CultureInfo.InvariantCulture)
        | Str s -> s

    /// Python's `str(value or "")`: empty for no value, for 0 and for "".
    let private showOrEmpty value =
        match value with
        | None -> ""
        | Some(Int i) when i.IsZero -> ""
        | Some v -> show v

    let private zeros = set [ "o"; "oh"; "zero" ]

    let private ones =
        [ "one"; "two"; "three"; "four"; "five"; "six"; "seven"; "eight"; "nine"; "ten"; "eleven"; "twelve"
          "thirteen"; "fourteen"; "fifteen"; "sixteen"; "seventeen"; "eighteen"; "nineteen" ]
        |> List.mapi (fun i name -> name, i + 1)
        |> Map.ofList

    let private onesSuffixed =
        let plural = [ for KeyValue(name, v) in ones -> (if name = "six" then "sixes" else name + "s"), (v, "s") ]
        // Python's rule, kept verbatim: "nine" gives "nineth" (so "ninth" is an ordinary word)
        let regular =
            [ for KeyValue(name, v) in ones do
                  if v > 3 && v <> 5 && v <> 12 then (name + (if name.EndsWith "t" then "h" else "th")), (v, "th") ]
        let irregular =
            [ "zeroth", (0, "th"); "first", (1, "st"); "second", (2, "nd"); "third", (3, "rd"); "fifth", (5, "th")
              "twelfth", (12, "th") ]
        Map.ofList (plural @ irregular @ regular)

    let private tens =
        Map.ofList [ "twenty", 20; "thirty", 30; "forty", 40; "fifty", 50; "sixty", 60; "seventy", 70; "eighty", 80; "ninety", 90 ]

    let private tensSuffixed =
        Map.ofList
            [ for KeyValue(name, v) in tens do
                  yield name.Replace("y", "ies"), (v, "s")
                  yield name.Replace("y", "ieth"), (v, "th") ]

    let private multiplierNames =
        [ "hundred", 2; "thousand", 3; "million", 6; "billion", 9; "trillion", 12; "quadrillion", 15; "quintillion", 18
          "sextillion", 21; "septillion", 24; "octillion", 27; "nonillion", 30; "decillion", 33 ]

    let private multipliers =
        multiplierNames |> List.map (fun (name, e) -> name, BigInteger.Pow(BigInteger 10, e)) |> Map.ofList

    let private multipliersSuffixed =
        Map.ofList
            [ for KeyValue(name, v) in multipliers do
                  yield name + "s", (v, "s")
                  yield name + "th", (v, "th") ]

    let private decimals = Set.unionMany [ Set.ofSeq ones.Keys; Set.ofSeq tens.Keys; zeros ]
    let private precedingPrefixers = Map.ofList [ "minus", "-"; "negative", "-"; "plus", "+"; "positive", "+" ]

    let private followingPrefixers =
        Map.ofList
            [ "pound", "£"; "pounds", "£"; "euro", "€"; "euros", "€"; "dollar", "$"; "dollars", "$"; "cent", "¢"; "cents", "¢" ]

    let private prefixes = set [ '-'; '+'; '£'; '€'; '$'; '¢' ]
    let private specials = set [ "and"; "double"; "triple"; "point" ]

    let private words =
        Set.unionMany
            [ zeros
              Set.ofSeq ones.Keys
              Set.ofSeq onesSuffixed.Keys
              Set.ofSeq tens.Keys
              Set.ofSeq tensSuffixed.Keys
              Set.ofSeq multipliers.Keys
              Set.ofSeq multipliersSuffixed.Keys
              Set.ofSeq precedingPrefixers.Keys
              Set.ofSeq followingPrefixers.Keys
              set [ "per"; "percent" ]
              specials ]

    let private isWord (w: string) = not (isNull w) && words.Contains w
    let private isIn (m: Map<string, _>) (w: string) = not (isNull w) && m.ContainsKey w
    let private arabic = Regex(@"^\d+(\.\d+)?$", RegexOptions.CultureInvariant)
    let private isArabic (w: string) = not (isNull w) && arabic.IsMatch w

    /// Python's `Fraction(s)` for the strings that arise here ("12", "2.5", "3.", ".5"), reduced; None otherwise.
    let private toFraction (value: Value) : (BigInteger * BigInteger) option =
        match value with
        | Int i -> Some(i, BigInteger.One)
        | Str s ->
            let dot = s.IndexOf '.'
            let whole, fraction = if dot < 0 then s, "" else s.Substring(0, dot), s.Substring(dot + 1)
            let digits (t: string) = t |> Seq.forall (fun c -> CharUnicodeInfo.GetDecimalDigitValue c >= 0)
            let parse (t: string) =
                t |> Seq.fold (fun acc c -> acc * BigInteger 10 + BigInteger(CharUnicodeInfo.GetDecimalDigitValue c)) BigInteger.Zero
            if (whole.Length = 0 && fraction.Length = 0) || not (digits whole && digits fraction) then
                None
            else
                let denominator = BigInteger.Pow(BigInteger 10, fraction.Length)
                let numerator = parse whole * denominator + parse fraction
                let g = BigInteger.GreatestCommonDivisor(numerator, denominator)
                let g = if g.IsZero then BigInteger.One else g
                Some(numerator / g, denominator / g)

    /// `value × multiplier` when it is a whole number.
    let private wholeProduct (value: Value) (multiplier: BigInteger) =
        toFraction value
        |> Option.bind (fun (n, d) ->
            let p = n * multiplier
            if (p % d).IsZero then Some(p / d) else None)

    /// Appends a ones digit to a value, as Python's `ones` branch does (`suffix` is "" for a cardinal).
    let private appendOnes (value: Value) (prev: string) (n: int) : Value =
        match value with
        | Str s when isIn tens prev && n < 10 && s.EndsWith "0" -> Str(s.Substring(0, s.Length - 1) + string n)
        | Str _ -> Str(show value + string n)
        | Int _ when isIn ones prev -> Str(show value + string n)
        | Int i when n < 10 && (i % BigInteger 10).IsZero -> Int(i + BigInteger n)
        | Int i when n >= 10 && (i % BigInteger 100).IsZero -> Int(i + BigInteger n)
        | Int _ -> Str(show value + string n)

    /// The word-by-word state machine of `EnglishNumberNormalizer.process_words`.
    let processWords (input: string[]) : string list =
        let output = ResizeArray<string>()
        let mutable prefix: string option = None
        let mutable value: Value option = None
        let mutable skip = false
        let emit (result: string) =
            output.Add((defaultArg prefix "") + result)
            value <- None
            prefix <- None
        let emitValue () =
            match value with
            | Some v -> emit (show v)
            | None -> ()
        for i in 0 .. input.Length - 1 do
            let prev = if i > 0 then input[i - 1] else null
            let current = input[i]
            let next = if i + 1 < input.Length then input[i + 1] else null
            if skip then
                skip <- false
            else
                let nextIsNumeric = isArabic next
                let hasPrefix = prefixes.Contains current[0]
                let withoutPrefix = if hasPrefix then current.Substring 1 else current
                if isArabic withoutPrefix then
                    // arabic numbers, possibly signed or currency-prefixed, possibly decimal
                    match value with
                    | Some(Str s) when s.EndsWith "." -> value <- Some(Str(s + current)) // decimals, IP addresses
                    | _ ->
                        emitValue ()
                        if hasPrefix then prefix <- Some(string current[0])
                        value <-
                            match toFraction (Str withoutPrefix) with
                            | Some(n, d) when d.IsOne -> Some(Int n)
                            | _ -> Some(Str withoutPrefix)
                elif not (words.Contains current) then
                    emitValue ()
                    emit current
                elif zeros.Contains current then
                    value <- Some(Str(showOrEmpty value + "0"))
                elif ones.ContainsKey current then
                    let n = ones[current]
                    value <-
                        match value with
                        | None -> Some(Int(BigInteger n))
                        | Some v -> Some(appendOnes v prev n)
                elif onesSuffixed.ContainsKey current then
                    let n, suffix = onesSuffixed[current]
                    match value with
                    | None -> emit (string n + suffix)
                    | Some v -> emit (show (appendOnes v prev n) + suffix)
                    value <- None
                elif tens.ContainsKey current then
                    let t = tens[current]
                    value <-
                        match value with
                        | None -> Some(Int(BigInteger t))
                        | Some(Int i) when (i % BigInteger 100).IsZero -> Some(Int(i + BigInteger t))
                        | Some v -> Some(Str(show v + string t))
                elif tensSuffixed.ContainsKey current then
                    let t, suffix = tensSuffixed[current]
                    match value with
                    | None -> emit (string t + suffix)
                    | Some(Int i) when (i % BigInteger 100).IsZero -> emit (show (Int(i + BigInteger t)) + suffix)
                    | Some v -> emit (show v + string t + suffix)
                elif multipliers.ContainsKey current then
                    let m = multipliers[current]
                    match value with
                    | None -> value <- Some(Int m)
                    | Some(Int i) when not i.IsZero ->
                        value <- Some(Int(i / BigInteger 1000 * BigInteger 1000 + i % BigInteger 1000 * m))
                    | Some v ->
                        match wholeProduct v m with
                        | Some p -> value <- Some(Int p)
                        | None ->
                            emitValue ()
                            value <- Some(Int m)
                elif multipliersSuffixed.ContainsKey current then
                    let m, suffix = multipliersSuffixed[current]
                    match value with
                    | None -> emit (show (Int m) + suffix)
                    | Some(Int i) -> emit (show (Int(i / BigInteger 1000 * BigInteger 1000 + i % BigInteger 1000 * m)) + suffix)
                    | Some v ->
                        match wholeProduct v m with
                        | Some p -> emit (show (Int p) + suffix)
                        | None ->
                            emitValue ()
                            emit (show (Int m) + suffix)
                    value <- None
                elif precedingPrefixers.ContainsKey current then
                    // a sign applies only if a number follows
                    emitValue ()
                    if isWord next || nextIsNumeric then prefix <- Some precedingPrefixers[current]
                    else emit current
                elif followingPrefixers.ContainsKey current then
                    // a currency applies only after a number
                    match value with
                    | Some v ->
                        prefix <- Some followingPrefixers[current]
                        emit (show v)
                    | None -> emit current
                elif current = "per" || current = "percent" then
                    match value with
                    | Some v when current = "percent" -> emit (show v + "%")
                    | Some v when next = "cent" ->
                        emit (show v + "%")
                        skip <- true
                    | Some v ->
                        emit (show v)
                        emit current
                    | None -> emit current
                elif not (isWord next) && not nextIsNumeric then
                    // "and", "double", "triple" and "point" are special only before a number word
                    emitValue ()
                    emit current
                elif current = "and" then
                    // "and" after hundreds, thousands, … is dropped
                    if not (isIn multipliers prev) then
                        emitValue ()
                        emit current
                elif current = "double" || current = "triple" then
                    if isIn ones next || (not (isNull next) && zeros.Contains next) then
                        let repeats = if current = "double" then 2 else 3
                        let digit = if isIn ones next then ones[next] else 0
                        value <- Some(Str(showOrEmpty value + String.replicate repeats (string digit)))
                        skip <- true
                    else
                        emitValue ()
                        emit current
                elif current = "point" then
                    if (not (isNull next) && decimals.Contains next) || nextIsNumeric then
                        value <- Some(Str(showOrEmpty value + "."))
        emitValue ()
        List.ofSeq output

    let private andAHalf = PyText.regex @"\band\s+a\s+half\b"

    let private halfMultiplier =
        let names = multiplierNames |> List.map fst |> List.sortByDescending String.length |> String.concat "|"
        PyText.regex $@"\b(?:a\s+half\s+|half\s+(?:a\s+)?)({names})\b"

    let private letterDigit = PyText.regex "([a-z])([0-9])"
    let private digitLetter = PyText.regex "([0-9])([a-z])"
    let private spacedSuffix = PyText.regex @"([0-9])\s+(st|nd|rd|th|s)\b"

    /// "<number> and a half" → "<number> point five", "half a million" → "0.5 million", digits apart from letters.
    let preprocess (s: string) : string =
        let segments = andAHalf.Split s
        let pieces =
            [ for i, segment in Array.indexed segments do
                  if segment.Trim().Length > 0 then
                      yield segment
                      if i < segments.Length - 1 then
                          let last = Array.last (PyText.split segment)
                          yield
                              if decimals.Contains last || multipliers.ContainsKey last then "point five"
                              else "and a half" ]
        let s = String.Join(" ", pieces)
        let s = halfMultiplier.Replace(s, "0.5 $1")
        let s = letterDigit.Replace(s, "$1 $2")
        let s = digitLetter.Replace(s, "$1 $2")
        spacedSuffix.Replace(s, "$1$2")

    let private cents = PyText.regex @"([€£$])([0-9]+) (?:and )?¢([0-9]{1,2})\b"
    let private centsOnly = PyText.regex @"[€£$]0.([0-9]{1,2})\b"
    let private one = PyText.regex @"\b1(s?)\b"

    /// "$2 and ¢7" → "$2.07", "$0.36" → "¢36", "1" → "one".
    let postprocess (s: string) : string =
        let s = cents.Replace(s, fun m -> $"{m.Groups[1].Value}{m.Groups[2].Value}.{Int32.Parse m.Groups[3].Value:D2}")
        let s = centsOnly.Replace(s, fun m -> $"¢{Int32.Parse m.Groups[1].Value}")
        one.Replace(s, "one$1")

    /// The whole number normaliser.
    let normalize (s: string) : string =
        let words = preprocess s |> PyText.split |> processWords
        postprocess (String.Join(" ", words))

/// Options of whisper's `BasicTextNormalizer` (the normaliser for languages other than English).
type BasicNormalizerOptions =
    { /// Drop diacritics (category Mn, and œ→oe, ß→ss, …) after NFKD; otherwise marks become spaces after NFKC.
      RemoveDiacritics: bool
      /// Put a space between grapheme clusters (for languages without word spaces, CER-like scoring).
      SplitLetters: bool
      /// Keep combining marks (Brahmic scripts, Thai, vowel points); cannot be combined with `RemoveDiacritics`.
      PreserveMarks: bool }

    /// No diacritic removal, no letter splitting, marks replaced by spaces: whisper's defaults.
    static member Default = { RemoveDiacritics = false; SplitLetters = false; PreserveMarks = false }

/// Whisper's text normalisers (whisper/normalizers), ported rule for rule so that WERs are comparable.
/// Differences: .NET's Unicode tables are used, letters and digits outside the BMP are not word characters
/// for `\b`, and lone surrogates are read as U+FFFD.
[<RequireQualifiedAccess>]
module Normalizer =
    let private additionalDiacritics =
        dict [ "œ", "oe"; "Œ", "OE"; "ø", "o"; "Ø", "O"; "æ", "ae"; "Æ", "AE"; "ß", "ss"; "ẞ", "SS"; "đ", "d"; "Đ", "D"
               "ð", "d"; "Ð", "D"; "þ", "th"; "Þ", "th"; "ł", "l"; "Ł", "L" ]

    /// After NFKD, drops diacritics (category Mn, plus œ→oe, ß→ss, ł→l, …) and replaces other marks, symbols and
    /// punctuation by a space, except the characters in `keep` (whisper's `remove_symbols_and_diacritics`).
    let removeSymbolsAndDiacritics (keep: string) (s: string) : string =
        let b = StringBuilder(s.Length)
        for r in (PyText.wellFormed s).Normalize(NormalizationForm.FormKD).EnumerateRunes() do
            let c = r.ToString()
            match additionalDiacritics.TryGetValue c with
            | _ when keep.Contains c -> b.Append c |> ignore
            | true, replacement -> b.Append replacement |> ignore
            | _ when Rune.GetUnicodeCategory r = UnicodeCategory.NonSpacingMark -> ()
            | _ when PyText.majorCategory r <> '-' -> b.Append ' ' |> ignore
            | _ -> b.Append c |> ignore
        b.ToString()

    /// After NFKC, replaces marks (unless `preserveMarks`), symbols and punctuation by a space (`remove_symbols`).
    let removeSymbols (preserveMarks: bool) (s: string) : string =
        let b = StringBuilder(s.Length)
        for r in (PyText.wellFormed s).Normalize(NormalizationForm.FormKC).EnumerateRunes() do
            match PyText.majorCategory r with
            | 'M' when preserveMarks -> b.Append(r.ToString()) |> ignore
            | '-' -> b.Append(r.ToString()) |> ignore
            | _ -> b.Append ' ' |> ignore
        b.ToString()

    let private brackets = PyText.regex @"[<\[][^>\]]*[>\]]"
    let private parentheses = PyText.regex @"\(([^)]+?)\)"
    let private spaces = PyText.regex @"\s+"

    /// Whisper's `BasicTextNormalizer`: lower-case, drop `[...]`, `<...>` and `(...)`, replace symbols and
    /// punctuation by spaces (see the options), optionally split letters, collapse white space.
    let basic (options: BasicNormalizerOptions) (s: string) : string =
        if options.RemoveDiacritics && options.PreserveMarks then
            invalidArg (nameof options) "PreserveMarks cannot be combined with RemoveDiacritics."
        let s = PyText.lower s
        let s = brackets.Replace(s, "")
        let s = parentheses.Replace(s, "")
        let s =
            if options.RemoveDiacritics then removeSymbolsAndDiacritics "" s
            else removeSymbols options.PreserveMarks s
        let s = PyText.lower s
        let s =
            if options.SplitLetters then
                let clusters = StringInfo.GetTextElementEnumerator s
                let elements = ResizeArray()
                while clusters.MoveNext() do
                    elements.Add(clusters.GetTextElement())
                String.Join(" ", elements)
            else s
        spaces.Replace(s, " ")

    /// Whisper's `EnglishNumberNormalizer` alone: spelled-out numbers to digits ("twenty one" → "21",
    /// "two point five million" → "2500000", "ninety percent" → "90%", "$20 million" → "$20000000").
    let englishNumbers (s: string) : string = EnglishNumbers.normalize s

    let private spellings =
        lazy
            (use stream = Assets.openStream Assets.EnglishSpelling
             use document = JsonDocument.Parse stream
             document.RootElement.EnumerateObject()
             |> Seq.map (fun p -> p.Name, p.Value.GetString())
             |> dict)

    /// Whisper's `EnglishSpellingNormalizer`: British to American spelling, word by word ("mobilisation" →
    /// "mobilization"), words re-joined by single spaces.
    let englishSpelling (s: string) : string =
        let map = spellings.Force()
        PyText.split s
        |> Array.map (fun w ->
            match map.TryGetValue w with
            | true, american -> american
            | _ -> w)
        |> String.concat " "

    let private fillers = PyText.regex @"\b(hmm|mm|mhm|mmm|uh|um)\b"
    let private spaceBeforeApostrophe = PyText.regex @"\s+'"

    let private replacers =
        [ // common contractions
          @"\bwon't\b", "will not"; @"\bcan't\b", "can not"; @"\blet's\b", "let us"; @"\bain't\b", "aint"
          @"\by'all\b", "you all"; @"\bwanna\b", "want to"; @"\bgotta\b", "got to"; @"\bgonna\b", "going to"
          @"\bi'ma\b", "i am going to"; @"\bimma\b", "i am going to"; @"\bwoulda\b", "would have"
          @"\bcoulda\b", "could have"; @"\bshoulda\b", "should have"; @"\bma'am\b", "madam"
          // contractions in titles and prefixes
          @"\bmr\b", "mister "; @"\bmrs\b", "missus "; @"\bst\b", "saint "; @"\bdr\b", "doctor "
          @"\bprof\b", "professor "; @"\bcapt\b", "captain "; @"\bgov\b", "governor "; @"\bald\b", "alderman "
          @"\bgen\b", "general "; @"\bsen\b", "senator "; @"\brep\b", "representative "; @"\bpres\b", "president "
          @"\brev\b", "reverend "; @"\bhon\b", "honorable "; @"\basst\b", "assistant "; @"\bassoc\b", "associate "
          @"\blt\b", "lieutenant "; @"\bcol\b", "colonel "; @"\bjr\b", "junior "; @"\bsr\b", "senior "
          @"\besq\b", "esquire "
          // perfect tenses ("'s done" is ambiguous)
          @"'d been\b", " had been"; @"'s been\b", " has been"; @"'d gone\b", " had gone"; @"'s gone\b", " has gone"
          @"'d done\b", " had done"; @"'s got\b", " has got"
          // general contractions
          @"n't\b", " not"; @"'re\b", " are"; @"'s\b", " is"; @"'d\b", " would"; @"'ll\b", " will"; @"'t\b", " not"
          @"'ve\b", " have"; @"'m\b", " am" ]
        |> List.map (fun (pattern, replacement) -> PyText.regex pattern, replacement)

    let private digitComma = PyText.regex @"(\d),(\d)"
    let private periodNotBeforeDigit = PyText.regex @"\.([^0-9]|$)"
    let private currencyBeforeDigit = PyText.regex @"([$¢€£])\s+([0-9])"
    let private digitBeforePercent = PyText.regex @"([0-9])\s+%"
    let private strayCurrency = PyText.regex @"[.$¢€£]([^0-9])"
    let private strayPercent = PyText.regex @"([^0-9])%"

    /// Whisper's `EnglishTextNormalizer`, the reference for English WER: lower-case; drop `[...]`, `<...>`,
    /// `(...)` and fillers (hmm, mm, mhm, mmm, uh, um); expand contractions and titles ("let's" → "let us",
    /// "mr" → "mister"); remove symbols and diacritics but keep numeric symbols; standardise numbers and
    /// spellings; attach currency and percent signs to their numbers; collapse white space.
    let english (s: string) : string =
        let s = PyText.lower s
        let s = brackets.Replace(s, "")
        let s = parentheses.Replace(s, "")
        let s = fillers.Replace(s, "")
        let s = spaceBeforeApostrophe.Replace(s, "'")
        let s = replacers |> List.fold (fun acc (pattern: Regex, replacement: string) -> pattern.Replace(acc, replacement)) s
        let s = digitComma.Replace(s, "$1$2")
        let s = periodNotBeforeDigit.Replace(s, " $1")
        let s = removeSymbolsAndDiacritics ".%$¢€£" s
        let s = englishNumbers s
        let s = englishSpelling s
        let s = currencyBeforeDigit.Replace(s, "$1$2")
        let s = digitBeforePercent.Replace(s, "$1%")
        let s = strayCurrency.Replace(s, " $1")
        let s = strayPercent.Replace(s, "$1 ")
        spaces.Replace(s, " ")
