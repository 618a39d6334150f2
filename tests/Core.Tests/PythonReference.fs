/// Running the plain-PyTorch references of tools/pytorch with Debian's /usr/bin/python3: the repository root, a
/// process runner, the torch availability check (tests are skipped without python3-torch) and an elementwise
/// tolerance count.
module MagnetWhisper.Tests.PythonReference

open System
open System.Diagnostics
open System.IO
open Expecto
open TorchSharp

/// Debian's interpreter (python3-torch is installed for it, not for a pyenv python3 earlier on PATH).
let python = "/usr/bin/python3"

/// The repository root: the first directory above the test assembly that has tests/data.
let repoRoot =
    lazy
    let rec up (d: DirectoryInfo) =
        if isNull d then failwith "tests/data not found above the test assembly"
        elif Directory.Exists(Path.Combine(d.FullName, "tests", "data")) then d.FullName
        else up d.Parent
    up (DirectoryInfo AppContext.BaseDirectory)

/// The path of a script under tools/pytorch.
let script (name: string) = Path.Combine(repoRoot.Value, "tools", "pytorch", name)

/// Runs a process to completion; exit code, stdout, stderr.
let runProcess (exe: string) (args: string list) (timeoutMs: int) =
    let psi = ProcessStartInfo(exe, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    for a in args do psi.ArgumentList.Add a
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    if not (p.WaitForExit timeoutMs) then
        p.Kill true
        failwith $"{exe} {String.Join(' ', args)} did not finish in {timeoutMs / 1000} s"
    p.ExitCode, out.Result, err.Result

/// Whether /usr/bin/python3 can import torch and numpy (cached).
let torchAvailable =
    lazy (File.Exists python && (try (let code, _, _ = runProcess python [ "-c"; "import torch, numpy" ] 60000 in code = 0) with _ -> false))

/// Skips the calling test when PyTorch is not installed for /usr/bin/python3.
let requireTorch () =
    if not torchAvailable.Value then
        skiptest $"{python} cannot import torch; install Debian's PyTorch (apt-get install python3-torch) to run the PyTorch parity test"

/// Max |a − b| and the number of elements outside |a − b| ≤ atol + rtol·|b| (b is the reference).
let compare (rtol: float) (atol: float) (actual: torch.Tensor) (expected: torch.Tensor) =
    use a = actual.detach().to_type(torch.float64).cpu()
    use b = expected.detach().to_type(torch.float64).cpu()
    use diff = (a - b).abs()
    use bound = b.abs().mul(rtol.ToScalar()).add(atol.ToScalar())
    use over = diff.gt bound
    (if diff.numel() = 0L then 0.0 else diff.max().ToDouble()), over.sum().ToInt64()
