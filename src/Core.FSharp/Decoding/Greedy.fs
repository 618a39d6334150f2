namespace MagnetWhisper.Core.Decoding

// A minimal greedy generator over the speech-model contract (SPEC §6.8, evaluate_model.py's `manual_generate`):
// prompt tokens, begin-suppress tokens at the first step, suppress tokens at every step, argmax until every row
// has emitted end-of-text. For tests, `magnet inspect` and conversion sanity checks; the full decoders (beam search,
// timestamps, fallback, long form) live in Decoding/.

open System
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Text

/// Greedy decoding of 30 s windows.
[<RequireQualifiedAccess>]
module Greedy =
    /// The prompt of SPEC §6.8: multilingual vocabularies `<|startoftranscript|><|en|><|transcribe|><|notimestamps|>`;
    /// otherwise (English-only, whose `forced_decoder_ids` the original sets to None, or a test vocabulary) the
    /// decoder start token alone.
    let prompt (config: WhisperConfig) : int[] =
        match config.VocabSize with
        | 51865
        | 51866 ->
            let s = (Tokenizer.ofVocabSize config.VocabSize).Specials
            [| s.StartOfTranscript; s.FirstLanguage; s.Transcribe; s.NoTimestamps |]
        | _ -> [| config.DecoderStartTokenId |]

    let private suppression (model: ISpeechModel) =
        let c = model.Config
        match model.Generation with
        | Some g ->
            let first = if g.BeginSuppressTokens.Length > 0 then g.BeginSuppressTokens else c.BeginSuppressTokens
            let every = if g.SuppressTokens.Length > 0 then g.SuppressTokens else c.SuppressTokens
            let eos = if g.EosTokenIds.Length > 0 then g.EosTokenIds else [| c.EosTokenId |]
            first, every, eos
        | None -> c.BeginSuppressTokens, c.SuppressTokens, [| c.EosTokenId |]

    /// Greedy tokens of each row of mel (B, n_mels, 3000) with frame mask (B, 3000), after the prompt, up to (not
    /// including) the first end-of-text, at most maxNewTokens each (and within max_target_positions).
    let generate (model: ISpeechModel) (mel: Tensor) (frameMask: Tensor option) (prompt: int[]) (maxNewTokens: int) : int[][] =
        if prompt.Length = 0 then invalidArg "prompt" "the prompt needs at least the decoder start token"
        let config = model.Config
        let first, every, eos = suppression model
        let vocab = int64 config.VocabSize
        let b = int mel.shape.[0]
        let device = model.Device
        use _ = torch.no_grad()
        use _scope = torch.NewDisposeScope()
        let suppressMask (ids: int[]) =
            let m = Array.zeroCreate<bool> (int vocab)
            for i in ids do
                if i >= 0 && int64 i < vocab then m.[i] <- true
            torch.tensor(m, device = device)
        let everyMask = suppressMask every
        let firstMask = suppressMask (Array.append first every)
        let audio = model.Encode(mel, frameMask)
        let tokens = torch.tensor(Array.init (b * prompt.Length) (fun i -> int64 prompt.[i % prompt.Length]), ReadOnlySpan<int64>([| int64 b; int64 prompt.Length |]), device = device)
        let outputs = Array.init b (fun _ -> ResizeArray<int>())
        let finished = Array.zeroCreate<bool> b
        let isEos (t: int) = Array.contains t eos
        let pick (logits: Tensor) (mask: Tensor) =
            let last = logits.select(1L, logits.shape.[1] - 1L).to_type(torch.float32)
            let masked = last.masked_fill(mask.unsqueeze(0), Double.NegativeInfinity.ToScalar())
            masked.argmax(1L).cpu().data<int64>().ToArray() |> Array.map int
        let mutable step = model.Decode(tokens, audio, None, None)
        let mutable next = pick step.Logits firstMask
        let limit = min maxNewTokens (config.MaxTargetPositions - prompt.Length)
        let mutable produced = 0
        let record (ids: int[]) =
            for r in 0 .. b - 1 do
                if not finished.[r] then
                    if isEos ids.[r] then finished.[r] <- true else outputs.[r].Add ids.[r]
            produced <- produced + 1
        record next
        while produced < limit && not (Array.forall id finished) do
            use stepScope = torch.NewDisposeScope()
            let input = torch.tensor(next |> Array.mapi (fun r t -> if finished.[r] then int64 eos.[0] else int64 t), ReadOnlySpan<int64>([| int64 b; 1L |]), device = device)
            let result = model.Decode(input, audio, Some step.Cache, None)
            next <- pick result.Logits everyMask
            MagnetWhisper.Core.Tensors.keep stepScope result.Cache.Tensors
            DecoderCache.disposeSuperseded step.Cache result.Cache
            step <- result
            record next
        outputs |> Array.map (fun o -> o.ToArray())

    /// Transcribes the first 30 s of an audio file greedily with the model's tokenizer (a released vocabulary is
    /// needed), returning the text without special tokens.
    let transcribeFile (model: ISpeechModel) (path: string) (maxNewTokens: int) : string =
        let config = model.Config
        let tokenizer = Tokenizer.ofVocabSize config.VocabSize
        let audio = Audio.Audio.load path
        use features = Audio.LogMel.extract config.NumMelBins model.Device [ audio ]
        let ids = generate model features.Mel (Some features.Mask) (prompt config) maxNewTokens
        (tokenizer.Decode(ids.[0], SkipAll)).Trim()
