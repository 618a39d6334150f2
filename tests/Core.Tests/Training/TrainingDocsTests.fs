/// docs/TRAINING.md documents every configuration key (a table row per TrainConfig.keyNames entry, with its default
/// as config.json writes it), docs/GRPO.md every GRPO key (GrpoConfig.keyNames) likewise, and every example
/// configuration under docs/examples reads through TrainConfig.read and resolves to a starting point of the kind its
/// name says.
module MagnetWhisper.Tests.Training.TrainingDocsTests

open System.IO
open System.Text.Json
open System.Text.RegularExpressions
open Expecto
open MagnetWhisper.Core.Training
open MagnetWhisper.Tests

let private doc () = File.ReadAllText(Path.Combine(PythonReference.repoRoot.Value, "docs", "TRAINING.md"))

/// The rows of the key table: "| `key` | default | meaning |" → key, default cell.
let private rows (text: string) =
    [ for m in Regex.Matches(text, @"^\| `([a-z_]+)` \| ([^|]*) \|", RegexOptions.Multiline) -> m.Groups.[1].Value, m.Groups.[2].Value.Trim() ]

[<Tests>]
let tests =
    testList "training.docs" [
        test "every configuration key has a row in docs/TRAINING.md with its default" {
            let documented = rows (doc ())
            let names = documented |> List.map fst
            for key in TrainConfig.keyNames do
                Expect.contains names key $"docs/TRAINING.md documents '{key}'"
            for name in names do
                Expect.contains TrainConfig.keyNames name $"docs/TRAINING.md documents '{name}', which is no key"
            // The default column shows the value config.json gets without the key (model and data have none).
            use defaults = JsonDocument.Parse(TrainConfig.toJson TrainConfig.Default)
            for key, cell in documented do
                let value = defaults.RootElement.GetProperty(key)
                if key <> "model" && key <> "data" then
                    use written = JsonDocument.Parse(cell.Trim('`'))
                    match written.RootElement.ValueKind, value.ValueKind with
                    | JsonValueKind.Number, JsonValueKind.Number ->
                        Expect.equal (written.RootElement.GetDouble()) (value.GetDouble()) $"the default of '{key}'"
                    | _ -> Expect.equal (written.RootElement.GetRawText()) (value.GetRawText()) $"the default of '{key}'"
        }

        test "every GRPO key has a row in docs/GRPO.md's table of GRPO's own keys with its default" {
            let text = File.ReadAllText(Path.Combine(PythonReference.repoRoot.Value, "docs", "GRPO.md"))
            let start = text.IndexOf "GRPO's own keys:"
            Expect.isGreaterThan start 0 "docs/GRPO.md has the table of GRPO's own keys"
            let table = text.Substring(start, text.IndexOf("\n\n", text.IndexOf("| key |", start)) - start)
            let documented = rows table
            Expect.equal (documented |> List.map fst) GrpoConfig.keyNames "a row per GRPO key, in config.json's order"
            use defaults = JsonDocument.Parse(GrpoConfig.toJson GrpoConfig.Default)
            for key, cell in documented do
                let value = defaults.RootElement.GetProperty(key)
                use written = JsonDocument.Parse(cell.Trim('`'))
                match written.RootElement.ValueKind, value.ValueKind with
                | JsonValueKind.Number, JsonValueKind.Number ->
                    Expect.equal (written.RootElement.GetDouble()) (value.GetDouble()) $"the default of '{key}'"
                | _ -> Expect.equal (written.RootElement.GetRawText()) (value.GetRawText()) $"the default of '{key}'"
        }

        test "the example configurations read and resolve" {
            let dir = Path.Combine(PythonReference.repoRoot.Value, "docs", "examples")
            let files = Directory.GetFiles(dir, "*.json") |> Array.sort
            Expect.isGreaterThanOrEqual files.Length 2 "at least the fine-tuning and from-scratch examples"
            for f in files do
                let c = TrainConfig.read f
                Expect.isTrue (c.MaxSteps >= 1) $"{f} reads"
            let scratch = TrainConfig.read (Path.Combine(dir, "from-scratch-tiny.json"))
            match StartingPoint.ofConfig scratch with
            | FreshModel _ -> ()
            | other -> failtest $"from-scratch-tiny.json starts from {other}"
            let finetune = TrainConfig.read (Path.Combine(dir, "predictor-finetune.json"))
            Expect.isNonEmpty finetune.Predictors "the fine-tuning example adds predictors"
            Expect.equal (finetune.BatchSize, finetune.MicroBatches, finetune.LearningRate) (128, 4, 1e-4) "whisper.py's batch of 32 × 4 and learning rate (SPEC §8.1)"
        }
    ]
