namespace MagnetWhisper.Core.Data

open System
open System.IO

/// The LibriSpeech layout: `SPLIT/SPEAKER/CHAPTER/SPEAKER-CHAPTER-NNNN.flac`, each chapter folder with its
/// `SPEAKER-CHAPTER.trans.txt` of lines "SPEAKER-CHAPTER-NNNN TRANSCRIPT". Given either the root that holds the
/// splits (`dev-clean/`, `train-clean-100/` …) or one split folder.
module LibriSpeechCorpus =
    let private ordinal (items: string seq) = items |> Seq.sortWith (fun a b -> String.CompareOrdinal(a, b))

    let private subfolders (folder: string) = Directory.EnumerateDirectories folder |> ordinal

    /// The chapter folders of a split folder: SPEAKER/CHAPTER with a `*.trans.txt` inside.
    let private chapters (split: string) : string seq =
        subfolders split
        |> Seq.collect subfolders
        |> Seq.filter (fun chapter -> Directory.EnumerateFiles(chapter, "*.trans.txt") |> Seq.isEmpty |> not)

    /// True when the folder is one split: it holds SPEAKER/CHAPTER folders with transcripts.
    let isSplit (folder: string) : bool = Directory.Exists folder && not (Seq.isEmpty (chapters folder))

    /// True when the folder is a LibriSpeech split or a root holding splits.
    let isLayout (folder: string) : bool =
        isSplit folder || (Directory.Exists folder && subfolders folder |> Seq.exists isSplit)

    /// The audio file of an utterance id in its chapter folder: the `.flac` (or a `.wav` converted copy).
    let private audioOf (chapter: string) (id: string) : string option =
        [ ".flac"; ".wav" ] |> List.map (fun ext -> Path.Combine(chapter, id + ext)) |> List.tryFind File.Exists

    /// Reads one chapter folder: every line of its transcript files, then the audio files no line names.
    let private readChapter (split: string) (chapter: string) : Result<Utterance, Skipped> seq =
        let speaker = Path.GetFileName(Path.GetDirectoryName chapter)
        // The full path's last part: the folder's own name even when it was given as "." or with a trailing "/".
        let splitName = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath split))
        let transcripts = Directory.EnumerateFiles(chapter, "*.trans.txt") |> ordinal |> Seq.toArray
        let entries =
            [| for file in transcripts do
                   let lines = File.ReadAllLines file
                   for number in 1 .. lines.Length do
                       let line = lines.[number - 1].Trim()
                       if line <> "" then
                           let cut = line.IndexOfAny [| ' '; '\t' |]
                           let id, text = if cut < 0 then line, "" else line.Substring(0, cut), line.Substring(cut + 1).Trim()
                           yield file, number, id, text |]
        let named = entries |> Array.map (fun (_, _, id, _) -> id) |> set
        let listed =
            entries
            |> Seq.map (fun (file, number, id, text) ->
                let where = $"{file} line {number}"
                if text = "" then Error { Source = where; Reason = $"the transcript of {id} is empty" }
                else
                    match audioOf chapter id with
                    | None -> Error { Source = where; Reason = $"no audio file {id}.flac in {chapter}" }
                    | Some audio ->
                        match CorpusAudioFile.inspect audio with
                        | Error reason -> Error { Source = audio; Reason = reason }
                        | Ok duration ->
                            Ok { Id = id; Audio = AudioFile audio; Transcript = text; Duration = duration
                                 Speaker = Some speaker; Split = Some splitName; Phones = None })
        let unlisted =
            Directory.EnumerateFiles(chapter, "*.flac")
            |> ordinal
            |> Seq.filter (fun audio -> not (named.Contains(Path.GetFileNameWithoutExtension audio)))
            |> Seq.map (fun audio ->
                let files = String.Join(", ", transcripts |> Array.map Path.GetFileName)
                Error { Source = audio; Reason = $"no transcript: {files} has no line for it" })
        Seq.append listed unlisted

    /// Reads a LibriSpeech root (every split below it, in name order; each utterance's split is its split folder's
    /// name) or a single split folder (the split is the folder's own name). Speakers come from the path. Missing and
    /// empty transcripts, lines without audio, and audio without a line are skipped with the reason.
    let read (folder: string) : Corpus =
        if not (Directory.Exists folder) then raise (DirectoryNotFoundException $"{folder}: no such folder")
        let splits = if isSplit folder then [ folder ] else subfolders folder |> Seq.filter isSplit |> Seq.toList
        if splits.IsEmpty then
            raise (InvalidDataException $"{folder}: not a LibriSpeech folder (no SPEAKER/CHAPTER/*.trans.txt below it)")
        splits
        |> Seq.collect (fun split -> chapters split |> Seq.collect (readChapter split))
        |> Corpus.ofResults folder
