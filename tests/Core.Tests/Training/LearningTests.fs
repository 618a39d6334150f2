/// Training that must learn: a tiny Whisper-architecture model from random initialisation overfits jfk.flac and three
/// espeak-ng sentences to WER 0 through Supervised.run (wrong gradients never get there), and a run training only the
/// predictors changes only predictor tensors.
module MagnetWhisper.Tests.Training.LearningTests

open System
open System.Diagnostics
open System.IO
open System.Threading
open Expecto
open TorchSharp
open MagnetWhisper.Core.Data
open MagnetWhisper.Core.Evaluation
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Training
open MagnetWhisper.Tests.Magnet
open MagnetWhisper.Tests.Audio.Tools

/// Whisper's real vocabulary and 30 s window (collation needs both), a small width and depth, no dropout.
let private learner =
    { WhisperConfig.preset "tiny" with
        DModel = 64
        EncoderLayers = 1
        DecoderLayers = 2
        EncoderAttentionHeads = 2
        DecoderAttentionHeads = 2
        EncoderFfnDim = 256
        DecoderFfnDim = 256
        Dropout = 0.0 }

let private sentences =
    [ "The quick brown fox jumps over the lazy dog."
      "She sells sea shells by the sea shore."
      "Seven green apples fell from the old tree." ]

/// A corpus folder: jfk.flac with its transcript and the sentences spoken by espeak-ng (skips without espeak-ng).
let private speechCorpus (dir: string) =
    let espeak = requireTool "espeak-ng"
    Directory.CreateDirectory dir |> ignore
    File.Copy(data "jfk.flac", Path.Combine(dir, "jfk.flac"))
    File.WriteAllText(Path.Combine(dir, "jfk.txt"), "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.")
    for i, text in List.indexed sentences do
        run espeak [ "-w"; Path.Combine(dir, $"espeak{i}.wav"); text ] |> ignore
        File.WriteAllText(Path.Combine(dir, $"espeak{i}.txt"), text)
    dir

/// A fresh MagnetWhisper folder of `config` with `options`, random weights from `seed`.
let private freshModel (dir: string) (seed: int64) (config: WhisperConfig) (options: MagnetOptions) =
    torch.manual_seed seed |> ignore
    use whisper = WhisperModel.create config
    use model = MagnetWhisperModel.FromWhisper(whisper, options)
    MagnetFormat.save dir model
    dir

let private state (dir: string) =
    use m = MagnetFormat.load dir torch.CPU torch.float32
    [ for n, t in m.State -> n, t.detach().clone().DetachFromDisposeScope() ]

let private options = { Device = torch.CPU; StopAtStep = None; Ffmpeg = None }

/// Steps the learning test may take to reach WER 0.
let private stepBound = 400

[<Tests>]
let tests =
    testSequenced <| testList "training.learning" [
        test "a tiny model from random weights overfits jfk.flac and three espeak-ng sentences to WER 0" {
            use temp = new MagnetFixtures.Temp()
            let corpus = speechCorpus (temp.Sub "corpus")
            let model = freshModel (temp.Sub "model") 11L learner MagnetOptions.Default
            let config =
                { TrainConfig.Default with
                    Model = model; Data = corpus; DevData = Some corpus; MaxSteps = stepBound; BatchSize = 4; LearningRate = 5e-3
                    PredictorLearningRate = None; WarmupRatio = 0.05; Decay = ConstantAfterWarmup; WeightDecay = 0.0
                    MaxGradientNorm = Some 1.0; LogEvery = 10; EvalEvery = 15; EvalBatchSize = 4; CheckpointEvery = 0
                    KeepCheckpoints = 1; Seed = 5L; Workers = 2 }
            use stop = new CancellationTokenSource()
            let evaluations = ResizeArray<SupervisedEvaluation>()
            let losses = ResizeArray<float>()
            let events =
                { SupervisedEvents.None with
                    Logged = fun l -> losses.Add(l.Values |> List.find (fst >> (=) MetricKeys.TrainLoss) |> snd)
                    Evaluated = fun e ->
                        evaluations.Add e
                        if e.Wer = 0.0 then stop.Cancel() }
            let clock = Stopwatch.StartNew()
            let result = Supervised.run config (temp.Sub "run") false options events stop.Token
            // Measured, not asserted (speed belongs in `magnet bench`).
            printfn $"learning test: {result.Step} steps in %.1f{clock.Elapsed.TotalSeconds} s; losses every 10 steps %A{List.ofSeq losses}; WER by evaluation %A{[ for e in evaluations -> e.Step, e.Wer ]}"
            Expect.equal result.Best (Some(0.0, result.Step)) $"WER 0 within {stepBound} steps (evaluations: %A{[ for e in evaluations -> e.Step, e.Wer ]})"
            // The first evaluation was not already perfect: the model learnt it.
            Expect.isGreaterThan evaluations.[0].Wer 0.0 "the first evaluation is wrong"
            // best/ transcribes every utterance exactly, checked by a separate greedy evaluation.
            use best = MagnetFormat.load (Path.Combine(temp.Sub "run", "best")) torch.CPU torch.float32
            best.eval()
            let evaluation =
                Evaluator.evaluate best { EvaluationOptions.Default with BatchSize = 4; Ffmpeg = None } (Corpora.read CorpusOptions.Default corpus) ignore CancellationToken.None
            Expect.equal evaluation.Utterances.Length 4 "every utterance evaluated"
            for u in evaluation.Utterances do
                Expect.equal u.Score.NormalizedHypothesis u.Score.NormalizedReference $"{u.Id} transcribed exactly"
                Expect.isNonEmpty u.Score.NormalizedReference $"{u.Id} has words"
        }

        test "a run training the predictors changes the predictor tensors and nothing else" {
            use temp = new MagnetFixtures.Temp()
            let corpus = temp.Sub "corpus"
            for i, text in List.indexed [ "one two"; "three"; "four five six" ] do
                MagnetWhisper.Tests.Data.CorpusFixtures.tone (Path.Combine(corpus, $"u{i}.wav")) (0.5 + 0.2 * float i) 16000 (200.0 + 150.0 * float i) |> ignore
                File.WriteAllText(Path.Combine(corpus, $"u{i}.txt"), text)
            let small = { learner with DModel = 32; EncoderLayers = 2; EncoderFfnDim = 64; DecoderFfnDim = 64; DecoderLayers = 1; Dropout = 0.1 }
            let model = freshModel (temp.Sub "model") 3L small TrainingFixtures.options
            let config parts =
                { TrainConfig.Default with
                    Model = model; Data = corpus; MaxSteps = 2; BatchSize = 3; LearningRate = 1e-3; PredictorLearningRate = Some 1e-2
                    WarmupRatio = 0.0; TrainedParts = parts; LogEvery = 1; EvalEvery = 0; CheckpointEvery = 0; Seed = 1L
                    Targets = [ "characters" ]; Workers = 1 }
            let before = state model
            // What a predictor's tensor is called: the encoder's boundary_predictors.{layer} module (the original's names).
            let isPredictor (name: string) = name.StartsWith "model.encoder.boundary_predictors."
            let predictorNames = before |> List.map fst |> List.filter isPredictor
            Expect.isNonEmpty predictorNames "the model has predictor tensors"
            let changedBy parts dir =
                let result = Supervised.run (config parts) (temp.Sub dir) false options SupervisedEvents.None CancellationToken.None
                Expect.equal result.Outcome Completed "ran to the end"
                TrainingFixtures.changed before (state (Path.Combine(temp.Sub dir, "final")))
            Expect.equal (changedBy PredictorsOnly "predictors") predictorNames "exactly the predictor tensors change"
            // The control: training everything changes the rest too, so the comparison sees other tensors.
            let all = changedBy Everything "all"
            Expect.isTrue (all |> List.exists (isPredictor >> not)) "training everything changes Whisper tensors"
        }
    ]
