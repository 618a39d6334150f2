namespace MagnetWhisper.Core.Pretraining

// The versions of the tools a base model depends on, for its provenance: the speech engines and ffmpeg that made the
// corpus (asked with their own version flags), TorchSharp and the libtorch it runs.

open System
open System.Diagnostics
open System.Reflection
open System.Text.RegularExpressions
open TorchSharp

/// One tool and the version it reports (None: not installed or not answering).
type ToolVersion =
    { Name: string
      Version: string option }

/// Asking tools for their versions.
[<RequireQualifiedAccess>]
module ToolVersions =
    /// The line of a tool's version output that carries the version: the first with a dotted number (espeak-ng, festival
    /// and ffmpeg put it first; flite after a copyright line), else the first non-empty line; trimmed.
    let versionLine (output: string) : string option =
        let lines = output.Split('\n') |> Array.map _.Trim() |> Array.filter (fun l -> l <> "")
        match lines |> Array.tryFind (fun l -> Regex.IsMatch(l, @"\d+\.\d+")) with
        | Some l -> Some l
        | None -> Array.tryHead lines

    /// Runs `command args` (found on PATH) and returns its version line; None when it cannot be run or does not
    /// answer within 10 s.
    let ask (command: string) (args: string list) : string option =
        try
            let info = ProcessStartInfo(command, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
            for a in args do info.ArgumentList.Add a
            use p = Process.Start info
            let out = p.StandardOutput.ReadToEndAsync()
            let err = p.StandardError.ReadToEndAsync()
            if not (p.WaitForExit(TimeSpan.FromSeconds 10.0)) then
                p.Kill true
                None
            else versionLine (out.Result + "\n" + err.Result)
        with _ -> None

    /// An assembly's informational version without the source-revision suffix.
    let assemblyVersion (a: Assembly) : string =
        match a.GetCustomAttribute<AssemblyInformationalVersionAttribute>() with
        | null -> string (a.GetName().Version)
        | v -> v.InformationalVersion.Split('+').[0]

    /// espeak-ng, festival, flite and ffmpeg as they answer on this machine; TorchSharp and libtorch.
    let collect () : ToolVersion list =
        [ { Name = "espeak-ng"; Version = ask "espeak-ng" [ "--version" ] }
          { Name = "festival"; Version = ask "festival" [ "--version" ] }
          { Name = "flite"; Version = ask "flite" [ "--version" ] }
          { Name = "ffmpeg"; Version = ask "ffmpeg" [ "-version" ] }
          { Name = "TorchSharp"; Version = Some(assemblyVersion typeof<torch>.Assembly) }
          { Name = "libtorch"; Version = (try Some torch.__version__ with _ -> None) }
          { Name = "MagnetWhisper.Core"; Version = Some(assemblyVersion typeof<ToolVersion>.Assembly) } ]
