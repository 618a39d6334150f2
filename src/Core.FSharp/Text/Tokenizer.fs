namespace MagnetWhisper.Core.Text

open System
open System.Collections.Concurrent
open System.Collections.Generic
open System.Globalization
open System.IO
open System.IO.Compression
open System.Text

/// Marks the Core assembly, whose embedded resources hold the Text assets.
type internal AssetsMarker = class end

/// The Text area's embedded assets (byte-pair ranks, spelling map, pronouncing dictionary and their licences).
/// Their logical names are set in Core.FSharp.fsproj; nothing is read from the file system at run time.
module internal Assets =
    /// Logical name of the GPT-2 byte-pair ranks (English-only models).
    [<Literal>]
    let Gpt2Ranks = "MagnetWhisper.Core.Text.gpt2.tiktoken"

    /// Logical name of the multilingual byte-pair ranks.
    [<Literal>]
    let MultilingualRanks = "MagnetWhisper.Core.Text.multilingual.tiktoken"

    /// Logical name of the British→American spelling map.
    [<Literal>]
    let EnglishSpelling = "MagnetWhisper.Core.Text.english.json"

    /// Logical name of the gzipped CMU pronouncing dictionary.
    [<Literal>]
    let CmuDict = "MagnetWhisper.Core.Text.cmudict.dict.gz"

    /// Opens an embedded resource of the Core assembly.
    let openStream (name: string) : Stream =
        match typeof<AssetsMarker>.Assembly.GetManifestResourceStream name with
        | null -> invalidOp $"The embedded resource '{name}' is missing from MagnetWhisper.Core."
        | stream -> stream

    /// Every line of an embedded text resource (UTF-8; gunzipped when the name ends in .gz).
    let readLines (name: string) : string[] =
        use raw = openStream name
        use stream: Stream = if name.EndsWith ".gz" then new GZipStream(raw, CompressionMode.Decompress) else raw
        use reader = new StreamReader(stream, Encoding.UTF8)
        let lines = ResizeArray()
        let mutable line = reader.ReadLine()
        while not (isNull line) do
            lines.Add line
            line <- reader.ReadLine()
        lines.ToArray()

/// A language Whisper can transcribe: its code (as in `<|en|>`) and its English name.
type Language =
    { /// The code of the language token, e.g. "en" for `<|en|>`.
      Code: string
      /// The English name in lower case, e.g. "english".
      Name: string }

/// The languages of Whisper's tokenizer, in token order.
[<RequireQualifiedAccess>]
module Languages =
    /// All 100 languages in the order of their tokens; vocabularies before large-v3 have the first 99.
    let all: Language list =
        [ "en", "english"; "zh", "chinese"; "de", "german"; "es", "spanish"; "ru", "russian"; "ko", "korean"
          "fr", "french"; "ja", "japanese"; "pt", "portuguese"; "tr", "turkish"; "pl", "polish"; "ca", "catalan"
          "nl", "dutch"; "ar", "arabic"; "sv", "swedish"; "it", "italian"; "id", "indonesian"; "hi", "hindi"
          "fi", "finnish"; "vi", "vietnamese"; "he", "hebrew"; "uk", "ukrainian"; "el", "greek"; "ms", "malay"
          "cs", "czech"; "ro", "romanian"; "da", "danish"; "hu", "hungarian"; "ta", "tamil"; "no", "norwegian"
          "th", "thai"; "ur", "urdu"; "hr", "croatian"; "bg", "bulgarian"; "lt", "lithuanian"; "la", "latin"
          "mi", "maori"; "ml", "malayalam"; "cy", "welsh"; "sk", "slovak"; "te", "telugu"; "fa", "persian"
          "lv", "latvian"; "bn", "bengali"; "sr", "serbian"; "az", "azerbaijani"; "sl", "slovenian"; "kn", "kannada"
          "et", "estonian"; "mk", "macedonian"; "br", "breton"; "eu", "basque"; "is", "icelandic"; "hy", "armenian"
          "ne", "nepali"; "mn", "mongolian"; "bs", "bosnian"; "kk", "kazakh"; "sq", "albanian"; "sw", "swahili"
          "gl", "galician"; "mr", "marathi"; "pa", "punjabi"; "si", "sinhala"; "km", "khmer"; "sn", "shona"
          "yo", "yoruba"; "so", "somali"; "af", "afrikaans"; "oc", "occitan"; "ka", "georgian"; "be", "belarusian"
          "tg", "tajik"; "sd", "sindhi"; "gu", "gujarati"; "am", "amharic"; "yi", "yiddish"; "lo", "lao"
          "uz", "uzbek"; "fo", "faroese"; "ht", "haitian creole"; "ps", "pashto"; "tk", "turkmen"; "nn", "nynorsk"
          "mt", "maltese"; "sa", "sanskrit"; "lb", "luxembourgish"; "my", "myanmar"; "bo", "tibetan"; "tl", "tagalog"
          "mg", "malagasy"; "as", "assamese"; "tt", "tatar"; "haw", "hawaiian"; "ln", "lingala"; "ha", "hausa"
          "ba", "bashkir"; "jw", "javanese"; "su", "sundanese"; "yue", "cantonese" ]
        |> List.map (fun (code, name) -> { Code = code; Name = name })

    /// Other names Whisper accepts for some languages.
    let private aliases =
        [ "burmese", "my"; "valencian", "ca"; "flemish", "nl"; "haitian", "ht"; "letzeburgesch", "lb"; "pushto", "ps"
          "panjabi", "pa"; "moldavian", "ro"; "moldovan", "ro"; "sinhalese", "si"; "castilian", "es"; "mandarin", "zh" ]

    let private byKey =
        dict [ for l in all do
                   yield l.Code, l
                   yield l.Name, l
               for alias, code in aliases do
                   yield alias, all |> List.find (fun l -> l.Code = code) ]

    /// The language with this code, name or alias (case-insensitive), as Whisper's `get_tokenizer` resolves it.
    let tryFind (codeOrName: string) : Language option =
        match byKey.TryGetValue(codeOrName.Trim().ToLowerInvariant()) with
        | true, language -> Some language
        | _ -> None

/// What the model is asked to do with the audio.
type TaskKind =
    /// Transcribe in the spoken language.
    | Transcribe
    /// Translate into English.
    | Translate

/// The three vocabularies of the Whisper family.
type VocabKind =
    /// GPT-2 ranks, 99 language tokens, 51864 ids (the `.en` models).
    | English
    /// Multilingual ranks, 99 language tokens, 51865 ids (tiny to large-v2).
    | Multilingual
    /// Multilingual ranks, 100 language tokens (adds `<|yue|>`), 51866 ids (large-v3 and later).
    | MultilingualV3

    /// Number of token ids, the model's `vocab_size`.
    member this.VocabSize =
        match this with
        | English -> 51864
        | Multilingual -> 51865
        | MultilingualV3 -> 51866

    /// Number of language tokens.
    member this.LanguageCount =
        match this with
        | MultilingualV3 -> 100
        | English
        | Multilingual -> 99

    /// Whether the language and task tokens take part in the start-of-transcript sequence.
    member this.UsesLanguageAndTask = this <> English

    /// The vocabulary of a model with this `vocab_size`.
    static member OfVocabSize(vocabSize: int) : VocabKind =
        match vocabSize with
        | 51864 -> English
        | 51865 -> Multilingual
        | 51866 -> MultilingualV3
        | n -> invalidArg (nameof vocabSize) $"No Whisper vocabulary has {n} ids (51864, 51865 or 51866)."

/// The ids of Whisper's special tokens in one vocabulary (they follow the byte-pair ranks, in tokenizer.py's order).
type SpecialTokens =
    { /// `<|endoftext|>`, also the padding id.
      EndOfText: int
      /// `<|startoftranscript|>`.
      StartOfTranscript: int
      /// The first language token, `<|en|>`; language i (in `Languages.all` order) is `FirstLanguage + i`.
      FirstLanguage: int
      /// Number of language tokens (99, or 100 for large-v3).
      LanguageCount: int
      /// `<|translate|>`.
      Translate: int
      /// `<|transcribe|>`.
      Transcribe: int
      /// `<|startoflm|>`.
      StartOfLm: int
      /// `<|startofprev|>`.
      StartOfPrev: int
      /// `<|nospeech|>`.
      NoSpeech: int
      /// `<|notimestamps|>`.
      NoTimestamps: int
      /// `<|0.00|>`, the first timestamp token; timestamp k (k·0.02 s) is `TimestampBegin + k`.
      TimestampBegin: int
      /// Number of timestamp tokens (1501: 0.00 to 30.00 s).
      TimestampCount: int }

    /// `<|30.00|>`, the last timestamp token.
    member this.TimestampEnd = this.TimestampBegin + this.TimestampCount - 1

    /// Every language token id, in language order.
    member this.LanguageTokens = List.init this.LanguageCount (fun i -> this.FirstLanguage + i)

    /// Whether the id is a timestamp token.
    member this.IsTimestamp(id: int) = id >= this.TimestampBegin && id <= this.TimestampEnd

    /// Whether the id is any special token (the end-of-text token and everything after it).
    member this.IsSpecial(id: int) = id >= this.EndOfText && id <= this.TimestampEnd

/// Which special tokens `decode` renders as text.
type SpecialTokenHandling =
    /// Drop every special token (Hugging Face's `skip_special_tokens=True`): the plain transcript.
    | SkipAll
    /// Render specials such as `<|en|>` but drop timestamps (whisper's `Tokenizer.decode`).
    | SkipTimestamps
    /// Render every special token, timestamps as `<|1.08|>` (whisper's `decode_with_timestamps`).
    | KeepAll

/// A decoded word and the token ids it came from.
type WordTokens =
    { /// The decoded text of the word, with its leading space if any.
      Text: string
      /// The token ids that decode to it.
      Tokens: int list }

/// Byte-level byte-pair encoding with tiktoken's merge rule.
module internal Bpe =
    /// A slice of a string used as a dictionary key without allocating; byte strings are held as Latin-1 text.
    [<Struct; NoEquality; NoComparison>]
    type Slice = { Source: string; Start: int; Length: int }

    /// Ordinal equality of slices.
    type SliceComparer() =
        interface IEqualityComparer<Slice> with
            member _.Equals(a, b) =
                a.Length = b.Length
                && MemoryExtensions.SequenceEqual(a.Source.AsSpan(a.Start, a.Length), b.Source.AsSpan(b.Start, b.Length))

            member _.GetHashCode s = String.GetHashCode(s.Source.AsSpan(s.Start, s.Length))

    /// Bytes as a Latin-1 string, one char per byte.
    let latin1 (bytes: byte[]) = Encoding.Latin1.GetString bytes

    /// Reads a `.tiktoken` file (base64 token, space, rank per line) into rank lookup and id→bytes table.
    let readRanks (lines: string[]) : Dictionary<Slice, int> * byte[][] =
        let entries =
            lines
            |> Array.filter (fun l -> l.Length > 0)
            |> Array.map (fun l ->
                let parts = l.Split ' '
                // the multilingual file's rank 50256 is written "=": an empty token, as Python's lenient b64decode reads it
                let token = parts[0].TrimEnd '='
                let bytes = if token.Length = 0 then [||] else Convert.FromBase64String parts[0]
                bytes, Int32.Parse(parts[1], CultureInfo.InvariantCulture))
        let table = Array.zeroCreate<byte[]> entries.Length
        let ranks = Dictionary<Slice, int>(entries.Length, SliceComparer())
        for bytes, rank in entries do
            if rank < 0 || rank >= table.Length || not (isNull table[rank]) then
                invalidOp $"Byte-pair ranks are not the dense range 0..{table.Length - 1} (rank {rank})."
            table[rank] <- bytes
            let key = latin1 bytes
            ranks[{ Source = key; Start = 0; Length = key.Length }] <- rank
        for b in 0..255 do
            let key = string (char b)
            if not (ranks.ContainsKey { Source = key; Start = 0; Length = 1 }) then
                invalidOp $"Byte-pair ranks lack the single byte {b}: not a byte-level vocabulary."
        ranks, table

    /// Token ids of one piece (Latin-1 text of its UTF-8 bytes): repeatedly merge the adjacent pair whose
    /// concatenation has the lowest rank (leftmost on ties), as tiktoken does; a heap keeps it O(n log n).
    let encodePiece (ranks: Dictionary<Slice, int>) (piece: string) : int[] =
        let n = piece.Length
        let rankOf start length =
            match ranks.TryGetValue { Source = piece; Start = start; Length = length } with
            | true, rank -> rank
            | _ -> -1
        let whole = rankOf 0 n
        if whole >= 0 then
            [| whole |]
        else
            // parts are [start, next[start]); a part is alive while it has not been merged into its left neighbour
            let next = Array.init n (fun i -> i + 1)
            let prev = Array.init n (fun i -> i - 1)
            let alive = Array.create n true
            let heap = PriorityQueue<struct (int * int * int), struct (int * int)>()
            let push left =
                let right = next[left]
                if right < n then
                    let stop = next[right]
                    let rank = rankOf left (stop - left)
                    if rank >= 0 then heap.Enqueue(struct (left, right, stop), struct (rank, left))
            for i in 0 .. n - 2 do
                push i
            while heap.Count > 0 do
                let struct (left, right, stop) = heap.Dequeue()
                if alive[left] && alive[right] && next[left] = right && next[right] = stop then
                    alive[right] <- false
                    next[left] <- stop
                    if stop < n then prev[stop] <- left
                    if prev[left] >= 0 then push prev[left]
                    push left
            let ids = ResizeArray()
            let mutable i = 0
            while i < n do
                ids.Add(rankOf i (next[i] - i))
                i <- next[i]
            ids.ToArray()

/// Splits text into pieces with tiktoken's GPT-2 pattern
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
/// evaluated on code points (not UTF-16 units) so that letters outside the BMP group as in tiktoken.
module internal PreTokenizer =
    type private CharClass =
        | Letter
        | Number
        | Space
        | Other

    let private classify (r: Rune) =
        if Rune.IsWhiteSpace r then
            Space
        else
            match Rune.GetUnicodeCategory r with
            | UnicodeCategory.UppercaseLetter
            | UnicodeCategory.LowercaseLetter
            | UnicodeCategory.TitlecaseLetter
            | UnicodeCategory.ModifierLetter
            | UnicodeCategory.OtherLetter -> Letter
            | UnicodeCategory.DecimalDigitNumber
            | UnicodeCategory.LetterNumber
            | UnicodeCategory.OtherNumber -> Number
            | _ -> Other

    /// Length of the contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`) at i, or 0.
    let private contraction (runes: Rune[]) i =
        let at k = if i + k < runes.Length then runes[i + k].Value else -1
        if at 0 <> int '\'' then 0
        else
            match at 1, at 2 with
            | 0x73, _ | 0x74, _ | 0x6D, _ | 0x64, _ -> 2 // s t m d
            | 0x72, 0x65 | 0x76, 0x65 | 0x6C, 0x6C -> 3 // re ve ll
            | _ -> 0

    /// Length (in runes) of the piece that starts at i.
    let private pieceLength (runes: Rune[]) (classes: CharClass[]) i =
        let n = runes.Length
        let runOf cls start =
            let mutable j = start
            while j < n && classes[j] = cls do
                j <- j + 1
            j
        let c = contraction runes i
        if c > 0 then
            c
        elif runes[i].Value = int ' ' && i + 1 < n && classes[i + 1] <> Space then
            runOf classes[i + 1] (i + 1) - i
        elif classes[i] <> Space then
            runOf classes[i] i - i
        else
            let stop = runOf Space i
            let length = stop - i
            // \s+(?!\S) keeps the last space for the next word unless the run ends the text; else \s+
            if stop = n || length = 1 then length else length - 1

    /// The pieces of a text as arrays of code points (lone surrogates become U+FFFD, as in tiktoken).
    let split (text: string) : Rune[] list =
        let runes = text.EnumerateRunes() |> Seq.toArray
        let classes = runes |> Array.map classify
        let rec loop i acc =
            if i >= runes.Length then List.rev acc
            else
                let length = pieceLength runes classes i
                loop (i + length) (runes[i .. i + length - 1] :: acc)
        loop 0 []

    /// UTF-8 bytes of code points, as a Latin-1 string (one char per byte).
    let utf8Latin1 (runes: Rune[]) : string =
        let bytes = Array.zeroCreate<byte> (runes |> Array.sumBy (fun r -> r.Utf8SequenceLength))
        let mutable offset = 0
        for r in runes do
            offset <- offset + r.EncodeToUtf8(bytes.AsSpan offset)
        Bpe.latin1 bytes

/// Whisper's tokenizer: byte-level BPE over the GPT-2 or multilingual ranks, followed by the special tokens.
/// Thread-safe; the only state is a bounded cache of already encoded pieces.
[<Sealed>]
type Tokenizer internal (kind: VocabKind, ranks: Dictionary<Bpe.Slice, int>, tokenBytes: byte[][]) =
    static let cacheLimit = 100_000
    let rankCount = tokenBytes.Length
    let timestampCount = 1501
    let specialNames =
        [| yield "<|endoftext|>"
           yield "<|startoftranscript|>"
           for l in List.take kind.LanguageCount Languages.all do
               yield $"<|{l.Code}|>"
           yield! [ "<|translate|>"; "<|transcribe|>"; "<|startoflm|>"; "<|startofprev|>"; "<|nospeech|>"; "<|notimestamps|>" ]
           for k in 0 .. timestampCount - 1 do
               yield $"<|{k * 2 / 100}.{k * 2 % 100:D2}|>" |]
    let specialIds = specialNames |> Array.mapi (fun i name -> name, rankCount + i) |> dict
    let id name = specialIds[name]
    let specials =
        { EndOfText = id "<|endoftext|>"
          StartOfTranscript = id "<|startoftranscript|>"
          FirstLanguage = id "<|en|>"
          LanguageCount = kind.LanguageCount
          Translate = id "<|translate|>"
          Transcribe = id "<|transcribe|>"
          StartOfLm = id "<|startoflm|>"
          StartOfPrev = id "<|startofprev|>"
          NoSpeech = id "<|nospeech|>"
          NoTimestamps = id "<|notimestamps|>"
          TimestampBegin = id "<|0.00|>"
          TimestampCount = timestampCount }
    let cache = ConcurrentDictionary<string, int[]>(StringComparer.Ordinal)
    let vocabSize = rankCount + specialNames.Length

    do
        if vocabSize <> kind.VocabSize then
            invalidOp $"The {kind} ranks give {vocabSize} ids instead of {kind.VocabSize}."

    let encodePiece (piece: string) =
        match cache.TryGetValue piece with
        | true, ids -> ids
        | _ ->
            let ids = Bpe.encodePiece ranks piece
            if cache.Count >= cacheLimit then cache.Clear()
            cache[piece] <- ids
            ids

    let encodeOrdinary (text: string) (into: ResizeArray<int>) =
        for piece in PreTokenizer.split text do
            into.AddRange(encodePiece (PreTokenizer.utf8Latin1 piece))

    /// The vocabulary.
    member _.Kind = kind

    /// Number of token ids (the model's `vocab_size`).
    member _.VocabSize = vocabSize

    /// Number of byte-pair tokens; special tokens start here.
    member _.RankCount = rankCount

    /// The special-token ids.
    member _.Specials = specials

    /// The languages this vocabulary has tokens for, in token order.
    member _.Languages = List.take kind.LanguageCount Languages.all

    /// The id of a special token written as text (e.g. `<|en|>`, `<|1.08|>`), if it is one.
    member _.TrySpecialId(text: string) : int option =
        match specialIds.TryGetValue text with
        | true, i -> Some i
        | _ -> None

    /// Encodes text as ordinary text: strings such as `<|endoftext|>` are tokenised like any other text.
    member _.Encode(text: string) : int[] =
        let ids = ResizeArray()
        encodeOrdinary text ids
        ids.ToArray()

    /// Encodes text in which special tokens written as text (e.g. `<|en|>`) become their ids.
    member this.EncodeWithSpecials(text: string) : int[] =
        let ids = ResizeArray()
        let mutable from = 0
        let mutable search = 0
        while search < text.Length do
            let openAt = text.IndexOf("<|", search, StringComparison.Ordinal)
            let closeAt = if openAt < 0 then -1 else text.IndexOf("|>", openAt + 2, StringComparison.Ordinal)
            if closeAt < 0 then
                search <- text.Length
            else
                match this.TrySpecialId(text.Substring(openAt, closeAt + 2 - openAt)) with
                | Some special ->
                    encodeOrdinary (text.Substring(from, openAt - from)) ids
                    ids.Add special
                    from <- closeAt + 2
                    search <- from
                | None -> search <- openAt + 1
        encodeOrdinary (text.Substring from) ids
        ids.ToArray()

    /// The raw bytes of one token: byte-pair bytes, or the UTF-8 text of a special token.
    member _.TokenBytes(id: int) : byte[] =
        if id >= 0 && id < rankCount then Array.copy tokenBytes[id]
        elif id >= rankCount && id < vocabSize then Encoding.UTF8.GetBytes specialNames[id - rankCount]
        else raise (ArgumentOutOfRangeException(nameof id, id, $"Token ids run from 0 to {vocabSize - 1}."))

    /// Decodes ids to text; invalid UTF-8 (e.g. a character cut between tokens) becomes U+FFFD, never an error.
    member _.Decode(ids: int seq, handling: SpecialTokenHandling) : string =
        let keep id =
            match handling with
            | SkipAll -> not (specials.IsSpecial id)
            | SkipTimestamps -> not (specials.IsTimestamp id)
            | KeepAll -> true
        use bytes = new MemoryStream()
        for id in ids do
            if id < 0 || id >= vocabSize then
                raise (ArgumentOutOfRangeException(nameof ids, id, $"Token ids run from 0 to {vocabSize - 1}."))
            if keep id then
                if id < rankCount then bytes.Write(tokenBytes[id], 0, tokenBytes[id].Length)
                else
                    let text = Encoding.UTF8.GetBytes specialNames[id - rankCount]
                    bytes.Write(text, 0, text.Length)
        Encoding.UTF8.GetString(bytes.GetBuffer(), 0, int bytes.Length)

/// Functions over Whisper's tokenizer (see the `Tokenizer` type for the thread-safety note).
[<RequireQualifiedAccess>]
module Tokenizer =
    let private loadKind (kind: VocabKind) =
        let asset = if kind = English then Assets.Gpt2Ranks else Assets.MultilingualRanks
        let ranks, table = Bpe.readRanks (Assets.readLines asset)
        Tokenizer(kind, ranks, table)

    let private loaded =
        dict [ for kind in [ English; Multilingual; MultilingualV3 ] -> kind, lazy (loadKind kind) ]

    /// The tokenizer of a vocabulary (loaded once from the embedded ranks, then shared).
    let load (kind: VocabKind) : Tokenizer = loaded[kind].Force()

    /// The tokenizer of a model with this `vocab_size` (51864, 51865 or 51866).
    let ofVocabSize (vocabSize: int) : Tokenizer = load (VocabKind.OfVocabSize vocabSize)

    /// Encodes text as ordinary text (special-token strings are not recognised), like whisper's `encode`.
    let encode (tokenizer: Tokenizer) (text: string) : int[] = tokenizer.Encode text

    /// Encodes text in which special tokens written as text (`<|en|>`, `<|0.00|>`, …) become their ids.
    let encodeWithSpecials (tokenizer: Tokenizer) (text: string) : int[] = tokenizer.EncodeWithSpecials text

    /// Decodes with the chosen handling of special tokens.
    let decodeWith (handling: SpecialTokenHandling) (tokenizer: Tokenizer) (ids: int seq) : string =
        tokenizer.Decode(ids, handling)

    /// The plain text of ids: every special token is dropped (Hugging Face's `skip_special_tokens=True`).
    let decode (tokenizer: Tokenizer) (ids: int seq) : string = tokenizer.Decode(ids, SkipAll)

    /// Renders every token, timestamps as `<|1.08|>` (whisper's `decode_with_timestamps`).
    let decodeWithTimestamps (tokenizer: Tokenizer) (ids: int seq) : string = tokenizer.Decode(ids, KeepAll)

    /// The token of a language given by code, name or alias; fails for a language this vocabulary lacks.
    let languageToken (tokenizer: Tokenizer) (language: string) : int =
        let index =
            Languages.tryFind language
            |> Option.bind (fun l -> tokenizer.Languages |> List.tryFindIndex ((=) l))
        match index with
        | Some i -> tokenizer.Specials.FirstLanguage + i
        | None -> invalidArg (nameof language) $"Language '{language}' has no token in the {tokenizer.Kind} vocabulary."

    /// The decoder prompt `<|startoftranscript|> [<|lang|>] [<|task|>] [<|notimestamps|>]`.
    /// As in whisper, English-only vocabularies take neither language nor task (both are ignored).
    let sotSequence (tokenizer: Tokenizer) (language: string option) (task: TaskKind option) (withoutTimestamps: bool) =
        let s = tokenizer.Specials
        [| yield s.StartOfTranscript
           if tokenizer.Kind.UsesLanguageAndTask then
               match language with
               | Some l -> yield languageToken tokenizer l
               | None -> ()
               match task with
               | Some Transcribe -> yield s.Transcribe
               | Some Translate -> yield s.Translate
               | None -> ()
           if withoutTimestamps then yield s.NoTimestamps |]

    /// The id of the timestamp token nearest to `seconds` (0.02 s steps, clamped to 0–30 s).
    let timestampToken (tokenizer: Tokenizer) (seconds: float) : int =
        let s = tokenizer.Specials
        s.TimestampBegin + Math.Clamp(int (Math.Round(seconds / 0.02)), 0, s.TimestampCount - 1)

    /// The time in seconds of a timestamp token.
    let timestampSeconds (tokenizer: Tokenizer) (id: int) : float =
        let s = tokenizer.Specials
        if not (s.IsTimestamp id) then invalidArg (nameof id) $"{id} is not a timestamp token."
        float (id - s.TimestampBegin) * 0.02

    /// Tokens to suppress so that the model does not write speaker tags or non-speech annotations
    /// (♪, brackets, …) while keeping ordinary punctuation: whisper's `non_speech_tokens`, sorted.
    let nonSpeechTokens (tokenizer: Tokenizer) : int[] =
        let symbols =
            [ for c in "\"#()*+/:;<=>@[\\]^_`{|}~「」『』" -> string c ]
            @ [ "<<"; ">>"; "<<<"; ">>>"; "--"; "---"; "-("; "-["; "('"; "(\""; "(("; "))"; "((("; ")))"; "[["; "]]"; "{{"; "}}"; "♪♪"; "♪♪♪" ]
        // U+2640..U+267F share their first two UTF-8 bytes: suppressing the first token is safe even if split
        let miscellaneous = [ for c in "♩♪♫♬♭♮♯" -> string c ]
        let first (text: string) = (tokenizer.Encode text)[0]
        [ yield first " -"
          yield first " '"
          for symbol in symbols @ miscellaneous do
              for tokens in [ tokenizer.Encode symbol; tokenizer.Encode(" " + symbol) ] do
                  if tokens.Length = 1 || List.contains symbol miscellaneous then yield tokens[0] ]
        |> List.distinct
        |> List.sort
        |> List.toArray

    /// Splits ids where the decoded text is valid Unicode (whisper's `split_tokens_on_unicode`).
    let splitOnUnicode (tokenizer: Tokenizer) (tokens: int seq) : WordTokens list =
        let tokens = Seq.toArray tokens
        let full = decodeWithTimestamps tokenizer tokens
        let replacement = '\uFFFD'
        let rec loop i start offset acc =
            if i >= tokens.Length then
                List.rev acc
            else
                let current = tokens[start..i]
                let decoded = decodeWithTimestamps tokenizer current
                let at = decoded.IndexOf replacement
                let complete = at < 0 || (offset + at < full.Length && full[offset + at] = replacement)
                if complete then
                    loop (i + 1) (i + 1) (offset + decoded.Length) ({ Text = decoded; Tokens = List.ofArray current } :: acc)
                else
                    loop (i + 1) start offset acc
        loop 0 0 0 []

    /// Groups ids into words (whisper's `split_to_word_tokens`): at spaces and punctuation, or at every complete
    /// character for languages written without spaces (zh, ja, th, lo, my, yue).
    let splitToWordTokens (tokenizer: Tokenizer) (language: string option) (tokens: int seq) : WordTokens list =
        let subwords = splitOnUnicode tokenizer tokens
        let unspaced = set [ "zh"; "ja"; "th"; "lo"; "my"; "yue" ]
        let code = language |> Option.bind Languages.tryFind |> Option.map _.Code
        match code with
        | Some c when unspaced.Contains c -> subwords
        | _ ->
            let punctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
            let startsWord (w: WordTokens) =
                List.head w.Tokens >= tokenizer.Specials.EndOfText
                || w.Text.StartsWith " "
                || punctuation.Contains(w.Text.Trim())
            subwords
            |> List.fold
                (fun acc w ->
                    match acc with
                    | last :: rest when not (startsWord w) ->
                        { Text = last.Text + w.Text; Tokens = last.Tokens @ w.Tokens } :: rest
                    | _ -> w :: acc)
                []
            |> List.rev
