/// Command-line checks shared by the commands: unknown flags that Argu would take as positional arguments, and
/// errors that name the flag as the user typed it.
module MagnetWhisper.Cli.Args

open System
open System.IO
open Microsoft.FSharp.Reflection
open Argu

/// The flags of an Argu union as typed on the command line: `Output_Dir` → `--output-dir`, plus its
/// AltCommandLine names and the help flags.
let flagsOfTemplate (template: Type) : string list =
    [ "--help"; "-h"
      for case in FSharpType.GetUnionCases(template, true) do
          let attributes = case.GetCustomAttributes()
          if not (attributes |> Array.exists (fun a -> a :? MainCommandAttribute)) then
              "--" + case.Name.ToLowerInvariant().Replace('_', '-')
              for a in attributes do
                  match a with
                  | :? AltCommandLineAttribute as alt -> yield! alt.Names
                  | _ -> () ]

/// The flags of an Argu union 'T (see flagsOfTemplate).
let flagsOf<'T when 'T :> IArgParserTemplate> () : string list = flagsOfTemplate typeof<'T>

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

/// The first token of a command's arguments that looks like a flag ("-x", "--x") but is none of the command's,
/// is not the value of the flag before it, and is not an existing file or a number. Argu would hand it to the
/// command's positional arguments (reading `--outptu-dir` as an audio path) or blame the wrong token.
let unknownFlagOf (template: Type) (tokens: string list) : string option =
    let valued =
        set [ for case in FSharpType.GetUnionCases(template, true) do
                  if case.GetFields().Length > 0 then
                      "--" + case.Name.ToLowerInvariant().Replace('_', '-')
                      for a in case.GetCustomAttributes() do
                          match a with
                          | :? AltCommandLineAttribute as alt -> yield! alt.Names
                          | _ -> () ]
    let known = set (flagsOfTemplate template)
    let looksLikeFlag (t: string) =
        t.StartsWith "-" && t.Length > 1 && not (Char.IsDigit t.[1]) && t.[1] <> '.' && not (File.Exists t) && not (Directory.Exists t)
    let rec scan (tokens: string list) =
        match tokens with
        | [] -> None
        | t :: rest when valued.Contains t -> scan (List.skip (min 1 rest.Length) rest)
        | t :: rest when known.Contains t -> scan rest
        | t :: _ when looksLikeFlag t -> Some t
        | _ :: rest -> scan rest
    scan tokens

/// Raises ArgumentException naming an unknown flag of a command whose arguments are the Argu union `template` (see
/// unknownFlagOf), with the nearest known one.
let rejectUnknownOf (template: Type) (command: string) (tokens: string list) : unit =
    match unknownFlagOf template tokens with
    | None -> ()
    | Some flag ->
        let hint =
            match closest (flagsOfTemplate template) flag with
            | Some k -> $" (did you mean {k}?)"
            | None -> ""
        invalidArg flag $"unknown option '{flag}'{hint}; see 'magnet {command} --help'"

/// Raises ArgumentException naming an unknown flag of a command (see unknownFlagOf), with the nearest known one.
let rejectUnknown<'T when 'T :> IArgParserTemplate> (command: string) (tokens: string list) : unit =
    rejectUnknownOf typeof<'T> command tokens

/// For a command made of subcommands (the cases of 'T that hold a ParseResults, like `bench downsample`): the
/// subcommand named first in tokens is checked for unknown flags (see rejectUnknown), so a new subcommand is covered
/// as soon as it is a case of 'T. An unknown subcommand is left to Argu.
let rejectUnknownInSubcommand<'T when 'T :> IArgParserTemplate> (command: string) (tokens: string list) : unit =
    match tokens with
    | sub :: rest ->
        let template =
            FSharpType.GetUnionCases(typeof<'T>, true)
            |> Array.tryFind (fun case -> case.Name.ToLowerInvariant().Replace('_', '-') = sub)
            |> Option.bind (fun case ->
                match case.GetFields() with
                | [| field |] when field.PropertyType.IsGenericType && field.PropertyType.GetGenericTypeDefinition() = typedefof<ParseResults<_>> ->
                    Some(field.PropertyType.GetGenericArguments().[0])
                | _ -> None)
        template |> Option.iter (fun t -> rejectUnknownOf t $"{command} {sub}" rest)
    | [] -> ()

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
