namespace MagnetWhisper.Core.Decoding

open System
open System.Globalization
open System.IO
open System.Text

/// Transcript file formats (openai/whisper's writers).
type OutputFormat =
    | Txt
    | Vtt
    | Srt
    | Tsv
    | Json

    /// The file extension, without the dot.
    member f.Extension =
        match f with
        | Txt -> "txt"
        | Vtt -> "vtt"
        | Srt -> "srt"
        | Tsv -> "tsv"
        | Json -> "json"

/// openai/whisper's result writers, byte for byte: txt (one stripped segment text per line), vtt, srt, tsv (integer
/// milliseconds) and json (`json.dump` of {text, segments, language}, ASCII-escaped).
[<RequireQualifiedAccess>]
module Writers =
    /// Every format, in whisper's "all" order.
    let all = [ Txt; Vtt; Srt; Tsv; Json ]

    /// Parses "txt", "vtt", "srt", "tsv", "json" or "all" (case-insensitive).
    let parseFormat (name: string) : OutputFormat list =
        match name.Trim().ToLowerInvariant() with
        | "txt" -> [ Txt ]
        | "vtt" -> [ Vtt ]
        | "srt" -> [ Srt ]
        | "tsv" -> [ Tsv ]
        | "json" -> [ Json ]
        | "all" -> all
        | other -> invalidArg "format" $"unknown output format '{other}': use txt, vtt, srt, tsv, json or all"

    /// whisper's `format_timestamp`: [hh:]mm:ss<marker>mmm, milliseconds rounded half to even.
    let formatTimestamp (alwaysIncludeHours: bool) (decimalMarker: string) (seconds: float) : string =
        if seconds < 0.0 then invalidArg "seconds" $"non-negative timestamp expected, got {seconds}"
        let mutable ms = int64 (Math.Round(seconds * 1000.0, MidpointRounding.ToEven))
        let hours = ms / 3_600_000L
        ms <- ms - hours * 3_600_000L
        let minutes = ms / 60_000L
        ms <- ms - minutes * 60_000L
        let secs = ms / 1_000L
        ms <- ms - secs * 1_000L
        let hoursMarker = if alwaysIncludeHours || hours > 0L then $"{hours:D2}:" else ""
        $"{hoursMarker}{minutes:D2}:{secs:D2}{decimalMarker}{ms:D3}"

    /// Python's `str.strip()` (Unicode whitespace).
    let private strip (s: string) = s.Trim()

    let private subtitleText (s: Segment) = (strip s.Text).Replace("-->", "->")

    /// The .txt text.
    let txt (t: Transcript) : string =
        let sb = StringBuilder()
        for s in t.Segments do
            sb.Append(strip s.Text).Append('\n') |> ignore
        sb.ToString()

    /// The .vtt text (WebVTT, mm:ss.mmm unless an hour is reached).
    let vtt (t: Transcript) : string =
        let sb = StringBuilder("WEBVTT\n\n")
        for s in t.Segments do
            let ts = formatTimestamp false "."
            sb.Append($"{ts s.Start} --> {ts s.End}\n{subtitleText s}\n\n") |> ignore
        sb.ToString()

    /// The .srt text (numbered from 1, hh:mm:ss,mmm).
    let srt (t: Transcript) : string =
        let sb = StringBuilder()
        t.Segments |> List.iteri (fun i s ->
            let ts = formatTimestamp true ","
            sb.Append($"{i + 1}\n{ts s.Start} --> {ts s.End}\n{subtitleText s}\n\n") |> ignore)
        sb.ToString()

    /// The .tsv text: header "start\tend\ttext", times in integer milliseconds (rounded half to even).
    let tsv (t: Transcript) : string =
        let sb = StringBuilder("start\tend\ttext\n")
        let ms (x: float) = Math.Round(1000.0 * x, MidpointRounding.ToEven).ToString("0", CultureInfo.InvariantCulture)
        for s in t.Segments do
            sb.Append($"{ms s.Start}\t{ms s.End}\t{(strip s.Text).Replace('\t', ' ')}\n") |> ignore
        sb.ToString()

    /// Python's `repr` of a float (shortest round-trip digits; exponent form below 1e-4 and from 1e16).
    let pythonFloat (x: float) : string =
        if Double.IsNaN x then "NaN"
        elif Double.IsPositiveInfinity x then "Infinity"
        elif Double.IsNegativeInfinity x then "-Infinity"
        elif x = 0.0 then (if 1.0 / x < 0.0 then "-0.0" else "0.0")
        else
            // the shortest round-trip digits (.NET's "R"), re-laid out as Python's repr
            let shortest = x.ToString("R", CultureInfo.InvariantCulture)
            let negative = shortest.StartsWith "-"
            let body = if negative then shortest.Substring 1 else shortest
            let mantissa, exp10 =
                match body.IndexOfAny [| 'E'; 'e' |] with
                | -1 -> body, 0
                | i -> body.Substring(0, i), Int32.Parse(body.Substring(i + 1), CultureInfo.InvariantCulture)
            let intPart, fracPart =
                match mantissa.IndexOf '.' with
                | -1 -> mantissa, ""
                | i -> mantissa.Substring(0, i), mantissa.Substring(i + 1)
            let allDigits = (intPart + fracPart).TrimStart '0'
            let leadingZeros = (intPart + fracPart).Length - (intPart + fracPart).TrimStart('0').Length
            // value = 0.d1d2d3... × 10^point
            let point = intPart.Length + exp10 - leadingZeros
            let digits = allDigits.TrimEnd '0'
            let digits = if digits = "" then "0" else digits
            let decimalExponent = point - 1
            let text =
                if decimalExponent < -4 || decimalExponent >= 16 then
                    let m = if digits.Length = 1 then digits else digits.Substring(0, 1) + "." + digits.Substring 1
                    let sign = if decimalExponent < 0 then "-" else "+"
                    $"{m}e{sign}{abs decimalExponent:D2}"
                elif point <= 0 then "0." + String('0', -point) + digits
                elif point >= digits.Length then digits + String('0', point - digits.Length) + ".0"
                else digits.Substring(0, point) + "." + digits.Substring point
            if negative then "-" + text else text

    /// A JSON string as Python's `json.dumps` writes it with ensure_ascii (non-ASCII as \uXXXX).
    let pythonString (s: string) : string =
        let sb = StringBuilder("\"")
        for c in s do
            match c with
            | '"' -> sb.Append "\\\"" |> ignore
            | '\\' -> sb.Append "\\\\" |> ignore
            | '\n' -> sb.Append "\\n" |> ignore
            | '\r' -> sb.Append "\\r" |> ignore
            | '\t' -> sb.Append "\\t" |> ignore
            | '\b' -> sb.Append "\\b" |> ignore
            | '\012' -> sb.Append "\\f" |> ignore
            | c when c < ' ' || c > '~' -> sb.Append("\\u").Append((int c).ToString("x4")) |> ignore
            | c -> sb.Append c |> ignore
        sb.Append('"').ToString()

    /// The .json text: `{"text": …, "segments": [{"id", "seek", "start", "end", "text", "tokens", "temperature",
    /// "avg_logprob", "compression_ratio", "no_speech_prob"}, …], "language": …}` with Python's separators.
    let json (t: Transcript) : string =
        let segment (s: Segment) =
            let tokens = String.Join(", ", s.Tokens)
            String.Join(
                ", ",
                [ $"\"id\": {s.Id}"
                  $"\"seek\": {s.Seek}"
                  $"\"start\": {pythonFloat s.Start}"
                  $"\"end\": {pythonFloat s.End}"
                  $"\"text\": {pythonString s.Text}"
                  $"\"tokens\": [{tokens}]"
                  $"\"temperature\": {pythonFloat s.Temperature}"
                  $"\"avg_logprob\": {pythonFloat s.AvgLogProb}"
                  $"\"compression_ratio\": {pythonFloat s.CompressionRatio}"
                  $"\"no_speech_prob\": {pythonFloat s.NoSpeechProb}" ])
        let segments = t.Segments |> List.map (fun s -> "{" + segment s + "}")
        let joined = String.Join(", ", segments)
        $"{{\"text\": {pythonString t.Text}, \"segments\": [{joined}], \"language\": {pythonString t.Language}}}"

    /// The text of a transcript in a format.
    let render (format: OutputFormat) (t: Transcript) : string =
        match format with
        | Txt -> txt t
        | Vtt -> vtt t
        | Srt -> srt t
        | Tsv -> tsv t
        | Json -> json t

    /// Where whisper writes a format for an audio file: dir / (file name without extension).ext.
    let outputPath (dir: string) (audioPath: string) (format: OutputFormat) : string =
        Path.Combine(dir, Path.GetFileNameWithoutExtension audioPath + "." + format.Extension)

    /// Writes the formats of a transcript next to each other in dir (UTF-8 without BOM); returns the paths.
    let write (dir: string) (audioPath: string) (formats: OutputFormat list) (t: Transcript) : string list =
        Directory.CreateDirectory dir |> ignore
        [ for f in formats ->
              let path = outputPath dir audioPath f
              File.WriteAllText(path, render f t, UTF8Encoding(false))
              path ]
