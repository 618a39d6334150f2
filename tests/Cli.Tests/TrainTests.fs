/// `magnet train` run as a process on a corpus of four tones: a run stopped with --stop-at-step and resumed has the
/// uninterrupted run's losses (metrics.jsonl, bit for bit) and final weights; SIGINT sent to the running process
/// leaves a checkpoint of the last step, the exit message names the resume command, and resuming completes; a
/// Hugging Face folder with `predictors` starts from the tensors `magnet convert` writes with the same seed; bad
/// flags, keys and files exit 2 naming them; the progress lines' figures.
module MagnetWhisper.Cli.Tests.TrainTests

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open System.Threading
open Expecto
open TorchSharp
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Training
open MagnetWhisper.Cli
open MagnetWhisper.Cli.Tests.Harness

/// POSIX kill(2): the signal goes out at once (starting a `kill` process can take seconds on a loaded machine, long
/// enough for a short run to finish first).
[<System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)>]
extern int sendSignal(int pid, int signal)

/// A workspace with `corpus/`: four tones of 0.5 to 1.1 s with short transcripts.
let private workspace () =
    let dir = tempDir "train"
    let corpus = Path.Combine(dir, "corpus")
    Directory.CreateDirectory corpus |> ignore
    for i, text in List.indexed [ "one two"; "three"; "four five six"; "seven" ] do
        writeWav (Path.Combine(corpus, $"u{i}.wav")) (tone (0.5 + 0.2 * float i))
        File.WriteAllText(Path.Combine(corpus, $"u{i}.txt"), text)
    dir

/// A fresh model of a tiny custom size with a predictor, on the corpus, a metrics line per step.
let private scratch (steps: int) =
    [ "--from-scratch"; "tiny"; "--set"; "d_model=32"; "--set"; "encoder_layers=2"; "--set"; "decoder_layers=1"
      "--set"; "attention_heads=2"; "--set"; """predictors=["1:bp1:0.3:mean"]"""; "--set"; """targets=["characters"]"""
      "--data"; "corpus"; "--max-steps"; string steps; "--batch-size"; "2"; "--lr"; "1e-3"; "--seed"; "3"
      "--set"; "log_every=1"; "--set"; "workers=1" ]

let private lossKeys = [ "train/loss"; "train/asr_loss"; "train/boundary_loss"; "train/grad_norm"; "train/learning_rate" ]

/// (step, key, the value as written) of the loss keys of a run's metrics.jsonl.
let private losses (runDir: string) =
    [ for line in File.ReadAllLines(Path.Combine(runDir, "metrics.jsonl")) do
          use d = JsonDocument.Parse line
          let step = d.RootElement.GetProperty("step").GetInt64()
          for p in d.RootElement.EnumerateObject() do
              if List.contains p.Name lossKeys then step, p.Name, p.Value.GetRawText() ]

/// The tensors of a MagnetWhisper folder.
let private tensors (dir: string) =
    use m = MagnetFormat.load dir torch.CPU torch.float32
    [ for n, t in m.State -> n, t.detach().clone().DetachFromDisposeScope() ]

let private identical (a: (string * torch.Tensor) list) (b: (string * torch.Tensor) list) =
    List.length a = List.length b
    && List.forall2
        (fun (n: string, x: torch.Tensor) (m: string, y: torch.Tensor) ->
            n = m && x.shape = y.shape && (use e = x.eq(y).all() in e.item<bool>()))
        a b

let private trainerStep (checkpoint: string) =
    use d = JsonDocument.Parse(File.ReadAllText(Path.Combine(checkpoint, "trainer.json")))
    d.RootElement.GetProperty("step").GetInt32()

/// The checkpoint folders of a run, oldest first.
let private checkpoints (runDir: string) =
    let dir = Path.Combine(runDir, "checkpoints")
    if Directory.Exists dir then Directory.GetDirectories dir |> Array.sort |> List.ofArray else []

[<Tests>]
let tests =
    testList "cli train" [
        test "--stop-at-step 2 then --resume: metrics.jsonl losses and final weights bit-identical to an uninterrupted run" {
            let dir = workspace ()
            let whole = magnetIn dir ("train" :: scratch 4 @ [ "-o"; "whole" ])
            Expect.equal whole.Code 0 (string whole)
            Expect.stringContains whole.Out "completed 4 steps" (string whole)
            Expect.stringContains whole.Out (Path.Combine("whole", "final")) "names final/"
            Expect.stringContains whole.Out (Path.Combine("whole", "metrics.jsonl")) "names the metrics"
            let first = magnetIn dir ("train" :: scratch 4 @ [ "-o"; "parted"; "--stop-at-step"; "2" ])
            Expect.equal first.Code 0 (string first)
            Expect.stringContains first.Out "stopped at step 2" (string first)
            Expect.stringContains first.Out "resume with: magnet train --resume parted" (string first)
            Expect.isFalse (Directory.Exists(Path.Combine(dir, "parted", "final"))) "no final/ yet"
            // The resume runs from another folder: config.json holds absolute paths.
            let second = magnetIn (Path.Combine(dir, "corpus")) [ "train"; "--resume"; Path.Combine(dir, "parted") ]
            Expect.equal second.Code 0 (string second)
            Expect.stringContains second.Out "completed 4 steps" (string second)
            let expected = losses (Path.Combine(dir, "whole"))
            Expect.equal (expected |> List.map (fun (s, _, _) -> s) |> List.distinct) [ 1L; 2L; 3L; 4L ] "a line per step"
            let trainLoss = expected |> List.filter (fun (_, k, _) -> k = "train/loss") |> List.map (fun (_, _, v) -> v)
            Expect.isGreaterThan (List.distinct trainLoss).Length 1 "the loss moves (else equality would prove little)"
            Expect.sequenceEqual (losses (Path.Combine(dir, "parted"))) expected "losses bit-identical"
            Expect.isTrue (identical (tensors (Path.Combine(dir, "whole", "final"))) (tensors (Path.Combine(dir, "parted", "final")))) "final weights bit-identical"
            // The custom size reached the model.
            let final = MagnetFormat.readOptions (Path.Combine(dir, "whole", "final"))
            let config, options = final
            Expect.equal (config.DModel, config.EncoderLayers, config.DecoderLayers, config.EncoderAttentionHeads) (32, 2, 1, 2) "the asked size"
            Expect.equal (options.Predictors |> List.map _.Layer) [ 1 ] "the asked predictor"
        }

        test "SIGINT (SIGTERM when SIGINT is inherited ignored) finishes the step, writes a checkpoint and names the resume command; resuming completes" {
            let dir = workspace ()
            // Far more steps than run before the signal arrives; resuming runs the rest (about 10 s).
            let steps = 600
            let info = ProcessStartInfo("dotnet", WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
            info.ArgumentList.Add magnetDll
            for a in "train" :: scratch steps @ [ "-o"; "run" ] do info.ArgumentList.Add a
            use p = new Process(StartInfo = info)
            let err = Text.StringBuilder()
            use firstStep = new ManualResetEventSlim(false)
            p.ErrorDataReceived.Add(fun e ->
                if not (isNull e.Data) then
                    lock err (fun () -> err.AppendLine e.Data |> ignore)
                    if e.Data.StartsWith "step " then firstStep.Set())
            p.Start() |> ignore
            p.BeginErrorReadLine()
            let out = p.StandardOutput.ReadToEndAsync()
            Expect.isTrue (firstStep.Wait(TimeSpan.FromMinutes 3.0)) "the run reaches its first step"
            // A process started in the background by a non-interactive shell inherits SIGINT ignored (POSIX), and .NET
            // keeps it ignored in the child; the run then handles SIGTERM the same way, so send that instead.
            let interruptIgnored =
                File.ReadAllLines "/proc/self/status"
                |> Array.tryFind (fun l -> l.StartsWith "SigIgn:")
                |> Option.map (fun l -> (Convert.ToUInt64(l.Substring(7).Trim(), 16) &&& 2UL) <> 0UL)
                |> Option.defaultValue false
            let signal, name = if interruptIgnored then 15, "terminate" else 2, "interrupt"
            Expect.equal (sendSignal(p.Id, signal)) 0 $"signal {signal} sent"
            Expect.isTrue (p.WaitForExit(TimeSpan.FromMinutes 3.0)) "the run ends after the signal"
            p.WaitForExit()
            let stdout = out.Result
            let stderr = lock err (fun () -> string err)
            let report = $"exit {p.ExitCode}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
            Expect.equal p.ExitCode 0 report
            Expect.stringContains stderr $"{name}: finishing the current step" report
            Expect.stringContains stdout "interrupted after step" report
            Expect.stringContains stdout "resume with: magnet train --resume run" report
            let run = Path.Combine(dir, "run")
            let saved = checkpoints run
            Expect.isNonEmpty saved "a checkpoint"
            let step = trainerStep (List.last saved)
            let logged = losses run |> List.map (fun (s, _, _) -> int s) |> List.max
            Expect.equal step logged "the checkpoint holds the last step run"
            Expect.isLessThan step steps "interrupted before the end"
            Expect.isFalse (Directory.Exists(Path.Combine(run, "final"))) "no final/"
            let resumed = magnetIn dir [ "train"; "--resume"; "run" ]
            Expect.equal resumed.Code 0 (string resumed)
            Expect.stringContains resumed.Out $"completed {steps} steps" (string resumed)
            Expect.equal (losses run |> List.map (fun (s, _, _) -> int s) |> List.distinct) [ 1 .. steps ] "every step logged once"
            Expect.isTrue (File.Exists(Path.Combine(run, "final", "magnet.json"))) "final/ written"
        }

        test "a Hugging Face folder with predictors starts from the tensors convert writes with the same seed" {
            let dir = workspace ()
            let converted = magnetIn dir [ "convert"; "--whisper"; tinyWhisper.Value; "-p"; "1:bp1:0.3:mean"; "--conv-strides"; "2"; "--seed"; "5"; "--no-check"; "-o"; "converted" ]
            Expect.equal converted.Code 0 (string converted)
            // Update 0 has learning rate 0 (warmup from 0), so the checkpoint after step 1 holds the starting weights.
            let r =
                magnetIn dir [ "train"; "--model"; tinyWhisper.Value; "--set"; """predictors=["1:bp1:0.3:mean"]"""; "--set"; "conv_strides=[2]"
                               "--set"; "warmup_ratio=0.1"; "--data"; "corpus"; "--max-steps"; "10"; "--batch-size"; "2"; "--seed"; "5"
                               "--set"; "workers=1"; "--stop-at-step"; "1"; "-o"; "run" ]
            Expect.equal r.Code 0 (string r)
            let start = Path.Combine(List.exactlyOne (checkpoints (Path.Combine(dir, "run"))), "model")
            let a, b = tensors start, tensors (Path.Combine(dir, "converted"))
            Expect.isTrue (a |> List.exists (fun (n, _) -> n.Contains "boundary_predictors.1.")) "the predictor is there"
            Expect.isTrue (identical a b) "the same tensors as convert's"
        }

        test "bad flags, keys, values and files exit 2 naming them" {
            let dir = workspace ()
            File.WriteAllText(Path.Combine(dir, "bad.json"), """{"max_steps": 3, "batch_sise": 2}""")
            File.WriteAllText(Path.Combine(dir, "elsewhere.json"), """{"from_scratch": "tiny", "data": "nowhere"}""")
            Directory.CreateDirectory(Path.Combine(dir, "taken")) |> ignore
            File.WriteAllText(Path.Combine(dir, "taken", "config.json"), "{}")
            let tiny = [ "--from-scratch"; "tiny"; "--data"; "corpus" ]
            let cases =
                [ [ "--max-stesp"; "3"; "-o"; "r" ] @ tiny, "--max-stesp"
                  [ "--set"; "max_stesp=3"; "-o"; "r" ] @ tiny, "unknown key 'max_stesp'"
                  [ "--lr"; "-1"; "-o"; "r" ] @ tiny, "--lr -1: key 'lr' must be a positive number"
                  [ "--batch-size"; "0"; "-o"; "r" ] @ tiny, "--batch-size 0: key 'batch_size'"
                  [ "--set"; "lr_decay=sometimes"; "-o"; "r" ] @ tiny, "--set lr_decay=sometimes: key 'lr_decay'"
                  [ "--config"; "bad.json"; "-o"; "r" ] @ tiny, "bad.json: unknown key 'batch_sise'"
                  [ "--config"; "nowhere.json"; "-o"; "r" ] @ tiny, "--config nowhere.json"
                  [ "--from-scratch"; "tiny"; "--data"; "nowhere"; "-o"; "r" ], "--data nowhere"
                  [ "--config"; "elsewhere.json"; "-o"; "r" ], "elsewhere.json: key 'data' nowhere"
                  [ "--from-scratch"; "huge"; "--data"; "corpus"; "-o"; "r" ], "key 'from_scratch'"
                  [ "--model"; "nowhere"; "--data"; "corpus"; "-o"; "r" ], "--model nowhere"
                  [ "--model"; tinyWhisper.Value; "--set"; "d_model=64"; "--data"; "corpus"; "-o"; "r" ], "key 'd_model'"
                  [ "--model"; tinyWhisper.Value; "--set"; """predictors=["7:bp1"]"""; "--data"; "corpus"; "-o"; "r" ], "key 'predictors'"
                  [ "--model"; tinyWhisper.Value; "-o"; "r" ] @ tiny, "--model DIR or --from-scratch SIZE, not both"
                  tiny, "give -o RUN_DIR"
                  [ "-o"; "taken" ] @ tiny, "-o taken already holds a run"
                  [ "--resume"; "nowhere" ], "--resume nowhere"
                  [ "--resume"; "taken"; "--lr"; "1e-4" ], "--lr: a resumed run keeps its own configuration"
                  [ "--stop-at-step"; "0"; "-o"; "r" ] @ tiny, "--stop-at-step must be at least 1" ]
            for args, expected in cases do
                let r = magnetIn dir ("train" :: args)
                let shown = String.Join(" ", args)
                Expect.equal r.Code 2 $"magnet train {shown}\n{r}"
                Expect.stringContains r.Err expected $"magnet train {shown}\n{r}"
                Expect.isFalse (Directory.Exists(Path.Combine(dir, "r"))) $"no run folder left by magnet train {shown}"
        }

        test "progress lines: step, percent, loss, compression, samples/s, elapsed and the ETA at this session's rate" {
            let p: SupervisedProgress =
                { Step = 120; FirstStep = 20; MaxSteps = 1000; Loss = 3.214; Compression = 0.3124; SamplesPerSecond = 12.5; ElapsedSeconds = 42.0 }
            // 880 steps left at 100 steps per 42 s: 369.6 s = 6:09.
            Expect.equal (TrainProgress.plainLine p) "step 120/1000 (12%): loss 3.2140, compression 31.2%, 12.5 samples/s, 0:42 elapsed, ETA 6:09" "plain"
            let bar = TrainProgress.barLine p 200
            Expect.stringStarts bar "step 120/1000  12% |" "bar start"
            Expect.stringContains bar "| loss 3.2140, compression 31.2%, 12.5 samples/s, 0:42 elapsed, ETA 6:09" "bar figures"
            Expect.equal (TrainProgress.barLine p 30).Length 30 "cut to the terminal width"
            let none = TrainProgress.plainLine { p with Compression = nan; Step = 20 }
            Expect.equal none "step 20/1000 (2%): loss 3.2140, 12.5 samples/s, 0:42 elapsed, ETA ?" "no predictors, no step yet this session"
        }
    ]
