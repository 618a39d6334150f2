namespace MagnetWhisper.Core.Transformer

// What stock Whisper and MagnetWhisper share above their encoders: the `model` container of encoder and decoder, the
// output projection, labels → decoder inputs, one decode step, the cross-entropy, and inference mode.

open System.Collections.Generic
open TorchSharp
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Decoding

/// Encoder + decoder, registered as `model` (the Hugging Face `WhisperModel` layout: `model.encoder.*`,
/// `model.decoder.*`).
type EncoderDecoder<'Encoder when 'Encoder :> torch.nn.Module>(name: string, encoder: 'Encoder, decoder: TextDecoder) as this =
    inherit torch.nn.Module(name)

    do
        this.register_module("encoder", encoder)
        this.register_module("decoder", decoder)

    /// Components are registered explicitly.
    override _.RegisterComponents() = ()

    /// The audio encoder.
    member _.Encoder = encoder
    /// The text decoder.
    member _.Decoder = decoder

/// The output projection `proj_out`: absent (tied to the token embedding) when `tie_word_embeddings`.
type OutputProjection(config: WhisperConfig) =
    let proj_out =
        if config.TieWordEmbeddings then None
        else Some(torch.nn.Linear(int64 config.DModel, int64 config.VocabSize, hasBias = false))

    /// Registers `proj_out` on the top-level model when untied.
    member _.RegisterOn(owner: torch.nn.Module) = proj_out |> Option.iter (fun p -> owner.register_module("proj_out", p))

    /// Decoder hidden states (B, T, D) → logits (B, T, V): hidden · embed_tokensᵀ when tied, else proj_out.
    member _.Logits(decoder: TextDecoder, hidden: Tensor) : Tensor =
        match proj_out with
        | Some p -> p.forward hidden
        | None -> torch.nn.functional.linear (hidden, decoder.TokenEmbedding)

/// Evaluation mode for the length of one call.
module Inference =
    /// Runs f with every submodule of m in evaluation mode (no dropout, BatchNorm running statistics) and without
    /// gradients, then gives every submodule back its own previous training flag (a frozen part stays in evaluation
    /// mode, a trained part returns to training).
    let run (m: torch.nn.Module) (f: unit -> 'T) : 'T =
        // named_modules lists a module before its children, so restoring in that order lets each child's own flag
        // win over its parent's recursive train(flag).
        let flags = [ yield m, m.training; for struct (_, sub) in m.named_modules() -> sub, sub.training ]
        let anyTraining = flags |> List.exists snd
        if anyTraining then m.eval()
        try
            use _ = torch.no_grad()
            f ()
        finally
            if anyTraining then
                for sub, training in flags do
                    sub.train training

/// Shared steps of the encoder–decoder models.
module SpeechTransformer =
    /// Hugging Face's `shift_tokens_right`: decoder inputs from labels (B, T): decoder_start_token_id, then the labels
    /// shifted right by one, with −100 replaced by pad_token_id.
    let decoderInputs (config: WhisperConfig) (labels: Tensor) : Tensor =
        requireRank "labels" 2 labels
        scoped (fun () ->
            let b = labels.shape.[0]
            let start = torch.full([| b; 1L |], (int64 config.DecoderStartTokenId).ToScalar(), dtype = torch.int64, device = labels.device)
            let shifted = torch.cat([| start; labels.to_type(torch.int64).narrow(1, 0L, labels.shape.[1] - 1L) |], 1L)
            shifted.masked_fill(shifted.eq(torch.tensor(-100L, device = labels.device)), (int64 config.PadTokenId).ToScalar()))

    /// Per-token cross-entropy (B, T) of logits (B, T, V) against labels (B, T) int64, computed in float32; −100
    /// labels give 0.
    let tokenCrossEntropy (logits: Tensor) (labels: Tensor) : Tensor =
        let b, t, v = logits.shape.[0], logits.shape.[1], logits.shape.[2]
        torch.nn.functional
            .cross_entropy(logits.reshape(-1L, v).to_type torch.float32, labels.reshape(-1L).to_type torch.int64, ignore_index = -100L, reduction = torch.nn.Reduction.None)
            .reshape(b, t)

    /// One decoding step on the decoder's device: new tokens (B, T), the encoder output (B, S, D) and its mask (B, S)
    /// (used only when cache is None: the cross K/V are then computed from them), the cache of earlier steps and a mask
    /// of real tokens (B, T) → logits (B, T, V) and the extended cache. Runs in its own dispose scope.
    let decode (decoder: TextDecoder) (head: OutputProjection) (tokens: Tensor) (encoderHidden: Tensor) (encoderMask: Tensor option) (cache: DecoderCache option) (tokenMask: Tensor option) : DecodeResult =
        use scope = torch.NewDisposeScope()
        let device = decoder.TokenEmbedding.device
        let onDevice (t: Tensor) = if Devices.same t.device device then t else t.``to`` device
        let cache =
            match cache with
            | Some c -> c
            | None ->
                if isNull encoderHidden then nullArg "encoderHidden"
                decoder.StartCache(onDevice encoderHidden, encoderMask |> Option.map onDevice)
        let out = decoder.call(onDevice tokens, cache, tokenMask |> Option.map onDevice)
        let logits = head.Logits(decoder, out.Hidden)
        keep scope (logits :: out.Cache.Tensors)
        { Logits = logits; Cache = out.Cache }

    /// Every parameter then every buffer of a module by name (each name once).
    let state (m: torch.nn.Module) : (string * Tensor) list =
        let seen = HashSet<string>()
        [ for struct (n, p) in m.named_parameters() do
              if seen.Add n then n, (p :> Tensor)
          for struct (n, b) in m.named_buffers() do
              if seen.Add n then n, b ]

/// The top level both models share (HF `WhisperForConditionalGeneration` layout): `model` = encoder + decoder and the
/// output projection, with the members that do not depend on the encoder. Stock Whisper and MagnetWhisper derive
/// from it and add their encoders' entry points. Public methods run in their own dispose scope.
[<AbstractClass>]
type SpeechTransformerModel<'Encoder when 'Encoder :> torch.nn.Module>(name: string, config: WhisperConfig, generation: GenerationConfig option, encoder: 'Encoder, positions: PositionEncoding) as this =
    inherit torch.nn.Module<Tensor, Tensor, Tensor>(name)
    let model = new EncoderDecoder<'Encoder>(name + "Model", encoder, new TextDecoder(config, positions))
    let head = OutputProjection(config)

    do
        this.register_module("model", model)
        head.RegisterOn this

    /// Components are registered explicitly under the Hugging Face names.
    override _.RegisterComponents() = ()

    /// The architecture.
    member _.Config = config
    /// generation_config.json of the checkpoint, when it had one.
    member _.GenerationConfig = generation
    /// `model` (encoder + decoder).
    member _.Model = model
    /// The audio encoder.
    member _.Encoder: 'Encoder = model.Encoder
    /// The text decoder.
    member _.Decoder = model.Decoder
    /// The parameters' device.
    member _.Device = model.Decoder.TokenEmbedding.device
    /// The parameters' dtype.
    member _.DType = model.Decoder.TokenEmbedding.dtype
    /// Every tensor of the state (parameters, then buffers) by name.
    member this.State: (string * Tensor) list = SpeechTransformer.state this

    /// Decoder hidden states (B, T, D) → logits (B, T, V): hidden · embed_tokensᵀ when tied, else proj_out.
    member _.Logits(hidden: Tensor) : Tensor = head.Logits(model.Decoder, hidden)

    /// A decoder cache holding the cross K/V of encoder output (B, S, D) and its mask (B, S), no tokens.
    member _.StartCache(encoderHidden: Tensor, encoderMask: Tensor option) : DecoderCache = model.Decoder.StartCache(encoderHidden, encoderMask)

    /// One decoding step: new tokens (B, T), the encoder output (B, S, D) and its mask (B, S) (used only when cache
    /// is None: the cross K/V are then computed from them), the cache of earlier steps, and a mask of real tokens
    /// (B, T) (false = padding) → logits (B, T, V) and the extended cache. Logits at padded tokens are meaningless.
    member _.Decode(tokens: Tensor, encoderHidden: Tensor, encoderMask: Tensor option, cache: DecoderCache option, tokenMask: Tensor option) : DecodeResult =
        SpeechTransformer.decode model.Decoder head tokens encoderHidden encoderMask cache tokenMask

    /// One decoding step without masks.
    member this.Decode(tokens: Tensor, encoderHidden: Tensor, cache: DecoderCache option) : DecodeResult =
        this.Decode(tokens, encoderHidden, None, cache, None)

    /// Hugging Face's `shift_tokens_right`: decoder_start_token_id, then labels (B, T) shifted right, −100 →
    /// pad_token_id.
    member _.DecoderInputs(labels: Tensor) : Tensor = SpeechTransformer.decoderInputs config labels

    /// Runs f in evaluation mode without gradients; every submodule gets its own training flag back afterwards.
    member this.InInference(f: unit -> 'T) : 'T = Inference.run this f
