module MagnetWhisper.Tests.Training.MetricsTests

// The metrics sinks: metrics.jsonl is read back with System.Text.Json (not our reader), and TensorBoard's event files
// are decoded here from their definition (TFRecord framing with masked CRC-32C, protobuf Event/Summary/SessionLog),
// not with TorchSharp's protobuf classes, so a wrong tag, step, value or framing shows up.

open System
open System.IO
open System.Text
open System.Text.Json
open Expecto
open MagnetWhisper.Core.Training

/// A fresh temporary folder.
let private tempDir () =
    let dir = Path.Combine(Path.GetTempPath(), $"mw-metrics-{Guid.NewGuid():N}")
    Directory.CreateDirectory dir |> ignore
    dir

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit.
let private crc32c (bytes: byte[]) : uint32 =
    let mutable crc = 0xFFFFFFFFu
    for b in bytes do
        crc <- crc ^^^ uint32 b
        for _ in 1 .. 8 do
            crc <- if crc &&& 1u <> 0u then (crc >>> 1) ^^^ 0x82F63B78u else crc >>> 1
    crc ^^^ 0xFFFFFFFFu

/// TFRecord's masked CRC: rotate right by 15 bits, add 0xa282ead8.
let private maskedCrc (bytes: byte[]) =
    let c = crc32c bytes
    ((c >>> 15) ||| (c <<< 17)) + 0xa282ead8u

/// The records of a TFRecord file, each CRC checked: uint64 length, uint32 masked CRC of the length bytes, data,
/// uint32 masked CRC of the data (little-endian).
let private records (path: string) : byte[] list =
    let bytes = File.ReadAllBytes path
    let rec go (at: int) acc =
        if at = bytes.Length then List.rev acc
        else
            let lengthBytes = bytes.[at .. at + 7]
            let length = int (BitConverter.ToUInt64(lengthBytes, 0))
            Expect.equal (BitConverter.ToUInt32(bytes, at + 8)) (maskedCrc lengthBytes) "length CRC"
            let data = bytes.[at + 12 .. at + 12 + length - 1]
            Expect.equal (BitConverter.ToUInt32(bytes, at + 12 + length)) (maskedCrc data) "data CRC"
            go (at + 16 + length) (data :: acc)
    go 0 []

/// A protobuf field value: varint, fixed64, length-delimited bytes or fixed32.
type private Field =
    | Varint of uint64
    | Fixed64 of byte[]
    | Bytes of byte[]
    | Fixed32 of byte[]

/// (field number, value) of every field of a protobuf message, in order.
let private fields (msg: byte[]) : (int * Field) list =
    let mutable at = 0
    let varint () =
        let mutable v = 0UL
        let mutable shift = 0
        let mutable more = true
        while more do
            let b = msg.[at]
            at <- at + 1
            v <- v ||| (uint64 (b &&& 0x7Fuy) <<< shift)
            shift <- shift + 7
            more <- b &&& 0x80uy <> 0uy
        v
    [ while at < msg.Length do
          let key = varint ()
          let number = int (key >>> 3)
          match int (key &&& 7UL) with
          | 0 -> yield number, Varint(varint ())
          | 1 ->
              yield number, Fixed64 msg.[at .. at + 7]
              at <- at + 8
          | 2 ->
              let n = int (varint ())
              yield number, Bytes msg.[at .. at + n - 1]
              at <- at + n
          | 5 ->
              yield number, Fixed32 msg.[at .. at + 3]
              at <- at + 4
          | w -> failwith $"wire type {w}" ]

/// What the tests need of a tensorflow.Event: wall_time (1), step (2), file_version (3), the (tag, simple_value) of
/// summary (5) → value (1) → tag (1), simple_value (2), and session_log (7) → status (1).
type private Event =
    { WallTime: float; Step: int64; FileVersion: string option; Scalars: (string * float32) list; SessionStatus: int option }

let private event (data: byte[]) : Event =
    let fs = fields data
    let scalar (value: byte[]) =
        let vs = fields value
        let tag = vs |> List.pick (function 1, Bytes b -> Some(Encoding.UTF8.GetString b) | _ -> None)
        let v = vs |> List.pick (function 2, Fixed32 b -> Some(BitConverter.ToSingle(b, 0)) | _ -> None)
        tag, v
    { WallTime = fs |> List.tryPick (function 1, Fixed64 b -> Some(BitConverter.ToDouble(b, 0)) | _ -> None) |> Option.defaultValue 0.0
      Step = fs |> List.tryPick (function 2, Varint v -> Some(int64 v) | _ -> None) |> Option.defaultValue 0L
      FileVersion = fs |> List.tryPick (function 3, Bytes b -> Some(Encoding.UTF8.GetString b) | _ -> None)
      Scalars =
        [ for f in fs do
              match f with
              | 5, Bytes summary ->
                  for g in fields summary do
                      match g with
                      | 1, Bytes value -> scalar value
                      | _ -> ()
              | _ -> () ]
      SessionStatus =
        fs |> List.tryPick (function 7, Bytes b -> fields b |> List.tryPick (function 1, Varint s -> Some(int s) | _ -> None) |> Option.orElse (Some 0) | _ -> None) }

let private eventFiles (dir: string) = Directory.GetFiles(dir, "events.out.tfevents.*") |> Array.sort

let private log (sink: IMetricsSink) (step: int64) (values: (string * float) list) = sink.Log(step, values)

[<Tests>]
let tests =
    testList "metrics" [
        test "the CRC-32C of the test decoder gives the published check value of \"123456789\"" {
            Expect.equal (crc32c (Encoding.ASCII.GetBytes "123456789")) 0xE3069283u "RFC 3720 B.4 check value"
        }

        test "metrics.jsonl: one object a line, step first, values as given (NaN and ±∞ as null), read back by System.Text.Json" {
            let path = Path.Combine(tempDir (), "run", "metrics.jsonl")
            let steps =
                [ 1L, [ MetricKeys.TrainLoss, 2.5; MetricKeys.TrainCompressionRatio, 0.125; MetricKeys.TrainLearningRate, 1e-5 ]
                  2L, [ MetricKeys.TrainLoss, Double.NaN; MetricKeys.TrainGradNorm, Double.PositiveInfinity ]
                  1000L, [ MetricKeys.EvalWer, 12.345678901234567 ] ]
            do
                use sink = JsonlMetricsSink.Open path
                for step, values in steps do
                    log sink step values
                // Each line reaches the file as it is logged, before the sink is closed.
                Expect.equal (File.ReadAllLines path).Length 3 "three lines before Dispose"
            let lines = File.ReadAllLines path
            for (step, values), line in List.zip steps (List.ofArray lines) do
                use doc = JsonDocument.Parse line
                let props = doc.RootElement.EnumerateObject() |> Seq.toList
                Expect.equal props.Head.Name "step" "step is the first key"
                Expect.equal (props.Head.Value.GetInt64()) step "step"
                Expect.equal (props.Tail |> List.map (fun p -> p.Name)) (values |> List.map fst) "names in order"
                for (_, expected), p in List.zip values props.Tail do
                    if Double.IsFinite expected then Expect.equal (p.Value.GetDouble()) expected "value round-trips exactly"
                    else Expect.equal p.Value.ValueKind JsonValueKind.Null "non-finite → null"
            let read = MetricsJsonl.read path
            Expect.equal (read |> List.map (fun l -> l.Step)) [ 1L; 2L; 1000L ] "our reader: the steps"
            Expect.isTrue (Double.IsNaN(snd read.[1].Values.[1])) "null reads as NaN"
        }

        test "reopening appends after a torn last line; a resume step drops the lines of later steps" {
            let path = Path.Combine(tempDir (), "metrics.jsonl")
            do
                use sink = JsonlMetricsSink.Open path
                for s in 1L .. 5L do
                    log sink s [ MetricKeys.TrainLoss, float s ]
            // A crash in the middle of a line.
            File.AppendAllText(path, "{\"step\":6,\"train/lo")
            do
                use sink = JsonlMetricsSink.Open path
                log sink 6L [ MetricKeys.TrainLoss, 6.0 ]
            Expect.equal (MetricsJsonl.read path |> List.map (fun l -> l.Step)) [ 1L .. 6L ] "the torn line is gone, 6 follows 5"
            do
                use sink = JsonlMetricsSink.Open(path, Some 3L)
                log sink 4L [ MetricKeys.TrainLoss, 40.0 ]
            let lines = MetricsJsonl.read path
            Expect.equal (lines |> List.map (fun l -> l.Step)) [ 1L; 2L; 3L; 4L ] "steps 4–6 of the interrupted run dropped"
            Expect.equal lines.[3].Values [ MetricKeys.TrainLoss, 40.0 ] "the resumed run's step 4"
        }

        test "a repeated name, the name 'step' and a negative step are refused" {
            use sink = JsonlMetricsSink.Open(Path.Combine(tempDir (), "m.jsonl"))
            Expect.throwsT<ArgumentException> (fun () -> log sink 1L [ "a", 1.0; "a", 2.0 ]) "repeated"
            Expect.throwsT<ArgumentException> (fun () -> log sink 1L [ "step", 1.0 ]) "step"
            Expect.throwsT<ArgumentException> (fun () -> log sink -1L [ "a", 1.0 ]) "negative"
        }

        test "TensorBoard: a file_version event, then one scalar event per value with the metric's tag and step, CRCs valid" {
            let dir = tempDir ()
            let before = DateTimeOffset.UtcNow.ToUnixTimeSeconds()
            do
                use sink = new TensorBoardMetricsSink(dir)
                log sink 10L [ MetricKeys.TrainLoss, 1.5; MetricKeys.TrainBoundaryLoss, 0.25 ]
                log sink 20L [ MetricKeys.EvalWer, 33.3 ]
            let after = DateTimeOffset.UtcNow.ToUnixTimeSeconds()
            let files = eventFiles dir
            Expect.equal files.Length 1 "one event file"
            let events = records files.[0] |> List.map event
            Expect.equal events.Head.FileVersion (Some "brain.Event:2") "the file starts with its version"
            let scalars = events.Tail |> List.collect (fun e -> e.Scalars |> List.map (fun (tag, v) -> e.Step, tag, v))
            Expect.equal scalars [ 10L, MetricKeys.TrainLoss, 1.5f; 10L, MetricKeys.TrainBoundaryLoss, 0.25f; 20L, MetricKeys.EvalWer, 33.3f ] "step, tag, simple_value"
            for e in events.Tail do
                Expect.isTrue (e.WallTime >= float before && e.WallTime <= float after) $"wall time {e.WallTime} is Unix seconds of the run"
        }

        test "TensorBoard resume: the new event file marks the restart with SessionLog START at the step after the resume step" {
            let dir = tempDir ()
            do
                use sink = new TensorBoardMetricsSink(dir)
                for s in 1L .. 5L do
                    log sink s [ MetricKeys.TrainLoss, float s ]
            Threading.Thread.Sleep 5 // distinct file names (they carry the clock's ticks)
            do
                use sink = new TensorBoardMetricsSink(dir, Some 3L)
                log sink 4L [ MetricKeys.TrainLoss, 40.0 ]
            let files = eventFiles dir
            Expect.equal files.Length 2 "a second event file"
            let resumed = files |> Array.map (records >> List.map event) |> Array.find (fun es -> es |> List.exists (fun e -> e.SessionStatus.IsSome))
            match resumed with
            | version :: start :: scalar :: [] ->
                Expect.equal version.FileVersion (Some "brain.Event:2") "version first"
                Expect.equal (start.Step, start.SessionStatus) (4L, Some 1) "START (1) at step 4: TensorBoard purges steps ≥ 4 of older files"
                Expect.equal (scalar.Step, scalar.Scalars) (4L, [ MetricKeys.TrainLoss, 40.0f ]) "the resumed step 4"
            | other -> failtest $"unexpected events {other}"
        }

        test "a run folder fans every step out to metrics.jsonl and the event file" {
            let dir = tempDir ()
            do
                use sink = MetricsSinks.runFolder dir None
                log sink 7L [ MetricKeys.TrainGrpoRewardMean, -0.5 ]
            Expect.equal (MetricsJsonl.read (Path.Combine(dir, "metrics.jsonl"))) [ { Step = 7L; Values = [ MetricKeys.TrainGrpoRewardMean, -0.5 ] } ] "jsonl"
            let scalars = eventFiles dir |> Array.toList |> List.collect (records >> List.map event) |> List.collect (fun e -> e.Scalars |> List.map (fun s -> e.Step, s))
            Expect.equal scalars [ 7L, (MetricKeys.TrainGrpoRewardMean, -0.5f) ] "events"
        }

        test "the original's W&B names are listed once each" {
            Expect.equal (List.distinct MetricKeys.all).Length MetricKeys.all.Length "no duplicates"
            for k in [ "train/loss"; "train/compression_ratio"; "train/boundary_loss"; "eval/wer"; "train/grpo_reward_mean"; "final/test_wer" ] do
                Expect.contains MetricKeys.all k k
        }
    ]
