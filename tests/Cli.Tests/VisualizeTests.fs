/// `magnet visualize` run as a process on a random tiny MagnetWhisper folder (two predictors, made by `magnet
/// convert`) and on the Whisper folder it came from, with jfk.flac: the page is self-contained and names every
/// predictor, the Audacity labels end at the end of the audio (measured by sox), and missing or bad inputs are
/// reported with their path.
module MagnetWhisper.Cli.Tests.VisualizeTests

open System
open System.Diagnostics
open System.Globalization
open System.IO
open System.Text.RegularExpressions
open Expecto
open MagnetWhisper.Cli.Tests.Harness

/// A workspace with the tiny Whisper folder and a MagnetWhisper conversion of it (BP1 before layer 0, BP4 before
/// layer 1), made once.
let private workspace =
    lazy
        (let dir = tempDir "visualize"
         let whisper = Path.Combine(dir, "whisper")
         Directory.CreateDirectory whisper |> ignore
         for f in Directory.GetFiles tinyWhisper.Value do File.Copy(f, Path.Combine(whisper, Path.GetFileName f))
         let r = magnetIn dir [ "convert"; "--whisper"; "whisper"; "-p"; "0:bp1"; "-p"; "1:bp4"; "-o"; "magnet"; "--no-check" ]
         if r.Code <> 0 then failwithf "convert failed: %O" r
         dir)

/// The duration of an audio file in seconds as sox reports it (`soxi -D`), or None without sox.
let private soxDuration (path: string) : float option =
    try
        let info = ProcessStartInfo("soxi", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
        info.ArgumentList.Add "-D"
        info.ArgumentList.Add path
        use p = Process.Start info
        let out = p.StandardOutput.ReadToEnd()
        p.WaitForExit()
        if p.ExitCode = 0 then Some(Double.Parse(out.Trim(), CultureInfo.InvariantCulture)) else None
    with :? ComponentModel.Win32Exception -> None

/// No script is loaded from the network.
let private expectSelfContained (html: string) =
    Expect.isFalse (Regex.IsMatch(html, @"<script[^>]*\bsrc\s*=\s*[""']?https?:", RegexOptions.IgnoreCase)) "no http(s) script src"
    Expect.isFalse (Regex.IsMatch(html, @"<link[^>]*\bhref\s*=\s*[""']?https?:", RegexOptions.IgnoreCase)) "no http(s) stylesheet"
    // plotly.js itself is inline (its minified bundle is megabytes).
    Expect.stringContains html "Plotly.newPlot" "the figure is drawn by plotly.js"
    Expect.isGreaterThan html.Length 3_000_000 "plotly.js embedded"

let private fast = [ "--sample-len"; "8" ]

[<Tests>]
let tests =
    testList "cli visualize" [
        test "a MagnetWhisper folder: a self-contained page naming each predictor and the phones, and labels ending at the audio's end" {
            let dir = workspace.Value
            let segs = Path.Combine(dir, "jfk.segs")
            File.WriteAllText(segs, "#\n0.35 100 pau\n0.52 100 ae\n0.61 100 n\n")
            let r = magnetIn dir ([ "visualize"; "--model"; "magnet"; data "jfk.flac"; "-o"; "out/page.html"; "--alignment"; segs ] @ fast)
            Expect.equal r.Code 0 (string r)
            let html = File.ReadAllText(Path.Combine(dir, "out", "page.html"))
            expectSelfContained html
            for name in [ "BP1 before layer 0"; "BP4 before layer 1"; "reference phones"; "\"ae\""; "time (s)"; "mel bin"; "Transcript (greedy" ] do
                Expect.stringContains html name $"the page shows {name}"
            Expect.stringContains r.Out "BP1 before layer 0:" (string r)
            // The default label file: <audio name>_boundaries.txt beside the page.
            let labels = File.ReadAllLines(Path.Combine(dir, "out", "jfk_boundaries.txt"))
            let parsed =
                labels |> Array.map (fun l ->
                    let m = Regex.Match(l, @"^(\d+\.\d{6})\t(\d+\.\d{6})\tlayer(\d)_boundary_(\d+)$")
                    Expect.isTrue m.Success $"an Audacity point label: '{l}'"
                    Expect.equal m.Groups.[1].Value m.Groups.[2].Value "start = end"
                    int m.Groups.[3].Value, Double.Parse(m.Groups.[1].Value, CultureInfo.InvariantCulture))
            Expect.equal (parsed |> Array.map fst |> Array.distinct) [| 0; 1 |] "labels of both predictors"
            match soxDuration (data "jfk.flac") with
            | Some seconds ->
                for layer in [ 0; 1 ] do
                    let times = parsed |> Array.filter (fst >> (=) layer) |> Array.map snd
                    // The forced last boundary ends the last valid position, i.e. the audio.
                    Expect.floatClose { absolute = 1e-6; relative = 0.0 } (Array.last times) seconds $"layer {layer} ends with the audio"
                    Expect.isTrue (times |> Array.forall (fun t -> t > 0.0 && t <= seconds)) "every boundary inside the audio"
            | None -> ()
        }

        test "a Whisper folder: log-mel and transcript, no predictor rows and no label file; --labels elsewhere" {
            let dir = workspace.Value
            let r = magnetIn dir ([ "visualize"; "--model"; "whisper"; data "jfk.flac"; "-o"; "whisper.html"; "--labels"; "w.txt" ] @ fast)
            Expect.equal r.Code 0 (string r)
            let html = File.ReadAllText(Path.Combine(dir, "whisper.html"))
            expectSelfContained html
            Expect.isFalse (html.Contains "before layer") "no predictor rows"
            Expect.stringContains html "no boundary predictors" "says why"
            Expect.isFalse (File.Exists(Path.Combine(dir, "w.txt"))) "no label file"
            Expect.stringContains r.Err "--labels" (string r)
        }

        test "a missing audio or alignment file is a usage error naming it; a bad alignment names its line; nothing is written" {
            let dir = workspace.Value
            let missingAudio = magnetIn dir ([ "visualize"; "--model"; "magnet"; "nowhere.flac"; "-o"; "m1.html" ] @ fast)
            Expect.equal missingAudio.Code 2 (string missingAudio)
            Expect.stringContains missingAudio.Err "nowhere.flac" (string missingAudio)
            let missingSegs = magnetIn dir ([ "visualize"; "--model"; "magnet"; data "jfk.flac"; "-o"; "m2.html"; "--alignment"; "none.segs" ] @ fast)
            Expect.equal missingSegs.Code 2 (string missingSegs)
            Expect.stringContains missingSegs.Err "--alignment none.segs: file not found" (string missingSegs)
            File.WriteAllText(Path.Combine(dir, "bad.segs"), "#\n0.3 100 pau\nsoon 100 ae\n")
            let bad = magnetIn dir ([ "visualize"; "--model"; "magnet"; data "jfk.flac"; "-o"; "m3.html"; "--alignment"; "bad.segs" ] @ fast)
            Expect.equal bad.Code 1 (string bad)
            Expect.stringContains bad.Err "bad.segs line 3: 'soon' is not a time in seconds" (string bad)
            let unknown = magnetIn dir [ "visualize"; "--model"; "magnet"; data "jfk.flac"; "-o"; "m4.html"; "--alignmnet"; "x" ]
            Expect.equal unknown.Code 2 (string unknown)
            Expect.stringContains unknown.Err "did you mean --alignment?" (string unknown)
            for page in [ "m1.html"; "m2.html"; "m3.html"; "m4.html" ] do
                Expect.isFalse (File.Exists(Path.Combine(dir, page))) $"{page} not written"
        }
    ]
