namespace MagnetWhisper.Core.Transformer

// Whisper's text decoder (HF `WhisperDecoder`), once for both models: token embeddings, absolute learned positions
// (stock Whisper) or rotary positions in every attention (MagnetWhisper, SPEC §6.6), pre-LN blocks with causal
// self-attention and cross-attention over the (possibly shortened) encoder output, final `layer_norm`, and an explicit
// key/value cache passed as a value.

open TorchSharp
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Decoding

/// The decoder's output of one step.
type DecoderOutput =
    { /// Final-LayerNorm hidden states of the new tokens (B, T, D).
      Hidden: Tensor
      /// The cache extended by the new tokens.
      Cache: DecoderCache }

/// Masks given as bool or 0/1 numbers, checked against their expected shape.
module internal Masks =
    let asBool (name: string) (b: int64) (len: int64) (m: Tensor) : Tensor =
        requireRank name 2 m
        if m.shape.[0] <> b || m.shape.[1] <> len then
            invalidArg name $"{name} must have shape ({b}, {len}), but has shape {showShape m.shape}"
        AttentionMask.asBool m

/// The text decoder. Parameter names: embed_tokens.weight, embed_positions.weight (kept but unused and frozen with
/// rotary positions, SPEC §5.4), layers.N.*, layer_norm.
type TextDecoder(config: WhisperConfig, positionEncoding: PositionEncoding) as this =
    inherit torch.nn.Module<Tensor, DecoderCache, Tensor option, DecoderOutput>("TextDecoder")
    let d = int64 config.DModel
    let vocab = int64 config.VocabSize
    let maxPositions = int64 config.MaxTargetPositions
    let embed_tokens =
        // As in Hugging Face, the pad token's embedding row gets no gradient.
        if config.PadTokenId >= 0 && config.PadTokenId < config.VocabSize then
            torch.nn.Embedding(vocab, d, padding_idx = int64 config.PadTokenId)
        else torch.nn.Embedding(vocab, d)
    let embed_positions = torch.nn.Embedding(maxPositions, d)
    let layers = torch.nn.ModuleList<DecoderBlock>([| for _ in 1 .. config.DecoderLayers -> new DecoderBlock(config) |])
    let layer_norm = torch.nn.LayerNorm(d)

    do
        this.register_module("embed_tokens", embed_tokens)
        this.register_module("embed_positions", embed_positions)
        this.register_module("layers", layers)
        this.register_module("layer_norm", layer_norm)
        match positionEncoding with
        | Rotary _ -> (embed_positions.get_parameter "weight").requires_grad <- false
        | Absolute -> ()

    // Embeddings are read through the registered parameter: TorchSharp's `Embedding.weight` getter allocates a new
    // native handle on every call, which outside a dispose scope lives until the finaliser runs.
    let tokenEmbedding () = embed_tokens.get_parameter "weight"

    let rotation (positions: Tensor) =
        match positionEncoding with
        | Rotary theta -> Some(Rotation.At(theta, int64 config.DecoderHeadDim, computeType (tokenEmbedding ()), positions))
        | Absolute -> None

    /// Components are registered explicitly under the Hugging Face names.
    override _.RegisterComponents() = ()

    /// The configuration the decoder was built from.
    member _.Config = config
    /// Absolute or rotary positions.
    member _.PositionEncoding = positionEncoding
    /// The token embedding matrix (V, D), also the output projection when embeddings are tied.
    member _.TokenEmbedding: Tensor = tokenEmbedding ()

    /// A cache with no tokens: cross keys (rotated at encoder positions 0..S−1 with rotary positions) and values of
    /// every layer projected from the encoder output (B, S, D), empty self K/V (B, H, 0, head_dim). encoderMask
    /// (B, S), bool or 0/1, marks valid encoder positions (cross-attention ignores the others); a row without any
    /// valid position attends to nothing (its cross-attention output is zero).
    member _.StartCache(encoderHidden: Tensor, encoderMask: Tensor option) : DecoderCache =
        let w = tokenEmbedding ()
        requireRank "encoderHidden" 3 encoderHidden
        requireDim "encoderHidden" 2 d encoderHidden
        let b, s = encoderHidden.shape.[0], encoderHidden.shape.[1]
        if not (Devices.same encoderHidden.device w.device) then
            invalidArg "encoderHidden" $"encoderHidden is on {encoderHidden.device} but the decoder is on {w.device}"
        let hidden = if encoderHidden.dtype = w.dtype then encoderHidden else encoderHidden.to_type w.dtype
        let mask = encoderMask |> Option.map (Masks.asBool "encoderMask" b s)
        use scope = torch.NewDisposeScope()
        let crossRotation =
            match positionEncoding with
            | Rotary theta -> Some(Rotation.Range(theta, int64 config.DecoderHeadDim, computeType w, w.device, s))
            | Absolute -> None
        let caches =
            [| for layer in layers ->
                   let ck, cv = layer.CrossKeyValue(hidden, crossRotation)
                   let heads, headDim = layer.SelfHeads
                   let empty () = torch.empty([| b; heads; 0L; headDim |], dtype = w.dtype, device = w.device)
                   { SelfKey = empty (); SelfValue = empty (); CrossKey = ck; CrossValue = cv } |]
        let cache = { Layers = caches; Length = 0L; SelfMask = None; EncoderMask = mask }
        keep scope cache.Tensors
        cache

    /// tokens (B, T) int64 (new tokens only), the cache (StartCache for the first step), and an optional tokenMask
    /// (B, T), bool or 0/1, false for padding tokens → final hidden states (B, T, D) and the extended cache.
    /// Positions: without any padding, token t of the step has position T_past + t (Hugging Face's offset by the
    /// cache length); with padding, a token's position is the number of real tokens before it in its row, so each
    /// row's real tokens get the positions they would have alone, whether padding is on the left or the right.
    /// Self-attention is causal and ignores padded keys; padded queries give zero attention (the original's query
    /// mask), so their values never reach a real token.
    override _.forward(tokens: Tensor, cache: DecoderCache, tokenMask: Tensor option) : DecoderOutput =
        let w = tokenEmbedding ()
        let device = w.device
        let tokens, b, t, past = this.CheckStep(tokens, cache)
        let tokenMask = tokenMask |> Option.map (Masks.asBool "tokenMask" b t)
        let total = past + t
        let queryIndex () = torch.arange(past, total, dtype = torch.int64, device = device).unsqueeze(1)
        let keyIndex () = torch.arange(total, dtype = torch.int64, device = device).unsqueeze(0)
        let padded = tokenMask.IsSome || cache.SelfMask.IsSome
        let selfMask, positions, selfAttention =
            if padded then
                let ones n = torch.ones([| b; n |], dtype = torch.ScalarType.Bool, device = device)
                let pastMask = cache.SelfMask |> Option.defaultWith (fun () -> ones past)
                let newMask = tokenMask |> Option.defaultWith (fun () -> ones t)
                let keyValid = torch.cat([| pastMask; newMask |], 1L)
                let before = pastMask.sum(1L, keepdim = true, ``type`` = torch.int64)
                let positions = (before + newMask.to_type(torch.int64).cumsum(1L) - 1L).clamp((0L).ToScalar(), (maxPositions - 1L).ToScalar())
                let q, k = queryIndex (), keyIndex ()
                // Causal over stored indices, real keys only; a query always sees itself, so no row is empty.
                let allowed = k.le(q).unsqueeze(0).logical_and(keyValid.unsqueeze(1)).logical_or(k.eq(q).unsqueeze(0))
                Some keyValid, Some positions, { Allowed = Some(allowed.unsqueeze(1)); Causal = false; QueryValid = Some newMask }
            else
                let attention =
                    if t > 1L && past > 0L then { AttentionMask.None with Allowed = Some(keyIndex().le(queryIndex()).view(1L, 1L, t, total)) }
                    else { AttentionMask.None with Causal = (t > 1L) }
                None, None, attention
        let step =
            { Rotation = rotation (positions |> Option.defaultWith (fun () -> torch.arange(past, total, dtype = torch.int64, device = device)))
              Self = selfAttention
              Cross = AttentionMask.cross tokenMask cache.EncoderMask t }
        let x = embed_tokens.forward tokens
        let x =
            match positionEncoding, positions with
            | Absolute, None -> x + (embed_positions.get_parameter "weight").narrow(0, past, t)
            | Absolute, Some p -> x + embed_positions.forward p
            | Rotary _, _ -> x
        let mutable x = LayerOps.dropout this config.Dropout x
        let next = Array.zeroCreate layers.Count
        for i in 0 .. layers.Count - 1 do
            let out = layers.[i].call(x, cache.Layers.[i], step)
            x <- out.Hidden
            next.[i] <- out.Cache
        { Hidden = layer_norm.forward x
          Cache = { Layers = next; Length = total; SelfMask = selfMask; EncoderMask = cache.EncoderMask } }

    /// A step's tokens (B, T) checked against the cache, the layer count, max_target_positions, the vocabulary and
    /// the device: (tokens as int64, B, T, tokens already in the cache).
    member _.CheckStep(tokens: Tensor, cache: DecoderCache) =
        let device = (tokenEmbedding ()).device
        requireRank "tokens" 2 tokens
        if tokens.is_floating_point() || tokens.dtype = torch.ScalarType.Bool then
            invalidArg "tokens" $"tokens must be integer ids, but have dtype {tokens.dtype}"
        let tokens = if tokens.dtype = torch.int64 then tokens else tokens.to_type torch.int64
        let b, t = tokens.shape.[0], tokens.shape.[1]
        if cache.Layers.Length <> layers.Count then
            invalidArg "cache" $"the cache has {cache.Layers.Length} layers but the decoder has {layers.Count}"
        if b <> cache.BatchSize then
            invalidArg "tokens" $"tokens have batch size {b} but the cache has {cache.BatchSize} (shape {showShape tokens.shape})"
        let past = cache.Length
        if past + t > maxPositions then
            invalidArg "tokens" $"the decoder takes at most {maxPositions} tokens (max_target_positions); the cache holds {past} and {t} more were given"
        if not (Devices.same tokens.device device) then invalidArg "tokens" $"tokens are on {tokens.device} but the decoder is on {device}"
        if t > 0L then
            use lo = tokens.min()
            use hi = tokens.max()
            let lo, hi = lo.item<int64>(), hi.item<int64>()
            if lo < 0L || hi >= vocab then
                invalidArg "tokens" $"token ids must lie in [0, {vocab}) (vocab_size), but range from {lo} to {hi}"
        tokens, b, t, past
