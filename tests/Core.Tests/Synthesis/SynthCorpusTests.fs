module MagnetWhisper.Tests.Synthesis.SynthCorpusTests

// Small syntheses with the installed engines (a test of an engine that is missing is skipped with a message): the
// corpus is read back with Corpora.read, checked against soxi and ffmpeg, festival's alignments against the audio.

open System
open System.Globalization
open System.IO
open System.Text
open System.Threading
open Expecto
open MagnetWhisper.Core.Data
open MagnetWhisper.Core.Synthesis
open MagnetWhisper.Tests.Audio.Tools

let private requireEngine (engine: Engine) =
    requireTool (Engine.command engine) |> ignore

let private synth (options: SynthesisOptions) (dir: string) =
    SynthCorpus.synthesise options dir ignore CancellationToken.None

let private small engines count =
    { SynthesisOptions.Default with Utterances = count; Seed = 4L; Engines = engines; Workers = 2 }

/// soxi's answer for one file (an independent reader of the header).
let private soxi (flag: string) (path: string) =
    Encoding.ASCII.GetString(run (requireTool "soxi") [ flag; path ]).Trim()

let private readBack (manifest: string) =
    let corpus = Corpora.read CorpusOptions.Default manifest
    Expect.isEmpty corpus.Skipped "the reader skips nothing"
    corpus

let private fileOf (u: Utterance) = match u.Audio with AudioFile p -> p | other -> failtestf "not a file: %A" other

[<Tests>]
let tests =
    testSequenced <| testList "synthesis.corpus" [
        for engine in Engine.all do
            test $"{Engine.command engine}: 5 utterances read back as 16 kHz mono 16-bit with their planned text and soxi's durations" {
                requireEngine engine
                use dir = new TempDir()
                let out = dir.File "corpus"
                let report = synth (small [ engine ] 5) out
                Expect.isEmpty report.Failed "nothing failed"
                let corpus = readBack report.Manifest
                let seen, unseen = Voices.catalogue |> List.filter (fun v -> v.Engine = engine) |> Voices.holdOut
                let planned = SynthCorpus.plan 4L 5 seen unseen
                Expect.equal (corpus.Utterances |> Array.map (fun u -> u.Id, u.Transcript, u.Split))
                             (planned |> Array.map (fun p -> p.Id, p.Text, Some p.Split)) "ids, texts and splits as planned"
                Expect.equal (corpus.Utterances |> Array.map (fun u -> u.Split.Value) |> Array.distinct |> Array.sort)
                             [| "dev"; "test"; "test-unseen-voice"; "train" |] "every split"
                for u in corpus.Utterances do
                    let path = fileOf u
                    Expect.equal (soxi "-r" path) "16000" $"{u.Id} rate"
                    Expect.equal (soxi "-c" path) "1" $"{u.Id} channels"
                    Expect.equal (soxi "-b" path) "16" $"{u.Id} bits"
                    let seconds = Double.Parse(soxi "-D" path, CultureInfo.InvariantCulture)
                    Expect.floatClose Accuracy.medium u.Duration.Value seconds $"{u.Id} duration against soxi"
                    Expect.isGreaterThan seconds 0.5 $"{u.Id} is speech-length"
                    Expect.stringStarts u.Speaker.Value (Engine.command engine) $"{u.Id} speaker names the engine"
            }

        test "festival: each utterance's phones end within 0.05 s of its audio and never go back in time" {
            requireEngine Festival
            use dir = new TempDir()
            let out = dir.File "corpus"
            let report = synth (small [ Festival ] 5) out
            let corpus = readBack report.Manifest
            Expect.equal corpus.Utterances.Length 5 "five utterances"
            for u in corpus.Utterances do
                let path = fileOf u
                let phonesFile = Path.ChangeExtension(path, ".phones")
                Expect.isTrue (File.Exists phonesFile) $"{phonesFile} beside the audio"
                // Read the lines directly ("end_time phone"), not through PhoneAlignment.
                let lines = File.ReadAllLines phonesFile |> Array.map (fun l -> l.Split ' ')
                Expect.isTrue (lines |> Array.forall (fun f -> f.Length = 2)) "two fields a line"
                let ends = lines |> Array.map (fun f -> Double.Parse(f.[0], CultureInfo.InvariantCulture))
                Expect.isGreaterThan ends.Length 8 "a phone per sound"
                Expect.equal lines.[0].[1] "pau" "festival starts with a pause"
                for k in 1 .. ends.Length - 1 do
                    Expect.isGreaterThanOrEqual ends.[k] ends.[k - 1] $"{phonesFile} line {k + 1} after line {k}"
                let seconds = Double.Parse(soxi "-D" path, CultureInfo.InvariantCulture)
                Expect.isLessThanOrEqual (abs (ends.[ends.Length - 1] - seconds)) 0.05 $"{u.Id}: last phone ends at {ends.[ends.Length - 1]}, audio {seconds} s"
        }

        test "a missing engine is skipped with a note; the others still make the corpus" {
            requireEngine EspeakNg
            use dir = new TempDir()
            let locate command = if command = "flite" then None else Engines.findOnPath command
            let report = synth { small [ EspeakNg; Flite ] 4 with Locate = locate } (dir.File "corpus")
            Expect.contains report.Notes "flite: not installed (flite is not on PATH), skipped" "the note"
            let corpus = readBack report.Manifest
            Expect.equal corpus.Utterances.Length 4 "four utterances"
            Expect.isTrue (corpus.Utterances |> Array.forall (fun u -> u.Speaker.Value.StartsWith "espeak-ng-")) "all espeak-ng"
        }

        test "no installed engine is an error that says what to install" {
            use dir = new TempDir()
            match (try Ok(synth { small Engine.all 4 with Locate = fun _ -> None } (dir.File "corpus")) with e -> Error e) with
            | Error(:? InvalidOperationException as e) -> Expect.stringContains e.Message "install espeak-ng" "names what to install"
            | other -> failtestf "expected InvalidOperationException, got %A" other
            Expect.isFalse (File.Exists(dir.File "corpus/manifest.jsonl")) "no manifest"
        }

        test "one worker and three workers write the same manifest and the same audio bytes" {
            requireEngine EspeakNg
            requireEngine Flite
            use dir = new TempDir()
            let engines = Engine.all |> List.filter (fun e -> (Engines.findOnPath (Engine.command e)).IsSome)
            let a = synth { small engines 6 with Workers = 1 } (dir.File "one")
            let b = synth { small engines 6 with Workers = 3 } (dir.File "three")
            Expect.equal (File.ReadAllText b.Manifest) (File.ReadAllText a.Manifest) "manifests"
            for u in (readBack a.Manifest).Utterances do
                let pa = fileOf u
                let pb = pa.Replace(dir.File "one", dir.File "three")
                Expect.isTrue (File.ReadAllBytes pa = File.ReadAllBytes pb) $"{u.Id} audio bytes"
        }

        test "mp3: files ffmpeg decodes, durations those of the in-process decoder within ffprobe's reading" {
            requireEngine EspeakNg
            let ffmpeg = requireTool "ffmpeg"
            let ffprobe = requireTool "ffprobe"
            use dir = new TempDir()
            let report = synth { small [ EspeakNg ] 4 with Format = Mp3(ffmpeg, 64) } (dir.File "corpus")
            let corpus = readBack report.Manifest
            Expect.equal corpus.Utterances.Length 4 "four utterances"
            for u in corpus.Utterances do
                let path = fileOf u
                Expect.stringEnds path ".mp3" "an mp3 file"
                let probed =
                    Encoding.ASCII.GetString(run ffprobe [ "-v"; "error"; "-show_entries"; "format=duration"; "-of"; "csv=p=0"; path ]).Trim()
                    |> fun s -> Double.Parse(s, CultureInfo.InvariantCulture)
                // The container's duration includes the encoder's padding (at most one 1152-sample frame each side).
                Expect.isLessThanOrEqual (abs (probed - u.Duration.Value)) (2.0 * 1152.0 / 16000.0) $"{u.Id}: {probed} vs {u.Duration.Value}"
        }
    ]
