module MagnetWhisper.Tests.Data.PhoneAlignmentTests

// Reference phone alignments: festival's utt.save.segs files (written here by festival itself when it is installed)
// and plain "end_time phone" lines; each phone starts where the previous one ended.

open System
open System.IO
open Expecto
open MagnetWhisper.Core.Data
open MagnetWhisper.Tests.Audio

[<Tests>]
let tests =
    testList "data.alignment" [
        test "festival's segs format: header up to '#', then 'end colour phone'; starts are the previous ends" {
            // The first lines festival 2.5 writes for "And so".
            let text = "#\n0.2200 100 pau\n0.3140 100 ae\n0.3585 100 n\n"
            let phones = PhoneAlignment.parse "and.segs" text
            let expected: PhoneAlignment.Phone list =
                [ { Start = 0.0; End = 0.22; Label = "pau" }
                  { Start = 0.22; End = 0.314; Label = "ae" }
                  { Start = 0.314; End = 0.3585; Label = "n" } ]
            Expect.equal phones expected "three phones"
        }

        test "an xlabel header before '#' is skipped; 'end phone' lines, CRLF and blank lines are accepted" {
            let text = "separator ;\r\nnfields 1\r\n#\r\n\r\n0.5 sil\r\n1.25\tAH\r\n"
            let expected: PhoneAlignment.Phone list = [ { Start = 0.0; End = 0.5; Label = "sil" }; { Start = 0.5; End = 1.25; Label = "AH" } ]
            Expect.equal (PhoneAlignment.parse "x" text) expected "two phones"
            Expect.equal (PhoneAlignment.parse "x" "0.5 sil\n1.25 AH\n") expected "without a header"
        }

        test "bad lines name the file and the line" {
            let message (text: string) =
                try
                    PhoneAlignment.parse "ref.segs" text |> ignore
                    "no error"
                with :? InvalidDataException as e -> e.Message
            Expect.equal (message "#\n0.2 100 pau\nabc 100 ae\n") "ref.segs line 3: 'abc' is not a time in seconds" "not a number"
            Expect.equal (message "0.5 a\n0.4 b\n") "ref.segs line 2: the end time 0.4 is before the previous phone's end 0.5" "decreasing"
            Expect.equal (message "0.5 a b c\n") "ref.segs line 1: expected 'end_time phone' or 'end_time colour phone', got '0.5 a b c'" "four fields"
            Expect.equal (message "#\n") "ref.segs: no aligned phones (lines 'end_time phone')" "empty"
            let missing = Path.Combine(Path.GetTempPath(), $"nowhere-{Guid.NewGuid():N}.segs")
            let e = Expect.throwsC (fun () -> PhoneAlignment.read missing |> ignore) id
            Expect.stringContains e.Message missing "the missing path is named"
        }

        test "festival's own utt.save.segs output: the last phone ends where festival's waveform ends" {
            let festival = Tools.requireTool "festival"
            use dir = new Tools.TempDir()
            let segs, wav = dir.File "u.segs", dir.File "u.wav"
            let script = dir.File "u.scm"
            File.WriteAllText(script, $"(set! u (Utterance Text \"So my fellow Americans.\"))\n(utt.synth u)\n(utt.save.segs u \"{segs}\")\n(utt.save.wave u \"{wav}\" 'riff)\n")
            Tools.run festival [ "-b"; script ] |> ignore
            let phones = PhoneAlignment.read segs
            let bytes = File.ReadAllBytes wav
            // RIFF: byte rate at offset 28, data size after the "data" tag.
            let byteRate = BitConverter.ToInt32(bytes, 28)
            let dataAt = (Text.Encoding.ASCII.GetString bytes).IndexOf "data"
            let seconds = float (BitConverter.ToInt32(bytes, dataAt + 4)) / float byteRate
            Expect.isGreaterThan phones.Length 10 "a phone a line"
            Expect.equal phones.Head.Label "pau" "festival starts with a pause"
            // The waveform runs on for the last diphone's second half (28 ms with kal_diphone).
            Expect.floatClose { absolute = 0.05; relative = 0.0 } (List.last phones).End seconds "the segments cover the waveform"
            for a, b in List.pairwise phones do
                Expect.equal b.Start a.End "contiguous"
        }
    ]
