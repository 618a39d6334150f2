/// A checkpoint laid out like the Hugging Face hub cache: snapshots/REV/model.safetensors and config.json are
/// relative symbolic links to ../../blobs/HASH. They must load like regular files (the length of the target,
/// not of the link, is the file's length).
module MagnetWhisper.Tests.Whisper.SymlinkCheckpointTests

open System
open System.IO
open Expecto
open TorchSharp
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Tests.Reference
open MagnetWhisper.Tests.Whisper.WhisperReference

/// Writes config.json and model.safetensors of the tiny config into blobs/ under hash-like names and links them
/// from snapshots/0123abcd/ with relative links; returns the snapshot folder and the tensors.
let private hubCache (root: string) =
    let repo = Path.Combine(root, "models--test--tiny")
    let blobs = Path.Combine(repo, "blobs")
    let snapshot = Path.Combine(repo, "snapshots", "0123abcd")
    Directory.CreateDirectory blobs |> ignore
    Directory.CreateDirectory snapshot |> ignore
    torch.manual_seed 5L |> ignore
    let tensors = [ for n, shape in hfKeys tinyConfig -> n, torch.randn(shape) ]
    let weightsBlob, configBlob = "9f2c7e1d0b8a6f5e4d3c2b1a0f9e8d7c6b5a4f3e", "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
    SafeTensors.write (Path.Combine(blobs, weightsBlob)) (Map [ "format", "pt" ]) tensors
    File.WriteAllText(Path.Combine(blobs, configBlob), WhisperConfig.toJson "float32" tinyConfig)
    File.CreateSymbolicLink(Path.Combine(snapshot, "model.safetensors"), Path.Combine("..", "..", "blobs", weightsBlob)) |> ignore
    File.CreateSymbolicLink(Path.Combine(snapshot, "config.json"), Path.Combine("..", "..", "blobs", configBlob)) |> ignore
    snapshot, tensors

[<Tests>]
let tests =
    testList "whisper" [
        testList "symlinked checkpoint" [
            test "a model.safetensors that is a relative symlink opens with its target's length and tensors" {
                if OperatingSystem.IsWindows() then skiptest "symbolic links need privileges on Windows"
                use dir = new TempDir()
                let snapshot, tensors = hubCache dir.Path
                let link = Path.Combine(snapshot, "model.safetensors")
                Expect.isNotNull (FileInfo(link).LinkTarget) "the file is a link"
                use file = SafeTensorsFile.Open link
                Expect.sequenceEqual (file.Names |> Seq.sort) (tensors |> List.map fst |> List.sort) "every tensor listed"
                // A link to the link (two hops) works as well.
                let hop = dir.Sub "hop.safetensors"
                File.CreateSymbolicLink(hop, link) |> ignore
                use again = SafeTensorsFile.Open hop
                Expect.equal again.Names.Count tensors.Length "through two links"
            }
            test "fromPretrained loads a hub-cache snapshot folder whose files are symlinks" {
                if OperatingSystem.IsWindows() then skiptest "symbolic links need privileges on Windows"
                use dir = new TempDir()
                let snapshot, tensors = hubCache dir.Path
                use m = WhisperModel.fromPretrained snapshot torch.CPU torch.ScalarType.Float32
                let parameters = Map.ofList [ for struct (n, p) in m.named_parameters() -> n, (p :> Tensor) ]
                for n, t in tensors do
                    Expect.isTrue (identical parameters.[n] t) $"{n} loaded through the link"
            }
        ]
    ]
