/// Loading audio files as Whisper wants them: 16 kHz mono float32. WAV, FLAC and MP3 are decoded in-process; every
/// other format (ogg, m4a, opus, webm …) goes through the `ffmpeg` command when it is installed.
module MagnetWhisper.Core.Audio.Audio

open System
open System.Diagnostics
open System.IO
open MagnetWhisper.Core.Audio.AudioErrors

/// How a file is decoded, chosen from its first bytes (not its extension).
type Container =
    | WavFile
    | FlacFile
    | Mp3File
    | OtherFile

/// Recognises WAV (RIFF/RF64 … WAVE), FLAC ("fLaC") and MP3 (an MPEG audio frame header) by their first bytes;
/// FLAC and MP3 possibly after an ID3v2 tag.
let detect (bytes: byte[]) : Container =
    let ascii (offset: int) (text: string) =
        bytes.Length >= offset + text.Length && Text.Encoding.ASCII.GetString(bytes, offset, text.Length) = text
    if (ascii 0 "RIFF" || ascii 0 "RF64") && ascii 8 "WAVE" then WavFile
    else
        let start = Mp3.id3v2Length bytes 0
        if ascii start "fLaC" then FlacFile
        elif Mp3.isFrameHeader bytes start then Mp3File
        else OtherFile

/// The duration a WAV or FLAC header states, from a few small reads at the file's start (nothing is decoded), so
/// a corpus can be selected by duration before its audio is loaded. A WAV's data size over its block size and rate
/// (a streaming writer's unknown size: the rest of the file); a FLAC's STREAMINFO total samples over its rate. None
/// for other formats, headers that do not state it (a FLAC total of 0) and headers that cannot be read: the
/// decoder names those problems when the audio is loaded.
let headerDuration (path: string) : float option =
    let u16 (b: byte[]) i = int b.[i] ||| (int b.[i + 1] <<< 8)
    let u32 (b: byte[]) i = int64 (u16 b i) ||| (int64 (u16 b (i + 2)) <<< 16)
    try
        use stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 4096)
        let readAt (position: int64) (count: int) =
            stream.Position <- position
            let bytes = Array.zeroCreate<byte> count
            Array.truncate (stream.ReadAtLeast(bytes.AsSpan(), count, false)) bytes
        let head = readAt 0L 12
        let ascii (b: byte[]) (offset: int) (text: string) =
            b.Length >= offset + text.Length && Text.Encoding.ASCII.GetString(b, offset, text.Length) = text
        if (ascii head 0 "RIFF" || ascii head 0 "RF64") && ascii head 8 "WAVE" then
            // Walk the chunks, seeking over their bodies, until the data chunk.
            let rec walk (position: int64) (format: (int * int64) option) (ds64Data: int64) =
                let header = readAt position 8
                if header.Length < 8 then None
                else
                    let size = u32 header 4
                    let body = position + 8L
                    let next = body + size + (size &&& 1L)
                    match Text.Encoding.ASCII.GetString(header, 0, 4) with
                    | "ds64" ->
                        let b = readAt body 16
                        if b.Length < 16 then None else walk next format (u32 b 8 ||| (u32 b 12 <<< 32))
                    | "fmt " ->
                        let b = readAt body 16
                        if b.Length < 16 then None else walk next (Some(u16 b 12, u32 b 4)) ds64Data
                    | "data" ->
                        match format with
                        | Some(blockAlign, rate) when blockAlign > 0 && rate > 0L ->
                            let available = stream.Length - body
                            let declared = if size = 0xFFFFFFFFL && ds64Data >= 0L then ds64Data else size
                            let bytes = if declared = 0xFFFFFFFFL || declared = 0L then available else min declared available
                            Some(float (bytes / int64 blockAlign) / float rate)
                        | _ -> None
                    | _ -> walk next format ds64Data
            walk 12L None -1L
        else
            let start = Mp3.id3v2Length (readAt 0L 10) 0
            // "fLaC", the first metadata block's header (type 0 = STREAMINFO) and its first 18 bytes.
            let b = readAt (int64 start) 26
            if b.Length < 26 || not (ascii b 0 "fLaC") || b.[4] &&& 0x7Fuy <> 0uy then None
            else
                let s = 8 // STREAMINFO: block sizes (4 bytes), frame sizes (6), rate (20 bits), channels, bits, total (36)
                let rate = (int b.[s + 10] <<< 12) ||| (int b.[s + 11] <<< 4) ||| (int b.[s + 12] >>> 4)
                let total = (int64 (b.[s + 13] &&& 0x0Fuy) <<< 32) ||| (int64 b.[s + 14] <<< 24) ||| (int64 b.[s + 15] <<< 16)
                            ||| (int64 b.[s + 16] <<< 8) ||| int64 b.[s + 17]
                if rate = 0 || total = 0L then None else Some(float total / float rate)
    with :? IOException | :? UnauthorizedAccessException -> None

/// The full path of the `ffmpeg` executable on PATH, if any.
let findFfmpeg () : string option =
    let names = if OperatingSystem.IsWindows() then [ "ffmpeg.exe" ] else [ "ffmpeg" ]
    (Environment.GetEnvironmentVariable "PATH" |> Option.ofObj |> Option.defaultValue "").Split(Path.PathSeparator)
    |> Seq.filter (String.IsNullOrWhiteSpace >> not)
    |> Seq.collect (fun dir -> names |> Seq.map (fun n -> Path.Combine(dir, n)))
    |> Seq.tryFind File.Exists

let private installHint =
    "install ffmpeg (e.g. `apt-get install ffmpeg`, `brew install ffmpeg`, `winget install ffmpeg`) or convert the file to WAV or FLAC"

/// What ffmpeg reads: a file it opens itself, or encoded bytes written to its standard input.
type private FfmpegInput =
    | FromFile of path: string
    | FromBytes of bytes: byte[]

/// Runs ffmpeg on one input and returns its output as a float32 WAV at 16 kHz, channels kept (ffmpeg's own
/// down-mix is not an average: its stereo → mono uses −3 dB gains). `name` names the audio in errors.
let private runFfmpeg (ffmpeg: string) (name: string) (input: FfmpegInput) : Waveform =
    let psi = ProcessStartInfo(ffmpeg)
    let source = match input with FromFile path -> path | FromBytes _ -> "pipe:0"
    for a in [ "-nostdin"; "-hide_banner"; "-loglevel"; "error"; "-threads"; "0"; "-i"; source; "-vn"; "-map"; "0:a:0"
               "-c:a"; "pcm_f32le"; "-ar"; string LogMel.SampleRate; "-f"; "wav"; "-" ] do
        psi.ArgumentList.Add a
    // `-nostdin` only stops ffmpeg's interactive keys; `-i pipe:0` still reads the input from standard input.
    psi.RedirectStandardInput <- (match input with FromBytes _ -> true | FromFile _ -> false)
    psi.RedirectStandardOutput <- true
    psi.RedirectStandardError <- true
    psi.UseShellExecute <- false
    use proc =
        try Process.Start psi
        with e -> unsupported name $"could not run ffmpeg ({ffmpeg}): {e.Message}; {installHint}"
    let stderr = proc.StandardError.ReadToEndAsync()
    // Feed standard input on its own task: ffmpeg writes output while it reads, and a full pipe would block both.
    let feeding =
        match input with
        | FromBytes bytes ->
            Threading.Tasks.Task.Run(fun () ->
                try
                    try proc.StandardInput.BaseStream.Write(bytes, 0, bytes.Length)
                    with :? IOException -> () // ffmpeg stopped reading (corrupt input); its exit code says why
                finally
                    try proc.StandardInput.Close() with :? IOException -> ())
        | FromFile _ -> Threading.Tasks.Task.CompletedTask
    use buffer = new MemoryStream()
    proc.StandardOutput.BaseStream.CopyTo buffer
    proc.WaitForExit()
    feeding.Wait()
    let message = stderr.Result.Trim()
    if proc.ExitCode <> 0 then
        let detail = if message = "" then $"exit code {proc.ExitCode}" else message
        invalid name $"ffmpeg could not decode it: {detail}"
    let w = Wav.decodeBytes $"{name} (decoded by ffmpeg)" (buffer.ToArray())
    if w.Length = 0 then invalid name "ffmpeg found no audio in it"
    w

/// Decodes any format ffmpeg reads with the given ffmpeg executable, resampled by ffmpeg to 16 kHz but keeping
/// the channels, as float32 WAV through a pipe. A failure raises InvalidDataException naming the file and quoting
/// ffmpeg.
let decodeWithFfmpeg (ffmpeg: string) (path: string) : Waveform =
    if not (File.Exists path) then raise (FileNotFoundException($"{path}: file not found", path))
    runFfmpeg ffmpeg path (FromFile path)

/// Decodes encoded audio held in memory (e.g. a Parquet row's `audio.bytes`) at its native rate and channel
/// count: WAV, FLAC and MP3 in-process (an 8 kHz MP3 with ffmpeg when it is given: see Mp3.decodesLikeFfmpeg);
/// other formats with the given ffmpeg, fed through its standard input (then the rate is already 16 kHz). `name` names the audio in errors, which are those of decodeUsing.
let decodeBytesUsing (ffmpeg: string option) (name: string) (bytes: byte[]) : Waveform =
    let viaFfmpeg (why: string) =
        match ffmpeg with
        | Some exe -> runFfmpeg exe name (FromBytes bytes)
        | None -> unsupported name $"{why}; decoding it needs the ffmpeg command, which is not on PATH: {installHint}"
    if bytes.Length = 0 then invalid name "is empty (0 bytes)"
    match detect bytes with
    | FlacFile -> Flac.decodeBytes name bytes |> Flac.toWaveform
    | Mp3File when ffmpeg.IsSome && not (Mp3.decodesLikeFfmpeg bytes) -> viaFfmpeg "an 8 kHz MP3"
    | Mp3File -> Mp3.decodeBytes name bytes
    | WavFile ->
        try Wav.decodeBytes name bytes
        with :? NotSupportedException as e -> viaFfmpeg e.Message
    | OtherFile -> viaFfmpeg "not a WAV, FLAC or MP3 file"

/// Decodes a file at its native rate and channel count: WAV, FLAC and MP3 in-process (an 8 kHz MP3 with ffmpeg when
/// it is given); other formats with the given ffmpeg (then the rate is already 16 kHz). Without ffmpeg, other formats raise NotSupportedException
/// naming the file and what to install. Missing files raise FileNotFoundException, corrupt ones
/// InvalidDataException, each naming the file.
let decodeUsing (ffmpeg: string option) (path: string) : Waveform =
    let bytes = readAllBytes path
    match ffmpeg, detect bytes with
    // ffmpeg opens the file itself: it can seek, which some containers need.
    | Some exe, OtherFile -> decodeWithFfmpeg exe path
    | Some exe, Mp3File when not (Mp3.decodesLikeFfmpeg bytes) -> decodeWithFfmpeg exe path
    | _ -> decodeBytesUsing ffmpeg path bytes

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

/// How audio at another sample rate is brought to Whisper's 16 kHz mono.
type ResampleMethod =
    /// What openai/whisper's `load_audio` gets from `ffmpeg -i FILE -ac 1 -ar 16000 -f s16le`: ffmpeg's default
    /// resampler (FfmpegResample; bit-exact on 8/16-bit input), each channel resampled and then mixed as ffmpeg
    /// mixes (two channels: their average rounded half up in 16 bits), and the result rounded to 16 bits. The
    /// log-mel features then equal openai/whisper's, which the models were trained on. The default.
    | FfmpegCompatible
    /// The band-limited resampler of Resample (flat within 0.0001 dB to 7.2 kHz, ≥ 110 dB stopband): channels
    /// averaged in float32, then resampled, without 16-bit rounding.
    | HighQuality

/// True when every sample is a multiple of 2^−15 in [−1, 1): the audio was 8- or 16-bit PCM, which ffmpeg
/// resamples and mixes in 16-bit integers.
let private is16Bit (w: Waveform) =
    w.Channels
    |> Array.forall (Array.forall (fun v ->
        let q = v * 32768.0f
        q = MathF.Round q && q >= -32768.0f && q <= 32767.0f))

/// ffmpeg's mix of one, two or more channels of 16-bit samples: two channels get gains 0.5 in Q15 with rounding
/// ((a + b + 1) >> 1); more channels are averaged (ffmpeg would use its layout-dependent surround matrix).
let private mixInt16 (channels: int16[][]) : int16[] =
    match channels with
    | [| c |] -> c
    | [| a; b |] -> Array.init a.Length (fun i -> int16 ((int a.[i] + int b.[i] + 1) >>> 1))
    | cs ->
        let n = float cs.Length
        Array.init cs.[0].Length (fun i -> int16 (Math.Floor((cs |> Array.sumBy (fun c -> float c.[i])) / n + 0.5)))

/// 16 kHz mono as `ffmpeg -ac 1 -ar 16000 -f s16le` produces it, scaled by 1/32768 (see FfmpegCompatible).
let private toWhisperRateLikeFfmpeg (w: Waveform) : float32[] =
    let rate = LogMel.SampleRate
    if w.Channels.Length = 0 then [||]
    elif is16Bit w then
        let channels = w.Channels |> Array.map (Array.map (fun v -> int16 (v * 32768.0f)))
        let resampled =
            if w.SampleRate = rate then channels
            else
                let filter = FfmpegResample.create w.SampleRate rate
                channels |> Array.map (FfmpegResample.applyInt16 filter)
        mixInt16 resampled |> Array.map (fun s -> float32 s / 32768.0f)
    else
        let resampled =
            if w.SampleRate = rate then w.Channels
            else
                let filter = FfmpegResample.create w.SampleRate rate
                w.Channels |> Array.map (FfmpegResample.applyFloat filter)
        let mixed =
            match resampled with
            | [| c |] -> c
            | [| a; b |] -> Array.init a.Length (fun i -> 0.5f * a.[i] + 0.5f * b.[i])
            | cs -> toMono { SampleRate = rate; Channels = cs }
        // ffmpeg's float → s16 conversion: scale by 2^15, round to nearest even, saturate.
        mixed |> Array.map (fun v -> (max -32768.0f (min 32767.0f (MathF.Round(v * 32768.0f)))) / 32768.0f)

/// Mixes to mono and resamples to 16 kHz with the given method.
let toWhisperRateWith (method: ResampleMethod) (w: Waveform) : float32[] =
    match method with
    | FfmpegCompatible -> toWhisperRateLikeFfmpeg w
    | HighQuality -> Resample.resample w.SampleRate LogMel.SampleRate (toMono w)

/// Mixes to mono and resamples to 16 kHz as openai/whisper's `load_audio` does (FfmpegCompatible).
let toWhisperRate (w: Waveform) : float32[] = toWhisperRateWith FfmpegCompatible w

/// Loads an audio file as 16 kHz mono float32 samples, full scale ±1, resampled with the given method and with the
/// given ffmpeg for formats other than WAV, FLAC and MP3 (ffmpeg then resamples them itself, with its default
/// resampler, whatever the method; see decodeUsing for the errors).
let loadWith (method: ResampleMethod) (ffmpeg: string option) (path: string) : float32[] =
    decodeUsing ffmpeg path |> toWhisperRateWith method

/// Loads an audio file as 16 kHz mono float32 samples, full scale ±1, with the given ffmpeg for formats other than
/// WAV, FLAC and MP3 (see decodeUsing for the errors), resampled as openai/whisper does (FfmpegCompatible).
let loadUsing (ffmpeg: string option) (path: string) : float32[] = loadWith FfmpegCompatible ffmpeg path

/// Loads an audio file as 16 kHz mono float32 samples, full scale ±1: WAV, FLAC and MP3 in-process, other formats via
/// ffmpeg on PATH, resampled as openai/whisper does (FfmpegCompatible). Errors name the file:
/// FileNotFoundException, InvalidDataException (corrupt or truncated), NotSupportedException (unsupported
/// encoding, or ffmpeg needed but not installed).
let load (path: string) : float32[] = loadUsing (findFfmpeg ()) path
