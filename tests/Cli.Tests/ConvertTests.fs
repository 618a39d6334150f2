/// `magnet convert` and `magnet inspect` run as processes: the output folder cannot be a source folder (or another
/// plain checkpoint), and a fresh conversion says its predictors are untrained and prints the compression measured.
module MagnetWhisper.Cli.Tests.ConvertTests

open System
open System.IO
open System.Security.Cryptography
open System.Text.RegularExpressions
open Expecto
open MagnetWhisper.Cli.Tests.Harness

/// A copy of the tiny Whisper folder in a fresh workspace (so a failing test cannot damage the shared one).
let private workspace () =
    let dir = tempDir "convert"
    let whisper = Path.Combine(dir, "whisper")
    Directory.CreateDirectory whisper |> ignore
    for f in Directory.GetFiles tinyWhisper.Value do File.Copy(f, Path.Combine(whisper, Path.GetFileName f))
    dir

let private hashes (dir: string) =
    [ for f in Directory.GetFiles dir |> Array.sort -> Path.GetFileName f, Convert.ToHexString(SHA256.HashData(File.ReadAllBytes f)) ]

let private float (s: string) = Double.Parse(s, Globalization.CultureInfo.InvariantCulture)

[<Tests>]
let tests =
    testList "cli convert" [
        test "-o onto its own --whisper folder is refused (exit 2) and leaves it as it was" {
            let dir = workspace ()
            let before = hashes (Path.Combine(dir, "whisper"))
            for output in [ "whisper"; "./whisper/"; Path.Combine(dir, "whisper") ] do
                let r = magnetIn dir [ "convert"; "--whisper"; "whisper"; "-p"; "1:bp1"; "-o"; output ]
                Expect.equal r.Code 2 (string r)
                Expect.stringContains r.Err $"-o {output} is the --whisper folder" (string r)
            Expect.equal (hashes (Path.Combine(dir, "whisper"))) before "the source folder is untouched"
            Expect.isFalse (File.Exists(Path.Combine(dir, "whisper", "magnet.json"))) "no magnet.json added"
        }

        test "--output onto another plain Whisper folder is refused (exit 2); onto a MagnetWhisper folder it replaces it" {
            let dir = workspace ()
            let other = Path.Combine(dir, "other")
            Directory.CreateDirectory other |> ignore
            for f in Directory.GetFiles(Path.Combine(dir, "whisper")) do File.Copy(f, Path.Combine(other, Path.GetFileName f))
            let before = hashes other
            let r = magnetIn dir [ "convert"; "--whisper"; "whisper"; "-p"; "1:bp1"; "--output"; "other"; "--no-check" ]
            Expect.equal r.Code 2 (string r)
            Expect.stringContains r.Err "--output other holds a checkpoint that is not a MagnetWhisper folder" (string r)
            Expect.equal (hashes other) before "untouched"
            let first = magnetIn dir [ "convert"; "--whisper"; "whisper"; "-p"; "1:bp1"; "-o"; "magnet"; "--no-check" ]
            Expect.equal first.Code 0 (string first)
            let again = magnetIn dir [ "convert"; "--whisper"; "whisper"; "-p"; "1:bp2"; "-o"; "magnet"; "--no-check" ]
            Expect.equal again.Code 0 (string again)
            Expect.stringContains (File.ReadAllText(Path.Combine(dir, "magnet", "magnet.json")).ToLowerInvariant()) "boundarypredictor2" "replaced"
        }

        test "a --predictor layer outside the model and a missing --whisper folder are usage errors naming the flag" {
            let dir = workspace ()
            let r = magnetIn dir [ "convert"; "--whisper"; "whisper"; "-p"; "9:bp1"; "-o"; "magnet" ]
            Expect.equal r.Code 2 (string r)
            Expect.stringContains r.Err $"--predictor '9:bp1': layer 9 is not an encoder layer of whisper (0 to {tinyConfig.EncoderLayers - 1})" (string r)
            Expect.isFalse (Directory.Exists(Path.Combine(dir, "magnet"))) "nothing written"
            let missing = magnetIn dir [ "convert"; "--whisper"; "nowhere"; "-p"; "1:bp1"; "-o"; "magnet" ]
            Expect.equal missing.Code 2 (string missing)
            Expect.stringContains missing.Err "--whisper nowhere: folder not found" (string missing)
        }

        test "a fresh conversion says the predictor is untrained and prints the compression that inspect --audio measures" {
            let dir = workspace ()
            let wav = toneWav dir "tone.wav"
            let r = magnetIn dir [ "convert"; "--whisper"; "whisper"; "-p"; "1:bp1:0.08"; "-o"; "magnet"; "--audio"; wav ]
            Expect.equal r.Code 0 (string r)
            let m = Regex.Match(r.Out, @"compression before layer 1: untrained \(random weights\): on tone\.wav it keeps ([0-9.]+)% of the positions \(([0-9.]+)×\); training pulls it toward the prior 0\.08 \(12\.5×\)")
            Expect.isTrue m.Success (string r)
            let percent, ratio = float m.Groups.[1].Value, float m.Groups.[2].Value
            Expect.floatClose { absolute = 0.06 * ratio; relative = 0.0 } ratio (100.0 / percent) "the ratio is the inverse of the fraction kept (to the printed digits)"
            let inspect = magnetIn dir [ "inspect"; "magnet"; "--audio"; wav ]
            Expect.equal inspect.Code 0 (string inspect)
            let kept = Regex.Match(inspect.Out, @"compression before layer 1: \d+ → \d+ positions, kept ([0-9.]+)")
            Expect.isTrue kept.Success (string inspect)
            Expect.floatClose { absolute = 0.0051; relative = 0.0 } (percent / 100.0) (float kept.Groups.[1].Value) "convert and inspect measure the same"
            Expect.isFalse (inspect.Out.Contains "≈ 12.5× compression") "inspect does not present the prior as the compression"
            Expect.stringContains inspect.Out "prior 0.08 (training target ≈ 12.5×)" (string inspect)
        }
    ]
