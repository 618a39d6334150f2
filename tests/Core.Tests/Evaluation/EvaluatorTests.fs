module MagnetWhisper.Tests.Evaluation.EvaluatorTests

// Evaluation's accounting with transcripts the test controls: WER/CER in summary.json equal an independent
// recomputation from utterances.tsv (an edit distance written here); hand-worked corpus counts; unreadable, empty and
// over-long audio become counted Skipped entries; hypotheses and compression do not depend on the batch size, for a
// toy model through the real decoding path and for a random MagnetWhisper with a predictor; aggregation of predictor
// counts against numbers worked out by hand.

open System
open System.IO
open System.Text
open System.Text.Json
open System.Threading
open Expecto
open TorchSharp
open MagnetWhisper.Core.Data
open MagnetWhisper.Core.Evaluation
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Tests.Audio.Tools
open MagnetWhisper.Tests.Decoding

/// 16-bit PCM mono WAV bytes at 16 kHz (RIFF header written field by field).
let private wavBytes (samples: float32[]) : byte[] =
    use s = new MemoryStream()
    (use w = new BinaryWriter(s, Encoding.ASCII, true)
     let dataBytes = samples.Length * 2
     w.Write(Encoding.ASCII.GetBytes "RIFF"); w.Write(36 + dataBytes); w.Write(Encoding.ASCII.GetBytes "WAVE")
     w.Write(Encoding.ASCII.GetBytes "fmt "); w.Write 16; w.Write 1s; w.Write 1s; w.Write 16000; w.Write 32000; w.Write 2s; w.Write 16s
     w.Write(Encoding.ASCII.GetBytes "data"); w.Write dataBytes
     for x in samples do w.Write(int16 (Math.Round(float (max -1.0f (min 1.0f x)) * 32767.0))))
    s.ToArray()

/// `seconds` of a tone of frequency f at 16 kHz.
let private tone (f: float) (seconds: float) =
    Array.init (int (seconds * 16000.0)) (fun i -> float32 (0.3 * sin (2.0 * Math.PI * f * float i / 16000.0)))

/// An utterance whose audio is WAV bytes held in memory.
let private utterance (id: string) (transcript: string) (samples: float32[]) =
    let bytes = wavBytes samples
    { Id = id; Audio = EmbeddedAudio($"{id}.wav", fun () -> bytes); Transcript = transcript; Duration = None
      Speaker = None; Split = None; Phones = None }

let private corpusOf (utterances: Utterance list) = { Name = "memory"; Utterances = Array.ofList utterances; Skipped = [||] }

/// A transcriber that answers by audio length (each test utterance has its own length) and counts its batches.
let private scripted (byLength: Map<int, string>) (batches: ResizeArray<int>) : float32[][] -> CancellationToken -> BatchTranscript =
    fun waves _ ->
        batches.Add waves.Length
        { Texts = waves |> Array.map (fun w -> byLength.[w.Length])
          Predictors = waves |> Array.map (fun w -> [| { Layer = 2; Boundaries = w.Length / 1600; Positions = w.Length / 320 } |])
          Boundaries = waves |> Array.map (fun _ -> [||])
          EncoderSeconds = 0.0
          DecodeSeconds = 0.0 }

/// Word-level Levenshtein distance with unit costs, written independently of the product's aligner.
let private distance (a: string[]) (b: string[]) =
    let d = Array2D.init (a.Length + 1) (b.Length + 1) (fun i j -> if i = 0 then j elif j = 0 then i else 0)
    for i in 1 .. a.Length do
        for j in 1 .. b.Length do
            d.[i, j] <- min (d.[i - 1, j - 1] + (if a.[i - 1] = b.[j - 1] then 0 else 1)) (min (d.[i - 1, j] + 1) (d.[i, j - 1] + 1))
    d.[a.Length, b.Length]

let private words (s: string) = s.Split(' ', StringSplitOptions.RemoveEmptyEntries)

let private options = { EvaluationOptions.Default with BatchSize = 2; Workers = 2 }

let private ignoreProgress (_: EvaluationProgress) = ()

// Three utterances (lengths 1.0 s, 1.5 s, 2.0 s) with hand-counted errors after the English normaliser:
//   a: "Hello, world!"           → "hello world"          vs "hello word"            1 substitution, N = 2
//   b: "It cost 20 dollars."     → "it cost $20"          vs "it cost twenty dollars" → "it cost $20": 0 errors, N = 3
//   c: "The cat sat on the mat." → "the cat sat on the mat" vs "cat sat on a mat today"
//        1 deletion (the), 1 substitution (the → a), 1 insertion (today): 3 errors, N = 6
// corpus WER = (1 + 0 + 3) / (2 + 3 + 6) = 4 / 11.
let private handCorpus () =
    let a, b, c = tone 220.0 1.0, tone 330.0 1.5, tone 440.0 2.0
    let corpus =
        corpusOf [ utterance "a" "Hello, world!" a; utterance "b" "It cost 20 dollars." b; utterance "c" "The cat sat on the mat." c ]
    let answers = Map [ a.Length, "Hello word"; b.Length, " It cost twenty dollars "; c.Length, "cat sat on a mat today" ]
    corpus, answers

[<Tests>]
let tests =
    testList "evaluation" [
        test "hand-worked corpus WER, raw WER and per-utterance counts" {
            let corpus, answers = handCorpus ()
            let result = Evaluator.run (scripted answers (ResizeArray())) options corpus ignoreProgress CancellationToken.None
            Expect.equal (result.Utterances |> Array.map _.Id) [| "a"; "b"; "c" |] "corpus order"
            let w = result.Score.Words
            Expect.equal (w.Substitutions, w.Deletions, w.Insertions, w.ReferenceLength) (2, 1, 1, 11) "S, D, I, N worked out above"
            Expect.floatClose Accuracy.veryHigh w.Rate (4.0 / 11.0) "4 / 11"
            // raw: references lower-cased, hypotheses as decoded (trimmed):
            //   "hello, world!" vs "Hello word": 2 substitutions of 2;  "it cost 20 dollars." vs "It cost twenty dollars":
            //   3 substitutions (it, 20, dollars.) of 4;  "the cat sat on the mat." vs "cat sat on a mat today": the, the→a,
            //   mat.→mat, today: 4 errors of 6.  (2 + 3 + 4) / 12 = 9 / 12.
            Expect.floatClose Accuracy.veryHigh result.Score.RawWords.Rate (9.0 / 12.0) "raw WER"
            Expect.equal result.Utterances.[1].Score.Hypothesis "It cost twenty dollars" "hypothesis trimmed"
        }

        test "summary.json's WER and CER equal a recomputation from utterances.tsv" {
            let corpus, answers = handCorpus ()
            let result = Evaluator.run (scripted answers (ResizeArray())) options corpus ignoreProgress CancellationToken.None
            use dir = new TempDir()
            let written = Report.write (dir.File "out") "toy" result
            Expect.equal (written |> List.map Path.GetFileName) [ "summary.json"; "utterances.tsv"; "metrics.jsonl" ] "the report files and the metrics"
            let lines = File.ReadAllLines(dir.File "out/utterances.tsv")
            let header = lines.[0].Split('\t') |> Array.indexed |> Array.map (fun (i, n) -> n, i) |> Map.ofArray
            let rows = lines.[1..] |> Array.map (fun l -> l.Split('\t'))
            Expect.equal rows.Length 3 "one row per utterance"
            let column (row: string[]) name = row.[header.[name]]
            let mutable errors, n, charErrors, chars = 0, 0, 0, 0
            for row in rows do
                let reference, hypothesis = column row "normalized_reference", column row "normalized_hypothesis"
                let d = distance (words reference) (words hypothesis)
                Expect.equal (int (column row "substitutions") + int (column row "deletions") + int (column row "insertions")) d "S + D + I = edit distance"
                errors <- errors + d
                n <- n + (words reference).Length
                let letters (s: string) = s.Trim() |> Seq.map string |> Array.ofSeq
                charErrors <- charErrors + distance (letters reference) (letters hypothesis)
                chars <- chars + (letters reference).Length
            use summary = JsonDocument.Parse(File.ReadAllText(dir.File "out/summary.json"))
            let root = summary.RootElement
            Expect.floatClose Accuracy.veryHigh (root.GetProperty("wer").GetDouble()) (float errors / float n) "WER"
            Expect.floatClose Accuracy.veryHigh (root.GetProperty("cer").GetDouble()) (float charErrors / float chars) "CER"
            Expect.equal (root.GetProperty("utterances").GetInt32()) 3 "count"
            // the scripted counts: 1 boundary per 0.1 s of 5 positions: kept 1/5 in every utterance
            let layer = root.GetProperty("compression").[0]
            Expect.floatClose Accuracy.veryHigh (layer.GetProperty("kept_fraction").GetDouble()) 0.2 "kept fraction"
            Expect.floatClose Accuracy.veryHigh (column rows.[0] "compression" |> float) 5.0 "per-utterance ratio"
        }

        test "unreadable, empty and over-long audio are skipped with their reasons and counted; the rest is evaluated" {
            let good = tone 220.0 1.0
            let broken = { Id = "broken"; Audio = EmbeddedAudio("broken.wav", fun () -> Encoding.ASCII.GetBytes "RIFF....WAVEnot really")
                           Transcript = "x"; Duration = None; Speaker = None; Split = None; Phones = None }
            let corpus =
                { corpusOf [ utterance "good" "hello" good; broken; utterance "empty" "x" [||]; utterance "long" "x" (tone 220.0 31.0) ] with
                    Skipped = [| { Source = "lonely.flac"; Reason = "no transcript" } |] }
            let progress = ResizeArray<EvaluationProgress>()
            let result =
                Evaluator.run (scripted (Map [ good.Length, "hello" ]) (ResizeArray())) { options with Ffmpeg = None } corpus progress.Add CancellationToken.None
            Expect.equal (result.Utterances |> Array.map _.Id) [| "good" |] "only the readable one"
            Expect.equal (result.Skipped |> Array.map _.Source) [| "lonely.flac"; "broken.wav"; "empty.wav"; "long.wav" |] "reader's, then loading's"
            Expect.stringContains result.Skipped.[2].Reason "no samples" "empty"
            Expect.stringContains result.Skipped.[3].Reason "31.00 s is longer than the 30 s window" "too long"
            let last = progress.[progress.Count - 1]
            Expect.equal (last.Done, last.Total, last.Skipped) (4, 4, 3) "progress counts skipped utterances as done"
        }

        test "utterances with phone alignments get boundary precision, recall, F1 and random F1 (by hand); summary.json has them" {
            use dir = new TempDir()
            // a (1.0 s): references 0.11, 0.29, 0.5 (the last phone's end 1.0 is the utterance's end); predictions
            // 0.1, 0.3, 0.7 → 0.1 ↔ 0.11 and 0.3 ↔ 0.29: matched 2 of 3 and 3 → P = R = F1 = 2/3.
            // b (1.5 s) has no alignment; c (2.0 s) names a missing one and is skipped with the reason.
            File.WriteAllText(dir.File "a.phones", "0.11 pau\n0.29 h\n0.5 ay\n1.0 pau\n")
            let a, b, c = tone 220.0 1.0, tone 330.0 1.5, tone 440.0 2.0
            let corpus =
                corpusOf [ { utterance "a" "x" a with Phones = Some(dir.File "a.phones") }
                           utterance "b" "x" b
                           { utterance "c" "x" c with Phones = Some(dir.File "c.phones") } ]
            let candidates = Array.init 49 (fun i -> float (i + 1) * 0.02)
            let transcribe (waves: float32[][]) (_: CancellationToken) =
                { Texts = waves |> Array.map (fun _ -> "x")
                  Predictors = waves |> Array.map (fun _ -> [| { Layer = 1; Boundaries = 4; Positions = 50 } |])
                  Boundaries = waves |> Array.map (fun _ -> [| ({ Layer = 1; Candidates = candidates; Predicted = [| 0.1; 0.3; 0.7 |] }: BoundaryAccuracy.PredictorBoundaries) |])
                  EncoderSeconds = 0.0
                  DecodeSeconds = 0.0 }
            let result = Evaluator.run transcribe options corpus ignoreProgress CancellationToken.None
            Expect.equal (result.Utterances |> Array.map (fun u -> u.Id, u.Boundaries.Length)) [| "a", 1; "b", 0 |] "only a is scored; c is skipped"
            Expect.stringContains (result.Skipped |> Array.exactlyOne).Reason "c.phones" "the missing alignment is named"
            let layer = List.exactlyOne result.Boundaries
            Expect.equal (layer.Layer, layer.Utterances, layer.Counts.Predicted, layer.Counts.Reference, layer.Counts.Matched) (1, 1, 3, 3, 2) "counts"
            Expect.isTrue (layer.Counts.RandomMatched >= 0.0 && layer.Counts.RandomMatched <= 3.0) "random matches within [0, 3]"
            Report.write (dir.File "out") "toy" result |> ignore
            use summary = JsonDocument.Parse(File.ReadAllText(dir.File "out/summary.json"))
            let entry = summary.RootElement.GetProperty("boundaries").[0]
            for key in [ "precision"; "recall"; "f1" ] do
                Expect.floatClose Accuracy.veryHigh (entry.GetProperty(key).GetDouble()) (2.0 / 3.0) key
            Expect.floatClose Accuracy.veryHigh (entry.GetProperty("random_f1").GetDouble()) (2.0 * layer.Counts.RandomMatched / 6.0) "random F1 = 2·E[matched] / (3 + 3)"
            Expect.floatClose Accuracy.veryHigh (entry.GetProperty("tolerance_seconds").GetDouble()) 0.02 "±20 ms"
        }

        test "batches are sorted by length, at most BatchSize, and the result does not depend on the batch size" {
            let lengths = [ 1.0; 2.5; 1.5; 3.0; 2.0 ]
            let audio = lengths |> List.map (tone 300.0)
            let corpus = corpusOf [ for i, a in List.indexed audio -> utterance $"u{i}" "a b c" a ]
            let answers = Map [ for i, a in List.indexed audio -> a.Length, $"a b {i}" ]
            let run batchSize =
                let batches = ResizeArray()
                let r = Evaluator.run (scripted answers batches) { options with BatchSize = batchSize } corpus ignoreProgress CancellationToken.None
                r, List.ofSeq batches
            let one, batchesOne = run 1
            let three, batchesThree = run 3
            Expect.equal batchesOne [ 1; 1; 1; 1; 1 ] "batch size 1"
            Expect.equal batchesThree [ 3; 2 ] "at most 3 per batch"
            Expect.equal (three.Utterances |> Array.map (fun u -> u.Id, u.Score.Hypothesis)) (one.Utterances |> Array.map (fun u -> u.Id, u.Score.Hypothesis)) "same results"
            Expect.equal (three.Utterances |> Array.map _.Id) [| "u0"; "u1"; "u2"; "u3"; "u4" |] "corpus order"
        }

        testSequenced <| testList "models" [
            test "a toy model through the real decoding path decodes the same at batch sizes 1 and 3" {
                // The toy writes three words chosen by its audio value (the mean log-mel of the row), then stops.
                let vocabulary = [| "red"; "green"; "blue"; "cat"; "dog"; "sun"; "moon" |] |> Array.map ToyModel.word
                let toy =
                    ToyModel.Toy(fun history value ->
                        let sampled = ToyModel.sampledOf history
                        if sampled.Length >= 3 then [ ToyModel.eot, 0.0f ]
                        else [ vocabulary.[(int (abs value * 1000.0) + sampled.Length) % vocabulary.Length], 0.0f ])
                let audio = [ 1.0; 2.5; 1.5; 3.0; 2.0 ] |> List.map (fun s -> tone (200.0 + 50.0 * s) s)
                let corpus = corpusOf [ for i, a in List.indexed audio -> utterance $"u{i}" "red green blue" a ]
                let evaluate batchSize =
                    Evaluator.evaluate toy { options with BatchSize = batchSize; MaxTokens = Some 8 } corpus ignoreProgress CancellationToken.None
                let one, three = evaluate 1, evaluate 3
                let hypotheses (r: EvaluationResult) = r.Utterances |> Array.map (fun u -> u.Score.Hypothesis)
                Expect.equal (hypotheses three) (hypotheses one) "independent of the batch size"
                Expect.isGreaterThan (hypotheses one |> Array.distinct |> Array.length) 1 "the rows differ, so mixing them up would show"
                for h in hypotheses one do
                    Expect.equal (words h).Length 3 "three words each"
            }

            test "a random MagnetWhisper gives the same hypotheses and boundary counts at batch sizes 1 and 3" {
                torch.manual_seed 7L |> ignore
                let config = TranscribeTests.tinyConfig
                use model = new MagnetWhisperModel(config, MagnetOptions.Default.WithPredictor(1, Bp1, 0.08))
                model.eval() |> ignore
                let audio = [ 1.0; 2.5; 1.5; 3.0; 2.0 ] |> List.map (fun s -> tone (200.0 + 50.0 * s) s)
                let corpus = corpusOf [ for i, a in List.indexed audio -> utterance $"u{i}" "red green blue" a ]
                let evaluate batchSize =
                    Evaluator.evaluate model { options with BatchSize = batchSize; MaxTokens = Some 4 } corpus ignoreProgress CancellationToken.None
                let one, three = evaluate 1, evaluate 3
                let view (r: EvaluationResult) = r.Utterances |> Array.map (fun u -> u.Score.Hypothesis, u.Predictors)
                Expect.equal (view three) (view one) "independent of the batch size"
                // each utterance's valid positions: ⌈samples / 160⌉ frames pooled by the stem's stride 2
                for u, a in Array.zip one.Utterances (Array.ofList audio) do
                    let frames = (a.Length + 159) / 160
                    Expect.equal u.Predictors.[0].Positions ((frames + 1) / 2) $"{u.Id}: valid positions"
                    Expect.isGreaterThanOrEqual u.Predictors.[0].Boundaries 1 "the forced last boundary at least"
                let p = List.exactlyOne one.Predictors
                let total = one.Utterances |> Array.sumBy (fun u -> u.Predictors.[0].Boundaries)
                Expect.equal p.Boundaries (int64 total) "Σ boundaries"
            }

            test "a random MagnetWhisper's boundary scores do not depend on the batch size; predictions = boundaries − the forced last" {
                torch.manual_seed 7L |> ignore
                use model = new MagnetWhisperModel(TranscribeTests.tinyConfig, MagnetOptions.Default.WithPredictor(1, Bp1, 0.3))
                model.eval() |> ignore
                // Final bias 0 instead of −2.5: the random scores put boundaries at some positions, not none.
                do
                    use _ = torch.no_grad()
                    for n, p in model.State do
                        if n = "model.encoder.boundary_predictors.1.boundary_mlp.2.bias" then p.zero_() |> ignore
                use dir = new TempDir()
                // Phones every 0.1 s up to the end: references 0.1 … (n − 1)·0.1 for an utterance of n/10 s.
                let seconds = [ 1.0; 2.5; 1.5 ]
                let corpus =
                    corpusOf
                        [ for i, s in List.indexed seconds do
                              let path = dir.File $"u{i}.phones"
                              let n = int (Math.Round(s * 10.0))
                              File.WriteAllLines(path, [ for k in 1 .. n -> $"{float k * 0.1} p{k}" ])
                              yield { utterance $"u{i}" "red" (tone (200.0 + 50.0 * s) s) with Phones = Some path } ]
                let evaluate batchSize =
                    Evaluator.evaluate model { options with BatchSize = batchSize; MaxTokens = Some 2 } corpus ignoreProgress CancellationToken.None
                let one, three = evaluate 1, evaluate 3
                Expect.equal (three.Utterances |> Array.map _.Boundaries) (one.Utterances |> Array.map _.Boundaries) "independent of the batch size"
                for u, s in Array.zip one.Utterances (Array.ofList seconds) do
                    let b = Array.exactlyOne u.Boundaries
                    Expect.equal b.Counts.Predicted (u.Predictors.[0].Boundaries - 1) $"{u.Id}: predicted"
                    Expect.equal b.Counts.Reference (int (Math.Round(s * 10.0)) - 1) $"{u.Id}: references"
                Expect.isGreaterThan (List.exactlyOne one.Boundaries).Counts.Predicted 0 "some boundaries predicted"
            }
        ]

        test "compression aggregates per layer: kept fraction, ratio, mean and std of boundaries (by hand)" {
            // layer 1: boundaries 3 and 5 of 10 positions each → kept 8/20 = 0.4, ratio 2.5, mean 4, std 1.
            // layer 4: boundaries 2 and 2 of 3 and 5 → kept 4/8 = 0.5, ratio 2, mean 2, std 0.
            let rows =
                [ [| { Layer = 4; Boundaries = 2; Positions = 3 }; { Layer = 1; Boundaries = 3; Positions = 10 } |]
                  [| { Layer = 1; Boundaries = 5; Positions = 10 }; { Layer = 4; Boundaries = 2; Positions = 5 } |] ]
            match Compression.summarize rows with
            | [ first; second ] ->
                Expect.equal (first.Layer, first.Boundaries, first.Positions, first.MinBoundaries, first.MaxBoundaries) (1, 8L, 20L, 3, 5) "layer 1 counts"
                Expect.floatClose Accuracy.veryHigh first.KeptFraction 0.4 "kept"
                Expect.floatClose Accuracy.veryHigh first.Ratio 2.5 "ratio"
                Expect.floatClose Accuracy.veryHigh first.MeanBoundaries 4.0 "mean"
                Expect.floatClose Accuracy.veryHigh first.StdBoundaries 1.0 "std"
                Expect.equal second.Layer 4 "layer order"
                Expect.floatClose Accuracy.veryHigh second.KeptFraction 0.5 "kept"
                Expect.floatClose Accuracy.veryHigh second.StdBoundaries 0.0 "std"
            | other -> failtestf "two layers expected, got %A" other
            // overall: first predictor's 10 positions per the last one's 2 boundaries = 5
            Expect.floatClose Accuracy.veryHigh (Compression.overall rows.[0]) 5.0 "overall ratio"
            Expect.equal (Compression.overall [||]) 1.0 "stock Whisper"
            Expect.isEmpty (Compression.summarize [ [||]; [||] ]) "no predictors, no entries"
        }

        test "utterances.tsv keeps one line per utterance when a transcript holds tabs and line breaks" {
            let a = tone 220.0 1.0
            let corpus = corpusOf [ utterance "a" "one\ttwo\nthree" a ]
            let result = Evaluator.run (scripted (Map [ a.Length, "one two three" ]) (ResizeArray())) options corpus ignoreProgress CancellationToken.None
            let lines = (Report.utterancesTsv result).TrimEnd('\n').Split('\n')
            Expect.equal lines.Length 2 "header and one row"
            Expect.equal (lines.[1].Split('\t').Length) Report.columns.Length "every column"
        }
    ]
