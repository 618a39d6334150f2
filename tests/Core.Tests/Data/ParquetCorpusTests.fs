module MagnetWhisper.Tests.Data.ParquetCorpusTests

// Parquet shards laid out as Hugging Face `datasets` writes them (an `audio` struct of bytes and path, a transcript
// column, ids and speakers), written in the test with Parquet.Net's low-level writer with explicit definition levels,
// then read back as a corpus: rows, splits, lazily read bytes, the path fallback, bad rows and bad shards.

open System
open System.IO
open System.Threading
open Expecto
open Parquet
open Parquet.Schema
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Data
open MagnetWhisper.Tests.Audio.Tools
open MagnetWhisper.Tests.Data.CorpusFixtures

/// One row of a shard; None is a null.
type private Row =
    { Bytes: byte[] option
      Path: string option
      Text: string option
      Speaker: int64 option
      Id: string option }

let private row bytes path text speaker id = { Bytes = bytes; Path = path; Text = text; Speaker = speaker; Id = id }

/// Writes one column of a row group from per-row values: the non-null values packed, and each row's definition
/// level (the field's maximum when present, one less when only the value is null: its parents are present).
let private writeColumn (group: ParquetRowGroupWriter) (field: DataField) (values: 'T option list) =
    let present = values |> List.choose id |> Array.ofList
    let levels = values |> List.map (fun v -> if v.IsSome then field.MaxDefinitionLevel else field.MaxDefinitionLevel - 1) |> Array.ofList
    group.WriteAllPartsAsync<'T>(field, ReadOnlyMemory present, Nullable(ReadOnlyMemory levels), Nullable(), CancellationToken.None)
        .GetAwaiter().GetResult()

let private chars (s: string option) = s |> Option.map (fun t -> t.AsMemory())

/// Writes a shard with the schema of the Hub's LibriSpeech (`audio` {bytes, path}, `text` or another transcript
/// column name, `speaker_id`, `id`) and a column this reader does not know (`chapter_id`), one row group per list.
let private writeShard (path: string) (transcriptColumn: string) (groups: Row list list) =
    let bytes = DataField<byte[]>("bytes", true)
    let audioPath = DataField<string>("path", true)
    let text = DataField<string>(transcriptColumn, true)
    let speaker = DataField<int64>("speaker_id", true)
    let id = DataField<string>("id", true)
    let chapter = DataField<int64>("chapter_id", true)
    let schema = ParquetSchema(StructField("audio", bytes, audioPath), text, speaker, id, chapter)
    Directory.CreateDirectory(Path.GetDirectoryName path) |> ignore
    use stream = File.Create path
    let writer = ParquetWriter.CreateAsync(schema, stream, null, false, CancellationToken.None).GetAwaiter().GetResult()
    for rows in groups do
        use group = writer.CreateRowGroup()
        writeColumn group bytes (rows |> List.map (fun r -> r.Bytes |> Option.map (fun b -> ReadOnlyMemory<byte>(b))))
        writeColumn group audioPath (rows |> List.map (fun r -> chars r.Path))
        writeColumn group text (rows |> List.map (fun r -> chars r.Text))
        writeColumn group speaker (rows |> List.map (fun r -> r.Speaker))
        writeColumn group id (rows |> List.map (fun r -> chars r.Id))
        writeColumn group chapter (rows |> List.map (fun _ -> Some 7L))
        group.CompleteValidate()
    writer.DisposeAsync().AsTask().GetAwaiter().GetResult()

let private embedded (u: Utterance) =
    match u.Audio with
    | EmbeddedAudio(name, read) -> name, read ()
    | AudioFile path -> failtestf "%s: expected embedded audio, got the file %s" u.Id path

[<Tests>]
let tests =
    testList "data.parquet" [
        test "a shard of FLAC bytes: rows in order across row groups, ids, speakers, the Hub's split name, bytes as written" {
            use dir = new TempDir()
            let a = File.ReadAllBytes(tone (dir.File "src/a.flac") 1.0 16000 440.0)
            let b = File.ReadAllBytes(tone (dir.File "src/b.flac") 0.5 16000 660.0)
            tone (dir.File "data/side.flac") 0.25 16000 880.0 |> ignore
            let shard = dir.File "data/validation-00000-of-00001.parquet"
            writeShard shard "text"
                [ [ row (Some a) (Some "1272-1-0000.flac") (Some "FIRST ROW") (Some 1272L) (Some "1272-1-0000")
                    row None (Some "side.flac") (Some "FROM THE PATH") (Some 1272L) None
                    row (Some b) None (Some "  ") (Some 3L) (Some "empty") ]
                  [ row (Some b) (Some "b.flac") (Some "SECOND GROUP") None None ] ]
            Expect.isTrue (ParquetCorpus.isShards shard) "a .parquet file"
            let corpus = Corpora.read CorpusOptions.Default shard
            Expect.equal (corpus.Utterances |> Array.map (fun u -> u.Id)) [| "1272-1-0000"; "side"; "b" |] "id column, else the path's stem"
            Expect.equal (corpus.Utterances |> Array.map (fun u -> u.Speaker)) [| Some "1272"; Some "1272"; None |] "speaker_id"
            Expect.isTrue (corpus.Utterances |> Array.forall (fun u -> u.Split = Some "validation")) "split from the file name"
            Expect.equal corpus.Utterances.[0].Transcript "FIRST ROW" "text"
            let name0, bytes0 = embedded corpus.Utterances.[0]
            Expect.equal name0 $"{shard} row 0 (1272-1-0000.flac)" "named by shard, row and path"
            Expect.equal bytes0 a "row 0's bytes"
            let name3, bytes3 = embedded corpus.Utterances.[2]
            Expect.equal name3 $"{shard} row 3 (b.flac)" "rows count across row groups"
            Expect.equal bytes3 b "row 3's bytes"
            // No bytes: the path is a file beside the shard.
            Expect.equal (snd (embedded corpus.Utterances.[1])) (File.ReadAllBytes(dir.File "data/side.flac")) "path fallback"
            Expect.equal (UtteranceAudio.loadUsing None corpus.Utterances.[1]) (Audio.load (dir.File "data/side.flac")) "loads"
            Expect.equal corpus.Skipped.Length 1 "the empty transcript"
            Expect.equal corpus.Skipped.[0].Source $"{shard} row 2" "named"
            Expect.stringContains corpus.Skipped.[0].Reason "transcript (text) is empty" "why"
        }

        test "bytes are read when loaded, not when the corpus is read" {
            use dir = new TempDir()
            let a = File.ReadAllBytes(tone (dir.File "a.flac") 0.5 16000 440.0)
            let b = File.ReadAllBytes(tone (dir.File "b.flac") 0.5 16000 660.0)
            let shard = dir.File "train-00000-of-00001.parquet"
            writeShard shard "text" [ [ row (Some a) None (Some "X") None (Some "x") ] ]
            let corpus = Corpora.read CorpusOptions.Default shard
            // Same row, other bytes: what the utterance loads is what the shard holds then.
            writeShard shard "text" [ [ row (Some b) None (Some "X") None (Some "x") ] ]
            Expect.equal (snd (embedded corpus.Utterances.[0])) b "read at load time"
            Expect.isNone corpus.Utterances.[0].Duration "no duration column: unknown until decoded"
        }

        test "folders and patterns of shards; Common Voice's `sentence`; splits from names or folders; selection" {
            use dir = new TempDir()
            let a = File.ReadAllBytes(tone (dir.File "a.flac") 0.5 16000 440.0)
            let shard (file: string) (ids: string list) =
                writeShard (dir.File file) "sentence" [ ids |> List.map (fun i -> row (Some a) None (Some $"say {i}") None (Some i)) ]
            shard "hub/data/dev-00000-of-00002.parquet" [ "d0"; "d1" ]
            shard "hub/data/dev-00001-of-00002.parquet" [ "d2" ]
            shard "hub/data/train-00000-of-00001.parquet" [ "t0" ]
            shard "hub/clean/test/0000.parquet" [ "c0" ]
            let ids (c: Corpus) = c.Utterances |> Array.map (fun u -> u.Id, u.Split)
            let all = Corpora.read CorpusOptions.Default (dir.File "hub")
            Expect.equal (ids all)
                [| "c0", Some "test"; "d0", Some "dev"; "d1", Some "dev"; "d2", Some "dev"; "t0", Some "train" |] "a folder, sorted by path"
            Expect.equal all.Utterances.[0].Transcript "say c0" "the sentence column"
            let dev = Corpora.read CorpusOptions.Default (dir.File "hub/data/dev-*.parquet")
            Expect.equal (ids dev |> Array.map fst) [| "d0"; "d1"; "d2" |] "a pattern"
            let nested = Corpora.read { CorpusOptions.Default with Splits = [ "dev"; "test" ]; Limit = Some 3 } (dir.File "hub/*/*/*.parquet")
            Expect.equal (ids nested |> Array.map fst) [| "c0" |] "wildcards in folders: only clean/test/0000.parquet is that deep"
            let limited = Corpora.read { CorpusOptions.Default with Splits = [ "dev" ]; Limit = Some 2 } (dir.File "hub")
            Expect.equal (ids limited |> Array.map fst) [| "d0"; "d1" |] "split and limit"
            let e = Expect.throwsC (fun () -> Corpora.read CorpusOptions.Default (dir.File "hub/data/test-*.parquet") |> ignore) id
            Expect.stringContains e.Message "test-*.parquet: no file matches" "an empty pattern is named"
        }

        test "bad shards and rows are skipped and counted: no transcript column, not Parquet, corrupt audio bytes" {
            use dir = new TempDir()
            let a = File.ReadAllBytes(tone (dir.File "a.flac") 0.5 16000 440.0)
            let corrupt = Array.copy a
            // Flip bits in the first audio frame (after "fLaC" and the metadata): its CRC no longer matches.
            for i in corrupt.Length - 200 .. corrupt.Length - 190 do
                corrupt.[i] <- corrupt.[i] ^^^ 0x5Auy
            writeShard (dir.File "s/dev-00000-of-00003.parquet") "text"
                [ [ row (Some corrupt) (Some "bad.flac") (Some "CORRUPT") None (Some "bad"); row (Some a) None (Some "GOOD") None (Some "good") ] ]
            writeShard (dir.File "s/dev-00001-of-00003.parquet") "words" [ [ row (Some a) None (Some "NO TEXT COLUMN") None (Some "w") ] ]
            File.WriteAllBytes(dir.File "s/dev-00002-of-00003.parquet", Text.Encoding.ASCII.GetBytes "PAR1 but not a Parquet file")
            let corpus = Corpora.read CorpusOptions.Default (dir.File "s")
            Expect.equal (corpus.Utterances |> Array.map (fun u -> u.Id)) [| "bad"; "good" |] "rows of the good shard"
            Expect.equal corpus.Skipped.Length 2 "two shards skipped"
            Expect.stringContains corpus.Skipped.[0].Source "dev-00001-of-00003.parquet" "the shard without text"
            Expect.stringContains corpus.Skipped.[0].Reason "no text column" "why"
            Expect.stringContains corpus.Skipped.[0].Reason "words" "lists the columns it has"
            Expect.stringContains corpus.Skipped.[1].Source "dev-00002-of-00003.parquet" "the file that is not Parquet"
            Expect.stringContains corpus.Skipped.[1].Reason "not a readable Parquet shard" "why"
            Expect.equal (Corpus.describe corpus) "2 utterances, 2 skipped" "summary"
            // The corrupt bytes are found when decoded; the error names the row (the loader skips it then).
            raisesWith<InvalidDataException> [ "dev-00000-of-00003.parquet row 0 (bad.flac)" ]
                (fun () -> UtteranceAudio.loadUsing None corpus.Utterances.[0] |> ignore) |> ignore
            Expect.equal (UtteranceAudio.loadUsing None corpus.Utterances.[1]) (Audio.load (dir.File "a.flac")) "the good row loads"
        }

        test "MP3 bytes (Common Voice) decode in-process from a shard" {
            let ffmpeg = requireTool "ffmpeg"
            use dir = new TempDir()
            let mp3 = dir.File "clip.mp3"
            run ffmpeg [ "-nostdin"; "-loglevel"; "error"; "-i"; data "jfk.flac"; "-t"; "2"; "-ar"; "48000"; "-ac"; "1"; "-c:a"; "libmp3lame"; "-b:a"; "64k"; mp3 ] |> ignore
            writeShard (dir.File "cv/test-00000-of-00001.parquet") "sentence"
                [ [ row (Some(File.ReadAllBytes mp3)) (Some "common_voice_en_1.mp3") (Some "And so my fellow Americans") None None ] ]
            let corpus = Corpora.read CorpusOptions.Default (dir.File "cv")
            Expect.equal corpus.Utterances.[0].Id "common_voice_en_1" "id from the path"
            let samples = UtteranceAudio.loadUsing None corpus.Utterances.[0]
            Expect.equal samples (Audio.loadUsing None mp3) "the MP3 bytes, decoded without ffmpeg"
            Expect.equal samples.Length 32000 "2 s at 16 kHz"
        }
    ]
