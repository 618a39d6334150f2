/// The long-form transcriber's progress hooks: each window is announced (where it starts, the audio's length)
/// before it is decoded, so a caller can show progress during a window that takes minutes.
module MagnetWhisper.Tests.Decoding.ProgressHookTests

open System.Threading
open Expecto
open MagnetWhisper.Core.Decoding
open MagnetWhisper.Tests.Decoding.ToyModel

/// A 16-bit mono 16 kHz WAV of silence (RIFF header written field by field).
let private writeSilence (path: string) (seconds: int) =
    use w = new System.IO.BinaryWriter(System.IO.File.Create path)
    let ascii (t: string) = w.Write(System.Text.Encoding.ASCII.GetBytes t)
    let bytes = seconds * 16000 * 2
    ascii "RIFF"; w.Write(36 + bytes); ascii "WAVE"
    ascii "fmt "; w.Write 16; w.Write 1s; w.Write 1s; w.Write 16000; w.Write 32000; w.Write 2s; w.Write 16s
    ascii "data"; w.Write bytes; w.Write(Array.zeroCreate<byte> bytes)

[<Tests>]
let tests =
    testSequenced <| testList "long-form progress hooks" [
        test "every window is announced before it is decoded, at the seek of the previous window's end" {
            // Each window of the toy ends with the timestamp pair at 5 s, so windows start 5 s apart over 62 s.
            let a, b = word "hello", word "world"
            let chain = [| ts 0; a; ts 100; ts 100; b; ts 250; ts 250; eot |]
            let toy = Toy(fun history _ -> [ chain.[min (sampledOf history).Length (chain.Length - 1)], 5.0f ])
            let options = { TranscribeOptions.defaults with Decoding = { DecodingOptions.defaults with Language = Some "en" } }
            let events = ResizeArray<Choice<WindowStart, WindowProgress>>()
            let samples = Array.zeroCreate<float32> (62 * 16000)
            LongForm.transcribeWithProgress toy tokenizer options [| samples |] (Choice1Of2 >> events.Add) (Choice2Of2 >> events.Add) CancellationToken.None
            |> ignore
            let windows = 13
            Expect.equal events.Count (2 * windows) "a start and an end per window"
            for w in 0 .. windows - 1 do
                match events.[2 * w], events.[2 * w + 1] with
                | Choice1Of2 start, Choice2Of2 finished ->
                    Expect.floatClose Accuracy.high start.Start (5.0 * float w) $"window {w} starts 5 s after the previous"
                    Expect.floatClose Accuracy.high start.Duration 62.0 "the audio's length is known before the first window"
                    Expect.equal start.Audio 0 "audio index"
                    Expect.floatClose Accuracy.high finished.Done (min 62.0 (5.0 * float (w + 1))) $"window {w} done"
                | other -> failtestf "window %d: expected a start then an end, got %A" w other
        }

        test "Transcriber.TranscribeFiles passes the starts on per file, before that window's progress" {
            let a, b = word "hello", word "world"
            let chain = [| ts 0; a; ts 100; ts 100; b; ts 250; ts 250; eot |]
            let toy = Toy(fun history _ -> [ chain.[min (sampledOf history).Length (chain.Length - 1)], 5.0f ])
            let options = { TranscribeOptions.defaults with Decoding = { DecodingOptions.defaults with Language = Some "en" } }
            let dir = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "mw-hooks-" + System.Guid.NewGuid().ToString("N"))
            System.IO.Directory.CreateDirectory dir |> ignore
            try
                let wav = System.IO.Path.Combine(dir, "silence.wav")
                writeSilence wav 12
                let log = ResizeArray<string>()
                Transcriber(toy).TranscribeFiles([ wav ], options, 1, (fun p -> log.Add $"start {p.Done:F1}/{p.Duration:F1} {p.Segments.Length}"), (fun p -> log.Add $"end {p.Done:F1}"), (fun _ _ -> ()), CancellationToken.None)
                |> ignore
                Expect.equal (List.ofSeq log) [ "start 0.0/12.0 0"; "end 5.0"; "start 5.0/12.0 0"; "end 10.0"; "start 10.0/12.0 0"; "end 12.0" ] "starts interleaved with ends"
            finally
                System.IO.Directory.Delete(dir, true)
        }
    ]
