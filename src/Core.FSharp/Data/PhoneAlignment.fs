/// Reference phone boundaries from a time-aligned phone file: festival's `utt.save.segs` (an xlabel file: header
/// lines up to a line "#", then `end_time colour phone` a line) or plain `end_time phone` lines. Each phone ends at
/// its time and starts where the previous one ended (the first at 0).
[<RequireQualifiedAccess>]
module MagnetWhisper.Core.Data.PhoneAlignment

open System
open System.Globalization
open System.IO

/// One aligned phone, in seconds.
type Phone =
    { Start: float
      End: float
      Label: string }

/// Parses the text of an alignment file; name (the path as the user gave it) is named in every error with the line.
let parse (name: string) (text: string) : Phone list =
    let lines = text.Replace("\r\n", "\n").Split('\n')
    // xlabel: the header ends at a line holding only "#"; without one every line is data.
    let firstData =
        match lines |> Array.tryFindIndex (fun l -> l.Trim() = "#") with
        | Some i -> i + 1
        | None -> 0
    let number (lineNo: int) (s: string) =
        match Double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture) with
        | true, v when Double.IsFinite v && v >= 0.0 -> v
        | _ -> raise (InvalidDataException $"{name} line {lineNo}: '{s}' is not a time in seconds")
    let parsed =
        [ for i in firstData .. lines.Length - 1 do
              let line = lines.[i].Trim()
              if line <> "" then
                  let lineNo = i + 1
                  let fields = line.Split([| ' '; '\t' |], StringSplitOptions.RemoveEmptyEntries)
                  match fields with
                  | [| time; _colour; phone |] -> yield lineNo, number lineNo time, phone
                  | [| time; phone |] -> yield lineNo, number lineNo time, phone
                  | _ ->
                      raise (InvalidDataException $"{name} line {lineNo}: expected 'end_time phone' or 'end_time colour phone', got '{line}'") ]
    if parsed.IsEmpty then raise (InvalidDataException $"{name}: no aligned phones (lines 'end_time phone')")
    parsed
    |> List.scan (fun (previous: Phone option) (lineNo, time, phone) ->
        let start = previous |> Option.map (fun p -> p.End) |> Option.defaultValue 0.0
        if time < start then
            raise (InvalidDataException $"{name} line {lineNo}: the end time {time} is before the previous phone's end {start}")
        Some { Start = start; End = time; Label = phone }) None
    |> List.choose id

/// Reads an alignment file (see parse); a missing file raises FileNotFoundException naming the path.
let read (path: string) : Phone list =
    if not (File.Exists path) then raise (FileNotFoundException($"alignment file not found: {path}", path))
    parse path (File.ReadAllText path)
