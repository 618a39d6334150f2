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

    /// What `read` accepts, for messages.
    let accepted =
        "a .jsonl manifest, a .parquet shard (or a folder or pattern of them, e.g. data/dev-*.parquet), a LibriSpeech folder, or a folder of audio files with .txt transcripts"

    /// Reads the corpus at `path`, by what the path is: a `.jsonl` manifest (JsonlCorpus); Parquet shards, as a
    /// `.parquet` file, a pattern with `*` or `?`, or a folder holding `.parquet` files (ParquetCorpus); a
    /// LibriSpeech root or split folder (LibriSpeechCorpus); otherwise a folder of audio files with same-name `.txt`
    /// transcripts (FolderCorpus). Then applies the options. Anything else raises an error naming the path.
    let read (options: CorpusOptions) (path: string) : Corpus =
        let corpus =
            // LibriSpeech is recognised from a few folders; looking for .parquet files walks the whole tree.
            if Directory.Exists path then
                if LibriSpeechCorpus.isLayout path then LibriSpeechCorpus.read path
                elif ParquetCorpus.isShards path then ParquetCorpus.read path
                else FolderCorpus.read path
            elif ParquetCorpus.isShards path then ParquetCorpus.read path
            elif File.Exists path then
                if Path.GetExtension(path).Equals(".jsonl", System.StringComparison.OrdinalIgnoreCase) then JsonlCorpus.read path
                else raise (InvalidDataException $"{path}: not a corpus this version reads; give {accepted}")
            else raise (FileNotFoundException($"{path}: no such corpus file or folder", path))
        select options corpus
