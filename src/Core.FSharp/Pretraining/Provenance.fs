namespace MagnetWhisper.Core.Pretraining

// PROVENANCE.md beside a pretrained base model: how to make it again (the command line, seed, steps, corpus and the
// full training configuration), what it took (wall time per stage on how many cores) and with which tools, and how
// good it is (the run's own metrics and the exported model's WER and CER per split).

open System
open System.Globalization
open System.IO
open System.Text

/// The exported model's scores on one split (fractions).
type SplitScore =
    { Split: string
      Utterances: int
      Wer: float
      Cer: float }

/// What the training run's metrics.jsonl says (WERs in percent, as logged).
type RunMetrics =
    { /// The lowest dev WER (eval/wer) and its step: the step best/ holds.
      BestDev: (float * int64) option
      /// The last dev WER and its step.
      LastDev: (float * int64) option
      /// test/wer and test/cer of the run's model on its test_data (all test splits together).
      Test: (float * float) option }

/// Everything PROVENANCE.md states.
type Provenance =
    { /// The command that made the model, as typed (and how it was resumed, if it was).
      Commands: string list
      /// When the file was written (UTC).
      Written: DateTime
      Seed: int64
      /// Optimizer updates the run applied, and the configured number.
      Steps: int
      MaxSteps: int
      /// How the corpus was made or where it came from.
      Corpus: string
      /// The machine: logical cores and a description (OS, architecture).
      Cores: int
      Machine: string
      /// Wall time per stage (name, seconds), in order.
      Stages: (string * float) list
      /// How the wall times were measured, when not by the command itself.
      TimingNote: string option
      Tools: ToolVersion list
      /// The folder the model was exported from (the run's best/ or final/).
      Source: string
      /// Stored dtype, parameters, weight bytes and the SHA-256 of model.safetensors.
      DType: string
      Parameters: int64
      Bytes: int64
      Sha256: string
      Metrics: RunMetrics
      /// The exported model's scores, split by split.
      Scores: SplitScore list
      /// The run's resolved configuration (config.json).
      ConfigJson: string }

/// Writing PROVENANCE.md.
[<RequireQualifiedAccess>]
module Provenance =
    /// "PROVENANCE.md"
    [<Literal>]
    let FileName = "PROVENANCE.md"

    let private invariant (x: float) (format: string) = x.ToString(format, CultureInfo.InvariantCulture)

    /// "1:02:03" (hours:minutes:seconds) of seconds.
    let clock (seconds: float) : string =
        let t = TimeSpan.FromSeconds(Math.Round seconds)
        $"{int t.TotalHours}:{t.Minutes:D2}:{t.Seconds:D2}"

    /// The lowest and the last eval/wer, and the last test/wer and test/cer, of metrics lines (step, values).
    let metricsOf (lines: (int64 * (string * float) list) list) : RunMetrics =
        let valuesOf key =
            [ for step, values in lines do
                  match values |> List.tryFind (fun (k, _) -> k = key) with
                  | Some(_, v) when Double.IsFinite v -> step, v
                  | _ -> () ]
        let dev = valuesOf "eval/wer"
        let best = dev |> List.fold (fun acc (s, v) -> match acc with Some(bv, _) when bv <= v -> acc | _ -> Some(v, s)) None
        let test =
            match List.tryLast (valuesOf "test/wer"), List.tryLast (valuesOf "test/cer") with
            | Some(_, w), Some(_, c) -> Some(w, c)
            | _ -> None
        { BestDev = best; LastDev = dev |> List.tryLast |> Option.map (fun (s, v) -> v, s); Test = test }

    /// The Markdown text.
    let render (p: Provenance) : string =
        let b = StringBuilder()
        let line (s: string) = b.Append(s).Append('\n') |> ignore
        let twoPlaces (x: float) = invariant x "F2"
        let whole (x: float) = invariant x "F0"
        let percent (x: float) = twoPlaces (100.0 * x) + " %"
        line "# Base model provenance"
        line ""
        line "A MagnetWhisper folder without predictors (RoPE in every attention), pretrained from scratch by `magnet demo pretrain`"
        line "(docs/PRETRAINING.md), stored without the auxiliary CTC head that served training."
        line ""
        line "## How it was made"
        line ""
        line "```"
        for c in p.Commands do line c
        line "```"
        line ""
        line $"- seed: {p.Seed}"
        line $"- steps: {p.Steps} of {p.MaxSteps}"
        line $"- corpus: {p.Corpus}"
        line $"- exported from: {p.Source}"
        line ("- written: " + p.Written.ToString("yyyy-MM-dd HH:mm 'UTC'", CultureInfo.InvariantCulture))
        line ""
        line "## Time"
        line ""
        line $"On {p.Cores} cores ({p.Machine}):"
        line ""
        line "| stage | wall time | seconds |"
        line "| --- | --- | --- |"
        for name, seconds in p.Stages do
            line $"| {name} | {clock seconds} | {whole seconds} |"
        let total = p.Stages |> List.sumBy snd
        line $"| total | {clock total} | {whole total} |"
        p.TimingNote |> Option.iter (fun n -> line ""; line n)
        line ""
        line "## Tools"
        line ""
        for t in p.Tools do
            line ("- " + t.Name + ": " + defaultArg t.Version "not installed")
        line ""
        line "## Results"
        line ""
        line "The exported model (as stored, loaded in float32; greedy decoding, English normaliser):"
        line ""
        line "| split | utterances | WER | CER |"
        line "| --- | --- | --- | --- |"
        for s in p.Scores do
            line $"| {s.Split} | {s.Utterances} | {percent s.Wer} | {percent s.Cer} |"
        line ""
        line "The training run's metrics (metrics.jsonl, float32 model):"
        line ""
        match p.Metrics.BestDev with
        | Some(w, s) -> line $"- best dev WER (eval/wer): {twoPlaces w} %% at step {s}"
        | None -> line "- best dev WER: no dev evaluation logged"
        p.Metrics.LastDev |> Option.iter (fun (w, s) -> line $"- last dev WER: {twoPlaces w} %% at step {s}")
        match p.Metrics.Test with
        | Some(w, c) -> line $"- test WER (test/wer, every test split together): {twoPlaces w} %%, CER {twoPlaces c} %%"
        | None -> line "- test WER: not logged"
        line ""
        line "## Storage"
        line ""
        line $"- dtype: {p.DType}"
        line $"- parameters: {p.Parameters}"
        line $"- model.safetensors: {p.Bytes} bytes, SHA-256 {p.Sha256}"
        line ""
        line "## Training configuration"
        line ""
        line "```json"
        line (p.ConfigJson.TrimEnd())
        line "```"
        b.ToString()

    /// Writes PROVENANCE.md into a folder atomically.
    let write (dir: string) (p: Provenance) : unit =
        MagnetWhisper.Core.AtomicWrite.text (Path.Combine(dir, FileName)) (render p)
