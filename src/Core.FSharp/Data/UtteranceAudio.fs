namespace MagnetWhisper.Core.Data

open MagnetWhisper.Core.Audio

/// An utterance's audio as the models hear it.
module UtteranceAudio =
    /// Decodes the utterance's audio (files by their content; embedded bytes likewise, with `ffmpeg` for formats
    /// not decoded in-process) to 16 kHz mono float32, resampled as openai/whisper does. Errors are those of
    /// Audio.decodeUsing, naming the file or the embedded source.
    let loadUsing (ffmpeg: string option) (utterance: Utterance) : float32[] =
        match utterance.Audio with
        | AudioFile path -> Audio.loadUsing ffmpeg path
        | EmbeddedAudio (name, read) -> Audio.decodeBytesUsing ffmpeg name (read ()) |> Audio.toWhisperRate
