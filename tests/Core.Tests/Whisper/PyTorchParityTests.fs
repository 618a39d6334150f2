/// Parity with an independent plain-PyTorch Whisper (tools/pytorch/whisper_reference.py): a small random checkpoint
/// written by our code is run by both, and the encoder output and logits must agree in float32.
/// Skipped when /usr/bin/python3 cannot import torch (Debian: apt-get install python3-torch).
module MagnetWhisper.Tests.Whisper.PyTorchParityTests

open System
open System.IO
open Expecto
open TorchSharp
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Tests.Whisper.WhisperReference
open MagnetWhisper.Tests.PythonReference

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
    let script = script "whisper_reference.py"
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
