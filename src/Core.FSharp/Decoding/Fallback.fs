namespace MagnetWhisper.Core.Decoding

open System.Threading
open MagnetWhisper.Core.Text

/// Temperature fallback (openai/whisper's `decode_with_fallback`): decode at each temperature in turn while the
/// result is too repetitive or too improbable, unless it is judged silence.
[<RequireQualifiedAccess>]
module Fallback =
    /// The decoding options for temperature t: beam search and patience only at t = 0, best-of only at t > 0.
    let optionsAt (decoding: DecodingOptions) (t: float) : DecodingOptions =
        if t > 0.0 then { decoding with Temperature = t; BeamSize = None; Patience = None }
        else { decoding with Temperature = t; BestOf = None }

    /// Whether a window must be decoded again at the next temperature: compression ratio above its threshold or
    /// average log-probability below its threshold — except when the no-speech probability is above its threshold
    /// and the log-probability failed (silence: kept as it is).
    let needsFallback (options: TranscribeOptions) (r: DecodingResult) : bool =
        let tooRepetitive =
            options.CompressionRatioThreshold |> Option.exists (fun t -> r.CompressionRatio > t)
        let improbable = options.LogProbThreshold |> Option.exists (fun t -> r.AvgLogProb < t)
        let silence = options.NoSpeechThreshold |> Option.exists (fun t -> r.NoSpeechProb > t) && improbable
        (tooRepetitive || improbable) && not silence

    /// Decodes every row at the first temperature, then re-decodes the rows that still need it at each following
    /// temperature; each row ends with its last decoding (as whisper's per-window loop does, row by row).
    let decode
        (model: ISpeechModel)
        (tokenizer: Tokenizer)
        (options: TranscribeOptions)
        (audio: EncodedAudio)
        (rows: WindowRow[])
        (ct: CancellationToken)
        : DecodingResult[] =
        if options.Temperatures.IsEmpty then invalidArg "Temperatures" "at least one temperature is needed"
        let results: DecodingResult[] = Array.zeroCreate rows.Length
        let mutable pending = Array.init rows.Length id
        for t in options.Temperatures do
            if pending.Length > 0 then
                let decoded =
                    use _ = TorchSharp.torch.NewDisposeScope()
                    let sub = if pending.Length = rows.Length then audio else AudioRows.select pending audio
                    Search.decodeWindow model tokenizer (optionsAt options.Decoding t) sub (pending |> Array.map (fun i -> rows.[i])) ct
                pending |> Array.iteri (fun k i -> results.[i] <- decoded.[k])
                pending <- pending |> Array.filter (fun i -> needsFallback options results.[i])
        results
