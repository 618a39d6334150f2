namespace MagnetWhisper.Core.Data

open System.IO

/// Reading a corpus from what the user names, whatever its layout.
module Corpora =
    /// Keeps the selected splits, skips utterances longer than the maximum duration (reported), then takes the
    /// first `Limit`.
    let select (options: CorpusOptions) (corpus: Corpus) : Corpus =
        let inSplit (u: Utterance) =
            options.Splits.IsEmpty || (u.Split |> Option.exists (fun s -> List.contains s options.Splits))
        let kept = corpus.Utterances |> Array.filter inSplit
        let tooLong (u: Utterance) =
            match options.MaxDuration, u.Duration with
            | Some limit, Some d when d > limit -> true
            | _ -> false
        let skipped =
            kept
            |> Array.filter tooLong
            |> Array.map (fun u ->
                { Source = AudioSource.name u.Audio
                  Reason = $"%.2f{Option.get u.Duration} s is longer than the maximum of %g{Option.get options.MaxDuration} s" })
        let short = kept |> Array.filter (tooLong >> not)
        let limited = match options.Limit with Some n when n < short.Length -> Array.truncate n short | _ -> short
        { corpus with Utterances = limited; Skipped = Array.append corpus.Skipped skipped }

    /// Reads the corpus at `path` and applies the options. A folder is read as a folder of audio files with
    /// same-name `.txt` transcripts.
    let read (options: CorpusOptions) (path: string) : Corpus =
        let corpus =
            if Directory.Exists path then FolderCorpus.read path
            elif File.Exists path then
                raise (InvalidDataException $"{path}: not a corpus this version reads (give a folder of audio files with .txt transcripts)")
            else raise (FileNotFoundException($"{path}: no such corpus file or folder", path))
        select options corpus
