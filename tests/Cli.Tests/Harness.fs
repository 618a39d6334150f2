/// Runs the `magnet` command line as a user would (a process with arguments, exit code, stdout, stderr) and makes
/// the small inputs it needs: a random tiny Whisper folder, WAV files.
module MagnetWhisper.Cli.Tests.Harness

open System
open System.Diagnostics
open System.IO
open System.Text
open TorchSharp
open MagnetWhisper.Core.Whisper

/// The repository root (the folder of MagnetWhisper.sln above the test assembly).
let root =
    let rec up (d: DirectoryInfo) =
        if isNull d then failwith "MagnetWhisper.sln not found above the test assembly"
        elif File.Exists(Path.Combine(d.FullName, "MagnetWhisper.sln")) then d.FullName
        else up d.Parent
    up (DirectoryInfo AppContext.BaseDirectory)

/// A file of tests/data.
let data (name: string) = Path.Combine(root, "tests", "data", name)

/// The command line under test: MAGNET_CLI_DLL when set (e.g. an older build, to see a test fail), else the build
/// of this configuration.
let magnetDll =
    match Environment.GetEnvironmentVariable "MAGNET_CLI_DLL" with
    | null | "" ->
        let configuration = if AppContext.BaseDirectory.Contains "/Debug/" then "Debug" else "Release"
        Path.Combine(root, "src", "Cli", "bin", configuration, "net10.0", "magnet.dll")
    | path -> path

/// What a run of the command line did.
type Run =
    { Code: int
      Out: string
      Err: string }

    override r.ToString() = $"exit {r.Code}\n--- stdout\n{r.Out}\n--- stderr\n{r.Err}"

/// A fresh temporary folder, deleted when the process exits.
let tempDir (tag: string) =
    let dir = Path.Combine(Path.GetTempPath(), $"mw-cli-{tag}-{Guid.NewGuid():N}")
    Directory.CreateDirectory dir |> ignore
    AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> try Directory.Delete(dir, true) with _ -> ())
    dir

/// Runs `dotnet magnet.dll args…` in a working folder (stdout and stderr redirected, so not a terminal).
let magnetIn (workDir: string) (args: string list) : Run =
    let info = ProcessStartInfo("dotnet", WorkingDirectory = workDir, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    info.ArgumentList.Add magnetDll
    for a in args do info.ArgumentList.Add a
    info.Environment.["DOTNET_NOLOGO"] <- "1"
    use p = Process.Start info
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    if not (p.WaitForExit(TimeSpan.FromMinutes 5.0)) then
        p.Kill true
        failwithf "magnet %s did not finish in 5 minutes" (String.Join(" ", args))
    { Code = p.ExitCode; Out = out.Result; Err = err.Result }

/// Runs the command line in a fresh temporary folder.
let magnet (args: string list) : Run = magnetIn (tempDir "run") args

/// A whisper-shaped model with the multilingual vocabulary, width 64 and two layers (fast to load and run).
let tinyConfig =
    { WhisperConfig.preset "tiny" with
        DModel = 64
        EncoderLayers = 2
        DecoderLayers = 2
        EncoderAttentionHeads = 2
        DecoderAttentionHeads = 2
        EncoderFfnDim = 128
        DecoderFfnDim = 128 }

/// A random tiny Hugging Face Whisper folder (seeded), written once.
let tinyWhisper =
    lazy
        (MagnetWhisper.Core.NativeBackend.preload () |> ignore
         let dir = Path.Combine(tempDir "model", "tiny")
         torch.manual_seed 1234L |> ignore
         use m = new WhisperModel(tinyConfig)
         m.Save dir
         dir)

/// Writes 16-bit PCM mono WAV at 16 kHz (RIFF header written out field by field).
let writeWav (path: string) (samples: float32[]) =
    use s = File.Create path
    use w = new BinaryWriter(s, Encoding.ASCII)
    let dataBytes = samples.Length * 2
    w.Write(Encoding.ASCII.GetBytes "RIFF"); w.Write(36 + dataBytes); w.Write(Encoding.ASCII.GetBytes "WAVE")
    w.Write(Encoding.ASCII.GetBytes "fmt "); w.Write 16; w.Write 1s; w.Write 1s; w.Write 16000; w.Write 32000; w.Write 2s; w.Write 16s
    w.Write(Encoding.ASCII.GetBytes "data"); w.Write dataBytes
    for x in samples do w.Write(int16 (Math.Round(float (max -1.0f (min 1.0f x)) * 32767.0)))

/// Seconds of a 220 Hz tone with a slow vibrato at 16 kHz.
let tone (seconds: float) =
    Array.init (int (seconds * 16000.0)) (fun i ->
        let t = float i / 16000.0
        float32 (0.3 * sin (2.0 * Math.PI * (220.0 * t + 2.0 * sin (2.0 * Math.PI * 0.5 * t)))))

/// A WAV of a 2 s tone in a folder.
let toneWav (dir: string) (name: string) =
    let path = Path.Combine(dir, name)
    writeWav path (tone 2.0)
    path

/// Decoding flags that keep a run of the random tiny model to a second or two.
let fast = [ "--sample-len"; "12"; "--temperature-increment-on-fallback"; "none"; "--beam-size"; "0" ]
