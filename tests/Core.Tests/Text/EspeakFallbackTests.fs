/// The espeak-ng fallback of the phoneme counter with fake espeak-ng programs on PATH: one that floods stderr,
/// one that hangs, one that fails, and a missing one. None may hang the counter, and every fallback to the
/// letter rules is reported in PhonemeCount.Warnings.
module MagnetWhisper.Tests.Text.EspeakFallbackTests

open System
open System.Diagnostics
open System.IO
open System.Threading.Tasks
open Expecto
open MagnetWhisper.Core.Text

/// A directory holding an executable shell script named espeak-ng, put first on PATH while `body` runs.
let private withFakeEspeak (script: string) (body: unit -> 'a) : 'a =
    if OperatingSystem.IsWindows() then skiptest "the fake espeak-ng is a shell script"
    let dir = Directory.CreateTempSubdirectory "magnet-fake-espeak-"
    let path = Path.Combine(dir.FullName, "espeak-ng")
    File.WriteAllText(path, "#!/bin/sh\n" + script + "\n")
    File.SetUnixFileMode(path, UnixFileMode.UserRead ||| UnixFileMode.UserWrite ||| UnixFileMode.UserExecute)
    let oldPath = Environment.GetEnvironmentVariable "PATH"
    Environment.SetEnvironmentVariable("PATH", dir.FullName + string Path.PathSeparator + oldPath)
    try
        body ()
    finally
        Environment.SetEnvironmentVariable("PATH", oldPath)
        try dir.Delete true with _ -> ()

/// Counts with espeak-ng on PATH and the given timeout; fails (instead of hanging the suite) after 20 s.
let private countGuarded (timeout: float) (text: string) : PhonemeCount * TimeSpan =
    let options = { PhonemeOptions.Default with Fallback = UseEspeak "espeak-ng"; EspeakTimeout = TimeSpan.FromSeconds timeout }
    let sw = Stopwatch.StartNew()
    let run = Task.Run(fun () -> Phonemes.countWith options text)
    if not (run.Wait(TimeSpan.FromSeconds 20.0)) then failtest "the phoneme counter hung on espeak-ng"
    run.Result, sw.Elapsed

let private sources (r: PhonemeCount) = r.Words |> List.map _.Source

[<Tests>]
let tests =
    testList "text" [
        testList "espeak-ng fallback" [
            testCase "an espeak-ng that writes 2 MB to stderr before its phonemes is read to the end, not deadlocked" <| fun () ->
                withFakeEspeak "head -c 2000000 /dev/zero | tr '\\000' x >&2\nprintf 'z_ˈɔː_ɹ_b_l_ɪ_ŋ\\n'" (fun () ->
                    let r, _ = countGuarded 10.0 "the zorbling"
                    Expect.equal (sources r) [ CmuDict; EspeakNg ] "espeak-ng's phonemes are used"
                    Expect.equal r.Words[1].Pronunciation [ "z"; "ɔː"; "ɹ"; "b"; "l"; "ɪ"; "ŋ" ] "its segments, stress marks dropped"
                    Expect.isEmpty r.Warnings "nothing to report")

            testCase "an espeak-ng that hangs is stopped after the timeout, once; the fallback is reported" <| fun () ->
                withFakeEspeak "sleep 60" (fun () ->
                    let r, elapsed = countGuarded 1.0 "zorbling and blorfing"
                    Expect.equal (sources r) [ LetterRules; CmuDict; LetterRules ] "letter rules for both unknown words"
                    Expect.equal r.Words[0].Count (Phonemes.letterRulesCount "zorbling") "the letter-rule count"
                    Expect.isLessThan elapsed.TotalSeconds 6.0 $"one 1 s timeout, not one per word ({elapsed.TotalSeconds:F1} s)"
                    match r.Warnings with
                    | [ w ] ->
                        for part in [ "espeak-ng"; "did not finish within 1 s"; "zorbling"; "blorfing" ] do
                            Expect.stringContains w part "the warning names the command, the problem and the words"
                    | ws -> failtestf "one warning expected, got %A" ws)

            testCase "an espeak-ng that exits 1 is reported with its stderr" <| fun () ->
                withFakeEspeak "echo 'espeak-ng: no voice en-us' >&2\nexit 1" (fun () ->
                    let r, _ = countGuarded 10.0 "zorbling"
                    Expect.equal (sources r) [ LetterRules ] "letter rules"
                    match r.Warnings with
                    | [ w ] ->
                        Expect.stringContains w "exited with code 1: espeak-ng: no voice en-us" "exit code and stderr"
                        Expect.stringContains w "letter rules used for zorbling" "the word"
                    | ws -> failtestf "one warning expected, got %A" ws)

            testCase "a missing espeak-ng is reported as not found; dictionary words need no warning" <| fun () ->
                let options = { PhonemeOptions.Default with Fallback = UseEspeak "/nonexistent/espeak-ng" }
                let r = Phonemes.countWith options "the zorbling"
                Expect.equal (sources r) [ CmuDict; LetterRules ] "letter rules"
                match r.Warnings with
                | [ w ] -> Expect.stringContains w "/nonexistent/espeak-ng: not found" "names the command"
                | ws -> failtestf "one warning expected, got %A" ws
                Expect.isEmpty (Phonemes.countWith options "the country").Warnings "no unknown words, no warning"
                Expect.isEmpty (Phonemes.count "the zorbling").Warnings "letter rules asked for: no warning"
        ]
    ]
