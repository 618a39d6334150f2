namespace MagnetWhisper.Core.Data

open System
open System.IO

/// A folder of audio files, each with its transcript in a same-name `.txt` beside it (`a/b/x.flac` + `a/b/x.txt`).
/// A phone alignment `x.phones` beside the audio becomes the utterance's Phones. Sub-folders are read too; an utterance's id is its path below the folder without the extension, with `/`.
module FolderCorpus =
    /// The extensions taken as audio (decoded by content: WAV and FLAC in-process, the rest with ffmpeg).
    let audioExtensions =
        set [ ".wav"; ".flac"; ".mp3"; ".ogg"; ".opus"; ".m4a"; ".aac"; ".webm"; ".wma" ]

    /// Reads the folder: every audio file with a non-empty transcript, sorted by id, with its duration when the
    /// header states it (WAV, FLAC). Audio without a transcript file or with an empty one, and empty audio files,
    /// are skipped with the reason.
    let read (folder: string) : Corpus =
        if not (Directory.Exists folder) then raise (DirectoryNotFoundException $"{folder}: no such folder")
        let audio =
            Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            |> Seq.filter (fun f -> audioExtensions.Contains((Path.GetExtension f).ToLowerInvariant()))
            |> Seq.sortWith (fun a b -> String.CompareOrdinal(a, b))
            |> Seq.toArray
        let phonesOf (file: string) =
            let phones = Path.ChangeExtension(file, ".phones")
            if File.Exists phones then Some phones else None
        let read (file: string) =
            let transcriptFile = Path.ChangeExtension(file, ".txt")
            let id = Path.ChangeExtension(Path.GetRelativePath(folder, file), null).Replace('\\', '/')
            if not (File.Exists transcriptFile) then
                Error { Source = file; Reason = $"no transcript: {Path.GetFileName transcriptFile} is missing" }
            else
                let text = (File.ReadAllText transcriptFile).Trim()
                if text = "" then Error { Source = transcriptFile; Reason = "the transcript is empty" }
                else
                    match CorpusAudioFile.inspect file with
                    | Error reason -> Error { Source = file; Reason = reason }
                    | Ok duration ->
                        Ok { Id = id; Audio = AudioFile file; Transcript = text; Duration = duration; Speaker = None
                             Split = None; Phones = phonesOf file }
        Corpus.ofResults folder (audio |> Seq.map read)
