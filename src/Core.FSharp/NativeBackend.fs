/// Loading the libtorch that ships beside TorchSharp.dll, for hosts without a deps.json (notebooks, scripts).
module MagnetWhisper.Core.NativeBackend

open System
open System.IO
open System.Runtime.InteropServices
open TorchSharp

/// The libLibTorchSharp.so (or .dylib/.dll) beside TorchSharp.dll: its runtimes folder, or the folder itself
/// (RID-specific publish). None when neither exists.
let bundledBinding () : string option =
    let dir = Path.GetDirectoryName(typeof<torch.Tensor>.Assembly.Location)
    let name, rid =
        if OperatingSystem.IsWindows() then "LibTorchSharp.dll", "win-x64"
        elif OperatingSystem.IsMacOS() then "libLibTorchSharp.dylib", "osx-arm64"
        else "libLibTorchSharp.so", "linux-x64"
    [ Path.Combine(dir, "runtimes", rid, "native", name); Path.Combine(dir, name) ] |> List.tryFind File.Exists

/// Loads the bundled binding by full path before TorchSharp initialises. In a script or notebook host TorchSharp
/// first looks for libtorch by name, which can pick a system libtorch (e.g. Debian's python3-torch) and then abort,
/// because two libtorches cannot share a process. Loaded by path, the binding pulls its own libtorch from its folder
/// ($ORIGIN), and later loads by name find those. Call it in the first cell, before any `torch` use; it is harmless in
/// applications. Returns the path loaded, or None when no bundled binding was found.
let preload () : string option =
    match bundledBinding () with
    | Some path ->
        NativeLibrary.Load path |> ignore
        Some path
    | None -> None
