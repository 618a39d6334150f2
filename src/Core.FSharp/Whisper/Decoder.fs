namespace MagnetWhisper.Core.Whisper

open System
open TorchSharp
open TorchSharp.Modules
open MagnetWhisper.Core.Tensors

/// The decoder's key/value cache, passed in and returned as a value: each decode step returns a new cache whose
/// self K/V hold the new tokens too; cross K/V (computed once by StartCache) and the encoder mask are shared.
/// Tensors live in the dispose scope that was current when they were created (see DecoderCache.disposeSuperseded).
type DecoderCache =
    { /// One cache per decoder layer.
      Layers: LayerCache[]
      /// Tokens already decoded, T_past (= the self K/V length).
      Length: int64
      /// Bool (B, T_past), true for real tokens; None when no step had padding (every token is real).
      SelfMask: Tensor option
      /// Bool (B, S), true for valid encoder positions; None when every position is valid.
      EncoderMask: Tensor option }

    /// Batch size B.
    member c.BatchSize = c.Layers.[0].CrossKey.shape.[0]

    /// Every tensor the cache refers to.
    member c.Tensors: Tensor list =
        [ for l in c.Layers do
              yield! [ l.SelfKey; l.SelfValue; l.CrossKey; l.CrossValue ]
          yield! Option.toList c.SelfMask
          yield! Option.toList c.EncoderMask ]

/// Helpers for caches.
[<RequireQualifiedAccess>]
module DecoderCache =
    /// Disposes the tensors of an old cache that the newer cache no longer uses (its self K/V and self mask), so a
    /// long decoding loop keeps one generation of the cache alive. Do not use old afterwards.
    let disposeSuperseded (old: DecoderCache) (next: DecoderCache) : unit =
        let keep = Collections.Generic.HashSet<Tensor>(next.Tensors, HashIdentity.Reference)
        for t in old.Tensors do
            if not (keep.Contains t) then t.Dispose()

/// The decoder's output of one step.
type DecoderOutput =
    { /// Final-LayerNorm hidden states of the new tokens (B, T, D).
      Hidden: Tensor
      /// The cache extended by the new tokens.
      Cache: DecoderCache }

/// Masks given as bool or 0/1 numbers.
module internal Masks =
    let asBool (name: string) (b: int64) (len: int64) (m: Tensor) : Tensor =
        requireRank name 2 m
        if m.shape.[0] <> b || m.shape.[1] <> len then
            invalidArg name $"{name} must have shape ({b}, {len}), but has shape {showShape m.shape}"
        if m.dtype = torch.ScalarType.Bool then m else m.ne(torch.tensor(0, device = m.device))

/// Input checks and cache construction shared by every decoder over DecoderCache (Whisper's and MagnetWhisper's).
module DecoderSteps =
    /// Encoder output (B, S, D) checked against the decoder's width d and its embedding weight w (device), cast to
    /// w's dtype, with its mask (B, S) as bool: (hidden, mask, B).
    let encoderForCache (d: int64) (w: Tensor) (encoderHidden: Tensor) (encoderMask: Tensor option) =
        requireRank "encoderHidden" 3 encoderHidden
        requireDim "encoderHidden" 2 d encoderHidden
        let b, s = encoderHidden.shape.[0], encoderHidden.shape.[1]
        if not (Devices.same encoderHidden.device w.device) then
            invalidArg "encoderHidden" $"encoderHidden is on {encoderHidden.device} but the decoder is on {w.device}"
        let hidden = if encoderHidden.dtype = w.dtype then encoderHidden else encoderHidden.to_type w.dtype
        hidden, encoderMask |> Option.map (Masks.asBool "encoderMask" b s), b

    /// A cache with no tokens: each layer's cross K/V with empty self K/V (B, H, 0, head_dim) like w.
    let emptyCache (b: int64) (w: Tensor) (layers: (Tensor * Tensor * int64 * int64) seq) (mask: Tensor option) : DecoderCache =
        let caches =
            [| for ck, cv, heads, headDim in layers ->
                   let empty () = torch.empty([| b; heads; 0L; headDim |], dtype = w.dtype, device = w.device)
                   { SelfKey = empty (); SelfValue = empty (); CrossKey = ck; CrossValue = cv } |]
        { Layers = caches; Length = 0L; SelfMask = None; EncoderMask = mask }

    /// A step's tokens (B, T) checked against the cache, the layer count, max_target_positions, the vocabulary and
    /// the device: (tokens as int64, B, T, tokens already in the cache).
    let stepTokens (layerCount: int) (maxPositions: int64) (vocab: int64) (device: torch.Device) (tokens: Tensor) (cache: DecoderCache) =
        requireRank "tokens" 2 tokens
        if tokens.is_floating_point() || tokens.dtype = torch.ScalarType.Bool then
            invalidArg "tokens" $"tokens must be integer ids, but have dtype {tokens.dtype}"
        let tokens = if tokens.dtype = torch.int64 then tokens else tokens.to_type torch.int64
        let b, t = tokens.shape.[0], tokens.shape.[1]
        if cache.Layers.Length <> layerCount then
            invalidArg "cache" $"the cache has {cache.Layers.Length} layers but the decoder has {layerCount}"
        if b <> cache.BatchSize then
            invalidArg "tokens" $"tokens have batch size {b} but the cache has {cache.BatchSize} (shape {showShape tokens.shape})"
        let past = cache.Length
        if past + t > maxPositions then
            invalidArg "tokens" $"the decoder takes at most {maxPositions} tokens (max_target_positions); the cache holds {past} and {t} more were given"
        if not (Devices.same tokens.device device) then invalidArg "tokens" $"tokens are on {tokens.device} but the decoder is on {device}"
        if t > 0L then
            let lo = tokens.min().item<int64>()
            let hi = tokens.max().item<int64>()
            if lo < 0L || hi >= vocab then
                invalidArg "tokens" $"token ids must lie in [0, {vocab}) (vocab_size), but range from {lo} to {hi}"
        tokens, b, t, past

/// Whisper's text decoder (HF `WhisperDecoder`): token embedding + learned positions (offset by the tokens already
/// in the cache), pre-LN blocks with causal self-attention and cross-attention, final `layer_norm`.
/// Parameter names: embed_tokens.weight, embed_positions.weight, layers.N.*, layer_norm.
type WhisperDecoder(config: WhisperConfig) as this =
    inherit torch.nn.Module<Tensor, DecoderCache, Tensor option, DecoderOutput>("WhisperDecoder")
    let d = int64 config.DModel
    let vocab = int64 config.VocabSize
    let maxPositions = int64 config.MaxTargetPositions
    let embed_tokens =
        // As in Hugging Face, the pad token's embedding row gets no gradient.
        if config.PadTokenId >= 0 && config.PadTokenId < config.VocabSize then
            torch.nn.Embedding(vocab, d, padding_idx = int64 config.PadTokenId)
        else torch.nn.Embedding(vocab, d)
    let embed_positions = torch.nn.Embedding(maxPositions, d)
    let layers = torch.nn.ModuleList<WhisperDecoderLayer>([| for _ in 1 .. config.DecoderLayers -> new WhisperDecoderLayer(config) |])
    let layer_norm = torch.nn.LayerNorm(d)

    do
        this.register_module("embed_tokens", embed_tokens)
        this.register_module("embed_positions", embed_positions)
        this.register_module("layers", layers)
        this.register_module("layer_norm", layer_norm)

    /// The configuration the decoder was built from.
    member _.Config = config

    // Embeddings are read through the registered parameter: TorchSharp's `Embedding.weight` getter allocates a new
    // native handle on every call, which outside a dispose scope lives until the finaliser runs.
    /// The token embedding matrix (V, D), also the output projection when embeddings are tied.
    member _.TokenEmbedding: Tensor = embed_tokens.get_parameter "weight"

    /// A cache with no tokens yet: cross K/V of every layer projected from the encoder output (B, S, D), empty self
    /// K/V (B, H, 0, head_dim). encoderMask (B, S), bool or 0/1, marks valid encoder positions (cross-attention
    /// ignores the others); each row needs at least one valid position.
    member _.StartCache(encoderHidden: Tensor, encoderMask: Tensor option) : DecoderCache =
        let w = embed_tokens.get_parameter "weight"
        let hidden, mask, b = DecoderSteps.encoderForCache d w encoderHidden encoderMask
        mask |> Option.iter (fun m ->
            use anyValid = m.any(1L)
            use allRows = anyValid.all()
            if not (allRows.item<bool>()) then invalidArg "encoderMask" "encoderMask has a row with no valid position")
        DecoderSteps.emptyCache b w
            [ for layer in layers ->
                  let ck, cv = layer.CrossKeyValue hidden
                  let heads, headDim = layer.SelfHeads
                  ck, cv, heads, headDim ]
            mask

    /// tokens (B, T) int64 (new tokens only), the cache (StartCache for the first step), and an optional tokenMask
    /// (B, T), bool or 0/1, false for padding tokens → final hidden states (B, T, D) and the extended cache.
    /// Positions: without any padding, token t of the step has position T_past + t (Hugging Face's offset by the
    /// cache length); with padding, a token's position is the number of real tokens before it in its row, so each
    /// row's real tokens get the positions they would have alone, whether padding is on the left or the right.
    /// Self-attention masks padded keys; padded queries attend at least to themselves and produce finite values
    /// that valid tokens never see.
    override _.forward(tokens: Tensor, cache: DecoderCache, tokenMask: Tensor option) : DecoderOutput =
        let w = embed_tokens.get_parameter "weight"
        let tokens, b, t, past = DecoderSteps.stepTokens layers.Count maxPositions vocab w.device tokens cache
        let tokenMask = tokenMask |> Option.map (Masks.asBool "tokenMask" b t)
        let device = w.device
        let padded = tokenMask.IsSome || cache.SelfMask.IsSome
        let selfMask =
            if padded then
                let pastMask = cache.SelfMask |> Option.defaultWith (fun () -> torch.ones([| b; past |], dtype = torch.ScalarType.Bool, device = device))
                let newMask = tokenMask |> Option.defaultWith (fun () -> torch.ones([| b; t |], dtype = torch.ScalarType.Bool, device = device))
                Some(pastMask, newMask, torch.cat([| pastMask; newMask |], 1L))
            else None
        let positions =
            match selfMask with
            | None -> (embed_positions.get_parameter "weight").narrow(0, past, t)
            | Some(pastMask, newMask, _) ->
                let before = pastMask.sum(1L, keepdim = true, ``type`` = torch.int64)
                let pos = before + newMask.to_type(torch.int64).cumsum(1L) - 1L
                embed_positions.forward (pos.clamp((0L).ToScalar(), (maxPositions - 1L).ToScalar()))
        let x = embed_tokens.forward tokens + positions
        let mutable x = if config.Dropout > 0.0 && this.training then torch.nn.functional.dropout (x, config.Dropout, true) else x
        let total = past + t
        let queryPos () = torch.arange(past, total, dtype = torch.int64, device = device).unsqueeze(1)
        let keyPos () = torch.arange(total, dtype = torch.int64, device = device).unsqueeze(0)
        let masks =
            { SelfMask =
                match selfMask with
                | Some(_, _, keyValid) ->
                    let q, k = queryPos (), keyPos ()
                    let allowed = k.le(q).unsqueeze(0).logical_and(keyValid.unsqueeze(1)).logical_or(k.eq(q).unsqueeze(0))
                    Some(allowed.unsqueeze(1))
                | None when t > 1L && past > 0L -> Some(keyPos().le(queryPos()).view(1L, 1L, t, total))
                | None -> None
              Causal = selfMask.IsNone && past = 0L && t > 1L
              CrossMask = cache.EncoderMask |> Option.map (fun m -> m.view(b, 1L, 1L, m.shape.[1])) }
        let next = Array.zeroCreate layers.Count
        for i in 0 .. layers.Count - 1 do
            let out = layers.[i].call(x, cache.Layers.[i], masks)
            x <- out.Hidden
            next.[i] <- out.Cache
        { Hidden = layer_norm.forward x
          Cache =
            { Layers = next
              Length = total
              SelfMask = selfMask |> Option.map (fun (_, _, m) -> m)
              EncoderMask = cache.EncoderMask } }
