/// The `schedules` configuration key: each curve form read to the Curve it names, "all" under a layer's entry over
/// whisper.py's curves with the temperature keys, errors naming the key path, the round trip through config.json,
/// and a short supervised run whose logged temperature follows a configured cosine curve.
module MagnetWhisper.Tests.Training.ScheduleConfigTests

open System
open System.IO
open System.Threading
open Expecto
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Training
open MagnetWhisper.Tests.Magnet

let private read (json: string) = TrainConfig.applyJson "c.json" json TrainConfig.Default

let private message (f: unit -> 'a) =
    try
        f () |> ignore
        failtest "accepted"
    with :? InvalidDataException as e -> e.Message

[<Tests>]
let tests =
    testList "training.schedule-config" [
        test "each curve form reads to the curve it names" {
            let c =
                read """{"schedules": {"3": {"target_progress": 0.5, "compression": {"linear": [0, 1]}, "prior": {"cosine": [0.2, 0.8]},
                         "temperature": {"stepped": {"initial": 1, "steps": [[0.25, 0.5], [0.75, 0.1]]}}, "boundary_loss_weight": 2}}}"""
            let expected =
                { TargetProgress = Some(Constant 0.5); Compression = Some(Linear(0.0, 1.0)); Prior = Some(Cosine(0.2, 0.8))
                  Temperature = Some(Stepped(1.0, [ 0.25, 0.5; 0.75, 0.1 ])); BoundaryLossWeight = Some(Constant 2.0) }
            Expect.equal c.Schedules (Map [ PredictorLayer 3, expected ]) "layer 3's curves"
            Expect.equal TrainConfig.Default.Schedules Map.empty "the default is {}"
            Expect.equal (read """{"schedules": {"all": {}}}""").Schedules (Map [ AllPredictors, CurveOverrides.None ]) "an empty entry"
        }

        test "a predictor's curves: whisper.py's with the temperature keys, then all, then its layer" {
            let c =
                read """{"temperature_start": 2, "temperature_end": 0.5,
                         "schedules": {"all": {"compression": {"linear": [0, 1]}, "temperature": 0.7},
                                       "3": {"temperature": {"cosine": [1, 0.2]}}}}"""
            let curves = TrainConfig.predictorCurves c [ 1; 3; 5 ]
            // Written out: whisper.py's (ρ 1, compression 1, prior = compression, weight 0) with each override.
            let whisperPy temperature compression =
                { TargetProgress = Constant 1.0; CompressionSchedule = compression; PriorSchedule = None
                  Temperature = temperature; BoundaryLossWeight = Constant 0.0 }
            Expect.equal curves.[1] (whisperPy (Constant 0.7) (Linear(0.0, 1.0))) "all over the temperature keys"
            Expect.equal curves.[3] (whisperPy (Cosine(1.0, 0.2)) (Linear(0.0, 1.0))) "layer 3's temperature over all's"
            let plain = TrainConfig.predictorCurves { c with Schedules = Map.empty } [ 3 ]
            Expect.equal plain.[3] (whisperPy (Linear(2.0, 0.5)) (Constant 1.0)) "without schedules: the temperature keys"
            Expect.equal (Map.count curves) 3 "every predictor"
        }

        test "errors name the key path and the source" {
            let cases =
                [ """{"schedules": {"3": {"temperature": "hot"}}}""", "c.json: key 'schedules.3.temperature'"
                  """{"schedules": {"3": {"temprature": 1}}}""", "c.json: key 'schedules.3' has no key 'temprature'"
                  """{"schedules": {"all": {"compression": {"linear": [0, 2]}}}}""", "key 'schedules.all.compression' must stay in [0, 1]"
                  """{"schedules": {"all": {"compression": {"linear": [0]}}}}""", "key 'schedules.all.compression.linear'"
                  """{"schedules": {"2": {"prior": {"spline": [0, 1]}}}}""", "key 'schedules.2.prior' has no curve 'spline'"
                  """{"schedules": {"2": {"temperature": {"linear": [0, 1]}}}}""", "key 'schedules.2.temperature' must stay positive"
                  """{"schedules": {"2": {"boundary_loss_weight": -1}}}""", "key 'schedules.2.boundary_loss_weight' must stay non-negative"
                  """{"schedules": {"2": {"compression": {"stepped": {"initial": 0, "steps": [[0.5, 1], [0.2, 0]]}}}}}""", "key 'schedules.2.compression' is not a valid curve: the steps must be sorted"
                  """{"schedules": {"2": {"compression": {"stepped": {"steps": []}}}}}""", "key 'schedules.2.compression.stepped' needs \"initial\""
                  """{"schedules": {"first": {}}}""", "key 'schedules' has key 'first'"
                  """{"schedules": [1]}""", "key 'schedules' must be an object" ]
            for json, expected in cases do
                Expect.stringContains (message (fun () -> read json)) expected json
            Expect.stringContains (message (fun () -> TrainConfig.set """schedules={"1":{"temperature":0}}""" TrainConfig.Default))
                """--set schedules={"1":{"temperature":0}}: key 'schedules.1.temperature'""" "--set"
            let c = read """{"schedules": {"4": {"temperature": 0.5}}}"""
            Expect.stringContains (message (fun () -> TrainConfig.predictorCurves c [ 1; 2 ])) "key 'schedules.4': the model has no predictor before layer 4" "a layer without a predictor"
        }

        test "schedules round-trip through config.json" {
            let json =
                """{"schedules": {"all": {"compression": {"linear": [0, 1]}, "prior": 0.25},
                                  "3": {"temperature": {"cosine": [1, 0.1]}, "target_progress": {"stepped": {"initial": 0, "steps": [[0.5, 1]]}},
                                        "boundary_loss_weight": {"linear": [0.3, 0]}}}}"""
            let c = read json
            Expect.equal (Map.count c.Schedules) 2 "two entries"
            let back = TrainConfig.applyJson "resolved" (TrainConfig.toJson c) TrainConfig.Default
            Expect.equal back c "the resolved configuration reads back"
            let set = TrainConfig.set """schedules={"all":{"compression":{"linear":[0,1]}},"3":{"temperature":{"cosine":[1,0.1]}}}""" TrainConfig.Default
            Expect.equal set.Schedules.[AllPredictors].Compression (Some(Linear(0.0, 1.0))) "--set takes the JSON object"
        }

        testSequenced <| test "a run's logged temperature follows a configured cosine curve" {
            use temp = new MagnetFixtures.Temp()
            let modelDir = temp.Sub "model"
            TrainingFixtures.magnetFolder modelDir (TrainingFixtures.runWhisper 0.0) (PredictorSlot.Create(1, Bp1, 0.3))
            TrainingFixtures.toneCorpus (temp.Sub "corpus")
            let a, b = 1.5, 0.2
            let c =
                { TrainConfig.Default with
                    Model = modelDir; Data = temp.Sub "corpus"; MaxSteps = 3; BatchSize = 2; LearningRate = 1e-3; LogEvery = 1
                    EvalEvery = 0; CheckpointEvery = 0; Seed = 3L; Targets = [ "characters" ]; Workers = 1 }
                |> TrainConfig.set """schedules={"1":{"temperature":{"cosine":[1.5,0.2]}}}"""
            let dir = temp.Sub "run"
            Supervised.run c dir false TrainingFixtures.cpuRun SupervisedEvents.None CancellationToken.None |> ignore
            let logged = TrainingFixtures.metrics dir (fun k -> k = MetricKeys.TrainBoundaryTemperature)
            // Update u (0-based) runs at progress p = min(1, u / max_steps) (Curve.progress) and is logged at step u + 1.
            let expected =
                [ for u in 0 .. c.MaxSteps - 1 ->
                      let p = min 1.0 (float u / float c.MaxSteps)
                      int64 (u + 1), MetricKeys.TrainBoundaryTemperature, a + (b - a) * (1.0 - Math.Cos(Math.PI * p)) / 2.0 ]
            Expect.equal (logged |> List.map (fun (s, k, _) -> s, k)) (expected |> List.map (fun (s, k, _) -> s, k)) "one temperature per step"
            for (s, _, actual), (_, _, want) in List.zip logged expected do
                Expect.floatClose { absolute = 1e-6; relative = 1e-6 } actual want $"τ at step {s}"
            let resolved = TrainConfig.read (Path.Combine(dir, TrainingRun.ConfigFile))
            Expect.equal resolved.Schedules c.Schedules "config.json keeps the schedules (read back on resume)"
        }
    ]
