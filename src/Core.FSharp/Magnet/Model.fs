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
open MagnetWhisper.Core.Transformer
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
      Replay: Map<int, Tensor>
      /// Weight w of each utterance's own boundary loss in LossPerUtterance = CE_u + w · boundary loss_u, the negated
      /// reward of DECISIONS #4 (1 by default).
      RlBoundaryLossWeight: float }

    /// Supervised training with sampled boundaries (seeded generator) and targets (rows, B).
    static member Training(mel: Tensor, frameMask: Tensor option, labels: Tensor, targets: Tensor option, generator: torch.Generator) =
        { Mel = mel; FrameMask = frameMask; Labels = labels; DecoderInputs = None; TokenMask = None; TargetMatrix = targets
          Mode = Sample generator; Rl = false; Schedules = Map.empty; Replay = Map.empty; RlBoundaryLossWeight = 1.0 }

    /// Evaluation: thresholded boundaries (deterministic), boundary loss 0.
    static member Evaluation(mel: Tensor, frameMask: Tensor option, labels: Tensor) =
        { Mel = mel; FrameMask = frameMask; Labels = labels; DecoderInputs = None; TokenMask = None; TargetMatrix = None
          Mode = PredictorMode.Threshold; Rl = false; Schedules = Map.empty; Replay = Map.empty; RlBoundaryLossWeight = 1.0 }

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
      /// (B) per-utterance loss for RL: CrossEntropyPerUtterance + RlBoundaryLossWeight · the utterance's own boundary
      /// losses.
      LossPerUtterance: Tensor }

    /// Every tensor of the record.
    member r.Tensors: Tensor list =
        [ r.Loss; r.Logits; r.CrossEntropy; r.CrossEntropyPerUtterance; r.LossPerUtterance ] @ r.Encoder.Tensors

    interface IDisposable with
        member r.Dispose() =
            for t in r.Tensors do
                t.Dispose()

/// Named groups of parameters a trainer chooses from (SetTrainable).
type ParameterGroup =
    /// Every boundary predictor (`model.encoder.boundary_predictors.*`).
    | Predictors
    /// The extra convolutions (`model.encoder.additional_convs.*`).
    | ExtraConvolutions
    /// The convolution stem and the encoder layers before the first predictor.
    | EncoderBeforeFirstPredictor
    /// The encoder layers from the first predictor on and the encoder's final LayerNorm (all layers and the LayerNorm
    /// when there is no predictor), and the CTC head on the encoder's output when attached.
    | EncoderAfterFirstPredictor
    /// The text decoder and the output projection.
    | Decoder
    /// Every parameter.
    | AllParameters

/// MagnetWhisper for speech recognition. Parameter names are the Hugging Face Whisper keys (`model.encoder.*`,
/// `model.decoder.*`, `proj_out.weight` only when untied) plus `model.encoder.boundary_predictors.{layer}.*` and
/// `model.encoder.additional_convs.{i}.*`, as in the original's state dict. Public methods run in their own dispose
/// scope: only their results reach the caller's scope. Forward passes keep no state (DECISIONS #8).
type MagnetWhisperModel private (generation: GenerationConfig option, encoder: MagnetEncoder) as this =
    inherit SpeechTransformerModel<MagnetEncoder>("MagnetWhisper", encoder.Config, generation, encoder, Rotary encoder.Options.RopeTheta)
    let config = encoder.Config
    let options = encoder.Options
    let model = this.Model
    // The auxiliary CTC head of from-scratch training (Training/Ctc.fs), when attached.
    let mutable ctcHead: Modules.Linear option = None

    // The encoder layer index of a parameter name under model.encoder.layers, if any.
    static let encoderLayerOf (name: string) =
        let prefix = "model.encoder.layers."
        if name.StartsWith prefix then
            let rest = name.Substring prefix.Length
            Some(int (rest.Substring(0, rest.IndexOf '.')))
        else None

    // The encoder validates the configuration and the options.
    private new(config: WhisperConfig, generation: GenerationConfig option, options: MagnetOptions) =
        new MagnetWhisperModel(generation, new MagnetEncoder(WhisperConfig.validate config, options))

    /// A randomly initialised model (float32, CPU): Whisper's parameters as Hugging Face's `_init_weights`, the
    /// predictors and extra convolutions with their own initialisation.
    new(config: WhisperConfig, options: MagnetOptions) as m =
        new MagnetWhisperModel(config, None, options)
        then m.InitialiseWhisperWeights()

    /// A randomly initialised model that carries a generation config.
    new(config: WhisperConfig, generation: GenerationConfig option, options: MagnetOptions, initialise: bool) as m =
        new MagnetWhisperModel(config, generation, options)
        then if initialise then m.InitialiseWhisperWeights()

    /// The predictors, extra convolutions and compatibility options.
    member _.Options = options

    /// The name prefix of the CTC head's parameters.
    static member CtcHeadPrefix = "ctc_head."

    /// The auxiliary CTC head (final encoder states → character classes), when attached: `ctc_head.{weight,bias}`,
    /// not part of the Hugging Face Whisper keys (docs/DECISIONS.md).
    member _.CtcHead: Modules.Linear option = ctcHead

    /// The classes of the CTC head, when attached.
    member _.CtcHeadClasses: int option = ctcHead |> Option.map (fun h -> int h.weight.shape.[0])

    /// Attaches a freshly initialised CTC head (torch's Linear initialisation, from the global generator) of d_model →
    /// classes on the model's device and dtype; its parameters join the model's state and AllParameters.
    member this.AttachCtcHead(classes: int) =
        if ctcHead.IsSome then invalidOp "the model already has a CTC head"
        if classes < 2 then invalidArg (nameof classes) $"a CTC head needs the blank and at least one class, got {classes}"
        let head = torch.nn.Linear(int64 config.DModel, int64 classes)
        head.``to``(this.Device, this.DType) |> ignore
        this.register_module("ctc_head", head)
        ctcHead <- Some head

    /// Re-draws Whisper's parameters as Hugging Face's `_init_weights` (normal(0, init_std) weights, zero biases,
    /// unit LayerNorms, sinusoidal encoder positions); predictors and extra convolutions are left alone.
    member this.InitialiseWhisperWeights() =
        WhisperInit.huggingFace config (this.named_parameters()) (fun n ->
            not (this.InGroup(Predictors, n) || this.InGroup(ExtraConvolutions, n)))

    /// True when the parameter of that name belongs to the group. The unused absolute position tables
    /// (`embed_positions`, kept for the checkpoint layout) belong to no group.
    member _.InGroup(group: ParameterGroup, name: string) : bool =
        let firstPredictor = options.Predictors |> List.tryHead |> Option.map (fun s -> s.Layer)
        let isEncoder = name.StartsWith "model.encoder."
        let isPredictor = name.Contains ".boundary_predictors."
        let isExtra = name.Contains ".additional_convs."
        if name.EndsWith "embed_positions.weight" then false
        else
            match group with
            | AllParameters -> true
            | Predictors -> isPredictor
            | ExtraConvolutions -> isExtra
            | Decoder -> name.StartsWith "model.decoder." || name.StartsWith "proj_out."
            | EncoderBeforeFirstPredictor ->
                isEncoder && not isPredictor && not isExtra
                && (match encoderLayerOf name, firstPredictor with
                    | Some layer, Some first -> layer < first
                    | Some _, None -> false
                    | None, _ -> name.StartsWith "model.encoder.conv1." || name.StartsWith "model.encoder.conv2.")
            | EncoderAfterFirstPredictor when name.StartsWith MagnetWhisperModel.CtcHeadPrefix -> true
            | EncoderAfterFirstPredictor ->
                isEncoder && not isPredictor && not isExtra
                && (match encoderLayerOf name, firstPredictor with
                    | Some layer, Some first -> layer >= first
                    | Some _, None -> true
                    | None, _ -> name.StartsWith "model.encoder.layer_norm.")

    /// Makes exactly the parameters of the given groups trainable (requires_grad) and freezes every other one;
    /// returns the names of the trainable parameters. E.g. [Predictors; ExtraConvolutions] trains the new parts of a
    /// converted model (fresh extra convolutions must train with the predictors, or they stay random).
    member this.SetTrainable(groups: ParameterGroup seq) : string list =
        let groups = List.ofSeq groups
        [ for struct (n, p) in this.named_parameters() do
              let trainable = groups |> List.exists (fun g -> this.InGroup(g, n))
              p.requires_grad <- trainable
              if trainable then n ]

    /// The parameters that currently require gradients, by name (what an optimizer should update).
    member this.TrainableParameters: (string * Modules.Parameter) list =
        [ for struct (n, p) in this.named_parameters() do
              if p.requires_grad then n, p ]

    /// Runs the encoder (SPEC §6.3) and returns its output with the boundary statistics.
    member _.Encode(input: EncoderInput) : EncoderOutput =
        use scope = torch.NewDisposeScope()
        let out = model.Encoder.forward input
        keep scope out.Tensors
        out

    /// Inference encoder pass: thresholded boundaries, evaluation mode, no gradients.
    member this.Encode(mel: Tensor, frameMask: Tensor option) : EncoderOutput =
        this.InInference(fun () -> this.Encode(EncoderInput.Inference(mel, frameMask)))

    /// True when cutting a batch's features to its longest utterance (EncoderInput.CutToLongest) leaves every valid
    /// output unchanged: the encoder masks padded keys (DECISIONS #2) and every predictor is batch-independent
    /// (DECISIONS #1). The original's options make outputs depend on the amount of padding.
    member _.CutsPadding: bool =
        options.Compatibility.EncoderSelfAttentionMask = QueriesAndKeys
        && options.Predictors |> List.forall (fun s -> s.Predictor.Batching = BatchIndependent)

    /// Features (B, n_mels, F) and frame mask (B, F) cut to the frames the batch's longest utterance needs
    /// (MagnetEncoder.FramesFor), when CutsPadding; unchanged otherwise.
    member this.CutToLongest(mel: Tensor, frameMask: Tensor option) : Tensor * Tensor option =
        match frameMask with
        | Some m when this.CutsPadding ->
            use valid = m.ne((0).ToScalar()).sum(1L).max()
            let frames = int64 (model.Encoder.FramesFor(int (valid.item<int64>())))
            if frames >= mel.shape.[2] then mel, frameMask
            else mel.narrow(2L, 0L, frames), Some(m.narrow(1L, 0L, frames))
        | _ -> mel, frameMask

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
        let t = logits.shape.[1]
        let perToken = SpeechTransformer.tokenCrossEntropy logits labels
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
              LossPerUtterance = cePerUtterance + enc.BoundaryLossPerUtterance * input.RlBoundaryLossWeight }
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

    /// A new model with other options (e.g. predictors added in Identity slots, another inference threshold): the
    /// same configuration, generation configuration and CTC head, every tensor of this model copied into it, on this
    /// model's device and dtype and in its mode. Modules only the new options have are drawn fresh from the global
    /// generator (in slot order). `source` names this model in the error raised when one of its tensors has no
    /// counterpart under the new options.
    member this.WithOptions(newOptions: MagnetOptions, source: string) : MagnetWhisperModel =
        let m = new MagnetWhisperModel(config, generation, newOptions, false)
        try
            this.CtcHeadClasses |> Option.iter m.AttachCtcHead
            m.``to``(this.Device, this.DType) |> ignore
            let mine = dict m.State
            use _ = torch.no_grad()
            for n, t in this.State do
                match mine.TryGetValue n with
                | true, target -> target.copy_(t) |> ignore
                | _ -> invalidOp $"the tensor '{n}' of {source} has no counterpart with the new options"
            if this.training then m.train() else m.eval()
            m
        with _ ->
            m.Dispose()
            reraise ()

    /// Encodes a batch as decoding sees it (ISpeechModel.Encode: inference, thresholded boundaries, cut to the longest
    /// utterance) and lets `read` look at the full encoder output of that same forward (e.g. each predictor's
    /// boundary counts) before its other tensors are freed. The audio lands in the caller's dispose scope.
    member this.EncodeReading(mel: Tensor, frameMask: Tensor option, read: EncoderOutput -> 'T) : EncodedAudio * 'T =
        this.InInference(fun () ->
            use scope = torch.NewDisposeScope()
            let device = this.Device
            // Short audio runs only the frames it needs (the valid outputs are those of the 30 s window).
            let mel, frameMask = this.CutToLongest(mel.``to``(device), frameMask |> Option.map (fun m -> m.``to``(device)))
            let enc = model.Encoder.forward (EncoderInput.Inference(mel, frameMask))
            let seen = read enc
            let mask = if frameMask.IsNone && enc.Layers.IsEmpty then None else Some enc.Mask
            keep scope (enc.Hidden :: Option.toList mask)
            { Hidden = enc.Hidden; Mask = mask }, seen)

    /// Deterministic inference (thresholded boundaries, evaluation mode, no gradients): the speech-model contract of
    /// the decoding strategies.
    interface ISpeechModel with
        member _.Config = config
        member this.Generation = this.GenerationConfig
        member this.Device = this.Device

        member this.Encode(mel: Tensor, frameMask: Tensor option) : EncodedAudio =
            fst (this.EncodeReading(mel, frameMask, ignore))

        member this.Decode(tokens: Tensor, audio: EncodedAudio, cache: DecoderCache option, tokenMask: Tensor option) : DecodeResult =
            this.InInference(fun () -> this.Decode(tokens, audio.Hidden, audio.Mask, cache, tokenMask))
