namespace MagnetWhisper.Core.Magnet

// MagnetWhisperEncoder (SPEC §6.3, §6.4): Whisper's convolutions, optional extra fixed-stride convolutions, no
// absolute positions, and before each encoder layer an optional boundary predictor that pools the sequence; the
// frame mask is pooled by the total stride and shortened by each predictor. Statistics are returned as values
// (DECISIONS #8); targets are a (rows × batch) matrix with one row per count-trained predictor (DECISIONS #3).

open System
open TorchSharp
open TorchSharp.Modules
open MagnetWhisper.Core.Tensors
open MagnetWhisper.Core.Segments
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Transformer

/// What one encoder forward needs besides the weights.
type EncoderInput =
    { /// Log-mel features (B, n_mels, 2·max_source_positions).
      Mel: Tensor
      /// Frame validity (B, 2·max_source_positions), nonzero = real audio; None = every frame valid.
      FrameMask: Tensor option
      /// Target boundary counts (rows, B), e.g. phoneme counts; row r goes to the predictors whose TargetSource
      /// selects it. None when no predictor needs targets (inference, RL, BP3).
      TargetMatrix: Tensor option
      /// Sampled boundaries from a seeded generator (training) or thresholded ones (inference, deterministic).
      /// Replaying is per layer (`Replay`); `PredictorMode.Replay` is not accepted here.
      Mode: PredictorMode
      /// RL mode of the predictors (DECISIONS #4).
      Rl: bool
      /// Schedule of each predictor by the encoder layer it runs before (temperature, compression and prior
      /// schedules, target progress, loss weight). A predictor without an entry uses its `Schedule.OfConfig`;
      /// `PredictorSchedules` builds common maps. A key without a predictor is an error.
      Schedules: Map<int, Schedule>
      /// Recorded actions to replay, by the encoder layer of the predictor (`PredictorOutput.Actions` of an earlier
      /// pass on the same batch): those predictors run in `PredictorMode.Replay`, the others in `Mode`. Replaying
      /// every layer of a sampled pass reproduces its pooling and returns the log-probability of its actions under
      /// the current weights (PPO ratios, KL penalty). A key without a predictor is an error.
      Replay: Map<int, Tensor> }

    /// Inference: thresholded boundaries, no targets, every predictor's own schedule.
    static member Inference(mel: Tensor, frameMask: Tensor option) : EncoderInput =
        { Mel = mel; FrameMask = frameMask; TargetMatrix = None; Mode = PredictorMode.Threshold; Rl = false
          Schedules = Map.empty; Replay = Map.empty }

    /// Supervised training: sampled boundaries from generator, targets (rows, B), every predictor's own schedule.
    static member Training(mel: Tensor, frameMask: Tensor option, targets: Tensor option, generator: torch.Generator) : EncoderInput =
        { Mel = mel; FrameMask = frameMask; TargetMatrix = targets; Mode = Sample generator; Rl = false
          Schedules = Map.empty; Replay = Map.empty }

/// Maps of per-predictor schedules for `EncoderInput.Schedules`.
[<RequireQualifiedAccess>]
module PredictorSchedules =
    /// The same schedule for every predictor slot of the options.
    let shared (options: MagnetOptions) (schedule: Schedule) : Map<int, Schedule> =
        options.Predictors |> List.map (fun s -> s.Layer, schedule) |> Map.ofList

    /// Each predictor's `Schedule.OfConfig` with target progress ρ (the former encoder-wide TargetProgress).
    let withTargetProgress (options: MagnetOptions) (progress: float) : Map<int, Schedule> =
        options.Predictors
        |> List.map (fun s -> s.Layer, { Schedule.OfConfig s.Predictor with TargetProgress = progress })
        |> Map.ofList

/// The result of one predictor inside the encoder.
type EncoderPredictorLayer =
    { /// The encoder layer the predictor runs before.
      Index: int
      Kind: PredictorKind
      /// The predictor's own output: pooled states, shortened mask, counts, losses, log-probs, statistics.
      Output: PredictorOutput
      /// Sequence length L before the predictor.
      InputLength: int64
      /// Sequence length S after it (the largest boundary count of the batch).
      OutputLength: int64
      /// Σ boundaries / Σ valid positions over the batch (the original's `compression_ratios[idx]`), 0 when no
      /// position is valid.
      KeptFraction: float }

/// The encoder's output with the boundary statistics of every predictor layer (DECISIONS #8).
type EncoderOutput =
    { /// Final-LayerNorm states (B, S, D).
      Hidden: Tensor
      /// Validity of the S positions (B, S), float 0/1 (all ones when no frame mask and no predictor).
      Mask: Tensor
      /// One entry per predictor, in layer order.
      Layers: EncoderPredictorLayer list
      /// () Σ over predictor layers of each predictor's mean loss (0 without predictors).
      BoundaryLoss: Tensor
      /// (B) Σ over predictor layers of each utterance's own boundary loss.
      BoundaryLossPerUtterance: Tensor
      /// (B) Σ over predictor layers of the log-probability of the sampled boundaries; None when no predictor
      /// returned one (inference without RL, or no predictors).
      LogProb: Tensor option
      /// The sequence length every encoder layer ran on (one entry per layer).
      LayerLengths: int64[] }

    /// Every tensor of the record.
    member o.Tensors: Tensor list =
        [ yield o.Hidden
          yield o.Mask
          yield o.BoundaryLoss
          yield o.BoundaryLossPerUtterance
          yield! Option.toList o.LogProb
          for l in o.Layers do
              yield! l.Output.Tensors ]

    /// (layer, kept fraction) of every predictor.
    member o.Compression = o.Layers |> List.map (fun l -> l.Index, l.KeptFraction)

    /// The raw actions of every predictor layer (`PredictorOutput.Actions`), for `EncoderInput.Replay`. The tensors
    /// belong to this output: replay before disposing it.
    member o.Actions: Map<int, Tensor> = o.Layers |> List.map (fun l -> l.Index, l.Output.Actions) |> Map.ofList

    interface IDisposable with
        member o.Dispose() =
            for t in o.Tensors do
                t.Dispose()

/// The predictors by slot, registered as `boundary_predictors.{layer}` (the original's ModuleList indices; identity
/// slots have no parameters and no entry).
type PredictorSlots(predictors: (int * BoundaryPredictor) list) as this =
    inherit torch.nn.Module("ModuleList")
    let byLayer = dict predictors

    do
        for layer, p in predictors do
            this.register_module(string layer, p)

    /// Components are registered explicitly by slot index.
    override _.RegisterComponents() = ()

    /// The predictor before a layer, if any.
    member _.TryGet(layer: int) : BoundaryPredictor option =
        match byLayer.TryGetValue layer with
        | true, p -> Some p
        | _ -> None

    /// (layer, predictor) in layer order.
    member _.All = predictors

/// MagnetWhisper's encoder. Parameter names: conv1, conv2, embed_positions.weight (kept from Whisper, unused),
/// layers.N.*, layer_norm, boundary_predictors.{N}.* and additional_convs.{i}.{weight,bias} (the original's names).
type MagnetEncoder(config: WhisperConfig, options: MagnetOptions) as this =
    inherit torch.nn.Module<EncoderInput, EncoderOutput>("MagnetWhisperEncoder")
    let options = MagnetOptions.validate config options
    let d = int64 config.DModel
    let stem = ConvStem(config)
    let embed_positions = torch.nn.Embedding(int64 config.MaxSourcePositions, d)
    let layers = torch.nn.ModuleList<EncoderBlock>([| for _ in 1 .. config.EncoderLayers -> new EncoderBlock(config) |])
    let layer_norm = torch.nn.LayerNorm(d)
    let maskKeys = options.Compatibility.EncoderSelfAttentionMask = QueriesAndKeys
    let slots = options.Predictors |> List.map (fun s -> s.Layer, s) |> dict
    let predictors = new PredictorSlots([ for s in options.Predictors -> s.Layer, Predictors.create s.Predictor config.DModel ])
    let additional =
        let mutable channels = d
        [| for l in options.Convs.Layers ->
               let c = torch.nn.Conv1d(channels, int64 l.OutChannels, int64 l.Kernel, stride = int64 l.Stride, padding = int64 (l.Kernel / 2))
               channels <- int64 l.OutChannels
               c |]
    let additional_convs = torch.nn.ModuleList<Conv1d>(additional)

    do
        stem.RegisterOn this
        this.register_module("embed_positions", embed_positions)
        this.register_module("layers", layers)
        this.register_module("layer_norm", layer_norm)
        if not options.Predictors.IsEmpty then this.register_module("boundary_predictors", predictors)
        if additional.Length > 0 then this.register_module("additional_convs", additional_convs)
        // Kept for the checkpoint layout; MagnetWhisper adds no absolute positions (SPEC §5.4).
        (embed_positions.get_parameter "weight").requires_grad <- false

    /// Components are registered explicitly under the Hugging Face and original names.
    override _.RegisterComponents() = ()

    /// The configuration.
    member _.Config = config
    /// The validated options.
    member _.Options = options
    /// The predictor before a layer, if any.
    member _.Predictor(layer: int) = predictors.TryGet layer
    /// (layer, predictor) in layer order.
    member _.Predictors = predictors.All
    /// The encoder layers.
    member _.Layers = layers
    /// Encoder positions after all convolutions (before any predictor).
    member _.InitialLength = options.Convs.OutputLength config.MaxSourcePositions
    /// 2 × the product of the extra strides: mel frames per initial encoder position.
    member _.TotalStride = ConvStem.Stride * options.Convs.TotalStride

    /// Mel frames right of a frame that its encoder position depends on through the convolutions: each convolution of
    /// kernel k looks ⌊k/2⌋ of its inputs ahead, and an input of a later convolution spans the strides before it.
    member _.Lookahead =
        options.Convs.Layers
        |> List.fold (fun (ahead, stride) l -> ahead + (l.Kernel / 2) * stride, stride * l.Stride) (ConvStem.Lookahead, ConvStem.Stride)
        |> fst

    /// The mel frames to give the encoder for a batch whose longest utterance has validFrames real frames: enough for
    /// every valid position to see exactly what it sees in a 30 s window (validFrames plus the convolutions'
    /// lookahead), rounded up to a multiple of TotalStride, at most 2·max_source_positions.
    member this.FramesFor(validFrames: int) : int =
        let stride = this.TotalStride
        let needed = max 1 (validFrames + this.Lookahead)
        min config.InputFrames (((needed + stride - 1) / stride) * stride)

    /// Runs the encoder (SPEC §6.3): convolutions, frame-mask pooling, per layer the optional predictor then the
    /// layer, final LayerNorm.
    override this.forward(input: EncoderInput) : EncoderOutput =
        let mel = stem.Prepare input.Mel
        // Without absolute positions any length works; multiples of the total stride keep every frame in a whole
        // group, so a cut batch gives its valid positions exactly the values of the 30 s window (see FramesFor).
        let frames = mel.shape.[2]
        let stride = int64 this.TotalStride
        if frames <> int64 config.InputFrames && (frames > int64 config.InputFrames || frames < stride || frames % stride <> 0L) then
            invalidArg "mel" $"the encoder takes {config.InputFrames} mel frames (2 × max_source_positions) or fewer in a multiple of the total convolution stride {stride}, but mel has shape {showShape mel.shape}"
        let w = stem.Weight
        let b = mel.shape.[0]
        let mutable x = stem.Apply mel
        for c in additional do
            x <- torch.nn.functional.gelu (c.forward x)
        let mutable h = LayerOps.dropout this config.Dropout (x.permute(0, 2, 1))
        let l0 = h.shape.[1]
        let mutable mask =
            input.FrameMask
            |> Option.map (fun m ->
                requireRank "frameMask" 2 m
                if m.shape.[0] <> b || m.shape.[1] <> frames then
                    invalidArg "frameMask" $"frameMask must have shape ({b}, {frames}), but has shape {showShape m.shape}"
                let pooled = Positions.poolFrameMask this.TotalStride (m.``to``(w.device))
                // Even kernels give one position more than ⌈F/stride⌉: pad (invalid) or trim to the states.
                let n = pooled.shape.[1]
                if n = l0 then pooled
                elif n > l0 then pooled.narrow(1L, 0L, l0)
                else torch.nn.functional.pad(pooled, [| 0L; l0 - n |]))
        input.TargetMatrix
        |> Option.iter (fun t ->
            requireRank "targets" 2 t
            if t.shape.[1] <> b then
                invalidArg "targets" $"the target matrix must have shape (rows, {b}) (one row per count-trained predictor), but has shape {showShape t.shape}")
        match input.Mode with
        | Replay _ -> invalidArg "input" "EncoderInput.Mode cannot be PredictorMode.Replay: give the actions per predictor layer in EncoderInput.Replay"
        | Sample _ | PredictorMode.Threshold -> ()
        let requirePredictorLayers (field: string) (keys: int seq) =
            for k in keys do
                if not (slots.ContainsKey k) then
                    let have = String.Join(", ", slots.Keys |> Seq.sort)
                    invalidArg "input" $"EncoderInput.{field} has an entry for encoder layer {k}, but no predictor runs before it (predictor layers: {have})"
        requirePredictorLayers "Schedules" (input.Schedules |> Map.keys)
        requirePredictorLayers "Replay" (input.Replay |> Map.keys)
        let rotationOf (h: Tensor) = Rotation.Range(options.RopeTheta, int64 config.EncoderHeadDim, computeType h, h.device, h.shape.[1])
        let mutable context = { Rotation = Some(rotationOf h); Mask = AttentionMask.selfAttention mask maskKeys }
        let mutable nextRow = 0
        let results = ResizeArray<EncoderPredictorLayer>()
        let lengths = Array.zeroCreate config.EncoderLayers
        for i in 0 .. config.EncoderLayers - 1 do
            match predictors.TryGet i with
            | Some predictor ->
                let slot = slots.[i]
                let row =
                    match slot.Targets with
                    | NoTargets -> None
                    | Row r -> Some r
                    | NextRow ->
                        let r = nextRow
                        nextRow <- nextRow + 1
                        Some r
                let mode =
                    match input.Replay.TryFind i with
                    | Some actions -> Replay actions
                    | None -> input.Mode
                let needsTargets =
                    (match mode with Sample _ | Replay _ -> true | PredictorMode.Threshold -> false) && not input.Rl && slot.Predictor.Kind <> Bp3
                let schedule = input.Schedules.TryFind i |> Option.defaultWith (fun () -> Schedule.OfConfig slot.Predictor)
                match options.Compatibility.TargetScheduling, slot.Predictor.Kind with
                | ScheduleOnce, (Bp1 | Bp4) when needsTargets && schedule.TargetProgress < 1.0 && schedule.CompressionSchedule < 1.0 ->
                    invalidArg "input" $"the {Predictors.typeName slot.Predictor.Kind} before encoder layer {i} has TargetProgress {schedule.TargetProgress} and CompressionSchedule {schedule.CompressionSchedule}: with TargetScheduling = ScheduleOnce its targets go through one schedule only; leave one of them at 1, or choose ScheduleTwice (the original's double scheduling)"
                | _ -> ()
                let targets =
                    match row, input.TargetMatrix with
                    | Some r, Some matrix when int64 r < matrix.shape.[0] ->
                        let totals =
                            match mask with
                            | Some m -> m.sum(1L)
                            | None -> torch.full([| b |], (float h.shape.[1]).ToScalar(), dtype = torch.float32, device = h.device)
                        Some(Losses.progressTargets schedule.TargetProgress totals (matrix.select(0L, int64 r).``to``(h.device)))
                    | _ -> None
                if needsTargets && targets.IsNone then
                    let rows = input.TargetMatrix |> Option.map (fun m -> m.shape.[0]) |> Option.defaultValue 0L
                    let wanted = match row with Some r -> $"row {r} of the target matrix" | None -> "targets (its TargetSource is NoTargets)"
                    invalidArg "targets" $"the {Predictors.typeName slot.Predictor.Kind} before encoder layer {i} samples boundaries with a count loss and needs {wanted}, but the target matrix has {rows} row(s)"
                let predictorInput: PredictorInput =
                    { Hidden = h; Mask = mask; Targets = targets; Mode = mode; Rl = input.Rl; Schedule = schedule }
                let out = predictor.forward predictorInput
                let valid = toFloat (out.ValidCounts.sum())
                let kept = if valid > 0.0 then toFloat (out.BoundaryCounts.sum()) / valid else 0.0
                results.Add
                    { Index = i
                      Kind = slot.Predictor.Kind
                      Output = out
                      InputLength = h.shape.[1]
                      OutputLength = out.Pooled.shape.[1]
                      KeptFraction = kept }
                h <- out.Pooled
                mask <- Some out.Mask
                context <- { Rotation = Some(rotationOf h); Mask = AttentionMask.selfAttention mask maskKeys }
            | None -> ()
            lengths.[i] <- h.shape.[1]
            h <- layers.[i].forward(h, context)
        let hidden = layer_norm.forward h
        let device = hidden.device
        let lossType = torch.float32
        let boundaryLoss =
            results |> Seq.fold (fun (acc: Tensor) l -> acc + l.Output.Loss.to_type(lossType)) (torch.zeros([||], dtype = lossType, device = device))
        let perUtterance =
            results |> Seq.fold (fun (acc: Tensor) l -> acc + l.Output.LossPerUtterance.to_type(lossType)) (torch.zeros([| b |], dtype = lossType, device = device))
        let logProb =
            results
            |> Seq.choose (fun l -> l.Output.LogProb)
            |> Seq.fold (fun (acc: Tensor option) lp ->
                match acc with
                | None -> Some(lp.to_type lossType)
                | Some a -> Some(a + lp.to_type lossType)) None
        { Hidden = hidden
          Mask =
            match mask with
            | Some m -> m.to_type torch.float32
            | None -> torch.ones([| b; hidden.shape.[1] |], dtype = torch.float32, device = device)
          Layers = List.ofSeq results
          BoundaryLoss = boundaryLoss
          BoundaryLossPerUtterance = perUtterance
          LogProb = logProb
          LayerLengths = lengths }

/// The arithmetic of one MagnetWhisper encoder forward, for the benchmark's theoretical speed-up.
[<RequireQualifiedAccess>]
module MagnetEncoderFlops =
    /// Matrix-product FLOPs (multiply-add = 2) of one encoder layer on T positions: projections 8·T·D², scores and
    /// weighted values 4·T²·D, FFN 4·T·D·F (as `EncoderFlops.perWindow`).
    let layer (c: WhisperConfig) (t: float) : float =
        let d, f = float c.DModel, float c.EncoderFfnDim
        8.0 * t * d * d + 4.0 * t * t * d + 4.0 * t * d * f

    /// FLOPs of one 30 s window when encoder layer i runs on lengths.[i] positions: conv1 + conv2 + Σ layers
    /// (predictors and extra convolutions are not counted).
    let perWindow (c: WhisperConfig) (lengths: int64 seq) : float =
        let m, s, d = float c.NumMelBins, float c.MaxSourcePositions, float c.DModel
        let conv1 = 2.0 * (2.0 * s) * d * m * 3.0
        let conv2 = 2.0 * s * d * d * 3.0
        conv1 + conv2 + (lengths |> Seq.sumBy (fun t -> layer c (float t)))
