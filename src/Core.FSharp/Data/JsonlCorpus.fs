namespace MagnetWhisper.Core.Data

open System
open System.IO
open System.Text.Json

/// A JSONL manifest: one JSON object per line, `{"audio": PATH, "text": TRANSCRIPT}` with optional `"duration"`
/// (seconds), `"speaker"`, `"id"`, `"split"` and `"phones"` (a phone alignment file, like PATH). PATH is relative to the manifest's folder (or absolute). Other keys
/// are ignored; blank lines too.
module JsonlCorpus =
    /// A string or number property as text (speaker and id may be either); None when absent or null.
    let private textOf (entry: JsonElement) (key: string) : Result<string option, string> =
        match entry.TryGetProperty key with
        | false, _ -> Ok None
        | true, v ->
            match v.ValueKind with
            | JsonValueKind.String -> Ok(Some(v.GetString()))
            | JsonValueKind.Number -> Ok(Some(v.GetRawText()))
            | JsonValueKind.Null -> Ok None
            | kind -> Error $"\"{key}\" is a {kind.ToString().ToLowerInvariant()}, not a string"

    /// Reads one line's object; Error says what is wrong with it.
    let private entry (folder: string) (line: string) : Result<Utterance, string> =
        let parsed =
            try
                use document = JsonDocument.Parse line
                Ok(document.RootElement.Clone())
            with :? JsonException as e -> Error $"not valid JSON ({e.Message})"
        parsed
        |> Result.bind (fun e -> if e.ValueKind = JsonValueKind.Object then Ok e else Error "not a JSON object")
        |> Result.bind (fun e ->
            match textOf e "audio", textOf e "text", textOf e "speaker", textOf e "id", textOf e "split" with
            | Error m, _, _, _, _ | _, Error m, _, _, _ | _, _, Error m, _, _ | _, _, _, Error m, _ | _, _, _, _, Error m -> Error m
            | Ok None, _, _, _, _ -> Error "no \"audio\" path"
            | Ok(Some a), _, _, _, _ when a.Trim() = "" -> Error "the \"audio\" path is empty"
            | _, Ok None, _, _, _ -> Error "no \"text\""
            | _, Ok(Some t), _, _, _ when t.Trim() = "" -> Error "the \"text\" is empty"
            | Ok(Some audio), Ok(Some text), Ok speaker, Ok id, Ok split ->
                let stated =
                    match e.TryGetProperty "duration" with
                    | false, _ -> Ok None
                    | true, v when v.ValueKind = JsonValueKind.Null -> Ok None
                    | true, v when v.ValueKind = JsonValueKind.Number && v.GetDouble() > 0.0 -> Ok(Some(v.GetDouble()))
                    | true, v -> Error $"\"duration\" is {v.GetRawText()}, not a positive number of seconds"
                let path = Path.Combine(folder, audio)
                match stated, textOf e "phones", CorpusAudioFile.inspect path with
                | Error m, _, _ | _, Error m, _ -> Error m
                | _, _, Error reason -> Error $"{reason}: {audio}"
                | Ok stated, Ok phones, Ok header ->
                    Ok { Id = id |> Option.defaultValue (Path.ChangeExtension(audio, null).Replace('\\', '/'))
                         Audio = AudioFile path
                         Transcript = text.Trim()
                         Duration = Option.orElse header stated
                         Speaker = speaker
                         Split = split
                         Phones = phones |> Option.filter (fun p -> p.Trim() <> "") |> Option.map (fun p -> Path.Combine(folder, p)) })

    /// Reads the manifest. A line that is not a JSON object, lacks `audio` or `text`, has an empty transcript, a
    /// malformed optional field, or names a missing or empty audio file is skipped and reported with its line
    /// number; it never stops the reading. The duration is the manifest's when it states one, else the audio header's
    /// (WAV, FLAC).
    let read (manifest: string) : Corpus =
        if not (File.Exists manifest) then raise (FileNotFoundException($"{manifest}: no such manifest", manifest))
        let folder = Path.GetDirectoryName(Path.GetFullPath manifest)
        // The line each id was first used on, so that a repeat names both lines.
        let firstUse = Collections.Generic.Dictionary<string, int>()
        File.ReadLines manifest
        |> Seq.mapi (fun i line -> i + 1, line)
        |> Seq.filter (fun (_, line) -> not (String.IsNullOrWhiteSpace line))
        |> Seq.map (fun (number, line) ->
            entry folder line
            |> Result.bind (fun u ->
                match firstUse.TryGetValue u.Id with
                | true, first -> Error $"the id {u.Id} is already used on line {first}"
                | false, _ ->
                    firstUse.[u.Id] <- number
                    Ok u)
            |> Result.mapError (fun reason -> { Source = $"{manifest} line {number}"; Reason = reason }))
        |> Corpus.ofResults manifest
