/// The command-line reference (docs/CLI.md) generated from the Argu definitions themselves: every command and
/// subcommand's usage text as `--help` prints it, so the page cannot say anything the parser does not do. A test
/// compares docs/CLI.md with this text and fails when they drift.
module MagnetWhisper.Cli.CliReference

open System
open System.Text
open Argu
open Microsoft.FSharp.Reflection

/// The width usage text is wrapped at (fixed, so the page does not depend on the terminal).
[<Literal>]
let Width = 100

/// The usage text of one template type, as `programName --help` prints it.
let private usageOf (template: Type) (programName: string) : string =
    let create =
        typeof<ArgumentParser>.GetMethods()
        |> Array.find (fun m -> m.Name = "Create" && m.IsGenericMethodDefinition)
    let generic = create.MakeGenericMethod(template)
    // Optional F# parameters are options: Some programName, None (null) for the rest.
    let arguments = Array.init (generic.GetParameters().Length) (fun i -> if i = 0 then box (Some programName) else null)
    let parser = generic.Invoke(null, arguments) :?> ArgumentParser
    parser.PrintUsage(usageStringCharacterWidth = Width).TrimEnd()

/// The subcommands of a template: (name as typed, template type), in declaration order.
let private subcommands (template: Type) : (string * Type) list =
    [ for case in FSharpType.GetUnionCases(template, true) do
          match case.GetFields() with
          | [| field |] when field.PropertyType.IsGenericType
                             && field.PropertyType.GetGenericTypeDefinition() = typedefof<ParseResults<_>> ->
              case.Name.ToLowerInvariant().Replace('_', '-'), field.PropertyType.GetGenericArguments().[0]
          | _ -> () ]

/// The Markdown page: a heading and the usage text of the program, then of every command and subcommand, depth first.
let markdown (template: Type) (programName: string) : string =
    let page = StringBuilder()
    let line (s: string) = page.Append(s).Append('\n') |> ignore
    line "# Command-line reference"
    line ""
    line $"Generated from the command line's own definitions: each section is what `{programName} ... --help` prints."
    line "Do not edit by hand: the test `cli reference` fails when this page and the command line differ, and with"
    line "`UPDATE_CLI_REFERENCE=1` in its environment it rewrites the page instead (after `./run-tests` has built:"
    line "`UPDATE_CLI_REFERENCE=1 dotnet tests/Cli.Tests/bin/Release/net10.0/Cli.Tests.dll --filter-test-list \"cli reference\"`)."
    let rec walk (template: Type) (command: string) =
        line ""
        line $"## `{command}`"
        line ""
        line "```text"
        line (usageOf template command)
        line "```"
        for name, sub in subcommands template do
            walk sub $"{command} {name}"
    walk template programName
    page.ToString()
