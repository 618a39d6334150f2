/// `magnet doctor`: is this machine able to run MagnetWhisper?
module MagnetWhisper.Cli.Commands.Doctor

open Argu
open MagnetWhisper.Diagnostics

type DoctorArgs =
    | [<Hidden>] Placeholder
    interface IArgParserTemplate with
        member _.Usage = ""

let run (_: ParseResults<DoctorArgs>) : int =
    let r = RuntimeReport.Collect()
    printfn "TorchSharp        %s" r.TorchSharpVersion
    printfn "libtorch          %s" (defaultArg (Option.ofObj r.LibTorchVersion) "not loaded")
    match Option.ofObj r.LibStdCxxPath with
    | Some p ->
        let state = if r.LibStdCxxHasTorchSharpVersion then "has GLIBCXX_3.4.32 (no remedy needed)" else "lacks GLIBCXX_3.4.32"
        printfn "libstdc++         %s: %s" p state
    | None -> printfn "libstdc++         not found (not Linux?)"
    match Option.ofObj r.LoadedBindingPath with
    | Some p -> printfn "binding loaded    %s" p
    | None -> printfn "binding loaded    unknown"
    printfn "remedy active     %s" (if r.RemedyActive then "yes (weak GLIBCXX_3.4.32 need)" else "no")
    printfn "CPU threads       %d" r.CpuThreads
    printfn "CUDA              %s" (if r.CudaAvailable then $"available, {r.CudaDevices} device(s)" else "not available")
    for t in r.Tools do
        let where = match Option.ofObj t.Path with Some p -> p | None -> "not installed"
        printfn "%-17s %s (%s)" t.Name where t.Purpose
    match Option.ofObj r.LoadError with
    | Some e ->
        printfn "status            NOT USABLE: %s" e
        1
    | None ->
        printfn "status            usable"
        0
