namespace MagnetWhisper.Core.Text

open System
open System.Collections.Concurrent
open System.Collections.Generic
open System.Diagnostics
open System.Globalization
open System.IO
open System.Numerics
open System.Text
open System.Text.RegularExpressions
open System.Threading.Tasks

/// Where the phonemes of a word came from.
type PronunciationSource =
    /// The CMU pronouncing dictionary (its first pronunciation).
    | CmuDict
    /// The CMU dictionary entry of the stem plus one phoneme for a possessive `'s`.
    | CmuDictPossessive
    /// The deterministic letter-to-sound approximation (an estimate of the count only).
    | LetterRules
    /// espeak-ng's phonemes (IPA).
    | EspeakNg

/// How to count words that the dictionary lacks.
type OovFallback =
    /// Letter-to-sound rules: deterministic, no external program.
    | UseLetterRules
    /// Run this espeak-ng executable (e.g. "espeak-ng", looked up on PATH); words it cannot do fall back to the
    /// letter rules, and PhonemeCount.Warnings says which and why.
    | UseEspeak of command: string

/// Options of the phoneme counter.
type PhonemeOptions =
    { /// Spell out numbers, currency and ordinals first ("$5" → "5 dollars" → "five dollars"), as g2p_en does.
      SpellOutNumbers: bool
      /// Counting of out-of-vocabulary words.
      Fallback: OovFallback
      /// How long one espeak-ng run may take before it is stopped and the word falls back to the letter rules.
      EspeakTimeout: TimeSpan }

    /// Numbers spelled out, letter rules for unknown words, 10 s for an espeak-ng run.
    static member Default = { SpellOutNumbers = true; Fallback = UseLetterRules; EspeakTimeout = TimeSpan.FromSeconds 10.0 }

/// The phonemes of one word.
type WordPhonemes =
    { /// The normalised word (lower case, letters and apostrophes).
      Word: string
      /// Number of phonemes.
      Count: int
      /// ARPAbet phonemes with stress digits (dictionary), IPA segments (espeak-ng), empty for letter rules.
      Pronunciation: string list
      /// Where they came from.
      Source: PronunciationSource }

/// The phoneme count of a text.
type PhonemeCount =
    { /// Total number of phonemes.
      Total: int
      /// Every word in order.
      Words: WordPhonemes list
      /// The words the dictionary lacks, in order of appearance (repeats included).
      OutOfVocabulary: string list
      /// Why words were counted by the letter rules although espeak-ng was asked for, one line per distinct
      /// problem naming the command and the words ("espeak-ng: exited with code 1: …; letter rules used for
      /// zorbling"). Empty when espeak-ng was not asked for or did every word. Print these to the user.
      Warnings: string list }

/// Spells out numbers as g2p_en's `normalize_numbers` does (after tacotron): commas in numbers dropped,
/// "£5" → "5 pounds", "$2.50" → "2 dollars, 50 cents", "3.14" → "3 point 14", "21st" → "twenty-first",
/// years read in pairs ("1999" → "nineteen ninety-nine"), other numbers as cardinals without "and".
module internal NumberWords =
    let private small =
        [| "zero"; "one"; "two"; "three"; "four"; "five"; "six"; "seven"; "eight"; "nine"; "ten"; "eleven"; "twelve"
           "thirteen"; "fourteen"; "fifteen"; "sixteen"; "seventeen"; "eighteen"; "nineteen" |]

    let private tensWords = [| ""; ""; "twenty"; "thirty"; "forty"; "fifty"; "sixty"; "seventy"; "eighty"; "ninety" |]

    let private scales =
        [| ""; "thousand"; "million"; "billion"; "trillion"; "quadrillion"; "quintillion"; "sextillion"; "septillion"
           "octillion"; "nonillion"; "decillion" |]

    /// 0–99 in words ("forty-two").
    let private belowHundred n =
        if n < 20 then small[n]
        elif n % 10 = 0 then tensWords[n / 10]
        else $"{tensWords[n / 10]}-{small[n % 10]}"

    /// 1–999 in words without "and" ("one hundred twenty-three").
    let private belowThousand n =
        if n < 100 then belowHundred n
        elif n % 100 = 0 then $"{small[n / 100]} hundred"
        else $"{small[n / 100]} hundred {belowHundred (n % 100)}"

    /// A cardinal in words; beyond the decillions, digit by digit.
    let cardinal (digits: string) : string =
        let digits = digits.TrimStart '0'
        if digits.Length = 0 then "zero"
        elif digits.Length > 3 * scales.Length then
            digits |> Seq.map (fun c -> small[int c - int '0']) |> String.concat " "
        else
            let n = BigInteger.Parse(digits, CultureInfo.InvariantCulture)
            [ for scale in scales.Length - 1 .. -1 .. 0 do
                  let group = int (n / BigInteger.Pow(BigInteger 1000, scale) % BigInteger 1000)
                  if group > 0 then
                      yield if scale = 0 then belowThousand group else $"{belowThousand group} {scales[scale]}" ]
            |> String.concat " "

    /// The ordinal of a cardinal in words ("twenty-one" → "twenty-first").
    let ordinal (words: string) : string =
        let cut = max (words.LastIndexOf ' ') (words.LastIndexOf '-') + 1
        let head, last = words.Substring(0, cut), words.Substring cut
        let last =
            match last with
            | "one" -> "first"
            | "two" -> "second"
            | "three" -> "third"
            | "five" -> "fifth"
            | "eight" -> "eighth"
            | "nine" -> "ninth"
            | "twelve" -> "twelfth"
            | w when w.EndsWith "y" -> w.Substring(0, w.Length - 1) + "ieth"
            | w -> w + "th"
        head + last

    /// g2p_en's `_expand_number`: years 1001–2999 in pairs, other numbers as cardinals.
    let private number (digits: string) : string =
        let trimmed = digits.TrimStart '0'
        let n = if trimmed.Length > 0 && trimmed.Length <= 9 then int trimmed else 0
        if n > 1000 && n < 3000 then
            if n = 2000 then "two thousand"
            elif n > 2000 && n < 2010 then "two thousand " + cardinal (string (n % 100))
            elif n % 100 = 0 then cardinal (string (n / 100)) + " hundred"
            elif n % 100 < 10 then $"{cardinal (string (n / 100))} oh {cardinal (string (n % 100))}"
            else $"{cardinal (string (n / 100))} {cardinal (string (n % 100))}"
        else
            cardinal digits

    let private dollars (amount: string) =
        let parts = amount.Split '.'
        let value (s: string) = if s.Length = 0 then BigInteger.Zero else BigInteger.Parse(s.Replace(",", ""), CultureInfo.InvariantCulture)
        if parts.Length > 2 then
            amount + " dollars"
        else
            let whole = value parts[0]
            let cents = if parts.Length > 1 then value parts[1] else BigInteger.Zero
            let dollarUnit = if whole.IsOne then "dollar" else "dollars"
            let centUnit = if cents.IsOne then "cent" else "cents"
            match whole.IsZero, cents.IsZero with
            | false, false -> $"{whole} {dollarUnit}, {cents} {centUnit}"
            | false, true -> $"{whole} {dollarUnit}"
            | true, false -> $"{cents} {centUnit}"
            | true, true -> "zero dollars"

    let private commaNumber = Regex(@"([0-9][0-9,]+[0-9])", RegexOptions.CultureInvariant)
    let private pounds = Regex(@"£([0-9,]*[0-9]+)", RegexOptions.CultureInvariant)
    let private dollarAmount = Regex(@"\$([0-9.,]*[0-9]+)", RegexOptions.CultureInvariant)
    let private decimalNumber = Regex(@"([0-9]+\.[0-9]+)", RegexOptions.CultureInvariant)
    let private ordinalNumber = Regex(@"([0-9]+)(st|nd|rd|th)", RegexOptions.CultureInvariant)
    let private plainNumber = Regex(@"[0-9]+", RegexOptions.CultureInvariant)

    /// Every number of a text in words.
    let spellOut (text: string) : string =
        let text = commaNumber.Replace(text, fun m -> m.Groups[1].Value.Replace(",", ""))
        let text = pounds.Replace(text, "$1 pounds")
        let text = dollarAmount.Replace(text, fun m -> dollars m.Groups[1].Value)
        let text = decimalNumber.Replace(text, fun m -> m.Groups[1].Value.Replace(".", " point "))
        let text = ordinalNumber.Replace(text, fun m -> ordinal (cardinal m.Groups[1].Value))
        plainNumber.Replace(text, fun m -> number m.Value)

/// An approximate letter-to-sound count for words the dictionary lacks. Not a pronunciation: it counts
/// vowel groups (with a few two-vowel hiatus pairs, r-coloured vowels as one phoneme, silent final e/es/ed)
/// and consonant letters (digraphs ch, sh, th, ph, wh, ck, ng, tch, dg as one; x and qu as two; doubled
/// letters as one; silent gh, initial kn/gn/wr/ps/pn, final mb). On the dictionary's own words it is within one
/// phoneme of the true count for most words (see the tests).
module internal LetterRules =
    let private isVowel (c: char) = "aeiou".Contains c

    /// Whether each letter acts as a vowel: a e i o u; y unless word-initial before a vowel; w after o or e,
    /// or after a/u when no vowel follows (the glides of aw, ew, ow, uw).
    let private vowelMask (w: string) =
        let mask = Array.zeroCreate w.Length
        for i in 0 .. w.Length - 1 do
            let nextIsVowel = i + 1 < w.Length && isVowel w[i + 1]
            mask[i] <-
                match w[i] with
                | c when isVowel c -> true
                | 'y' -> not (i = 0 && nextIsVowel)
                | 'w' when i > 0 && mask[i - 1] && w[i - 1] <> 'w' && w[i - 1] <> 'y' ->
                    w[i - 1] = 'o' || w[i - 1] = 'e' || not nextIsVowel
                | _ -> false
        mask

    /// Phonemes of a vowel group that starts at `start` (hiatus pairs such as "io", "ia", "eo" count twice,
    /// except after c, t, s, x, g as in "nation", "special", "region").
    let private vowelGroupCount (w: string) start stop =
        let palatal = start > 0 && "ctsxg".Contains w[start - 1]
        let mutable count = 1
        for i in start .. stop - 2 do
            let pair = w.Substring(i, 2)
            let hiatus = [ "ia"; "io"; "iu"; "eo"; "ua"; "uo"; "ao"; "ii" ] |> List.contains pair
            if hiatus && not (palatal && i = start) then count <- count + 1
        count

    /// Estimated number of phonemes of a lower-case word.
    let count (word: string) : int =
        let w = String(word.ToLowerInvariant() |> Seq.filter (fun c -> c >= 'a' && c <= 'z') |> Seq.toArray)
        let n = w.Length
        if n = 0 then 0
        else
            let vowel = vowelMask w
            let groupsBefore i = [ 0 .. i - 1 ] |> List.exists (fun k -> vowel[k])
            let consonantBefore i = i > 0 && not vowel[i - 1]
            // a final e (or the e of a final es/ed) that is not pronounced
            let silentE i =
                i > 1 && w[i] = 'e' && consonantBefore i && groupsBefore (i - 1)
                && (
                    if i = n - 1 then not (w[i - 1] = 'l' && i > 1 && consonantBefore (i - 1))
                    elif i = n - 2 && w[n - 1] = 's' then not ("sxzcg".Contains w[i - 1] || w.EndsWith "shes" || w.EndsWith "ches")
                    elif i = n - 2 && w[n - 1] = 'd' then not ("td".Contains w[i - 1])
                    else false)
            let mutable total = 0
            let mutable i = 0
            while i < n do
                if vowel[i] then
                    let mutable stop = i + 1
                    // a glide (w, y) ends its group
                    while stop < n && vowel[stop] && w[stop - 1] <> 'w' && (w[stop - 1] <> 'y' || stop - 1 = i) do
                        stop <- stop + 1
                    if stop = i + 1 && silentE i then
                        total <- total
                    elif stop = i + 1 && "eiuy".Contains w[i] && stop < n && w[stop] = 'r' && (stop + 1 = n || not vowel[stop + 1]) then
                        // r-coloured vowel (her, bird, turn): one phoneme with its r
                        total <- total + 1
                        stop <- stop + 1
                    else
                        total <- total + vowelGroupCount w i stop
                    i <- stop
                else
                    let rest = w.Substring i
                    let starts (s: string) = rest.StartsWith(s, StringComparison.Ordinal)
                    let step, phonemes =
                        if i = 0 && (starts "kn" || starts "gn" || starts "wr" || starts "ps" || starts "pn") then 2, 1
                        elif starts "tch" then 3, 1
                        elif starts "gh" then 2, (if i = 0 then 1 else 0)
                        elif starts "ch" || starts "sh" || starts "th" || starts "ph" || starts "wh" || starts "ck" || starts "ng" || starts "dg" then 2, 1
                        elif starts "qu" then 2, 2
                        elif rest = "mb" then 2, 1
                        elif starts "cc" && rest.Length > 2 && "ei".Contains rest[2] then 2, 2
                        elif rest.Length > 1 && rest[0] = rest[1] then 2, 1
                        elif rest[0] = 'x' then 1, (if i = 0 then 1 else 2)
                        elif rest[0] = 'h' && i > 0 && vowel[i - 1] && (i + 1 = n || not vowel[i + 1]) then 1, 0
                        else 1, 1
                    total <- total + phonemes
                    i <- i + step
            max total 1

/// Counts the ARPAbet phonemes of English text for the boundary-predictor targets (SPEC §7.1), replacing
/// g2p_en by the CMU dictionary: numbers are spelled out first, words are lower-cased letters and apostrophes,
/// each word's first dictionary pronunciation is counted, and unknown words are counted by the letter rules
/// or by espeak-ng. Punctuation is not counted.
[<RequireQualifiedAccess>]
module Phonemes =
    let private dictionary =
        lazy
            (let entries = Dictionary<string, string>(140_000, StringComparer.Ordinal)
             for line in Assets.readLines Assets.CmuDict do
                 let line = match line.IndexOf '#' with -1 -> line | at -> line.Substring(0, at)
                 let space = line.IndexOf ' '
                 if space > 0 then
                     let word = line.Substring(0, space)
                     // alternates are written word(2), word(3): keep the first pronunciation only
                     if not (word.EndsWith ")") then entries.TryAdd(word, line.Substring(space + 1).Trim()) |> ignore
             entries)

    /// The first CMU pronunciation of a lower-case word (ARPAbet, stress digits on vowels), if listed.
    let lookup (word: string) : string list option =
        match dictionary.Force().TryGetValue word with
        | true, phonemes -> Some(List.ofArray (phonemes.Split(' ', StringSplitOptions.RemoveEmptyEntries)))
        | _ -> None

    /// Spells out the numbers of a text as g2p_en does ("I have $250" → "I have two hundred fifty dollars").
    let spellOutNumbers (text: string) : string = NumberWords.spellOut text

    /// The letter-to-sound estimate of a word's phoneme count (an approximation, see `LetterRules`).
    let letterRulesCount (word: string) : int = LetterRules.count word

    let private wordPattern = Regex(@"[a-z']+", RegexOptions.CultureInvariant)

    /// The words of a text as counted: numbers spelled out if asked, accents dropped, lower case, "i.e." and
    /// "e.g." expanded, curly apostrophes made straight, then runs of letters and apostrophes; edge apostrophes
    /// are dropped unless the dictionary lists the word with them ('em, 'cause).
    let words (spellOut: bool) (text: string) : string list =
        let text = if spellOut then spellOutNumbers text else text
        let stripped =
            (PyText.wellFormed text).Normalize(NormalizationForm.FormD)
            |> String.filter (fun c -> CharUnicodeInfo.GetUnicodeCategory c <> UnicodeCategory.NonSpacingMark)
        let text =
            stripped.ToLowerInvariant().Replace("i.e.", "that is").Replace("e.g.", "for example")
                .Replace('\u2019', '\'').Replace('\u2018', '\'').Replace('\u02BC', '\'')
        [ for m in wordPattern.Matches text do
              let w = m.Value
              let w = if dictionary.Force().ContainsKey w then w else w.Trim '\''
              if w.Length > 0 then yield w ]

    /// The executable a command names: itself when it contains a directory, else the first match on PATH.
    let private resolve (command: string) : string option =
        if command.Contains Path.DirectorySeparatorChar || command.Contains Path.AltDirectorySeparatorChar then
            if File.Exists command then Some(Path.GetFullPath command) else None
        else
            let names = if OperatingSystem.IsWindows() && not (command.EndsWith ".exe") then [ command + ".exe"; command ] else [ command ]
            (Environment.GetEnvironmentVariable "PATH" |> Option.ofObj |> Option.defaultValue "").Split(Path.PathSeparator)
            |> Seq.filter (String.IsNullOrWhiteSpace >> not)
            |> Seq.collect (fun dir -> names |> Seq.map (fun n -> Path.Combine(dir, n)))
            |> Seq.tryFind File.Exists

    /// Results per (executable, word); a failure of the executable as a whole (it cannot start, or hangs) is
    /// remembered per executable so that later words do not wait for it again.
    let private espeakCache = ConcurrentDictionary<string * string, Result<string list, string>>()
    let private espeakBroken = ConcurrentDictionary<string, string>()

    /// Runs espeak-ng once for a word: both pipes are drained concurrently (a chatty stderr cannot fill its pipe
    /// and block the child), the run is stopped after `timeout`, and every failure is returned as a reason.
    let private runEspeak (exe: string) (timeout: TimeSpan) (word: string) : Result<string list, string> =
        let start = ProcessStartInfo(exe, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
        for a in [ "-q"; "--ipa"; "--sep=_"; "-v"; "en-us"; word ] do
            start.ArgumentList.Add a
        match (try Ok(Process.Start start) with e -> Error $"could not be started: {e.Message}") with
        | Error e -> Error e
        | Ok proc ->
            use proc = proc
            let stdout = proc.StandardOutput.ReadToEndAsync()
            let stderr = proc.StandardError.ReadToEndAsync()
            if not (proc.WaitForExit timeout) then
                try proc.Kill true with _ -> ()
                Error $"did not finish within {timeout.TotalSeconds:G3} s and was stopped"
            // A grandchild holding the pipes open must not hang us either.
            elif not (Task.WaitAll([| stdout :> Task; stderr :> Task |], timeout)) then
                Error $"kept its output open for more than {timeout.TotalSeconds:G3} s after exiting"
            elif proc.ExitCode <> 0 then
                let message = stderr.Result.Trim()
                let message = if message.Length > 300 then message.Substring(0, 300) + " …" else message
                Error(if message = "" then $"exited with code {proc.ExitCode}" else $"exited with code {proc.ExitCode}: {message}")
            else
                match
                    stdout.Result.Replace("ˈ", "").Replace("ˌ", "").Split([| '_'; ' '; '\n'; '\r'; '\t' |], StringSplitOptions.RemoveEmptyEntries)
                    |> List.ofArray
                with
                | [] -> Error "printed no phonemes"
                | segments -> Ok segments

    /// IPA segments of a word by espeak-ng (US English), or why there are none.
    let private espeak (command: string) (timeout: TimeSpan) (word: string) : Result<string list, string> =
        match resolve command with
        | None -> Error "not found (install espeak-ng, e.g. `apt-get install espeak-ng`, or give its full path)"
        | Some exe ->
            match espeakBroken.TryGetValue exe with
            | true, reason -> Error reason
            | _ ->
                espeakCache.GetOrAdd((exe, word), fun (exe, word) ->
                    let result = runEspeak exe timeout word
                    match result with
                    | Error reason when reason.StartsWith "could not be started" || reason.Contains "was stopped" ->
                        espeakBroken.TryAdd(exe, reason) |> ignore
                    | _ -> ()
                    result)

    /// ARPAbet length of espeak-ng segments: its syllabic "əl", "ən", "əm" are two phonemes (AH0 L, …).
    let private espeakCount (segments: string list) =
        segments |> List.sumBy (fun s -> if s.Length > 1 && s.StartsWith "ə" && "lnm".Contains s[s.Length - 1] then 2 else 1)

    /// The phonemes of one normalised word, and why espeak-ng could not do it when it was asked for and failed.
    let private pronounce (options: PhonemeOptions) (word: string) : WordPhonemes * string option =
        let rules () = { Word = word; Count = LetterRules.count word; Pronunciation = []; Source = LetterRules }
        match lookup word with
        | Some phonemes -> { Word = word; Count = phonemes.Length; Pronunciation = phonemes; Source = CmuDict }, None
        | None ->
            let possessive =
                if word.EndsWith "'s" then lookup (word.Substring(0, word.Length - 2)) else None
            match possessive, options.Fallback with
            | Some stem, _ ->
                // the possessive is AH0 Z after a sibilant, S after another voiceless consonant, Z otherwise
                let suffix =
                    match List.last stem with
                    | "S" | "Z" | "SH" | "ZH" | "CH" | "JH" -> [ "AH0"; "Z" ]
                    | "P" | "T" | "K" | "F" | "TH" -> [ "S" ]
                    | _ -> [ "Z" ]
                { Word = word; Count = stem.Length + suffix.Length; Pronunciation = stem @ suffix; Source = CmuDictPossessive }, None
            | None, UseEspeak command ->
                match espeak command options.EspeakTimeout word with
                | Ok segments -> { Word = word; Count = espeakCount segments; Pronunciation = segments; Source = EspeakNg }, None
                | Error reason -> rules (), Some $"{command}: {reason}"
            | None, UseLetterRules -> rules (), None

    /// The phoneme count of a text, with each word's phonemes, the out-of-vocabulary words and the warnings of
    /// words that fell back from espeak-ng to the letter rules.
    let countWith (options: PhonemeOptions) (text: string) : PhonemeCount =
        let pronounced = words options.SpellOutNumbers text |> List.map (pronounce options)
        let words = List.map fst pronounced
        let warnings =
            pronounced
            |> List.choose (fun (w, problem) -> problem |> Option.map (fun p -> p, w.Word))
            |> List.groupBy fst
            |> List.map (fun (problem, ws) ->
                let names = ws |> List.map snd |> List.distinct |> String.concat ", "
                $"{problem}; letter rules used for {names}")
        { Total = words |> List.sumBy _.Count
          Words = words
          OutOfVocabulary = words |> List.filter (fun w -> w.Source <> CmuDict) |> List.map _.Word
          Warnings = warnings }

    /// The phoneme count of a text with the default options (numbers spelled out, letter rules for unknown words).
    let count (text: string) : PhonemeCount = countWith PhonemeOptions.Default text
