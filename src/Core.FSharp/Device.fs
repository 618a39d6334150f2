/// Run-time device choice: every tensor function takes its device from its inputs; only entry points choose one.
module MagnetWhisper.Core.Device

open TorchSharp

/// Parses "auto", "cpu", "cuda" or "cuda:N". "auto" picks CUDA when libtorch sees a GPU, else the CPU.
let parse (name: string) : torch.Device =
    match name.Trim().ToLowerInvariant() with
    | "auto" -> if torch.cuda.is_available () then torch.CUDA else torch.CPU
    | "cpu" -> torch.CPU
    | s when s = "cuda" || s.StartsWith "cuda:" ->
        if not (torch.cuda.is_available ()) then
            invalidArg "device" "CUDA was requested, but libtorch sees no CUDA device (build with -p:TorchBackend=cuda on a machine with a GPU)"
        torch.Device(s)
    | other -> invalidArg "device" $"unknown device '{other}': use auto, cpu, cuda or cuda:N"
