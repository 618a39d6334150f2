namespace MagnetWhisper.Core.Decoding

open System
open System.Collections.Generic
open System.IO
open System.IO.Compression
open System.Text
open System.Threading
open TorchSharp
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Text

/// One audio of a batch decoded in a window: what differs between the rows of a batch.
type WindowRow =
    { /// Previous-context tokens (whisper's prompt, without `<|startofprev|>`); None uses DecodingOptions.Prompt,
      /// Some [||] means no prompt.
      Prompt: int[] option
      /// Language code or name; None uses DecodingOptions.Language, and detects it when that is None too.
      Language: string option
      /// Mixed with DecodingOptions.Seed to seed this row's sampling generator, so a row samples the same
      /// tokens alone or in any batch.
      Seed: int64 }

/// The default row: options' prompt and language, seed 0.
[<RequireQualifiedAccess>]
module WindowRow =
    let defaults = { Prompt = None; Language = None; Seed = 0L }

/// Ranks candidate sequences (openai/whisper's MaximumLikelihoodRanker): sum log-probability divided by the length,
/// or by the Google NMT penalty ((5 + length) / 6)^α.
[<RequireQualifiedAccess>]
module Ranker =
    /// The score of a candidate of `length` tokens (end-of-text excluded).
    let score (lengthPenalty: float option) (sumLogProb: float) (length: int) : float =
        let penalty =
            match lengthPenalty with
            | None -> float length
            | Some alpha -> Math.Pow((5.0 + float length) / 6.0, alpha)
        sumLogProb / penalty

    /// Index of the best candidate (the first on ties) among (length, sumLogProb) pairs.
    let best (lengthPenalty: float option) (candidates: (int * float) list) : int =
        candidates
        |> List.mapi (fun i (length, lp) -> i, score lengthPenalty lp length)
        |> List.fold (fun (bi, bs) (i, s) -> if s > bs || bi < 0 then i, s else bi, bs) (-1, Double.NegativeInfinity)
        |> fst

/// Text statistics used by the fallback.
[<RequireQualifiedAccess>]
module TextStats =
    /// whisper's compression ratio: UTF-8 length of the text / length of its zlib compression (level 6).
    let compressionRatio (text: string) : float =
        let bytes = Encoding.UTF8.GetBytes text
        use output = new MemoryStream()
        (use z = new ZLibStream(output, ZLibCompressionOptions(CompressionLevel = 6), leaveOpen = true)
         z.Write(bytes, 0, bytes.Length))
        float bytes.Length / float output.Length

/// Helpers for decoder caches that decoding needs beyond the Whisper module.
[<RequireQualifiedAccess>]
module CacheOps =
    /// The cache with its self-attention state (self K/V and self mask) reordered along the batch by source
    /// (int64 (N,)), for beam search. Cross K/V and the encoder mask are shared as they are: beams never leave
    /// their audio's group, whose rows hold identical cross K/V.
    let reorderSelf (source: Tensor) (cache: DecoderCache) : DecoderCache =
        { cache with
            Layers =
                cache.Layers
                |> Array.map (fun l -> { l with SelfKey = l.SelfKey.index_select(0L, source); SelfValue = l.SelfValue.index_select(0L, source) })
            SelfMask = cache.SelfMask |> Option.map (fun m -> m.index_select(0L, source)) }

    /// Every tensor of the cache, reordered along the batch by source (int64 (N,)) — the general form.
    let reorder (source: Tensor) (cache: DecoderCache) : DecoderCache =
        { cache with
            Layers =
                cache.Layers
                |> Array.map (fun l ->
                    { SelfKey = l.SelfKey.index_select(0L, source)
                      SelfValue = l.SelfValue.index_select(0L, source)
                      CrossKey = l.CrossKey.index_select(0L, source)
                      CrossValue = l.CrossValue.index_select(0L, source) })
            SelfMask = cache.SelfMask |> Option.map (fun m -> m.index_select(0L, source))
            EncoderMask = cache.EncoderMask |> Option.map (fun m -> m.index_select(0L, source)) }

/// Helpers over EncodedAudio.
[<RequireQualifiedAccess>]
module AudioRows =
    /// Rows of the audio (index int64 on the audio's device); new tensors in the current scope.
    let select (index: int[]) (audio: EncodedAudio) : EncodedAudio =
        use idx = torch.tensor(Array.map int64 index, device = audio.Hidden.device)
        { Hidden = audio.Hidden.index_select(0L, idx); Mask = audio.Mask |> Option.map (fun m -> m.index_select(0L, idx)) }

    /// Each row repeated `times` times in place (row i → rows i·times … i·times + times − 1).
    let repeatRows (times: int) (audio: EncodedAudio) : EncodedAudio =
        if times = 1 then audio
        else
            { Hidden = audio.Hidden.repeat_interleave(int64 times, 0L)
              Mask = audio.Mask |> Option.map (fun m -> m.repeat_interleave(int64 times, 0L)) }

/// Decoding of 30-second windows: language detection, greedy/sampling and beam search with whisper's logit
/// filters, and ranking (openai/whisper's DecodingTask). Rows are independent: a row decodes to the same tokens
/// alone or in a batch (per-row finished flags, left padding masked out, per-row sampling generators).
[<RequireQualifiedAccess>]
module Search =
    let private negInf = Double.NegativeInfinity

    let private hostFloats (t: Tensor) : float32[] =
        use c = t.detach().to_type(torch.float32).cpu().contiguous()
        c.data<float32>().ToArray()

    let private hostLongs (t: Tensor) : int64[] =
        use c = t.detach().to_type(torch.int64).cpu().contiguous()
        c.data<int64>().ToArray()

    /// Python's `xs[-n:]`.
    let private lastN (n: int) (xs: int[]) : int[] =
        if n = 0 then xs
        elif n > 0 then (if n >= xs.Length then xs else xs.[xs.Length - n ..])
        else (if -n >= xs.Length then [||] else xs.[-n ..])

    let private encodeText (tokenizer: Tokenizer) (t: TextOrTokens) : int[] =
        match t with
        | PlainText text -> tokenizer.Encode(" " + text.Trim())
        | TokenIds ids -> ids

    /// Whether the model's vocabulary has language tokens.
    let isMultilingual (tokenizer: Tokenizer) = tokenizer.Kind.UsesLanguageAndTask

    /// The tokenizer of a model (chosen from its vocabulary size).
    let tokenizerOf (model: ISpeechModel) : Tokenizer = Tokenizer.ofVocabSize model.Config.VocabSize

    /// openai/whisper's `detect_language`: one decoder step from `<|startoftranscript|>`, every non-language token
    /// masked, then argmax and softmax → per row the language code and the probability of each language.
    /// Raises InvalidOperationException for English-only vocabularies.
    let detectLanguage (model: ISpeechModel) (tokenizer: Tokenizer) (audio: EncodedAudio) : (string * Map<string, float>)[] =
        if not (isMultilingual tokenizer) then
            invalidOp "This model doesn't have language tokens so it can't perform lang id"
        use _ = torch.inference_mode()
        use _ = torch.NewDisposeScope()
        let b = audio.Hidden.shape.[0]
        let s = tokenizer.Specials
        let tokens = torch.full([| b; 1L |], (int64 s.StartOfTranscript).ToScalar(), dtype = torch.int64, device = model.Device)
        let result = model.Decode(tokens, audio, None, None)
        let logits = result.Logits.select(1L, 0L).to_type(torch.float32)
        let v = logits.shape.[1]
        let keep = torch.zeros([| v |], dtype = torch.ScalarType.Bool, device = logits.device)
        let languageIds = torch.tensor(s.LanguageTokens |> List.map int64 |> Array.ofList, device = logits.device)
        keep.index_fill_(0L, languageIds, true.ToScalar()) |> ignore
        let masked = logits.masked_fill(keep.logical_not().unsqueeze(0), negInf.ToScalar())
        let probs = hostFloats (masked.softmax(-1L).index_select(1L, languageIds))
        let codes = tokenizer.Languages |> List.map _.Code |> Array.ofList
        let n = codes.Length
        [| for row in 0 .. int b - 1 ->
               let p = probs.[row * n .. row * n + n - 1]
               // the argmax of the masked logits: the first maximal probability
               let best = p |> Array.indexed |> Array.fold (fun (bi, bp) (i, x) -> if x > bp then i, x else bi, bp) (0, p.[0]) |> fst
               codes.[best], Map [ for i in 0 .. n - 1 -> codes.[i], float p.[i] ] |]

    /// The logit filters of the options (whisper's order: suppress blank, suppress tokens, timestamp rules).
    let filters (model: ISpeechModel) (tokenizer: Tokenizer) (options: DecodingOptions) : ILogitFilter list =
        let config = model.Config
        let extra =
            match model.Generation with
            | Some g when g.SuppressTokens.Length > 0 -> g.SuppressTokens
            | _ -> config.SuppressTokens
        [ if options.SuppressBlank then Filters.suppressBlank tokenizer
          if not options.SuppressTokens.IsEmpty then
              Filters.suppressTokens (Filters.suppressedIds tokenizer extra options.SuppressTokens)
          if not options.WithoutTimestamps then
              let precision = float MagnetWhisper.Core.Audio.LogMel.ChunkSeconds / float config.MaxSourcePositions
              let maxInitial =
                  match options.MaxInitialTimestamp with
                  | Some t when t <> 0.0 -> Some(int (Math.Round(t / precision, MidpointRounding.ToEven)))
                  | _ -> None
              Filters.applyTimestampRules tokenizer.Specials maxInitial ]

    /// A candidate of one audio: its sampled tokens (end-of-text excluded) and sum log-probability.
    type private Candidate = { Sampled: int[]; SumLogProb: float32 }

    /// State of the rows of one decoding group.
    type private Rows =
        { /// Sampled tokens per row (N), in order.
          Sampled: int list[] // reversed
          SumLogProbs: float32[] }

    let private seedOf (baseSeed: int64) (rowSeed: int64) : uint64 =
        // splitmix64 of the two seeds: distinct rows get unrelated streams
        let mutable z = uint64 baseSeed * 0x9E3779B97F4A7C15UL + uint64 rowSeed
        z <- (z ^^^ (z >>> 30)) * 0xBF58476D1CE4E5B9UL
        z <- (z ^^^ (z >>> 27)) * 0x94D049BB133111EBUL
        z ^^^ (z >>> 31)

    /// The special tokens the decoding loop itself needs (the logit filters hold the rest).
    type private LoopTokens =
        { /// A row ends at any of these; finished rows and left padding are fed the first.
          Ends: int[]
          /// `<|nospeech|>`, whose probability after the start-of-transcript token is reported; None = the
          /// vocabulary has none (the probability is NaN).
          NoSpeech: int option }

    /// Decodes rows whose initial tokens fit together (see decodeWindow); returns per audio the candidates and the
    /// no-speech probability.
    let private decodeGroup
        (model: ISpeechModel)
        (loop: LoopTokens)
        (options: DecodingOptions)
        (filters: ILogitFilter list)
        (audio: EncodedAudio)
        (initial: int[][])
        (sotIndex: int[])
        (seeds: uint64[])
        (steps: int)
        (ct: CancellationToken)
        : Candidate list[] * float[] =
        use _ = torch.NewDisposeScope()
        let eot = loop.Ends.[0]
        let isEnd (t: int) = Array.contains t loop.Ends
        let device = model.Device
        let nAudio = initial.Length
        let beam = options.BeamSize
        let group = match beam with Some b -> b | None -> options.BestOf |> Option.defaultValue 1
        let n = nAudio * group
        let longest = initial |> Array.map Array.length |> Array.max
        let padded = initial |> Array.exists (fun t -> t.Length <> longest)
        let firstTokens =
            [| for i in 0 .. nAudio - 1 do
                   for _ in 1 .. group do
                       let t = initial.[i]
                       yield! Array.append (Array.create (longest - t.Length) (int64 eot)) (Array.map int64 t) |]
        let firstMask =
            if not padded then None
            else
                Some(
                    [| for i in 0 .. nAudio - 1 do
                           for _ in 1 .. group do
                               let t = initial.[i]
                               yield! Array.append (Array.create (longest - t.Length) false) (Array.create t.Length true) |])
        let audio = AudioRows.repeatRows group audio
        let generators =
            if options.Temperature > 0.0 && beam.IsNone then seeds |> Array.map (fun s -> new torch.Generator(s, device))
            else [||]
        try
            let mutable rows = { Sampled = Array.create n []; SumLogProbs = Array.zeroCreate n }
            let finished = Array.init nAudio (fun _ -> ResizeArray<int list * float32>())
            let maxCandidates =
                match beam with
                | Some b -> int (Math.Round(float b * (options.Patience |> Option.defaultValue 1.0), MidpointRounding.ToEven))
                | None -> 0
            let noSpeech = Array.create nAudio nan
            let mutable cache: DecoderCache option = None
            let mutable next: int64[] = firstTokens
            let mutable step = 0
            let mutable completed = false
            while not completed && step < steps do
                ct.ThrowIfCancellationRequested()
                use stepScope = torch.NewDisposeScope()
                let width = if step = 0 then int64 longest else 1L
                let tokens = torch.tensor(next, ReadOnlySpan<int64>([| int64 n; width |]), device = device)
                let mask =
                    if step = 0 then firstMask |> Option.map (fun m -> torch.tensor(m, ReadOnlySpan<int64>([| int64 n; width |]), device = device))
                    else None
                let result = model.Decode(tokens, audio, cache, mask)
                match loop.NoSpeech with
                | Some noSpeechId when step = 0 ->
                    for i in 0 .. nAudio - 1 do
                        let position = int64 (longest - initial.[i].Length + sotIndex.[i])
                        use atSot = result.Logits.[int64 (i * group), position].to_type(torch.float32)
                        use probs = atSot.softmax(-1L)
                        noSpeech.[i] <- float (probs.[int64 noSpeechId].item<float32>())
                | _ -> ()
                let logits = result.Logits.select(1L, -1L).to_type(torch.float32).clone()
                let sampledArrays = rows.Sampled |> Array.map (fun s -> List.rev s |> Array.ofList)
                Filters.applyAll filters logits sampledArrays
                let logprobs = torch.nn.functional.log_softmax (logits, -1L)
                let lastToken k =
                    match rows.Sampled.[k] with
                    | t :: _ -> t
                    | [] -> -1
                let newCache, newRows, newNext =
                    match beam with
                    | None ->
                        let chosen =
                            if options.Temperature = 0.0 then hostLongs (logits.argmax(-1L))
                            else
                                let probs = (logits / options.Temperature).softmax(-1L)
                                [| for i in 0 .. nAudio - 1 do
                                       use part = probs.narrow(0L, int64 (i * group), int64 group)
                                       use drawn = torch.multinomial(part, 1L, true, generators.[i])
                                       yield! hostLongs drawn |]
                        use chosenTensor = torch.tensor(chosen, device = device)
                        let current = hostFloats (logprobs.gather(1L, chosenTensor.unsqueeze(1)).squeeze(1))
                        let sums = Array.copy rows.SumLogProbs
                        let sampled = Array.copy rows.Sampled
                        let nextTokens = Array.zeroCreate n
                        for k in 0 .. n - 1 do
                            let done' = isEnd (lastToken k)
                            if not done' then sums.[k] <- sums.[k] + current.[k]
                            let token = if done' then eot else int chosen.[k]
                            sampled.[k] <- token :: sampled.[k]
                            nextTokens.[k] <- int64 token
                        completed <- sampled |> Array.forall (fun s -> isEnd (List.head s))
                        result.Cache, { Sampled = sampled; SumLogProbs = sums }, nextTokens
                    | Some beamSize ->
                        let struct (topValues, topIndices) = logprobs.topk(beamSize + 1, -1, true, true)
                        let values = hostFloats topValues
                        let indices = hostLongs topIndices
                        let k1 = beamSize + 1
                        let sampled = Array.zeroCreate n
                        let sums = Array.zeroCreate n
                        let source = Array.zeroCreate n
                        let mutable filled = 0
                        for i in 0 .. nAudio - 1 do
                            let scores = Dictionary<int list, float32 * int>(HashIdentity.Structural)
                            let order = ResizeArray<int list>()
                            for j in 0 .. beamSize - 1 do
                                let idx = i * beamSize + j
                                for c in 0 .. k1 - 1 do
                                    let sequence = int indices.[idx * k1 + c] :: rows.Sampled.[idx]
                                    if not (scores.ContainsKey sequence) then order.Add sequence
                                    scores.[sequence] <- (rows.SumLogProbs.[idx] + values.[idx * k1 + c], idx)
                            let ranked = order |> List.ofSeq |> List.sortByDescending (fun s -> fst scores.[s])
                            let newlyFinished = ResizeArray()
                            let mutable saved = 0
                            let mutable remaining = ranked
                            while saved < beamSize && not remaining.IsEmpty do
                                let sequence = List.head remaining
                                remaining <- List.tail remaining
                                let score, src = scores.[sequence]
                                if isEnd (List.head sequence) then newlyFinished.Add(sequence, score)
                                else
                                    sampled.[filled] <- sequence
                                    sums.[filled] <- score
                                    source.[filled] <- int64 src
                                    filled <- filled + 1
                                    saved <- saved + 1
                            for sequence, score in newlyFinished |> List.ofSeq |> List.sortByDescending snd do
                                if finished.[i].Count < maxCandidates then finished.[i].Add((sequence, score))
                        completed <- finished |> Array.forall (fun f -> f.Count >= maxCandidates)
                        use sourceTensor = torch.tensor(source, device = device)
                        let reordered = CacheOps.reorderSelf sourceTensor result.Cache
                        let nextTokens = sampled |> Array.map (fun s -> int64 (List.head s))
                        reordered, { Sampled = sampled; SumLogProbs = sums }, nextTokens
                MagnetWhisper.Core.Tensors.keep stepScope newCache.Tensors
                cache |> Option.iter (fun old -> DecoderCache.disposeSuperseded old newCache)
                cache <- Some newCache
                rows <- newRows
                next <- newNext
                step <- step + 1
            let withoutEot (s: int list) =
                let tokens = List.rev s |> Array.ofList
                match Array.tryFindIndex isEnd tokens with
                | Some e -> tokens.[.. e - 1]
                | None -> tokens
            let candidates =
                Array.init nAudio (fun i ->
                    match beam with
                    | None -> [ for k in i * group .. i * group + group - 1 -> { Sampled = withoutEot rows.Sampled.[k]; SumLogProb = rows.SumLogProbs.[k] } ]
                    | Some beamSize ->
                        let found = ResizeArray(finished.[i])
                        if found.Count < beamSize then
                            let members = [ i * beamSize .. i * beamSize + beamSize - 1 ] |> List.sortByDescending (fun k -> rows.SumLogProbs.[k])
                            let mutable remaining = members
                            while found.Count < beamSize && not remaining.IsEmpty do
                                let k = List.head remaining
                                remaining <- List.tail remaining
                                let sequence = eot :: rows.Sampled.[k]
                                if not (found |> Seq.exists (fun (s, _) -> s = sequence)) then found.Add((sequence, rows.SumLogProbs.[k]))
                        [ for sequence, score in found -> { Sampled = withoutEot sequence; SumLogProb = score } ])
            candidates, noSpeech
        finally
            for g in generators do g.Dispose()

    /// Decodes one window for each audio row of `audio` (openai/whisper's DecodingTask.run): the initial tokens are
    /// [`<|startofprev|>` prompt] + start-of-transcript sequence (language detected when not given) + prefix; then
    /// up to SampleLen tokens (and no further than max_target_positions) by greedy search, sampling (BestOf
    /// samples) or beam search, through the logit filters; candidates ranked by the length penalty.
    /// Runs in inference mode; the caller's dispose scope receives nothing: every tensor is freed before returning.
    let decodeWindow
        (model: ISpeechModel)
        (tokenizer: Tokenizer)
        (options: DecodingOptions)
        (audio: EncodedAudio)
        (rows: WindowRow[])
        (ct: CancellationToken)
        : DecodingResult[] =
        let options = DecodingOptions.validate options
        let nAudio = int audio.Hidden.shape.[0]
        if rows.Length <> nAudio then invalidArg "rows" $"{rows.Length} rows were given for a batch of {nAudio} audios"
        if nAudio = 0 then [||]
        else
        use _ = torch.inference_mode()
        let config = model.Config
        let nCtx = config.MaxTargetPositions
        let sampleLen = options.SampleLen |> Option.defaultValue (nCtx / 2)
        let languages = rows |> Array.map (fun r -> r.Language |> Option.orElse options.Language)
        let detected =
            if isMultilingual tokenizer && languages |> Array.exists Option.isNone then Some(detectLanguage model tokenizer audio)
            else None
        let language i =
            match languages.[i], detected with
            | _ when not (isMultilingual tokenizer) -> "en", None
            | Some l, _ -> (Languages.tryFind l |> Option.map _.Code |> Option.defaultValue l), None
            | None, Some d -> fst d.[i], Some(snd d.[i])
            | None, None -> "en", None
        let resolved = Array.init nAudio language
        let prefix =
            options.Prefix
            |> Option.map (encodeText tokenizer)
            |> Option.map (lastN (nCtx / 2 - sampleLen))
            |> Option.defaultValue [||]
        let initial =
            Array.init nAudio (fun i ->
                let sot = Tokenizer.sotSequence tokenizer (Some(fst resolved.[i])) (Some options.Task) options.WithoutTimestamps
                let prompt =
                    match rows.[i].Prompt with
                    | Some p -> p
                    | None -> options.Prompt |> Option.map (encodeText tokenizer) |> Option.defaultValue [||]
                let head = Array.append sot prefix
                if prompt.Length = 0 then head, 0
                else Array.concat [ [| tokenizer.Specials.StartOfPrev |]; lastN (nCtx / 2 - 1) prompt; head ], 1 + (lastN (nCtx / 2 - 1) prompt).Length)
        let filters = filters model tokenizer options
        // Rows share one padded token matrix only while every row can take all of its steps within
        // max_target_positions: rows needing SampleLen steps go together, longer ones by initial length.
        let limit (length: int) = min sampleLen (nCtx - length + 1)
        let groups =
            initial
            |> Array.indexed
            |> Array.groupBy (fun (_, (tokens, _)) -> let l = tokens.Length in if limit l = sampleLen then -1 else l)
        let results = Array.zeroCreate nAudio
        for _, members in groups do
            let index = members |> Array.map fst
            let tokens = members |> Array.map (fun (_, (t, _)) -> t)
            let sotIndex = members |> Array.map (fun (_, (_, s)) -> s)
            let steps = tokens |> Array.map (fun t -> limit t.Length) |> Array.min
            if steps < 1 then invalidArg "options" $"the initial tokens leave no room to sample (max_target_positions {nCtx})"
            let seeds = index |> Array.map (fun i -> seedOf options.Seed rows.[i].Seed)
            let candidates, noSpeech =
                use _ = torch.NewDisposeScope()
                let sub = if index.Length = nAudio then audio else AudioRows.select index audio
                let loop = { Ends = [| tokenizer.Specials.EndOfText |]; NoSpeech = Some tokenizer.Specials.NoSpeech }
                decodeGroup model loop options filters sub tokens sotIndex seeds steps ct
            index |> Array.iteri (fun g i ->
                let cands = candidates.[g]
                let best = Ranker.best options.LengthPenalty [ for c in cands -> c.Sampled.Length, float c.SumLogProb ]
                let chosen = cands.[best]
                let text = tokenizer.Decode(chosen.Sampled, SkipTimestamps).Trim()
                let lang, probs = resolved.[i]
                results.[i] <-
                    { Language = lang
                      LanguageProbs = probs
                      Tokens = chosen.Sampled
                      Text = text
                      SumLogProb = float chosen.SumLogProb
                      AvgLogProb = float chosen.SumLogProb / float (chosen.Sampled.Length + 1)
                      NoSpeechProb = noSpeech.[g]
                      Temperature = options.Temperature
                      CompressionRatio = TextStats.compressionRatio text })
        results

    /// Encodes log-mel (B, n_mels, 3000) with its optional frame mask and decodes one window per row with default
    /// rows (openai/whisper's `decode`).
    let decodeMel (model: ISpeechModel) (options: DecodingOptions) (mel: Tensor) (frameMask: Tensor option) : DecodingResult[] =
        use _ = torch.NewDisposeScope()
        use _ = torch.inference_mode()
        let tokenizer = tokenizerOf model
        let audio = model.Encode(mel, frameMask)
        let rows = Array.create (int mel.shape.[0]) WindowRow.defaults
        decodeWindow model tokenizer options audio rows CancellationToken.None

    /// The prompt of SPEC §6.8 (Hugging Face's `generate` as the original calls it): multilingual vocabularies
    /// `<|startoftranscript|><|en|><|transcribe|><|notimestamps|>`; otherwise (English-only, whose
    /// `forced_decoder_ids` the original sets to None, or a test vocabulary) the decoder start token alone.
    let checkpointPrompt (config: WhisperConfig) : int[] =
        if config.VocabSize = Multilingual.VocabSize || config.VocabSize = MultilingualV3.VocabSize then
            let s = (Tokenizer.ofVocabSize config.VocabSize).Specials
            [| s.StartOfTranscript; s.FirstLanguage; s.Transcribe; s.NoTimestamps |]
        else [| config.DecoderStartTokenId |]

    /// The checkpoint's own suppression lists and end tokens, the generation config's before config.json's: ids
    /// forbidden at the first step, ids forbidden at every step, end-of-text ids.
    let private checkpointTokens (model: ISpeechModel) : int[] * int[] * int[] =
        let c = model.Config
        let orConfig (fromGeneration: int[]) (fromConfig: int[]) = if fromGeneration.Length > 0 then fromGeneration else fromConfig
        match model.Generation with
        | Some g -> orConfig g.BeginSuppressTokens c.BeginSuppressTokens, orConfig g.SuppressTokens c.SuppressTokens, orConfig g.EosTokenIds [| c.EosTokenId |]
        | None -> c.BeginSuppressTokens, c.SuppressTokens, [| c.EosTokenId |]

    /// The decode steps greedy decoding may take after a prompt (at most maxNewTokens, within max_target_positions);
    /// fails on an empty prompt, a non-positive maxNewTokens or a prompt that leaves no room.
    let private greedySteps (model: ISpeechModel) (prompt: int[]) (maxNewTokens: int) : int =
        if prompt.Length = 0 then invalidArg "prompt" "the prompt needs at least the decoder start token"
        if maxNewTokens < 1 then invalidArg "maxNewTokens" $"at least one new token must be allowed, got {maxNewTokens}"
        let steps = min maxNewTokens (model.Config.MaxTargetPositions - prompt.Length)
        if steps < 1 then invalidArg "prompt" $"a prompt of {prompt.Length} tokens leaves no room to sample (max_target_positions {model.Config.MaxTargetPositions})"
        steps

    /// Greedy decoding of an already computed encoder output (B rows of hidden states and their mask, on the model's
    /// device), with the checkpoint's own special tokens, for any vocabulary (no tokenizer needed, e.g. a test
    /// vocabulary): after the prompt, the checkpoint's begin-suppress tokens are forbidden at the first step and its
    /// suppress tokens at every step (SPEC §9.1 `manual_generate`, §6.8), argmax until every row has emitted an
    /// end-of-text token. Returns each row's tokens after the prompt, up to (not including) the end-of-text, at most
    /// maxNewTokens (and within max_target_positions). Rows are independent. The same loop as decodeWindow's greedy
    /// search; runs in inference mode (no gradients reach the audio); the caller's dispose scope receives nothing.
    let greedyTokensFrom (model: ISpeechModel) (audio: EncodedAudio) (prompt: int[]) (maxNewTokens: int) : int[][] =
        let steps = greedySteps model prompt maxNewTokens
        use _ = torch.NewDisposeScope()
        use _ = torch.inference_mode()
        let first, every, ends = checkpointTokens model
        // A checkpoint may list ids beyond a small (test) vocabulary: they cannot be sampled anyway.
        let inVocabulary = Array.filter (fun i -> i >= 0 && i < model.Config.VocabSize)
        let n = int audio.Hidden.shape.[0]
        let filters = [ Filters.suppressAtStart (inVocabulary first); Filters.suppressTokens (inVocabulary every) ]
        let candidates, _ =
            decodeGroup model { Ends = ends; NoSpeech = None } DecodingOptions.defaults filters audio (Array.create n prompt)
                (Array.zeroCreate n) (Array.zeroCreate n) steps CancellationToken.None
        candidates |> Array.map (fun c -> (List.head c).Sampled)

    /// Greedy decoding of log-mel (B, n_mels, 3000) with frame mask (B, 3000): the model's encoder, then
    /// greedyTokensFrom (the checkpoint's own special tokens; each row's tokens after the prompt, without the
    /// end-of-text, at most maxNewTokens). The caller's dispose scope receives nothing.
    let greedyTokens (model: ISpeechModel) (mel: Tensor) (frameMask: Tensor option) (prompt: int[]) (maxNewTokens: int) : int[][] =
        greedySteps model prompt maxNewTokens |> ignore
        use _ = torch.NewDisposeScope()
        use _ = torch.inference_mode()
        let audio = model.Encode(mel, frameMask)
        greedyTokensFrom model audio prompt maxNewTokens

    /// Transcribes the first 30 s of an audio file with greedyTokens and the checkpoint prompt, returning the text
    /// without special tokens (a released Whisper vocabulary is needed to write it).
    let greedyTranscribeFile (model: ISpeechModel) (path: string) (maxNewTokens: int) : string =
        let config = model.Config
        let tokenizer = Tokenizer.ofVocabSize config.VocabSize
        let audio = MagnetWhisper.Core.Audio.Audio.load path
        use features = MagnetWhisper.Core.Audio.LogMel.extract config.NumMelBins model.Device [ audio ]
        let ids = greedyTokens model features.Mel (Some features.Mask) (checkpointPrompt config) maxNewTokens
        (tokenizer.Decode(ids.[0], SkipAll)).Trim()
