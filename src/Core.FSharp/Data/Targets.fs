namespace MagnetWhisper.Core.Data

open System
open System.Text
open MagnetWhisper.Core.Text
open MagnetWhisper.Core.Magnet

/// What a predictor's target boundary count counts in an utterance's transcript (one choice per predictor).
type TargetKind =
    /// ARPAbet phonemes: the CMU dictionary's first pronunciation, letter rules (or espeak-ng) for other words,
    /// numbers spelled out, punctuation not counted (SPEC §7.1's counting rule, `Phonemes.countWith`).
    | Phonemes
    /// Syllables: vowel nuclei, i.e. the dictionary phonemes that carry a stress digit (SPEC §7.1's unused
    /// `count_syllables`); letter rules (vowel-letter groups) for words the dictionary lacks.
    | Syllables
    /// Letters and decimal digits (Unicode categories L* and Nd) of the English-normalised transcript
    /// (`Normalizer.english`, which writes numbers as digits): spaces, apostrophes and the `.%$¢€£` it keeps are not
    /// counted.
    | Characters
    /// Whitespace-separated words of the English-normalised transcript.
    | Words
    /// No count: the row (if the predictor reads one) is zeros, which the encoder's target schedule reads as "every
    /// valid frame" (SPEC §6.4, t = 0 → T̂).
    | NoTarget

/// Target boundary counts of transcripts, and the target matrix the MagnetWhisper encoder reads (DECISIONS #3).
[<RequireQualifiedAccess>]
module Targets =
    /// The name of a kind as the command line writes it.
    let name (kind: TargetKind) : string =
        match kind with
        | Phonemes -> "phonemes"
        | Syllables -> "syllables"
        | Characters -> "characters"
        | Words -> "words"
        | NoTarget -> "none"

    /// The kind a name (`phonemes`, `syllables`, `characters`, `words`, `none`) stands for.
    let parse (text: string) : TargetKind =
        match text.Trim().ToLowerInvariant() with
        | "phonemes" -> Phonemes
        | "syllables" -> Syllables
        | "characters" -> Characters
        | "words" -> Words
        | "none" -> NoTarget
        | other -> invalidArg (nameof text) $"unknown target '{other}': use phonemes, syllables, characters, words or none"

    /// Syllables of a word by letter rules: groups of the vowel letters a e i o u y, less a silent final e
    /// (a word ending in a consonant + e, other than consonant + "le", with another vowel group before it); at
    /// least one for a word with letters.
    let letterRuleSyllables (word: string) : int =
        let w = String(word.ToLowerInvariant() |> Seq.filter Char.IsLetter |> Seq.toArray)
        if w.Length = 0 then 0
        else
            let vowel (c: char) = "aeiouy".Contains c
            let groups = w |> Seq.mapi (fun i c -> vowel c && (i = 0 || not (vowel w.[i - 1]))) |> Seq.filter id |> Seq.length
            let n = w.Length
            let silentE =
                n >= 3 && w.[n - 1] = 'e' && not (vowel w.[n - 2]) && not (w.[n - 2] = 'l' && not (vowel w.[n - 3]))
            max 1 (if silentE && groups > 1 then groups - 1 else groups)

    /// IPA vowel letters: an espeak-ng segment containing one is a syllable nucleus.
    let private ipaVowels = "aeiouyæɐɑɒɔəɘɚɛɜɝɞɤɨɪʉʊʌɯøœɶ"

    /// Syllables of one word's pronunciation.
    let private wordSyllables (w: WordPhonemes) =
        match w.Source with
        | CmuDict
        | CmuDictPossessive -> w.Pronunciation |> List.filter (fun p -> p.Length > 0 && Char.IsDigit p.[p.Length - 1]) |> List.length
        | EspeakNg -> w.Pronunciation |> List.filter (fun s -> s |> Seq.exists ipaVowels.Contains) |> List.length
        | LetterRules -> letterRuleSyllables w.Word

    /// Letters and decimal digits of a text (code points, so letters outside the BMP count once).
    let private lettersAndDigits (text: string) =
        text.EnumerateRunes()
        |> Seq.filter (fun r -> Rune.IsLetter r || Rune.IsDigit r)
        |> Seq.length

    /// The phoneme count (the Text module, whose name the Phonemes case shadows here).
    let private pronounce (options: PhonemeOptions) (text: string) : PhonemeCount =
        MagnetWhisper.Core.Text.Phonemes.countWith options text

    /// The count of one kind in a transcript (NoTarget: 0).
    let count (phonemes: PhonemeOptions) (kind: TargetKind) (transcript: string) : int =
        match kind with
        | Phonemes -> (pronounce phonemes transcript).Total
        | Syllables -> (pronounce phonemes transcript).Words |> List.sumBy wordSyllables
        | Characters -> lettersAndDigits (Normalizer.english transcript)
        | Words -> (Normalizer.english transcript).Split([| ' '; '\t'; '\n'; '\r' |], StringSplitOptions.RemoveEmptyEntries).Length
        | NoTarget -> 0

    /// The kind of each row of the target matrix, given the predictor slots (in any order; read in layer order, as
    /// the encoder does) and the kind chosen for each predictor in that order. A `NextRow` slot takes the next
    /// row, a `Row r` slot row r; a slot whose TargetSource is NoTargets reads no row and must be given NoTarget.
    /// Rows no predictor reads, and rows of NoTarget predictors, are NoTarget (zeros).
    let rowKinds (slots: PredictorSlot list) (kinds: TargetKind list) : TargetKind[] =
        let slots = slots |> List.sortBy (fun s -> s.Layer)
        if kinds.Length <> slots.Length then
            invalidArg (nameof kinds) $"give one target per predictor: the model has {slots.Length} predictor(s) but {kinds.Length} target(s) were given"
        let assigned = Collections.Generic.Dictionary<int, TargetKind * int>()
        let mutable nextRow = 0
        for slot, kind in List.zip slots kinds do
            let row =
                match slot.Targets with
                | NextRow ->
                    nextRow <- nextRow + 1
                    Some(nextRow - 1)
                | Row r -> Some r
                | NoTargets -> None
            match row with
            | None when kind <> NoTarget ->
                invalidArg (nameof kinds) $"the predictor before encoder layer {slot.Layer} reads no target row (its target source is none), but was given {name kind}"
            | None -> ()
            | Some r ->
                match assigned.TryGetValue r with
                | true, (other, layer) when other <> kind ->
                    invalidArg (nameof kinds) $"target row {r} is read by the predictors before encoder layers {layer} and {slot.Layer}, which were given {name other} and {name kind}"
                | true, _ -> ()
                | _ -> assigned.[r] <- (kind, slot.Layer)
        let rows = if assigned.Count = 0 then 0 else (Seq.max assigned.Keys) + 1
        Array.init rows (fun r -> match assigned.TryGetValue r with | true, (k, _) -> k | _ -> NoTarget)

    /// One utterance's column of the target matrix: the count of each row's kind.
    let column (phonemes: PhonemeOptions) (rows: TargetKind[]) (transcript: string) : float32[] =
        // Phonemes and syllables share one pronunciation pass.
        let pronounced = lazy (pronounce phonemes transcript)
        rows
        |> Array.map (fun kind ->
            match kind with
            | Phonemes -> float32 pronounced.Value.Total
            | Syllables -> float32 (pronounced.Value.Words |> List.sumBy wordSyllables)
            | other -> float32 (count phonemes other transcript))
