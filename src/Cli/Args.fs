/// Command-line checks shared by the commands: unknown flags that Argu's main-command lists would take as paths,
/// and errors that name the flag as the user typed it.
module MagnetWhisper.Cli.Args

open System
open System.IO
open Microsoft.FSharp.Reflection
open Argu

/// The flags of an Argu union as typed on the command line: `Output_Dir` → `--output-dir`, plus its
/// AltCommandLine names and the help flags.
let flagsOf<'T when 'T :> IArgParserTemplate> () : string list =
    [ "--help"; "-h"
      for case in FSharpType.GetUnionCases(typeof<'T>, true) do
          let attributes = case.GetCustomAttributes()
          if not (attributes |> Array.exists (fun a -> a :? MainCommandAttribute)) then
              "--" + case.Name.ToLowerInvariant().Replace('_', '-')
              for a in attributes do
                  match a with
                  | :? AltCommandLineAttribute as alt -> yield! alt.Names
                  | _ -> () ]

/// Levenshtein distance (insertions, deletions, substitutions; a transposition counts two).
let editDistance (a: string) (b: string) : int =
    let d = Array2D.init (a.Length + 1) (b.Length + 1) (fun i j -> if i = 0 then j elif j = 0 then i else 0)
    for i in 1 .. a.Length do
        for j in 1 .. b.Length do
            let cost = if a.[i - 1] = b.[j - 1] then 0 else 1
            d.[i, j] <- min (min (d.[i - 1, j] + 1) (d.[i, j - 1] + 1)) (d.[i - 1, j - 1] + cost)
    d.[a.Length, b.Length]

/// The known flag closest to a misspelt one, when it is close (at most a third of its letters differ).
let closest (known: string list) (typed: string) : string option =
    let name = typed.Split('=').[0]
    known
    |> List.filter (fun k -> k.StartsWith "--")
    |> List.map (fun k -> k, editDistance name k)
    |> List.filter (fun (k, d) -> d <= max 2 (k.Length / 3))
    |> List.sortBy snd
    |> List.tryHead
    |> Option.map fst

/// Raises ArgumentException for the first token of a main-command list that looks like a flag ("-x", "--x") and is
/// not an existing file: Argu hands unknown flags to the main command, which would read them as paths.
let rejectUnknownFlags<'T when 'T :> IArgParserTemplate> (command: string) (tokens: string list) : unit =
    let known = flagsOf<'T> ()
    match tokens |> List.tryFind (fun t -> t.StartsWith "-" && t.Length > 1 && not (File.Exists t) && not (Directory.Exists t)) with
    | None -> ()
    | Some flag ->
        let hint =
            match closest known flag with
            | Some k -> $" (did you mean {k}?)"
            | None -> ""
        invalidArg flag $"unknown option '{flag}'{hint}; see 'magnet {command} --help'"

/// The message of an ArgumentException without .NET's " (Parameter 'name')" suffix.
let messageOf (e: ArgumentException) : string =
    if isNull e.ParamName then e.Message else e.Message.Replace($" (Parameter '{e.ParamName}')", "")

/// Runs a parser of a flag's value; its ArgumentException is re-raised prefixed with the flag ("--device: …").
let value (flag: string) (parse: unit -> 'a) : 'a =
    try parse ()
    with :? ArgumentException as e -> invalidArg flag $"{flag}: {messageOf e}"

/// Raises ArgumentException naming the flag unless the condition holds.
let require (flag: string) (condition: bool) (message: string) : unit =
    if not condition then invalidArg flag $"{flag} {message}"

/// Which of a flag's names the user typed (the first of names on the command line, else the first name), so that
/// errors repeat "-o" when that is what was written.
let typed (names: string list) : string =
    let argv = Environment.GetCommandLineArgs()
    names
    |> List.tryFind (fun n -> argv |> Array.exists (fun a -> a = n || a.StartsWith(n + "=")))
    |> Option.defaultValue (List.head names)
