/// Independent readings of the Text assets for the tests (straight from the repository files, not the product).
module MagnetWhisper.Tests.Text.TextFixtures

open System
open System.Collections.Generic
open System.IO
open System.IO.Compression
open System.Text
open System.Text.RegularExpressions

/// Path of a file in src/Core.FSharp/Assets, found by walking up from the test binary.
let assetPath (name: string) : string =
    let rec up (dir: DirectoryInfo) =
        if isNull dir then failwith $"Assets/{name} not found above {AppContext.BaseDirectory}"
        else
            let candidate = Path.Combine(dir.FullName, "src", "Core.FSharp", "Assets", name)
            if File.Exists candidate then candidate else up dir.Parent
    up (DirectoryInfo AppContext.BaseDirectory)

/// Byte-pair ranks keyed by their bytes as Latin-1 text (one char per byte).
let ranks (file: string) : Dictionary<string, int> =
    let table = Dictionary<string, int>()
    for line in File.ReadAllLines(assetPath file) do
        match line.Split ' ' with
        | [| token; rank |] when token.TrimEnd('=').Length > 0 ->
            table[Encoding.Latin1.GetString(Convert.FromBase64String token)] <- int rank
        | _ -> ()
    table

let private gpt2Pattern =
    Regex(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")

/// A deliberately naive tiktoken: .NET Regex pre-tokenisation (exact for BMP text) and the quadratic
/// "merge the leftmost lowest-ranked adjacent pair until none is left" loop.
let referenceEncode (ranks: Dictionary<string, int>) (text: string) : int list =
    [ for m in gpt2Pattern.Matches text do
          let mutable parts = Encoding.UTF8.GetBytes m.Value |> Array.map (fun b -> string (char b)) |> List.ofArray
          let mutable merging = true
          while merging do
              let candidates =
                  parts
                  |> List.pairwise
                  |> List.mapi (fun i (a, b) ->
                      match ranks.TryGetValue(a + b) with
                      | true, r -> Some(r, i)
                      | _ -> None)
                  |> List.choose id
              if candidates.IsEmpty then merging <- false
              else
                  let _, at = List.min candidates
                  parts <- (parts |> List.take at) @ [ parts[at] + parts[at + 1] ] @ (parts |> List.skip (at + 2))
          yield! parts |> List.map (fun p -> ranks[p]) ]

/// The CMU dictionary's first pronunciation of every word, read from the gzipped asset.
let cmu: Lazy<Dictionary<string, string[]>> =
    lazy
        (let table = Dictionary<string, string[]>()
         use file = File.OpenRead(assetPath "cmudict.dict.gz")
         use gz = new GZipStream(file, CompressionMode.Decompress)
         use reader = new StreamReader(gz)
         let mutable line = reader.ReadLine()
         while not (isNull line) do
             let fields = line.Split('#').[0].Split(' ', StringSplitOptions.RemoveEmptyEntries)
             if fields.Length > 1 && not (fields[0].Contains '(') && not (table.ContainsKey fields[0]) then
                 table[fields[0]] <- fields[1..]
             line <- reader.ReadLine()
         table)

/// Sum of first-pronunciation lengths of space-separated dictionary words.
let dictionaryCount (words: string) : int =
    words.Split(' ', StringSplitOptions.RemoveEmptyEntries) |> Array.sumBy (fun w -> cmu.Value[w].Length)
