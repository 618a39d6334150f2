namespace MagnetWhisper.Core.Decoding

open System
open TorchSharp
open MagnetWhisper.Core.Text

/// A rule that masks next-token logits (N, V) float32 in place (masked entries become −∞), given the tokens each
/// row has sampled so far (after the initial tokens). Filters run in order; each sees the previous ones' masks.
type ILogitFilter =
    abstract Apply: logits: Tensor * sampled: int[][] -> unit

/// openai/whisper's logit filters.
[<RequireQualifiedAccess>]
module Filters =
    let private negInf = Double.NegativeInfinity

    /// Masks ids in rows (in place).
    let private fillIds (logits: Tensor) (rows: int[]) (ids: int[]) =
        if ids.Length > 0 && rows.Length > 0 then
            use index = torch.tensor(Array.map int64 ids, device = logits.device)
            if int64 rows.Length = logits.shape.[0] then logits.index_fill_(1L, index, negInf.ToScalar()) |> ignore
            else
                for k in rows do
                    use row = logits.[int64 k]
                    row.index_fill_(0L, index, negInf.ToScalar()) |> ignore

    /// Masks [start, stop) of row k (in place); nothing when empty.
    let private fillRange (logits: Tensor) (k: int) (start: int) (stop: int) =
        let stop = min stop (int logits.shape.[1])
        if stop > start then
            use row = logits.[int64 k]
            use part = row.narrow(0L, int64 start, int64 (stop - start))
            part.fill_(negInf.ToScalar()) |> ignore

    /// Forbids these ids at the first sampled position only (Hugging Face's `begin_suppress_tokens`).
    let suppressAtStart (ids: int[]) : ILogitFilter =
        { new ILogitFilter with
            member _.Apply(logits, sampled) =
                let first = sampled |> Array.indexed |> Array.choose (fun (k, s) -> if s.Length = 0 then Some k else None)
                fillIds logits first ids }

    /// whisper's SuppressBlank: at the first sampled position, forbid the blank (" ") and end-of-text.
    let suppressBlank (tokenizer: Tokenizer) : ILogitFilter =
        suppressAtStart (Array.append (tokenizer.Encode " ") [| tokenizer.Specials.EndOfText |])

    /// whisper's SuppressTokens: forbid these ids at every step.
    let suppressTokens (ids: int[]) : ILogitFilter =
        let ids = Array.distinct ids |> Array.sort
        { new ILogitFilter with
            member _.Apply(logits, sampled) = fillIds logits (Array.init sampled.Length id) ids }

    /// The ids SuppressTokens receives for `suppress_tokens` (whisper's `_get_suppress_tokens`): -1 expands to the
    /// non-speech symbols plus the checkpoint's suppress_tokens (extra, e.g. generation_config's); the task, start,
    /// previous-context, LM and no-speech tokens are always added. Sorted, distinct.
    let suppressedIds (tokenizer: Tokenizer) (extra: int[]) (suppress: int list) : int[] =
        let s = tokenizer.Specials
        let chosen =
            if List.contains -1 suppress then
                (suppress |> List.filter (fun t -> t >= 0)) @ List.ofArray (Tokenizer.nonSpeechTokens tokenizer) @ List.ofArray extra
            else suppress
        chosen @ [ s.Transcribe; s.Translate; s.StartOfTranscript; s.StartOfPrev; s.StartOfLm; s.NoSpeech ]
        |> List.filter (fun t -> t >= 0 && t < tokenizer.VocabSize)
        |> List.distinct
        |> List.sort
        |> Array.ofList

    /// Which ranges of one row ApplyTimestampRules forbids, from its sampled tokens (host-side part of the rule):
    /// `<|notimestamps|>`; after a timestamp pair, every timestamp; after a lone timestamp, every text token
    /// (ids below end-of-text); timestamps below the last one (below or equal after a pair or text, so each
    /// segment has a nonzero length); at the first position every text token and timestamps later than
    /// maxInitialIndex. Ranges are [start, stop) over the vocabulary.
    let timestampBans (specials: SpecialTokens) (maxInitialIndex: int option) (vocab: int) (sampled: int[]) : (int * int) list =
        let tb = specials.TimestampBegin
        let isTs t = t >= tb
        let n = sampled.Length
        let lastWasTs = n >= 1 && isTs sampled.[n - 1]
        let penultimateWasTs = n < 2 || isTs sampled.[n - 2]
        [ yield specials.NoTimestamps, specials.NoTimestamps + 1
          if lastWasTs then
              if penultimateWasTs then yield tb, vocab else yield 0, specials.EndOfText
          match Array.tryFindBack isTs sampled with
          | Some lastTs ->
              let upTo = if lastWasTs && not penultimateWasTs then lastTs else lastTs + 1
              yield tb, upTo
          | None -> ()
          if n = 0 then
              yield 0, tb
              match maxInitialIndex with
              | Some m -> yield tb + m + 1, vocab
              | None -> () ]

    /// whisper's ApplyTimestampRules (see timestampBans), then: where the total probability of the timestamps
    /// exceeds that of the most probable text token, forbid every text token.
    let applyTimestampRules (specials: SpecialTokens) (maxInitialIndex: int option) : ILogitFilter =
        { new ILogitFilter with
            member _.Apply(logits, sampled) =
                let vocab = int logits.shape.[1]
                sampled |> Array.iteri (fun k s ->
                    for start, stop in timestampBans specials maxInitialIndex vocab s do
                        fillRange logits k start stop)
                use _ = torch.NewDisposeScope()
                let tb = int64 specials.TimestampBegin
                let logprobs = torch.nn.functional.log_softmax (logits.to_type torch.float32, -1L)
                let timestampMass = logprobs.narrow(1L, tb, int64 vocab - tb).logsumexp(1L)
                let bestText = logprobs.narrow(1L, 0L, tb).amax([| 1L |])
                let forceTimestamp = timestampMass.gt(bestText).unsqueeze(1)
                logits.narrow(1L, 0L, tb).masked_fill_(forceTimestamp, negInf.ToScalar()) |> ignore }

    /// Applies filters in order (in place).
    let applyAll (filters: ILogitFilter list) (logits: Tensor) (sampled: int[][]) =
        for f in filters do
            f.Apply(logits, sampled)
