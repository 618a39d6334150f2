namespace MagnetWhisper.Core.Magnet

// MagnetWhisperDecoder (SPEC §6.6): token embeddings without absolute positions, RoPE in every attention (absolute
// token positions, offset by the cache), cross-attention over the shortened encoder output masked by its mask, an
// explicit key/value cache passed as a value (Whisper's DecoderCache, so decoding strategies work unchanged).

open TorchSharp
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Whisper

/// MagnetWhisper's text decoder. Parameter names: embed_tokens.weight, embed_positions.weight (kept from Whisper,
/// unused), layers.N.*, layer_norm.
type MagnetDecoder(config: WhisperConfig, theta: float) as this =
    inherit torch.nn.Module<Tensor, DecoderCache, Tensor option, DecoderOutput>("MagnetWhisperDecoder")
    let d = int64 config.DModel
    let vocab = int64 config.VocabSize
    let maxPositions = int64 config.MaxTargetPositions
    let embed_tokens =
        if config.PadTokenId >= 0 && config.PadTokenId < config.VocabSize then
            torch.nn.Embedding(vocab, d, padding_idx = int64 config.PadTokenId)
        else torch.nn.Embedding(vocab, d)
    let embed_positions = torch.nn.Embedding(maxPositions, d)
    let layers = torch.nn.ModuleList<MagnetDecoderLayer>([| for _ in 1 .. config.DecoderLayers -> new MagnetDecoderLayer(config, theta) |])
    let layer_norm = torch.nn.LayerNorm(d)

    do
        this.register_module("embed_tokens", embed_tokens)
        this.register_module("embed_positions", embed_positions)
        this.register_module("layers", layers)
        this.register_module("layer_norm", layer_norm)
        // Kept for the checkpoint layout; RoPE replaces the learned positions (SPEC §5.4).
        (embed_positions.get_parameter "weight").requires_grad <- false

    /// Components are registered explicitly under the Hugging Face names.
    override _.RegisterComponents() = ()

    /// The token embedding (V, D), also the output projection when tied. (Read through the registered parameter:
    /// TorchSharp's `Embedding.weight` getter allocates a new handle on every call.)
    member _.TokenEmbedding: Tensor = embed_tokens.get_parameter "weight"

    /// A cache with no tokens: cross keys (rotated at encoder positions 0..S−1) and values of every layer from the
    /// encoder output (B, S, D), empty self K/V. encoderMask (B, S) (bool or 0/1) marks valid encoder positions; a row
    /// without any valid position attends to nothing (its cross-attention output is zero).
    member _.StartCache(encoderHidden: Tensor, encoderMask: Tensor option) : DecoderCache =
        let w = embed_tokens.get_parameter "weight"
        let hidden, mask, b = DecoderSteps.encoderForCache d w encoderHidden encoderMask
        DecoderSteps.emptyCache b w
            [ for layer in layers ->
                  let ck, cv = layer.CrossKeyValue hidden
                  let heads, headDim = layer.SelfHeads
                  ck, cv, heads, headDim ]
            mask

    /// tokens (B, T) int64 (the new tokens only), the cache, and an optional tokenMask (B, T) (false = padding) →
    /// final hidden states (B, T, D) and the extended cache.
    /// RoPE positions: T_past + t without padding; with padding, the number of real tokens before a token in its row,
    /// so a row's real tokens get the positions they would have alone (left or right padding). Self-attention is
    /// causal and ignores padded keys; padded queries give zero attention (the original's query mask).
    override _.forward(tokens: Tensor, cache: DecoderCache, tokenMask: Tensor option) : DecoderOutput =
        let w = embed_tokens.get_parameter "weight"
        let device = w.device
        let tokens, b, t, past = DecoderSteps.stepTokens layers.Count maxPositions vocab device tokens cache
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
                let positions = (before + newMask.to_type(torch.int64).cumsum(1L) - 1L).clamp_min((0L).ToScalar())
                let q, k = queryIndex (), keyIndex ()
                // Causal over stored indices, real keys only; a query always sees itself, so no row is empty.
                let allowed = k.le(q).unsqueeze(0).logical_and(keyValid.unsqueeze(1)).logical_or(k.eq(q).unsqueeze(0))
                Some keyValid, positions, { Allowed = Some(allowed.unsqueeze(1)); Causal = false; QueryValid = Some newMask }
            else
                let positions = torch.arange(past, total, dtype = torch.int64, device = device)
                let attention =
                    if t > 1L && past > 0L then { AttentionMask.None with Allowed = Some(keyIndex().le(queryIndex()).view(1L, 1L, t, total)) }
                    else { AttentionMask.None with Causal = (t > 1L) }
                None, positions, attention
        let cross =
            match cache.EncoderMask with
            | Some m ->
                { Allowed = Some(AttentionMask.keys m)
                  Causal = false
                  QueryValid = Some(AttentionMask.queriesOfKeys tokenMask m t) }
            | None -> { AttentionMask.None with QueryValid = tokenMask }
        let step = { Positions = positions; Self = selfAttention; Cross = cross }
        let mutable x = embed_tokens.forward tokens
        if config.Dropout > 0.0 && this.training then x <- torch.nn.functional.dropout (x, config.Dropout, true)
        let next = Array.zeroCreate layers.Count
        for i in 0 .. layers.Count - 1 do
            let out = layers.[i].call(x, cache.Layers.[i], step)
            x <- out.Hidden
            next.[i] <- out.Cache
        { Hidden = layer_norm.forward x
          Cache = { Layers = next; Length = total; SelfMask = selfMask; EncoderMask = cache.EncoderMask } }
