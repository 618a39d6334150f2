namespace MagnetWhisper.Core.Data

open System
open System.Collections.Generic
open System.IO
open System.IO.Enumeration
open System.Text.RegularExpressions
open System.Threading
open System.Threading.Tasks
open Parquet
open Parquet.Schema

/// Hugging Face `datasets` Parquet shards, as the Hub publishes LibriSpeech and Common Voice: an `audio` struct of
/// `bytes` (the encoded file) and `path`, a transcript column `text` (or `sentence`, `transcription`), and optional
/// `id`, `speaker_id` or `client_id`, and `duration` columns. Read with Parquet.Net (managed). Audio bytes are read
/// when an utterance is loaded, one row group at a time, never the whole corpus at once.
module ParquetCorpus =
    /// The transcript column names, in the order they are looked for.
    let transcriptColumns = [ "text"; "sentence"; "transcription" ]

    /// The speaker column names, in the order they are looked for.
    let speakerColumns = [ "speaker_id"; "client_id" ]

    /// How many row groups of audio bytes are kept in memory (least recently used dropped first). Loading in corpus
    /// order, with workers a few utterances apart, touches one or two at a time.
    let cachedRowGroups = 4

    let private wait (t: ValueTask) = t.AsTask().GetAwaiter().GetResult()

    let private hasWildcard (path: string) = path.IndexOfAny [| '*'; '?' |] >= 0

    /// The files a pattern with `*` and `?` names (in any of its parts, each matched within one folder), in
    /// ordinal order.
    let private expand (pattern: string) : string[] =
        let root = Path.GetPathRoot pattern |> Option.ofObj |> Option.defaultValue ""
        let parts = pattern.Substring(root.Length).Split([| '/'; '\\' |], StringSplitOptions.RemoveEmptyEntries)
        let folderOf (path: string) = if path = "" then "." else path
        let step (paths: string list) (index: int) =
            let part = parts.[index]
            let last = index = parts.Length - 1
            paths
            |> List.collect (fun path ->
                if not (hasWildcard part) then [ Path.Combine(path, part) ]
                elif not (Directory.Exists(folderOf path)) then []
                else
                    (if last then Directory.EnumerateFileSystemEntries(folderOf path) else Directory.EnumerateDirectories(folderOf path))
                    |> Seq.map Path.GetFileName
                    |> Seq.filter (fun name -> FileSystemName.MatchesSimpleExpression(part, name, false))
                    |> Seq.sortWith (fun a b -> String.CompareOrdinal(a, b))
                    |> Seq.map (fun name -> Path.Combine(path, name))
                    |> Seq.toList)
        Seq.fold step [ root ] [ 0 .. parts.Length - 1 ] |> List.filter File.Exists |> List.toArray

    /// True when `path` names Parquet shards: a `.parquet` file, a pattern with wildcards, or a folder holding
    /// `.parquet` files (at any depth).
    let isShards (path: string) : bool =
        hasWildcard path
        || (File.Exists path && Path.GetExtension(path).Equals(".parquet", StringComparison.OrdinalIgnoreCase))
        || (Directory.Exists path && not (Seq.isEmpty (Directory.EnumerateFiles(path, "*.parquet", SearchOption.AllDirectories))))

    /// The shard files `path` names: itself, the `.parquet` files below a folder, or those a pattern matches.
    let shards (path: string) : string[] =
        if hasWildcard path then
            match expand path with
            | [||] -> raise (FileNotFoundException($"{path}: no file matches this pattern", path))
            | files -> files
        elif File.Exists path then [| path |]
        elif Directory.Exists path then
            Directory.EnumerateFiles(path, "*.parquet", SearchOption.AllDirectories)
            |> Seq.sortWith (fun a b -> String.CompareOrdinal(a, b))
            |> Seq.toArray
        else raise (FileNotFoundException($"{path}: no such Parquet file or folder", path))

    let private hubShardName = Regex(@"^(?<split>.+)-\d{5}-of-\d{5}\.parquet$", RegexOptions.IgnoreCase)

    /// The split of a shard: `SPLIT` of the Hub's `SPLIT-00000-of-00003.parquet`, else its folder's name.
    let splitOf (shard: string) : string =
        let m = hubShardName.Match(Path.GetFileName shard)
        if m.Success then m.Groups.["split"].Value
        else Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath shard))

    /// A column's values in one row group, None where the row has no value (a null, or a null parent struct).
    let private readColumn<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType>
        (group: ParquetRowGroupReader) (field: DataField) : 'T option[] =
        let rows = int group.RowCount
        let values = Array.zeroCreate<'T> rows
        let levels = Array.zeroCreate<int> rows
        let definitions = if field.MaxDefinitionLevel > 0 then Nullable(Memory<int> levels) else Nullable()
        wait (group.ReadRawAsync<'T>(field, Memory<'T> values, definitions, Nullable(), CancellationToken.None))
        if field.MaxDefinitionLevel = 0 then values |> Array.map Some
        else
            let mutable next = 0
            levels
            |> Array.map (fun level ->
                if level = field.MaxDefinitionLevel then
                    next <- next + 1
                    Some values.[next - 1]
                else None)

    // Parquet.Net reports a read schema's text and binary columns as ReadOnlyMemory (a written one's as string and
    // byte[]); either way they are read as ReadOnlyMemory.
    let private isText (field: DataField) = field.ClrType = typeof<string> || field.ClrType = typeof<ReadOnlyMemory<char>>
    let private isBinary (field: DataField) = field.ClrType = typeof<byte[]> || field.ClrType = typeof<ReadOnlyMemory<byte>>

    /// A text or integer column's values as strings (ids and speakers are either).
    let private readText (group: ParquetRowGroupReader) (field: DataField) : string option[] =
        let asText (values: 'a option[]) (show: 'a -> string) = values |> Array.map (Option.map show)
        match field.ClrType with
        | _ when isText field -> asText (readColumn<ReadOnlyMemory<char>> group field) (fun v -> String(v.Span))
        | t when t = typeof<int64> -> asText (readColumn<int64> group field) string
        | t when t = typeof<int> -> asText (readColumn<int> group field) string
        | t -> raise (InvalidDataException $"column {field.Path} holds {t.Name} values, not text or integers")

    /// A number column's values as floats (a `duration` column).
    let private readNumber (group: ParquetRowGroupReader) (field: DataField) : float option[] =
        match field.ClrType with
        | t when t = typeof<double> -> readColumn<double> group field
        | t when t = typeof<float32> -> readColumn<float32> group field |> Array.map (Option.map float)
        | t -> raise (InvalidDataException $"column {field.Path} holds {t.Name} values, not seconds")

    /// The columns this reader uses, found by path; unknown columns are ignored.
    type private Columns =
        { Bytes: DataField option
          AudioPath: DataField option
          Transcript: DataField option
          Id: DataField option
          Speaker: DataField option
          Duration: DataField option }

    let private columnsOf (schema: ParquetSchema) : Columns =
        // Repeated (list) columns have no single value per row.
        let fields = schema.GetDataFields() |> Array.filter (fun f -> f.MaxRepetitionLevel = 0)
        let find (path: string list) = fields |> Array.tryFind (fun f -> f.Path.ToList() |> List.ofSeq = path)
        let first (names: string list) = names |> List.tryPick (fun n -> find [ n ])
        { Bytes = find [ "audio"; "bytes" ] |> Option.filter isBinary
          AudioPath = find [ "audio"; "path" ] |> Option.filter isText
          Transcript = first transcriptColumns |> Option.filter isText
          Id = find [ "id" ]
          Speaker = first speakerColumns
          Duration = find [ "duration" ] }

    /// Runs `f` on a reader of the shard; the file is closed afterwards (the reader holds nothing else).
    let private withShard (shard: string) (f: ParquetReader -> 'a) : 'a =
        use stream = new FileStream(shard, FileMode.Open, FileAccess.Read, FileShare.Read, 1 <<< 16)
        f (ParquetReader.CreateAsync(stream, null, true, CancellationToken.None).GetAwaiter().GetResult())

    /// The audio bytes of recently used row groups, shared by one corpus's utterances: an utterance's bytes are read
    /// with those of its whole row group (Parquet reads a column chunk at once), which the next utterances reuse.
    type private RowGroupCache() =
        let entries = LinkedList<struct (string * int * byte[] option[])>()
        let gate = obj ()

        member _.Bytes(shard: string, group: int, field: DataField) : byte[] option[] =
            lock gate (fun () ->
                let mutable node = entries.First
                while not (isNull node) && (let struct (s, g, _) = node.Value in s <> shard || g <> group) do
                    node <- node.Next
                if not (isNull node) then
                    entries.Remove node
                    entries.AddFirst node
                    let struct (_, _, bytes) = node.Value
                    bytes
                else
                    let bytes =
                        withShard shard (fun reader ->
                            // Copied out of the reader's buffers, which do not outlive it.
                            readColumn<ReadOnlyMemory<byte>> (reader.OpenRowGroupReader group) field
                            |> Array.map (Option.map (fun m -> m.ToArray())))
                    entries.AddFirst(struct (shard, group, bytes)) |> ignore
                    while entries.Count > cachedRowGroups do
                        entries.RemoveLast()
                    bytes)

    /// Reads one shard's rows (all but the audio bytes) into results in row order. A shard that cannot be read, or
    /// lacks an audio or a transcript column, is one skipped entry.
    let private indexShard (cache: RowGroupCache) (shard: string) (reader: ParquetReader) : Result<Utterance, Skipped>[] =
        let folder = Path.GetDirectoryName(Path.GetFullPath shard)
        let split = splitOf shard
        let shardError reason = [| Error { Source = shard; Reason = reason } |]
        let schema = reader.Schema
        let columns = columnsOf schema
        let names () = String.Join(", ", schema.GetDataFields() |> Array.map (fun f -> string f.Path))
        match columns with
        | { Bytes = None; AudioPath = None } ->
            shardError $"no audio column (audio.bytes or audio.path of an `audio` struct); its columns are {names ()}"
        | { Transcript = None } ->
            let wanted = String.Join(", ", transcriptColumns)
            shardError $"no text column for the transcripts (one of {wanted}); its columns are {names ()}"
        | { Transcript = Some transcriptField } ->
            let first = ref 0
            [| for g in 0 .. reader.RowGroupCount - 1 do
                   let group = reader.OpenRowGroupReader g
                   let rows = int group.RowCount
                   let optional (field: DataField option) read = match field with Some f -> read group f | None -> Array.create rows None
                   let texts = readText group transcriptField
                   let ids = optional columns.Id readText
                   let speakers = optional columns.Speaker readText
                   let durations = optional columns.Duration readNumber
                   let paths = optional columns.AudioPath readText
                   for r in 0 .. rows - 1 do
                       let row = first.Value + r
                       let path = paths.[r] |> Option.filter (String.IsNullOrWhiteSpace >> not)
                       let name = $"{shard} row {row}" + (path |> Option.map (fun p -> $" ({p})") |> Option.defaultValue "")
                       let id =
                           ids.[r]
                           |> Option.orElse (path |> Option.map Path.GetFileNameWithoutExtension)
                           |> Option.defaultValue $"{Path.GetFileNameWithoutExtension shard}-{row}"
                       let audio =
                           match columns.Bytes with
                           | Some bytesField ->
                               let read () =
                                   match (cache.Bytes(shard, g, bytesField)).[r] with
                                   | Some bytes when bytes.Length > 0 -> bytes
                                   | _ ->
                                       // No embedded bytes: the `path` names a file beside the shard.
                                       match path |> Option.map (fun p -> Path.Combine(folder, p)) with
                                       | Some file when File.Exists file -> File.ReadAllBytes file
                                       | Some _ ->
                                           raise (InvalidDataException $"{name}: no audio bytes, and its audio.path is not a file beside the shard")
                                       | None -> raise (InvalidDataException $"{name}: no audio bytes and no audio.path")
                               Ok(EmbeddedAudio(name, read), None)
                           | None ->
                               match path with
                               | None -> Error "no audio.path"
                               | Some p ->
                                   let file = Path.Combine(folder, p)
                                   CorpusAudioFile.inspect file
                                   |> Result.map (fun d -> AudioFile file, d)
                                   |> Result.mapError (fun reason -> $"{reason}: {file}")
                       match texts.[r] |> Option.map (fun t -> t.Trim()), audio with
                       | None, _ | Some "", _ ->
                           yield Error { Source = name; Reason = $"the transcript ({transcriptField.Name}) is empty" }
                       | _, Error reason -> yield Error { Source = name; Reason = reason }
                       | Some text, Ok(source, headerDuration) ->
                           yield
                               Ok { Id = id; Audio = source; Transcript = text
                                    Duration = durations.[r] |> Option.filter (fun d -> d > 0.0) |> Option.orElse headerDuration
                                    Speaker = speakers.[r]; Split = Some split; Phones = None }
                   first.Value <- first.Value + rows |]

    let private readShard (cache: RowGroupCache) (shard: string) : Result<Utterance, Skipped>[] =
        try withShard shard (indexShard cache shard)
        with
        | :? IOException | :? InvalidDataException | :? ParquetException | :? NotSupportedException
        | :? ArgumentException | :? InvalidOperationException | :? IndexOutOfRangeException as e ->
            [| Error { Source = shard; Reason = $"not a readable Parquet shard ({e.Message})" } |]

    /// Reads the shards `path` names (a `.parquet` file, a folder of them, or a pattern such as
    /// `data/dev-*.parquet`), in path order. Each utterance's split is its shard's (see splitOf). Rows with an empty
    /// transcript, and shards that cannot be read or lack the audio or transcript column, are skipped with the
    /// reason. Audio bytes are read when an utterance is loaded; a row without bytes loads the file its
    /// `audio.path` names, relative to the shard.
    let read (path: string) : Corpus =
        let cache = RowGroupCache()
        shards path |> Seq.collect (readShard cache) |> Corpus.ofResults path
