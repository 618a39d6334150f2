/// The plain-PyTorch references of tools/pytorch run by `bench encoder --pytorch` and `bench train --pytorch`:
/// finding a script, running Debian's /usr/bin/python3, and whether it can import torch.
module MagnetWhisper.Cli.PyTorchReference

open System
open System.Diagnostics
open System.IO

/// Debian's Python, where `apt-get install python3-torch` puts PyTorch.
let python = "/usr/bin/python3"

/// Runs python with the arguments: exit code, stdout, stderr (both drained).
let run (args: string list) : int * string * string =
    let psi = ProcessStartInfo(python, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    for a in args do psi.ArgumentList.Add a
    use p = Process.Start psi
    let err = p.StandardError.ReadToEndAsync()
    let out = p.StandardOutput.ReadToEnd()
    p.WaitForExit()
    p.ExitCode, out, err.Result

/// python exists and imports torch and numpy.
let available () : bool =
    File.Exists python && (try (let code, _, _ = run [ "-c"; "import torch, numpy" ] in code = 0) with _ -> false)

/// tools/pytorch/NAME above the executable or the current directory.
let script (name: string) : string =
    let rel = Path.Combine("tools", "pytorch", name)
    let rec up (d: DirectoryInfo) =
        if isNull d then None
        elif File.Exists(Path.Combine(d.FullName, rel)) then Some(Path.Combine(d.FullName, rel))
        else up d.Parent
    match up (DirectoryInfo AppContext.BaseDirectory) |> Option.orElse (up (DirectoryInfo(Directory.GetCurrentDirectory()))) with
    | Some p -> p
    | None -> failwith $"{rel} not found above {AppContext.BaseDirectory} or the current directory; run from the repository"
