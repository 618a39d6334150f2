/// End to end on tests/data/jfk.flac with a tiny random Whisper checkpoint written and loaded as a Hugging Face
/// folder. A random model writes garbage: the tests check structure and invariants, never the text.
module MagnetWhisper.Tests.Decoding.TranscribeTests

open System
open System.IO
open Expecto
open TorchSharp
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Decoding
open MagnetWhisper.Core.Audio
open MagnetWhisper.Tests.Audio.Tools

/// A whisper-shaped model with the multilingual vocabulary, width 64 and two layers.
let tinyConfig =
    { WhisperConfig.preset "tiny" with
        DModel = 64
        EncoderLayers = 2
        DecoderLayers = 2
        EncoderAttentionHeads = 2
        DecoderAttentionHeads = 2
        EncoderFfnDim = 128
        DecoderFfnDim = 128 }

/// Writes a random checkpoint folder (seeded) and returns its path.
let writeCheckpoint (dir: string) =
    torch.manual_seed 1234L |> ignore
    use m = new WhisperModel(tinyConfig)
    m.Save dir

let private folder =
    lazy
        (let dir = Path.Combine(Path.GetTempPath(), "mw-decoding-" + Guid.NewGuid().ToString("N"))
         writeCheckpoint dir
         AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> try Directory.Delete(dir, true) with _ -> ())
         dir)

let private model = lazy (WhisperModel.FromPretrained(folder.Value, torch.CPU, torch.float32))
let private jfk = lazy (Audio.load (data "jfk.flac"))

/// A second, different clip: 7 s of a chirp with seeded noise.
let private other =
    lazy
        (let rng = Random 5
         Array.init (7 * 16000) (fun i ->
             let t = float i / 16000.0
             float32 (0.3 * sin (2.0 * Math.PI * (200.0 + 150.0 * t) * t) + 0.02 * (rng.NextDouble() - 0.5))))

/// Fast options: one temperature, 64 tokens at most per window.
let private fast =
    { TranscribeOptions.defaults with
        Temperatures = [ 0.0 ]
        Decoding = { DecodingOptions.defaults with SampleLen = Some 64 } }

let private transcribe (options: TranscribeOptions) (audios: float32[][]) =
    Transcriber(model.Value).Transcribe(audios, options)

let private tokensOf (t: Transcript) = t.Segments |> List.map (fun s -> List.ofArray s.Tokens)

let private isTs (t: int) = t >= ToyModel.tb

[<Tests>]
let tests =
    testSequenced
    <| testList "decoding" [
        testList "end to end (random tiny whisper)" [
            test "transcribes jfk.flac with timestamps: well-formed segments, deterministic" {
                let first = (transcribe fast [| jfk.Value |]).[0]
                let second = (transcribe fast [| jfk.Value |]).[0]
                Expect.isNonEmpty first.Segments "segments"
                Expect.equal (tokensOf second) (tokensOf first) "the same tokens twice"
                Expect.equal second.Text first.Text "the same text twice"
                Expect.isTrue (MagnetWhisper.Core.Text.Languages.tryFind first.Language).IsSome "a detected language"
                let duration = float jfk.Value.Length / 16000.0
                for s in first.Segments do
                    Expect.isLessThanOrEqual s.Start s.End "start <= end"
                    Expect.isLessThan s.Start (duration + 30.0) "starts within the window"
                    Expect.isTrue (s.Tokens |> Array.forall (fun t -> t >= 0 && t < tinyConfig.VocabSize)) "token ids in the vocabulary"
                    if s.Tokens.Length > 0 then
                        Expect.isTrue (isTs s.Tokens.[0]) "a segment starts with a timestamp"
                        let stamps = s.Tokens |> Array.filter isTs
                        Expect.isTrue (stamps |> Array.pairwise |> Array.forall (fun (a, b) -> a <= b)) "timestamps never decrease"
                    Expect.isFalse (Double.IsNaN s.AvgLogProb) "average log-probability"
                    Expect.isTrue (s.NoSpeechProb >= 0.0 && s.NoSpeechProb <= 1.0) "no-speech probability"
                Expect.sequenceEqual (first.Segments |> List.map _.Id) [ 0 .. first.Segments.Length - 1 ] "ids"
                for _, window in first.Segments |> List.groupBy _.Seek do
                    match window |> List.tryFind (fun s -> s.Tokens.Length > 0) with
                    | Some s when s = List.head window -> Expect.isLessThanOrEqual (s.Tokens.[0] - ToyModel.tb) 50 "a window's first timestamp is at most 1 s"
                    | _ -> ()
            }

            test "batch-invariant: a file gives the same tokens alone and in a batch" {
                let alone = (transcribe fast [| jfk.Value |]).[0]
                let otherAlone = (transcribe fast [| other.Value |]).[0]
                let batch = transcribe fast [| other.Value; jfk.Value |]
                Expect.equal (tokensOf batch.[1]) (tokensOf alone) "jfk.flac"
                Expect.equal (tokensOf batch.[0]) (tokensOf otherAlone) "the other clip"
                for a, b in List.zip alone.Segments batch.[1].Segments do
                    Expect.floatClose { absolute = 1e-4; relative = 1e-4 } b.AvgLogProb a.AvgLogProb "log-probability"
            }

            test "without timestamps: no timestamp token, one segment per window" {
                let options = { fast with Decoding = { fast.Decoding with WithoutTimestamps = true } }
                let t = (transcribe options [| jfk.Value |]).[0]
                Expect.isLessThanOrEqual t.Segments.Length 1 "one window, at most one segment"
                for s in t.Segments do
                    Expect.isFalse (s.Tokens |> Array.exists isTs) "no timestamps"
                    Expect.equal s.Start 0.0 "from the window start"
                    Expect.floatClose Accuracy.high s.End (float (jfk.Value.Length / 160) / 100.0) "to the end of the audio"
                let again = (transcribe options [| jfk.Value |]).[0]
                Expect.equal (tokensOf again) (tokensOf t) "deterministic"
            }

            test "long audio (> 30 s) is decoded in several windows; beam search and sampling are deterministic" {
                let long = Array.concat [ jfk.Value; jfk.Value; jfk.Value ]
                let beam = { fast with Decoding = { fast.Decoding with BeamSize = Some 2; SampleLen = Some 24; Language = Some "en" } }
                let t = (transcribe beam [| long |]).[0]
                Expect.isGreaterThan (t.Segments |> List.map _.Seek |> List.max) 0 "a later window"
                Expect.isTrue (t.Segments |> List.pairwise |> List.forall (fun (a, b) -> a.Seek <= b.Seek)) "windows in order"
                Expect.equal t.Language "en" "given language"
                Expect.equal (tokensOf (transcribe beam [| long |]).[0]) (tokensOf t) "beam search: deterministic"
                // two long audios: from the second window on, their prompts differ in length (left padding)
                let greedy = { beam with Decoding = { beam.Decoding with BeamSize = None } }
                let longOther = Array.concat (List.replicate 5 other.Value)
                let pair = transcribe greedy [| longOther; long |]
                Expect.equal (tokensOf pair.[1]) (tokensOf (transcribe greedy [| long |]).[0]) "conditioned windows: batch-invariant"
                Expect.equal (tokensOf pair.[0]) (tokensOf (transcribe greedy [| longOther |]).[0]) "the other long audio too"
                let sampling = { beam with Temperatures = [ 0.7 ]; Decoding = { beam.Decoding with BeamSize = None; BestOf = Some 2; Seed = 3L } }
                let s1 = (transcribe sampling [| jfk.Value |]).[0]
                let s2 = transcribe sampling [| other.Value; jfk.Value |]
                Expect.equal (tokensOf s2.[1]) (tokensOf s1) "sampling: deterministic and batch-invariant"
                Expect.isTrue (s1.Segments |> List.forall (fun s -> s.Temperature = 0.7)) "temperature recorded"
            }

            test "memory stays flat over repeated transcriptions" {
                let clip = jfk.Value.[.. 3 * 16000]
                let options = { fast with Decoding = { fast.Decoding with SampleLen = Some 16; Language = Some "en" } }
                let transcriber = Transcriber(model.Value)
                let live () = torch.Tensor.TotalCount
                let baseline = (transcriber.Transcribe(clip, options) |> ignore; live ())
                let counts = [ for _ in 1 .. 6 -> (transcriber.Transcribe(clip, options) |> ignore; live ()) ]
                Expect.allEqual counts baseline "live tensors after each transcription"
                let scopes = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount
                transcriber.Transcribe(clip, options) |> ignore
                Expect.equal TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount scopes "thread statistics: nothing left alive"
            }

            test "files: a failing file is reported and the others are transcribed" {
                let dir = Path.Combine(Path.GetTempPath(), "mw-files-" + Guid.NewGuid().ToString("N"))
                Directory.CreateDirectory dir |> ignore
                try
                    let broken = Path.Combine(dir, "broken.wav")
                    File.WriteAllBytes(broken, [| 1uy; 2uy; 3uy |])
                    let seen = ResizeArray()
                    let results =
                        Transcriber(model.Value)
                            .TranscribeFiles([ data "jfk.flac"; broken; Path.Combine(dir, "missing.flac") ], fast, 2, ignore, (fun p _ -> seen.Add p), Threading.CancellationToken.None)
                    Expect.equal (results |> List.map fst) [ data "jfk.flac"; broken; Path.Combine(dir, "missing.flac") ] "every file, in order"
                    Expect.isOk (snd results.[0]) "jfk.flac transcribed"
                    Expect.isError (snd results.[1]) "a corrupt file fails"
                    Expect.isError (snd results.[2]) "a missing file fails"
                    Expect.equal seen.Count 3 "each file reported"
                    let written = Writers.write dir (data "jfk.flac") Writers.all (Result.defaultWith (fun _ -> failwith "no") (snd results.[0]))
                    Expect.equal (written |> List.map Path.GetFileName) [ "jfk.txt"; "jfk.vtt"; "jfk.srt"; "jfk.tsv"; "jfk.json" ] "outputs"
                finally
                    Directory.Delete(dir, true)
            }
        ]
    ]
