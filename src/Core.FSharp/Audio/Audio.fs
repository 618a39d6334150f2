/// Loading audio files as Whisper wants them: 16 kHz mono float32. WAV and FLAC are decoded in-process; every other
/// format (mp3, ogg, m4a, opus, webm …) goes through the `ffmpeg` command when it is installed.
module MagnetWhisper.Core.Audio.Audio

open System
open System.Diagnostics
open System.IO
open MagnetWhisper.Core.Audio.AudioErrors

/// How a file is decoded, chosen from its first bytes (not its extension).
type Container =
    | WavFile
    | FlacFile
    | OtherFile

/// Recognises WAV (RIFF/RF64 … WAVE) and FLAC ("fLaC", possibly after an ID3v2 tag) by their first bytes.
let detect (bytes: byte[]) : Container =
    let ascii (offset: int) (text: string) =
        bytes.Length >= offset + text.Length && Text.Encoding.ASCII.GetString(bytes, offset, text.Length) = text
    if (ascii 0 "RIFF" || ascii 0 "RF64") && ascii 8 "WAVE" then WavFile
    elif ascii 0 "fLaC" then FlacFile
    elif ascii 0 "ID3" && bytes.Length >= 10 then
        let size = (int bytes.[6] <<< 21) ||| (int bytes.[7] <<< 14) ||| (int bytes.[8] <<< 7) ||| int bytes.[9]
        let at = 10 + size + (if bytes.[5] &&& 0x10uy <> 0uy then 10 else 0)
        if ascii at "fLaC" then FlacFile else OtherFile
    else OtherFile

/// The full path of the `ffmpeg` executable on PATH, if any.
let findFfmpeg () : string option =
    let names = if OperatingSystem.IsWindows() then [ "ffmpeg.exe" ] else [ "ffmpeg" ]
    (Environment.GetEnvironmentVariable "PATH" |> Option.ofObj |> Option.defaultValue "").Split(Path.PathSeparator)
    |> Seq.filter (String.IsNullOrWhiteSpace >> not)
    |> Seq.collect (fun dir -> names |> Seq.map (fun n -> Path.Combine(dir, n)))
    |> Seq.tryFind File.Exists

let private installHint =
    "install ffmpeg (e.g. `apt-get install ffmpeg`, `brew install ffmpeg`, `winget install ffmpeg`) or convert the file to WAV or FLAC"

/// Decodes any format ffmpeg reads with the given ffmpeg executable, resampled by ffmpeg to 16 kHz but keeping
/// the channels (ffmpeg's own down-mix is not an average: its stereo → mono uses −3 dB gains), as float32 WAV
/// through a pipe. A failure raises InvalidDataException naming the file and quoting ffmpeg.
let decodeWithFfmpeg (ffmpeg: string) (path: string) : Waveform =
    if not (File.Exists path) then raise (FileNotFoundException($"{path}: file not found", path))
    let psi = ProcessStartInfo(ffmpeg)
    for a in [ "-nostdin"; "-hide_banner"; "-loglevel"; "error"; "-threads"; "0"; "-i"; path; "-vn"; "-map"; "0:a:0"
               "-c:a"; "pcm_f32le"; "-ar"; string LogMel.SampleRate; "-f"; "wav"; "-" ] do
        psi.ArgumentList.Add a
    psi.RedirectStandardOutput <- true
    psi.RedirectStandardError <- true
    psi.UseShellExecute <- false
    use proc =
        try Process.Start psi
        with e -> unsupported path $"could not run ffmpeg ({ffmpeg}): {e.Message}; {installHint}"
    let stderr = proc.StandardError.ReadToEndAsync()
    use buffer = new MemoryStream()
    proc.StandardOutput.BaseStream.CopyTo buffer
    proc.WaitForExit()
    let message = stderr.Result.Trim()
    if proc.ExitCode <> 0 then
        let detail = if message = "" then $"exit code {proc.ExitCode}" else message
        invalid path $"ffmpeg could not decode it: {detail}"
    let w = Wav.decodeBytes $"{path} (decoded by ffmpeg)" (buffer.ToArray())
    if w.Length = 0 then invalid path "ffmpeg found no audio in it"
    w

/// Decodes a file at its native rate and channel count: WAV and FLAC in-process; other formats with the given
/// ffmpeg (then the rate is already 16 kHz). Without ffmpeg, other formats raise NotSupportedException
/// naming the file and what to install. Missing files raise FileNotFoundException, corrupt ones
/// InvalidDataException, each naming the file.
let decodeUsing (ffmpeg: string option) (path: string) : Waveform =
    let bytes = readAllBytes path
    let viaFfmpeg (why: string) =
        match ffmpeg with
        | Some exe -> decodeWithFfmpeg exe path
        | None -> unsupported path $"{why}; decoding it needs the ffmpeg command, which is not on PATH: {installHint}"
    match detect bytes with
    | FlacFile -> Flac.decodeBytes path bytes |> Flac.toWaveform
    | WavFile ->
        try Wav.decodeBytes path bytes
        with :? NotSupportedException as e -> viaFfmpeg e.Message
    | OtherFile -> viaFfmpeg "not a WAV or FLAC file"

/// Decodes a file at its native rate and channel count (ffmpeg looked up on PATH; see decodeUsing).
let decode (path: string) : Waveform = decodeUsing (findFfmpeg ()) path

/// Mixes the channels to mono (their average).
let toMono (w: Waveform) : float32[] =
    match w.Channels with
    | [||] -> [||]
    | [| c |] -> c
    | cs ->
        let k = float32 cs.Length
        Array.init w.Length (fun i ->
            let mutable s = 0.0f
            for c in cs do
                s <- s + c.[i]
            s / k)

/// Mixes to mono and resamples to 16 kHz with the band-limited resampler (Resample).
let toWhisperRate (w: Waveform) : float32[] = Resample.resample w.SampleRate LogMel.SampleRate (toMono w)

/// Loads an audio file as 16 kHz mono float32 samples, full scale ±1, with the given ffmpeg for formats other than
/// WAV and FLAC (see decodeUsing for the errors).
let loadUsing (ffmpeg: string option) (path: string) : float32[] = decodeUsing ffmpeg path |> toWhisperRate

/// Loads an audio file as 16 kHz mono float32 samples, full scale ±1: WAV and FLAC in-process, other formats via
/// ffmpeg on PATH. Errors name the file: FileNotFoundException, InvalidDataException (corrupt or truncated),
/// NotSupportedException (unsupported encoding, or ffmpeg needed but not installed).
let load (path: string) : float32[] = loadUsing (findFfmpeg ()) path
