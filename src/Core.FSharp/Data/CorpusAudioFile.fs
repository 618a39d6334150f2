namespace MagnetWhisper.Core.Data

open System.IO
open MagnetWhisper.Core.Audio

/// The checks a corpus reader makes on an utterance's audio file without decoding it.
module CorpusAudioFile =
    /// The file's duration from its header when that is cheap (WAV, FLAC; None otherwise), or why the utterance
    /// cannot be used: the file is missing or empty. Corrupt content is found when the audio is loaded.
    let inspect (path: string) : Result<float option, string> =
        let info = FileInfo path
        if not info.Exists then
            Error(if Directory.Exists path then "the audio path is a folder, not a file" else "the audio file is missing")
        elif info.Length = 0L then Error "the audio file is empty (0 bytes)"
        else
            match Audio.headerDuration path with
            | Some d when d <= 0.0 -> Error "the audio file holds no samples (its header says 0 s)"
            | d -> Ok d
