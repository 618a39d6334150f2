module MagnetWhisper.Tests.Data.BatchLoaderTests

// The loader leaves out every unusable utterance with its file and reason (corrupt audio, no samples, too long,
// empty transcript), skips a batch left empty, counts it all in the summary, measures unknown durations once, and
// resumes from a saved position with exactly the remaining batches, whatever the number of workers.

open System
open System.IO
open System.Threading
open Expecto
open TorchSharp
open MagnetWhisper.Core.Text
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Data
open MagnetWhisper.Tests.Audio.Tools

/// A 16-bit mono 16 kHz WAV of a 220 Hz tone, n samples (RIFF header written field by field).
let private writeWav (path: string) (n: int) =
    use file = File.Create path
    use w = new BinaryWriter(file)
    let ascii (s: string) = w.Write(Text.Encoding.ASCII.GetBytes s)
    ascii "RIFF"; w.Write(36 + 2 * n); ascii "WAVE"
    ascii "fmt "; w.Write 16; w.Write 1s; w.Write 1s; w.Write 16000; w.Write 32000; w.Write 2s; w.Write 16s
    ascii "data"; w.Write(2 * n)
    for i in 0 .. n - 1 do
        w.Write(int16 (3000.0 * sin (2.0 * Math.PI * 220.0 * float i / 16000.0)))

let private utterance (path: string) (text: string) (seconds: float option) =
    { Id = Path.GetFileNameWithoutExtension path; Audio = AudioFile path; Transcript = text; Duration = seconds
      Speaker = None; Split = None; Phones = None }

let private collate = CollateOptions.Of(WhisperConfig.preset "tiny", "en", Transcribe)
let private inOrder size = { Seed = 0L; Shuffle = false; Size = Utterances size; BucketWindow = None }
let private loaderOptions workers = { LoaderOptions.Default with Workers = workers; Ahead = 3; Ffmpeg = None }

let private drain (loader: BatchLoader) (start: BatchPosition) (lastEpoch: int) =
    [ for b in loader.Batches(start, lastEpoch, CancellationToken.None) do
          use _ = b.Batch
          yield b.Position, b.Next, b.Batch.Ids, b.Skipped ]

[<Tests>]
let tests =
    testSequenced <| testList "data.loader" [
        test "corrupt, empty and too long audio and an empty transcript are left out with their reason; an empty batch is skipped" {
            use dir = new TempDir()
            writeWav (dir.File "a.wav") 8000
            writeWav (dir.File "b.wav") 4000
            File.WriteAllBytes(dir.File "c.wav", Text.Encoding.ASCII.GetBytes "RIFF garbage, not a wave file at all")
            writeWav (dir.File "d.wav") 4000
            writeWav (dir.File "e.wav") 0
            writeWav (dir.File "f.wav") (31 * 16000)
            // Batches of two in this order: [c a] → a; [d e] → empty; [f b] → b.
            let utterances =
                [| utterance (dir.File "c.wav") "corrupt" (Some 1.0); utterance (dir.File "a.wav") "ask not" (Some 0.5)
                   utterance (dir.File "d.wav") "  " (Some 0.25); utterance (dir.File "e.wav") "nothing" (Some 0.0)
                   utterance (dir.File "f.wav") "long" (Some 31.0); utterance (dir.File "b.wav") "be" (Some 0.25) |]
            for workers in [ 1; 3 ] do
                let loader = BatchLoader(collate, inOrder 2, loaderOptions workers, utterances)
                let delivered = drain loader BatchPosition.Start 0
                Expect.equal [ for p, _, ids, _ in delivered -> p.Batch, ids ] [ 0, [| "a" |]; 2, [| "b" |] ] $"{workers} workers: batches 0 and 2"
                let _, _, _, first = delivered.[0]
                let _, _, _, second = delivered.[1]
                Expect.equal (first |> Array.map (fun s -> Path.GetFileName s.Source)) [| "c.wav" |] "the corrupt file with batch 0"
                Expect.stringContains first.[0].Reason "c.wav" "the decoder's reason names the file"
                Expect.equal (second |> Array.map (fun s -> Path.GetFileName s.Source)) [| "d.wav"; "e.wav"; "f.wav" |] "the empty batch's and batch 2's"
                Expect.equal second.[0].Reason "the transcript is empty" "empty transcript"
                Expect.equal second.[1].Reason "the audio holds no samples" "no samples"
                Expect.stringContains second.[2].Reason "31.00 s is longer than the 30 s window" "too long"
                let summary = loader.Summary
                Expect.equal (summary.Batches, summary.Utterances, summary.EmptyBatches, summary.Skipped.Length) (2, 2, 1, 4) "counted"
                Expect.floatClose Accuracy.high summary.AudioSeconds 0.75 "0.5 s + 0.25 s delivered"
                // A second epoch leaves out the same files but lists them once.
                drain loader { Epoch = 1; Batch = 0 } 1 |> ignore
                Expect.equal loader.Summary.Skipped.Length 4 "each bad utterance once"
                Expect.equal loader.Summary.Batches 4 "two more batches"
        }

        test "resuming from a delivered batch's Next yields exactly the remaining batches (shuffled, bucketed, 2 epochs)" {
            use dir = new TempDir()
            let utterances =
                [| for i in 0 .. 8 ->
                       let path = dir.File $"u{i}.wav"
                       writeWav path (800 * (i + 1))
                       utterance path "a" (Some(0.05 * float (i + 1))) |]
            let batching = { Seed = 11L; Shuffle = true; Size = Seconds 0.6; BucketWindow = Some 5 }
            let loader = BatchLoader(collate, batching, loaderOptions 2, utterances)
            let all = drain loader BatchPosition.Start 1
            let expected = Batching.from batching (utterances |> Array.map (fun u -> u.Duration.Value)) BatchPosition.Start 1 |> Seq.toList
            Expect.equal [ for _, _, ids, _ in all -> ids ] [ for _, idx in expected -> idx |> Array.map (fun i -> $"u{i}") ] "the plan's batches"
            for k in 0 .. all.Length - 2 do
                let _, next, _, _ = all.[k]
                let resumed = drain (BatchLoader(collate, batching, loaderOptions 3, utterances)) next 1
                Expect.equal [ for _, _, ids, _ in resumed -> ids ] [ for _, _, ids, _ in all.[k + 1 ..] -> ids ] $"after batch {k}"
        }

        test "unknown durations are measured once by decoding; unreadable files move to Skipped" {
            use dir = new TempDir()
            writeWav (dir.File "a.wav") 8000
            File.WriteAllBytes(dir.File "c.wav", [| 1uy; 2uy; 3uy |])
            let corpus =
                { Name = dir.File ""
                  Utterances = [| utterance (dir.File "a.wav") "a" None; utterance (dir.File "c.wav") "c" None
                                  utterance (dir.File "x.wav") "x" (Some 2.5) |]
                  Skipped = [||] }
            let measured = BatchLoader.measure 2 None CancellationToken.None corpus
            // 8000 samples at 16 kHz = 0.5 s; the stated 2.5 s is kept without reading x.wav (it does not exist).
            Expect.equal [ for u in measured.Utterances -> u.Id, u.Duration ] [ "a", Some 0.5; "x", Some 2.5 ] "durations"
            Expect.equal [ for s in measured.Skipped -> Path.GetFileName s.Source ] [ "c.wav" ] "the unreadable file"
            let e = Expect.throwsC (fun () -> BatchLoader(collate, inOrder 2, loaderOptions 1, corpus.Utterances) |> ignore) id
            Expect.stringContains e.Message "duration is unknown" "the loader needs durations"
        }

        test "the collated batch feeds a MagnetWhisper training forward" {
            use dir = new TempDir()
            writeWav (dir.File "a.wav") 8000
            writeWav (dir.File "b.wav") 3000
            torch.manual_seed 1L |> ignore
            use whisper = WhisperModel.create (WhisperConfig.preset "tiny")
            use model = MagnetWhisper.Core.Magnet.MagnetWhisperModel.FromWhisper(whisper, MagnetWhisper.Core.Magnet.MagnetOptions.Default.WithPredictor(1, MagnetWhisper.Core.Magnet.Bp1, 0.2))
            let collate = CollateOptions.ForMagnet(model, "en", Transcribe, [ Phonemes ])
            let utterances = [| utterance (dir.File "a.wav") "ask not" (Some 0.5); utterance (dir.File "b.wav") "what" (Some 0.1875) |]
            let loader = BatchLoader(collate, inOrder 2, loaderOptions 2, utterances)
            for b in loader.Batches(BatchPosition.Start, 0, CancellationToken.None) do
                use batch = b.Batch
                use generator = torch.Generator(3UL)
                use result = model.Forward(batch.Training generator)
                Expect.isTrue (Single.IsFinite(result.Loss.item<float32>())) "a finite loss"
                Expect.equal batch.Mel.shape.[2] 52L "0.5 s = 50 frames + 2 of lookahead"
        }
    ]
