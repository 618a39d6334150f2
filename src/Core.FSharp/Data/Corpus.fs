namespace MagnetWhisper.Core.Data

/// Where an utterance's audio comes from.
type AudioSource =
    /// An audio file on disk, decoded by its content (not its extension).
    | AudioFile of path: string
    /// Encoded audio held inside another file, e.g. the `audio.bytes` of a Parquet shard's row. `name` says where
    /// in messages ("train-00000.parquet row 17 (1089-134686-0000.flac)"); `read` fetches the encoded bytes.
    | EmbeddedAudio of name: string * read: (unit -> byte[])

module AudioSource =
    /// How messages name the audio: the file's path, or where the embedded bytes live.
    let name (source: AudioSource) : string =
        match source with
        | AudioFile path -> path
        | EmbeddedAudio (name, _) -> name

/// One utterance of a corpus: what the model hears and what it should write.
type Utterance =
    { /// Unique within its corpus (LibriSpeech's `SPEAKER-CHAPTER-NNNN`, a manifest's `id`, a file's stem).
      Id: string
      Audio: AudioSource
      /// The reference transcript as the corpus writes it (not normalised).
      Transcript: string
      /// Seconds, when the corpus states it or it is cheap to read from the file's header; None otherwise.
      Duration: float option
      Speaker: string option
      /// The split or subset the utterance belongs to (`train-clean-100`, `dev`, …), when the corpus has them.
      Split: string option
      /// The utterance's phone alignment file (`end_time phone` lines, read by PhoneAlignment), when the corpus has
      /// one: a manifest's `"phones"`, or ID.phones beside a folder corpus's audio. Evaluation scores boundaries with it.
      Phones: string option }

/// An entry a reader or loader left out, and why: a missing or empty transcript, an unreadable, corrupt, empty
/// or too-long audio file. Skipping never stops a run; the entries are counted and reported.
type Skipped =
    { /// The file (or row of a file) as the user would find it.
      Source: string
      Reason: string }

/// A corpus as read: the utterances in the reader's stable order, and what was skipped while reading it.
type Corpus =
    { /// What the corpus was read from (the folder, manifest or shard pattern as given).
      Name: string
      Utterances: Utterance[]
      Skipped: Skipped[] }

/// Which part of a corpus to read.
type CorpusOptions =
    { /// Splits or subsets to keep (e.g. `dev-clean`); empty keeps every utterance.
      Splits: string list
      /// Utterances longer than this many seconds (when the duration is known) are skipped and reported.
      MaxDuration: float option
      /// At most this many utterances (the first ones in the reader's order, after the other selections).
      Limit: int option }

    static member Default = { Splits = []; MaxDuration = None; Limit = None }

module Corpus =
    /// A corpus from a reader's results in its order: the utterances, and the entries it skipped. Utterances whose id
    /// an earlier one already has are skipped too (ids must be unique within a corpus).
    let ofResults (name: string) (results: Result<Utterance, Skipped> seq) : Corpus =
        let seen = System.Collections.Generic.Dictionary<string, string>()
        let utterances = ResizeArray<Utterance>()
        let skipped = ResizeArray<Skipped>()
        for r in results do
            match r with
            | Ok u ->
                let source = AudioSource.name u.Audio
                match seen.TryGetValue u.Id with
                | true, first -> skipped.Add { Source = source; Reason = $"the id {u.Id} is already used by {first}" }
                | false, _ ->
                    seen.[u.Id] <- source
                    utterances.Add u
            | Error s -> skipped.Add s
        { Name = name; Utterances = utterances.ToArray(); Skipped = skipped.ToArray() }

    /// One line for the CLI: "N utterances, H.h hours, S skipped". The hours count the utterances whose duration is
    /// known and say so when that is not all of them; minutes replace hours below an hour, seconds below a minute.
    let describe (corpus: Corpus) : string =
        let plural (n: int) (word: string) = if n = 1 then $"1 {word}" else $"{n} {word}s"
        let known = corpus.Utterances |> Array.choose (fun u -> u.Duration)
        let seconds = Array.sum known
        let amount =
            if seconds >= 3600.0 then $"%.1f{seconds / 3600.0} hours"
            elif seconds >= 60.0 then $"%.1f{seconds / 60.0} minutes"
            else $"%.1f{seconds} seconds"
        let time =
            if known.Length = 0 then ""
            elif known.Length = corpus.Utterances.Length then $", {amount}"
            else $", {amount} in the {known.Length} whose duration is known"
        let count = plural corpus.Utterances.Length "utterance"
        $"{count}{time}, {corpus.Skipped.Length} skipped"
