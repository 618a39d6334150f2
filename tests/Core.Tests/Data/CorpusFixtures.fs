/// Small audio files for the corpus tests, made with sox (an external reference tool).
module MagnetWhisper.Tests.Data.CorpusFixtures

open System.IO
open MagnetWhisper.Tests.Audio.Tools

/// Writes a sine tone of exactly `seconds` at `rate` Hz, 16-bit mono, in the format of the path's extension (WAV,
/// FLAC …), creating its folder.
let tone (path: string) (seconds: float) (rate: int) (frequency: float) : string =
    let sox = requireTool "sox"
    Directory.CreateDirectory(Path.GetDirectoryName path) |> ignore
    run sox [ "-n"; "-r"; string rate; "-b"; "16"; "-c"; "1"; path; "synth"; $"%g{seconds}"; "sine"; $"%g{frequency}"; "vol"; "0.5" ] |> ignore
    path
