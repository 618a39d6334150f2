/// Parity with an independent plain-PyTorch Whisper (tools/pytorch/whisper_reference.py): a small random checkpoint
/// written by our code is run by both, and the encoder output and logits must agree in float32.
/// Skipped when /usr/bin/python3 cannot import torch (Debian: apt-get install python3-torch).
module MagnetWhisper.Tests.Whisper.PyTorchParityTests

open System
open System.Diagnostics
open System.IO
open Expecto
open TorchSharp
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Tests.Whisper.WhisperReference

let private python = "/usr/bin/python3"

/// The repository root: the first directory above the test assembly that has tests/data.
let private repoRoot =
    lazy
    let rec up (d: DirectoryInfo) =
        if isNull d then failwith "tests/data not found above the test assembly"
        elif Directory.Exists(Path.Combine(d.FullName, "tests", "data")) then d.FullName
        else up d.Parent
    up (DirectoryInfo AppContext.BaseDirectory)

/// Runs a process to completion; exit code, stdout, stderr.
let private runProcess (exe: string) (args: string list) (timeoutMs: int) =
    let psi = ProcessStartInfo(exe, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    for a in args do psi.ArgumentList.Add a
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    if not (p.WaitForExit timeoutMs) then
        p.Kill true
        failwith $"{exe} {String.Join(' ', args)} did not finish in {timeoutMs / 1000} s"
    p.ExitCode, out.Result, err.Result

/// Whether /usr/bin/python3 can import torch (cached).
let private torchAvailable =
    lazy (File.Exists python && (try (let code, _, _ = runProcess python [ "-c"; "import torch, numpy" ] 60000 in code = 0) with _ -> false))

let private requireTorch () =
    if not torchAvailable.Value then
        skiptest $"{python} cannot import torch; install Debian's PyTorch (apt-get install python3-torch) to run the PyTorch parity test"

/// Max |a − b| and whether every element satisfies |a − b| ≤ atol + rtol·|b|.
let private compare (rtol: float) (atol: float) (actual: torch.Tensor) (expected: torch.Tensor) =
    use diff = (actual - expected).abs()
    use bound = expected.abs().mul(rtol.ToScalar()).add(atol.ToScalar())
    use over = diff.gt bound
    diff.max().ToDouble(), over.sum().ToInt64()

/// A whisper-tiny-like shape, small enough for a quick test but with the real 80 mels, 1500 positions and vocabulary.
let parityConfig =
    { WhisperConfig.preset "tiny" with
        DModel = 64
        EncoderLayers = 2
        DecoderLayers = 2
        EncoderAttentionHeads = 4
        DecoderAttentionHeads = 4
        EncoderFfnDim = 256
        DecoderFfnDim = 256 }

let private check (config: WhisperConfig) (seed: int64) =
    requireTorch ()
    let script = Path.Combine(repoRoot.Value, "tools", "pytorch", "whisper_reference.py")
    Expect.isTrue (File.Exists script) $"reference script {script}"
    let dir = Path.Combine(Path.GetTempPath(), $"magnet-pytorch-parity-{Guid.NewGuid():N}")
    Directory.CreateDirectory dir |> ignore
    try
        use m = randomModel seed config
        m.eval()
        let ckpt = Path.Combine(dir, "model")
        m.Save ckpt
        use mel = randomMel (seed + 1L) config 2L
        use tokens = randomTokens (seed + 2L) config 2L 11L
        let melPath, tokensPath = Path.Combine(dir, "mel.npy"), Path.Combine(dir, "tokens.npy")
        let encPath, logitsPath = Path.Combine(dir, "encoder.npy"), Path.Combine(dir, "logits.npy")
        Npy.write melPath mel
        Npy.write tokensPath tokens
        let code, out, err =
            runProcess python [ script; ckpt; "--mel"; melPath; "--tokens"; tokensPath; "--encoder-out"; encPath; "--logits-out"; logitsPath; "--threads"; "1" ] 120000
        if code <> 0 then failtest $"whisper_reference.py exited with {code}:\n{out}\n{err}"
        use _ = torch.inference_mode()
        use ours = m.Encode mel
        use oursLogits = m.forward (mel, tokens)
        use theirs = Npy.read encPath
        use theirLogits = Npy.read logitsPath
        Expect.sequenceEqual theirs.shape ours.shape "encoder output shape"
        Expect.sequenceEqual theirLogits.shape oursLogits.shape "logits shape"
        let encMax, encBad = compare 1e-4 1e-4 ours theirs
        let logitMax, logitBad = compare 1e-4 1e-4 oursLogits theirLogits
        eprintfn "PyTorch parity (%s): encoder max |diff| %.3g, logits max |diff| %.3g" (if config.TieWordEmbeddings then "tied" else "untied") encMax logitMax
        Expect.equal encBad 0L $"encoder elements outside 1e-4 + 1e-4·|ref| (max |diff| {encMax:g})"
        Expect.equal logitBad 0L $"logits outside 1e-4 + 1e-4·|ref| (max |diff| {logitMax:g})"
        // The comparison can fail: a perturbed weight in our model must show up against PyTorch's output.
        use _ = torch.no_grad()
        let ln = m.named_parameters() |> Seq.pick (fun struct (n, p) -> if n = "model.encoder.layer_norm.bias" then Some p else None)
        ln.add_((1e-2).ToScalar()) |> ignore
        use perturbed = m.Encode mel
        let _, perturbedBad = compare 1e-4 1e-4 perturbed theirs
        Expect.isGreaterThan perturbedBad 0L "a 1e-2 change of the final LayerNorm bias is detected"
    finally
        try Directory.Delete(dir, true) with _ -> ()

[<Tests>]
let tests =
    testList "whisper" [
        testList "pytorch parity" [
            test "encoder output and logits equal plain PyTorch's (tiny-like random checkpoint, float32)" {
                check parityConfig 11L
            }
            test "an untied proj_out and tanh GELU FFNs equal plain PyTorch's" {
                check { parityConfig with TieWordEmbeddings = false; ActivationFunction = "gelu_new"; VocabSize = 1000
                                          PadTokenId = 999; BosTokenId = 999; EosTokenId = 999; DecoderStartTokenId = 998
                                          BeginSuppressTokens = [| 220 |] } 21L
            }
        ]
    ]
