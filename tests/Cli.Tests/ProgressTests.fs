/// The progress display: its pure formatting (bar, ETA, clock), the flag suggestions, and the bar as it appears when
/// stderr is a terminal (the command run under `script`, which gives it a pseudo-terminal).
module MagnetWhisper.Cli.Tests.ProgressTests

open System.IO
open Expecto
open MagnetWhisper.Cli
open MagnetWhisper.Cli.Tests.Harness

[<Tests>]
let tests =
    testList "cli progress" [
        test "eta is the remaining audio at the rate so far" {
            // 11 of 30 s done in 7 s: 19 s left at 11/7 audio-s per s → 19 · 7 / 11.
            Expect.floatClose Accuracy.veryHigh (Progress.eta 11.0 30.0 7.0).Value (19.0 * 7.0 / 11.0) "eta"
            Expect.isNone (Progress.eta 0.0 30.0 7.0) "no estimate before any audio is done"
            Expect.equal (Progress.eta 30.0 30.0 9.0) (Some 0.0) "done"
        }

        test "clock is m:ss, h:mm:ss from an hour" {
            Expect.equal (Progress.clock 65.9) "1:05" "65.9 s"
            Expect.equal (Progress.clock 3725.0) "1:02:05" "3725 s"
            Expect.equal (Progress.clock 0.0) "0:00" "0 s"
        }

        test "barLine: percentage, eighth-block bar, seconds, elapsed and ETA; cut to the width" {
            // 11/30 = 36.7%: 58.7 of 160 eighths → 7 full cells and 2/8 of the next (▎), 12 empty cells.
            let expected = "jfk.flac  36% |███████▎            | 11.0/30.0 s, 0:07 elapsed, ETA 0:12"
            Expect.equal (Progress.barLine "jfk.flac" 11.0 30.0 7.0 (Some 12.09) 200) expected "bar"
            Expect.equal (Progress.barLine "jfk.flac" 11.0 30.0 7.0 (Some 12.09) 12) (expected.Substring(0, 12)) "cut"
            Expect.stringContains (Progress.barLine "a.wav" 0.0 0.0 3.0 None 200) "ETA ?" "no estimate yet"
            Expect.stringContains (Progress.barLine "a.wav" 30.0 30.0 3.0 (Some 0.0) 200) "100% |████████████████████|" "full bar"
        }

        test "misspelt flags get the nearest known flag, unrelated ones none" {
            let known = Args.flagsOf<Commands.Transcribe.TranscribeArgs> ()
            Expect.contains known "--output-dir" "flag names from the Argu union"
            Expect.contains known "-o" "alternative names"
            Expect.equal (Args.closest known "--outptu-dir") (Some "--output-dir") "transposition"
            Expect.equal (Args.closest known "--beamsize") (Some "--beam-size") "missing dash"
            Expect.equal (Args.closest known "--fp16") None "nothing near"
            Expect.equal (Args.editDistance "kitten" "sitting") 3 "the textbook example"
        }

        test "on a terminal, stderr shows a bar redrawn in place with ETA, and segment lines above it" {
            let script = "/usr/bin/script"
            if not (File.Exists script) then skiptest "script (util-linux) is not installed"
            let dir = tempDir "tty"
            let args = [ "dotnet"; magnetDll; "transcribe"; data "jfk.flac"; "--model"; tinyWhisper.Value; "-o"; dir; "-f"; "txt" ] @ fast
            let command = System.String.Join(" ", args |> List.map (fun a -> "'" + a + "'"))
            let info = System.Diagnostics.ProcessStartInfo(script, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
            for a in [ "-qec"; command; "/dev/null" ] do info.ArgumentList.Add a
            use p = System.Diagnostics.Process.Start info
            let out = p.StandardOutput.ReadToEnd()
            p.WaitForExit()
            Expect.equal p.ExitCode 0 out
            Expect.stringContains out "\r" "redrawn in place"
            Expect.stringContains out "  0% |                    | 0.0/11.0 s" "the file's length is shown before the first window ends"
            Expect.stringContains out "\u001b[K" "line cleared"
            Expect.isMatch out @"jfk\.flac +\d+% \|[█▏▎▍▌▋▊▉ ]{20}\| \d+\.\d/11\.0 s, \d+:\d\d elapsed, ETA (\d+:\d\d|\?)" "the bar"
            Expect.isMatch out @"\[00:\d\d\.\d{3} --> 00:\d\d\.\d{3}\] " "segment lines"
        }
    ]
