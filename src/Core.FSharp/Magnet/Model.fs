namespace MagnetWhisper.Core.Magnet

// MagnetWhisper (SPEC §6.1, §6.5, §6.7, §6.8): a Whisper checkpoint converted to RoPE attention with 1-D masks and
// boundary predictors in the encoder; the loss adds the predictors' boundary losses to the token-mean cross-entropy;
// generation runs through the compressed encoder (ISpeechModel, so greedy/beam/timestamps decoders work unchanged).

open System
open System.Collections.Generic
open System.IO
open TorchSharp
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Decoding

/// What a training or evaluation forward pass needs.
type ForwardInput =
    { /// Log-mel features (B, n_mels, 2·max_source_positions).
      Mel: Tensor
      /// Frame validity (B, 2·max_source_positions) or None.
      FrameMask: Tensor option
      /// Labels (B, T) int64, −100 = ignored.
      Labels: Tensor
      /// Decoder inputs (B, T); None = labels shifted right with the decoder start token (HF `shift_tokens_right`).
      DecoderInputs: Tensor option
      /// Real decoder tokens (B, T) (false = padding); None = all real (the original passes none).
      TokenMask: Tensor option
      /// Target boundary counts (rows, B), one row per count-trained predictor (DECISIONS #3).
      TargetMatrix: Tensor option
      /// Sampled (training, seeded) or thresholded (evaluation) boundaries.
      Mode: PredictorMode
      /// RL mode of the predictors (DECISIONS #4).
      Rl: bool
      /// Schedule of each predictor by encoder layer (`EncoderInput.Schedules`); no entry = the predictor's own.
      Schedules: Map<int, Schedule>
      /// Recorded actions to replay by encoder layer (`EncoderInput.Replay`).
      Replay: Map<int, Tensor> }

    /// Supervised training with sampled boundaries (seeded generator) and targets (rows, B).
    static member Training(mel: Tensor, frameMask: Tensor option, labels: Tensor, targets: Tensor option, generator: torch.Generator) =
        { Mel = mel; FrameMask = frameMask; Labels = labels; DecoderInputs = None; TokenMask = None; TargetMatrix = targets
          Mode = Sample generator; Rl = false; Schedules = Map.empty; Replay = Map.empty }

    /// Evaluation: thresholded boundaries (deterministic), boundary loss 0.
    static member Evaluation(mel: Tensor, frameMask: Tensor option, labels: Tensor) =
        { Mel = mel; FrameMask = frameMask; Labels = labels; DecoderInputs = None; TokenMask = None; TargetMatrix = None
          Mode = PredictorMode.Threshold; Rl = false; Schedules = Map.empty; Replay = Map.empty }

    /// The encoder part of the input.
    member i.EncoderInput: EncoderInput =
        { Mel = i.Mel; FrameMask = i.FrameMask; TargetMatrix = i.TargetMatrix; Mode = i.Mode; Rl = i.Rl; Schedules = i.Schedules
          Replay = i.Replay }

/// The result of a forward pass with labels (SPEC §6.7 with DECISIONS #4). Dispose it to free its tensors.
type ForwardResult =
    { /// () token-mean cross-entropy + Σ boundary losses.
      Loss: Tensor
      /// (B, T, V) next-token logits.
      Logits: Tensor
      /// The encoder output with its boundary statistics.
      Encoder: EncoderOutput
      /// () token-mean cross-entropy over the non-ignored labels (float32).
      CrossEntropy: Tensor
      /// () Σ over predictor layers of the mean boundary losses.
      BoundaryLoss: Tensor
      /// (B) each utterance's cross-entropy, averaged over its real tokens (or over all T positions with
      /// `CrossEntropyPerUtterance.MeanOverAllPositions`).
      CrossEntropyPerUtterance: Tensor
      /// (B) per-utterance loss for RL: CrossEntropyPerUtterance + the utterance's own boundary losses.
      LossPerUtterance: Tensor }

    /// Every tensor of the record.
    member r.Tensors: Tensor list =
        [ r.Loss; r.Logits; r.CrossEntropy; r.CrossEntropyPerUtterance; r.LossPerUtterance ] @ r.Encoder.Tensors

    interface IDisposable with
        member r.Dispose() =
            for t in r.Tensors do
                t.Dispose()

/// Encoder + decoder, registered as `model` (HF `WhisperModel` layout).
type MagnetEncoderDecoder(config: WhisperConfig, options: MagnetOptions) as this =
    inherit torch.nn.Module("MagnetWhisperModel")
    let encoder = new MagnetEncoder(config, options)
    let decoder = new MagnetDecoder(config, options.RopeTheta)

    do
        this.register_module("encoder", encoder)
        this.register_module("decoder", decoder)

    /// Components are registered explicitly.
    override _.RegisterComponents() = ()

    /// The encoder.
    member _.Encoder = encoder
    /// The decoder.
    member _.Decoder = decoder

/// MagnetWhisper for speech recognition. Parameter names are the Hugging Face Whisper keys (`model.encoder.*`,
/// `model.decoder.*`, `proj_out.weight` only when untied) plus `model.encoder.boundary_predictors.{layer}.*` and
/// `model.encoder.additional_convs.{i}.*`, as in the original's state dict. Public methods run in their own dispose
/// scope: only their results reach the caller's scope. Forward passes keep no state (DECISIONS #8).
type MagnetWhisperModel private (config: WhisperConfig, generation: GenerationConfig option, options: MagnetOptions) as this =
    inherit torch.nn.Module<Tensor, Tensor, Tensor>("MagnetWhisper")
    let config = WhisperConfig.validate config
    let options = MagnetOptions.validate config options
    let model = new MagnetEncoderDecoder(config, options)
    let proj_out =
        if config.TieWordEmbeddings then None
        else Some(torch.nn.Linear(int64 config.DModel, int64 config.VocabSize, hasBias = false))

    do
        this.register_module("model", model)
        proj_out |> Option.iter (fun p -> this.register_module("proj_out", p))

    static let isPredictorOrExtra (name: string) =
        name.Contains ".boundary_predictors." || name.Contains ".additional_convs."

    /// Runs f in inference mode: evaluation mode (no dropout, BatchNorm running statistics) and no gradients; the
    /// training flag is restored afterwards.
    let inference (f: unit -> 'T) : 'T =
        let wasTraining = this.training
        if wasTraining then this.eval()
        try
            use _ = torch.no_grad()
            f ()
        finally
            if wasTraining then this.train()

    /// Components are registered explicitly.
    override _.RegisterComponents() = ()

    /// A randomly initialised model (float32, CPU): Whisper's parameters as Hugging Face's `_init_weights`, the
    /// predictors and extra convolutions with their own initialisation.
    new(config: WhisperConfig, options: MagnetOptions) as m =
        new MagnetWhisperModel(config, None, options)
        then m.InitialiseWhisperWeights()

    /// A randomly initialised model that carries a generation config.
    new(config: WhisperConfig, generation: GenerationConfig option, options: MagnetOptions, initialise: bool) as m =
        new MagnetWhisperModel(config, generation, options)
        then if initialise then m.InitialiseWhisperWeights()

    /// The Whisper configuration.
    member _.Config = config
    /// generation_config.json of the source checkpoint, when it had one.
    member _.GenerationConfig = generation
    /// The predictors, extra convolutions and compatibility options.
    member _.Options = options
    /// `model` (encoder + decoder).
    member _.Model = model
    /// The encoder.
    member _.Encoder = model.Encoder
    /// The decoder.
    member _.Decoder = model.Decoder
    /// The parameters' device.
    member _.Device = model.Decoder.TokenEmbedding.device
    /// The parameters' dtype.
    member _.DType = model.Decoder.TokenEmbedding.dtype

    /// Re-draws Whisper's parameters as Hugging Face's `_init_weights` (normal(0, init_std) weights, zero biases,
    /// unit LayerNorms, sinusoidal encoder positions); predictors and extra convolutions are left alone.
    member this.InitialiseWhisperWeights() =
        WhisperInit.huggingFace config (this.named_parameters()) (isPredictorOrExtra >> not)

    /// Every tensor of the state (parameters, then buffers such as BP3's BatchNorm statistics) by name.
    member this.State: (string * Tensor) list =
        let seen = HashSet<string>()
        [ for struct (n, p) in this.named_parameters() do
              if seen.Add n then n, (p :> Tensor)
          for struct (n, b) in this.named_buffers() do
              if seen.Add n then n, b ]

    /// Sets requires_grad false on every parameter outside the boundary predictors (SPEC §6.10, GRPO's
    /// `freeze_non_boundary`) and returns the names of the parameters left trainable.
    member this.FreezeAllButPredictors() : string list =
        [ for struct (n, p) in this.named_parameters() do
              if n.Contains ".boundary_predictors." then
                  p.requires_grad <- true
                  n
              else p.requires_grad <- false ]

    /// Decoder hidden states (B, T, D) → logits (B, T, V).
    member _.Logits(hidden: Tensor) : Tensor =
        match proj_out with
        | Some p -> p.forward hidden
        | None -> torch.nn.functional.linear (hidden, model.Decoder.TokenEmbedding)

    /// Runs the encoder (SPEC §6.3) and returns its output with the boundary statistics.
    member _.Encode(input: EncoderInput) : EncoderOutput =
        use scope = torch.NewDisposeScope()
        let out = model.Encoder.forward input
        keep scope out.Tensors
        out

    /// Inference encoder pass: thresholded boundaries, evaluation mode, no gradients.
    member this.Encode(mel: Tensor, frameMask: Tensor option) : EncoderOutput =
        inference (fun () -> this.Encode(EncoderInput.Inference(mel, frameMask)))

    /// A decoder cache holding the cross K/V of encoder output (B, S, D) and its mask (B, S).
    member _.StartCache(encoderHidden: Tensor, encoderMask: Tensor option) : DecoderCache =
        use scope = torch.NewDisposeScope()
        let c = model.Decoder.StartCache(encoderHidden, encoderMask)
        keep scope c.Tensors
        c

    /// One decoding step: new tokens (B, T), the encoder output (B, S, D) and mask (B, S) (used only when cache is
    /// None), the cache, a mask of real tokens (B, T) → logits (B, T, V) and the extended cache.
    member this.Decode(tokens: Tensor, encoderHidden: Tensor, encoderMask: Tensor option, cache: DecoderCache option, tokenMask: Tensor option) : DecodeResult =
        use scope = torch.NewDisposeScope()
        let device = this.Device
        let cache =
            match cache with
            | Some c -> c
            | None ->
                if isNull encoderHidden then nullArg "encoderHidden"
                model.Decoder.StartCache(encoderHidden.``to``(device), encoderMask |> Option.map (fun m -> m.``to``(device)))
        let out = model.Decoder.call(tokens.``to``(device), cache, tokenMask |> Option.map (fun m -> m.``to``(device)))
        let logits = this.Logits out.Hidden
        keep scope (logits :: out.Cache.Tensors)
        { Logits = logits; Cache = out.Cache }

    /// HF `shift_tokens_right`: decoder_start_token_id, then labels (B, T) shifted right, −100 → pad_token_id.
    member _.DecoderInputs(labels: Tensor) : Tensor =
        requireRank "labels" 2 labels
        scoped (fun () ->
            let b = labels.shape.[0]
            let start = torch.full([| b; 1L |], (int64 config.DecoderStartTokenId).ToScalar(), dtype = torch.int64, device = labels.device)
            let shifted = torch.cat([| start; labels.to_type(torch.int64).narrow(1, 0L, labels.shape.[1] - 1L) |], 1L)
            shifted.masked_fill(shifted.eq(torch.tensor(-100L, device = labels.device)), (int64 config.PadTokenId).ToScalar()))

    /// Forward pass with labels (SPEC §6.7): encoder (with predictors), decoder with causal RoPE self-attention and
    /// cross-attention masked by the shortened encoder mask, logits; loss = token-mean CE (−100 ignored) + Σ
    /// boundary losses, and the per-utterance variant for RL.
    member this.Forward(input: ForwardInput) : ForwardResult =
        let labels = input.Labels
        requireRank "labels" 2 labels
        if labels.shape.[1] > int64 config.MaxTargetPositions then
            invalidArg "labels" $"labels have {labels.shape.[1]} positions but the decoder takes at most {config.MaxTargetPositions} (max_target_positions)"
        use scope = torch.NewDisposeScope()
        let labels = labels.``to``(this.Device).to_type(torch.int64)
        let counted = labels.ne(torch.tensor(-100L, device = labels.device))
        if not (counted.any().item<bool>()) then invalidArg "labels" "every label is -100: nothing to average"
        let tokens =
            match input.DecoderInputs with
            | Some t ->
                if t.shape <> labels.shape then
                    invalidArg "input" $"DecoderInputs have shape {showShape t.shape} but labels have shape {showShape labels.shape}"
                t.``to``(this.Device)
            | None -> this.DecoderInputs labels
        let enc = model.Encoder.forward input.EncoderInput
        let crossMask = if input.FrameMask.IsNone && enc.Layers.IsEmpty then None else Some enc.Mask
        let out = model.Decoder.call(tokens, model.Decoder.StartCache(enc.Hidden, crossMask), input.TokenMask |> Option.map (fun m -> m.``to``(this.Device)))
        let logits = this.Logits out.Hidden
        let b, t, v = logits.shape.[0], logits.shape.[1], logits.shape.[2]
        let perToken =
            torch.nn.functional.cross_entropy(
                logits.reshape(-1L, v).to_type torch.float32,
                labels.reshape(-1L),
                ignore_index = -100L,
                reduction = torch.nn.Reduction.None).reshape(b, t)
        let countedF = counted.to_type torch.float32
        let ce = perToken.sum() / countedF.sum()
        let rowSums = perToken.sum(1L)
        let cePerUtterance =
            match options.Compatibility.CrossEntropyPerUtterance with
            | MeanOverRealTokens -> rowSums / countedF.sum(1L).clamp_min((1.0).ToScalar())
            | MeanOverAllPositions -> rowSums / float t
        let result =
            { Loss = ce + enc.BoundaryLoss
              Logits = logits
              Encoder = enc
              CrossEntropy = ce
              BoundaryLoss = enc.BoundaryLoss
              CrossEntropyPerUtterance = cePerUtterance
              LossPerUtterance = cePerUtterance + enc.BoundaryLossPerUtterance }
        keep scope result.Tensors
        result

    /// mel (B, n_mels, 2·S), decoder tokens (B, T) → logits (B, T, V) with thresholded boundaries, no frame mask.
    override this.forward(mel: Tensor, tokens: Tensor) : Tensor =
        use scope = torch.NewDisposeScope()
        let enc = model.Encoder.forward (EncoderInput.Inference(mel, None))
        let crossMask = if enc.Layers.IsEmpty then None else Some enc.Mask
        let out = model.Decoder.call(tokens, model.Decoder.StartCache(enc.Hidden, crossMask), None)
        let logits = this.Logits out.Hidden
        keep scope [ logits ]
        logits

    /// Copies named tensors into the state (converting dtype; device of the parameters). source names where they
    /// come from in errors. Shape mismatches always fail, naming each tensor with both shapes; with Strict, missing
    /// and unexpected tensors fail by name. `proj_out.weight` is ignored when the embeddings are tied.
    member this.LoadTensors(source: string, tensors: IReadOnlyDictionary<string, TensorSource>, loadOptions: LoadOptions) : LoadReport =
        let available = [ for n in tensors.Keys |> Seq.sort -> n, (n, tensors.[n]) ]
        StateLoad.copy $"{source} does not match the MagnetWhisper model" source "tensors" config.TieWordEmbeddings this.State available loadOptions

    /// Copies the tensors of a checkpoint folder into the state (see LoadTensors).
    member this.LoadState(weights: CheckpointWeights, loadOptions: LoadOptions) : LoadReport =
        this.LoadTensors($"checkpoint {weights.Source}", TensorSource.OfCheckpoint weights, loadOptions)

    /// Converts a Whisper model (SPEC §6.1): the same Whisper weights (copied, on the Whisper model's device and
    /// dtype), RoPE in every attention, no absolute positions, fresh predictors and extra convolutions as the options
    /// say. Raises ArgumentException when the options do not fit the configuration.
    static member FromWhisper(whisper: WhisperModel, options: MagnetOptions) : MagnetWhisperModel =
        if isNull (box whisper) then nullArg "whisper"
        let m = new MagnetWhisperModel(whisper.Config, whisper.GenerationConfig, options, false)
        try
            m.``to``(whisper.Device, whisper.DType) |> ignore
            let mine = Dictionary<string, Tensor>()
            for n, p in m.State do mine.[n] <- p
            use _ = torch.no_grad()
            for struct (n, p) in whisper.named_parameters() do
                match mine.TryGetValue n with
                | true, target -> target.copy_(p) |> ignore
                | _ -> invalidOp $"the Whisper parameter '{n}' has no counterpart in MagnetWhisper"
            if whisper.training then m.train() else m.eval()
            m
        with _ ->
            m.Dispose()
            reraise ()

    /// Deterministic inference (thresholded boundaries, evaluation mode, no gradients): the speech-model contract of
    /// the decoding strategies.
    interface ISpeechModel with
        member _.Config = config
        member _.Generation = generation
        member this.Device = this.Device

        member this.Encode(mel: Tensor, frameMask: Tensor option) : EncodedAudio =
            inference (fun () ->
                use scope = torch.NewDisposeScope()
                let device = this.Device
                let enc = model.Encoder.forward (EncoderInput.Inference(mel.``to``(device), frameMask |> Option.map (fun m -> m.``to``(device))))
                let mask = if frameMask.IsNone && enc.Layers.IsEmpty then None else Some enc.Mask
                keep scope (enc.Hidden :: Option.toList mask)
                { Hidden = enc.Hidden; Mask = mask })

        member this.Decode(tokens: Tensor, audio: EncodedAudio, cache: DecoderCache option, tokenMask: Tensor option) : DecodeResult =
            inference (fun () -> this.Decode(tokens, audio.Hidden, audio.Mask, cache, tokenMask))
