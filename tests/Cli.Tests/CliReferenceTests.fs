/// docs/CLI.md is the command line's own usage text: it must equal what the Argu definitions print now.
module MagnetWhisper.Cli.Tests.CliReferenceTests

open System
open System.IO
open Expecto
open MagnetWhisper.Cli

[<Tests>]
let tests =
    testList "cli reference" [
        test "docs/CLI.md is the usage text of every command and subcommand" {
            let path = Path.Combine(Harness.root, "docs", "CLI.md")
            let generated = CliReference.markdown typeof<Program.Command> "magnet"
            if Environment.GetEnvironmentVariable "UPDATE_CLI_REFERENCE" = "1" then File.WriteAllText(path, generated)
            let onDisk = if File.Exists path then File.ReadAllText path else ""
            if onDisk <> generated then
                let a = onDisk.Split('\n')
                let b = generated.Split('\n')
                let first = Seq.zip a b |> Seq.tryFindIndex (fun (x, y) -> x <> y) |> Option.defaultValue (min a.Length b.Length)
                let at (lines: string[]) = if first < lines.Length then lines.[first] else "(end of text)"
                failtest $"docs/CLI.md differs from the command line at line {first + 1}:\n  docs:    {at a}\n  command: {at b}\nRun the test with UPDATE_CLI_REFERENCE=1 to rewrite the page, and review the change."
            // Every command of `magnet --help` has its section (a page that lost one would fail above too).
            for command in [ "doctor"; "demo"; "demo toy"; "demo pretrain"; "bench encoder"; "corpus synth"; "train"; "grpo"; "eval"; "report" ] do
                Expect.stringContains generated $"## `magnet {command}`" $"a section for magnet {command}"
        }
    ]
