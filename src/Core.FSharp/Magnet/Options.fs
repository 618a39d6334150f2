namespace MagnetWhisper.Core.Magnet

// What a MagnetWhisper model is made of besides the Whisper checkpoint (SPEC §6.1, §6.2): the predictor of each
// encoder slot, the extra fixed-stride convolutions, and the compatibility options of DECISIONS.md (every difference
// from the original that changes numbers for the same weights has a named option whose non-default value reproduces
// the original).

open System
open MagnetWhisper.Core.Whisper

/// One extra convolution after Whisper's conv2 (SPEC §6.2): Conv1d(in, OutChannels, Kernel, Stride, padding
/// Kernel/2) followed by GELU; in-channels are d_model for the first and the previous out-channels after it.
type ConvLayer =
    { OutChannels: int
      Kernel: int
      Stride: int }

/// The extra fixed-stride convolutions (the original's `ConvConfig`); empty by default.
type ConvConfig =
    { Layers: ConvLayer list }

    /// No extra convolutions.
    static member Empty = { Layers = [] }

    /// The original's `from_strides`: one layer per stride with out-channels = channels (d_model) and the kernel
    /// (3 by default).
    static member FromStrides(strides: int seq, channels: int, ?kernel: int) : ConvConfig =
        let k = defaultArg kernel 3
        { Layers = [ for s in strides -> { OutChannels = channels; Kernel = k; Stride = s } ] }

    /// The product of the extra strides (1 when empty); the encoder's total stride is 2 × this.
    member c.TotalStride = c.Layers |> List.fold (fun acc l -> acc * l.Stride) 1

    /// The sequence length after the extra convolutions for L input positions: each layer maps L to
    /// ⌊(L + 2·⌊k/2⌋ − k)/s⌋ + 1 (= ⌈L/s⌉ for odd k).
    member c.OutputLength(length: int) =
        c.Layers |> List.fold (fun l layer -> (l + 2 * (layer.Kernel / 2) - layer.Kernel) / layer.Stride + 1) length

/// Where a predictor's target boundary counts come from (DECISIONS #3: targets are a (rows × batch) matrix).
type TargetSource =
    /// The next unused row of the target matrix, in slot order (the default of BP1, BP2 and BP4).
    | NextRow
    /// A fixed row of the target matrix (several predictors may share one).
    | Row of int
    /// No targets: the predictor's prior-based loss only (the default of BP3, as in the original's encoder).
    | NoTargets

/// A boundary predictor placed before encoder layer `Layer` (0-based).
type PredictorSlot =
    { Layer: int
      Predictor: PredictorConfig
      Targets: TargetSource }

    /// The default predictor of a kind before a layer (`PredictorConfig.Default`), with BP3 taking no targets and
    /// the others the next row of the target matrix.
    static member Create(layer: int, kind: PredictorKind, prior: float) : PredictorSlot =
        { Layer = layer
          Predictor = PredictorConfig.Default(kind, prior)
          Targets = (match kind with Bp3 -> NoTargets | _ -> NextRow) }

/// Which padded positions encoder self-attention masks (DECISIONS #2).
type EncoderSelfAttentionMask =
    /// Padded queries and padded keys: valid outputs of a padded batch equal each utterance alone (default).
    | QueriesAndKeys
    /// The original: only padded queries are masked, so valid frames also attend to padded positions.
    | QueriesOnly

/// How often a count-trained predictor's targets are scheduled (DECISIONS #3). Both schedules come from the
/// predictor's own `Schedule` (`EncoderInput.Schedules`): the encoder's target-progress lerp (`TargetProgress`) and
/// BP1/BP4's compression schedule (`CompressionSchedule`); each is the identity at 1, its default.
type TargetScheduling =
    /// Once (default): a BP1/BP4 target goes through at most one of the two schedules. Whichever the trainer moves
    /// below 1 applies; moving both below 1 for one predictor is an error naming the predictor (never a silent
    /// override). BP2 has only the lerp.
    | ScheduleOnce
    /// The original: the encoder's lerp, then BP1/BP4's own compression schedule on top of it.
    | ScheduleTwice

/// How the per-utterance cross-entropy of the RL loss is averaged (DECISIONS #4).
type CrossEntropyPerUtterance =
    /// Over the utterance's real (non-ignored) tokens (default).
    | MeanOverRealTokens
    /// The original's `return_unreduced_loss`: over all T label positions, ignored ones counting as 0.
    | MeanOverAllPositions

/// The compatibility options of DECISIONS.md that change numbers for the same weights. `Default` is the project's
/// behaviour; `Original` reproduces the Python original where it is reproducible at this level. The predictors'
/// own differences (forced last boundary for every row, batch-independent tail rule, thresholds, BP3's U-Net) are
/// fields of `PredictorConfig` or fixed in the predictors (see DECISIONS #1, #5, #6).
type Compatibility =
    { EncoderSelfAttentionMask: EncoderSelfAttentionMask
      TargetScheduling: TargetScheduling
      CrossEntropyPerUtterance: CrossEntropyPerUtterance }

    /// The project's behaviour: key masking, targets scheduled once, per-utterance CE over real tokens.
    static member Default =
        { EncoderSelfAttentionMask = QueriesAndKeys
          TargetScheduling = ScheduleOnce
          CrossEntropyPerUtterance = MeanOverRealTokens }

    /// The original's behaviour: query-only masking, double target scheduling, CE over all label positions.
    static member Original =
        { EncoderSelfAttentionMask = QueriesOnly
          TargetScheduling = ScheduleTwice
          CrossEntropyPerUtterance = MeanOverAllPositions }

/// Constants of the MagnetWhisper conversion (SPEC §11).
module MagnetConstants =
    /// RoPE base θ of every attention.
    [<Literal>]
    let RopeTheta = 10000.0

    /// Version of `magnet.json` this code writes and reads.
    [<Literal>]
    let FormatVersion = 1

/// Everything a conversion adds to a Whisper checkpoint: the predictors by slot, the extra convolutions, the
/// compatibility options and the RoPE base. Immutable; build it with `MagnetOptions.Default` and the With… members.
type MagnetOptions =
    { /// Predictors in ascending layer order, at most one per encoder layer.
      Predictors: PredictorSlot list
      /// Extra fixed-stride convolutions after conv2.
      Convs: ConvConfig
      Compatibility: Compatibility
      /// RoPE base θ (10000).
      RopeTheta: float }

    /// No predictors, no extra convolutions, the project's compatibility defaults, θ = 10000.
    static member Default =
        { Predictors = []
          Convs = ConvConfig.Empty
          Compatibility = Compatibility.Default
          RopeTheta = MagnetConstants.RopeTheta }

    /// These options with a slot added (replacing a slot at the same layer).
    member o.WithSlot(slot: PredictorSlot) =
        { o with Predictors = (o.Predictors |> List.filter (fun s -> s.Layer <> slot.Layer)) @ [ slot ] |> List.sortBy (fun s -> s.Layer) }

    /// These options with the default predictor of a kind before a layer.
    member o.WithPredictor(layer: int, kind: PredictorKind, prior: float) = o.WithSlot(PredictorSlot.Create(layer, kind, prior))

    /// The original's numbers throughout: `Compatibility.Original`, and on every predictor slot
    /// `PredictorConfig.AsOriginal` (batch-dependent forcing with maximum's tie gradient and tail, BP1's all-ones
    /// RL pooling, BP3's cropped U-Net, the float32 target clamp, BP1/BP4's inference threshold 0.5).
    member o.WithOriginalCompatibility() =
        { o with
            Compatibility = Compatibility.Original
            Predictors = [ for s in o.Predictors -> { s with Predictor = s.Predictor.AsOriginal() } ] }

    /// These options with extra convolutions of the given strides (kernel 3, out-channels d_model).
    member o.WithConvStrides(dModel: int, strides: int seq) = { o with Convs = ConvConfig.FromStrides(strides, dModel) }

    /// The slot before a layer, if any.
    member o.TryFind(layer: int) = o.Predictors |> List.tryFind (fun s -> s.Layer = layer)

/// Validation of options against a Whisper configuration.
[<RequireQualifiedAccess>]
module MagnetOptions =
    /// Checks the options against the model's configuration (DECISIONS #10: sizes come from the config) and returns
    /// them with the slots sorted; raises ArgumentException naming the offending slot or layer.
    let validate (config: WhisperConfig) (options: MagnetOptions) : MagnetOptions =
        let layers = config.EncoderLayers
        for s in options.Predictors do
            if s.Layer < 0 || s.Layer >= layers then
                invalidArg "options" $"a predictor is placed before encoder layer {s.Layer}, but the model has encoder layers 0 to {layers - 1}"
            match s.Targets with
            | Row r when r < 0 -> invalidArg "options" $"the predictor before layer {s.Layer} reads target row {r}; rows start at 0"
            | _ -> ()
            if s.Predictor.Kind = Bp4 && s.Predictor.Pooling <> MeanPooling then
                invalidArg "options" $"the predictor before layer {s.Layer} is BP4, which supports mean pooling only"
        let duplicates = options.Predictors |> List.countBy (fun s -> s.Layer) |> List.filter (fun (_, n) -> n > 1)
        if not duplicates.IsEmpty then
            let layersText = String.Join(", ", duplicates |> List.map fst)
            invalidArg "options" $"more than one predictor before encoder layer(s) {layersText}"
        let mutable channels = config.DModel
        options.Convs.Layers
        |> List.iteri (fun i l ->
            if l.Kernel < 1 || l.Stride < 1 || l.OutChannels < 1 then
                invalidArg "options" $"extra convolution {i} must have positive out-channels, kernel and stride, but has ({l.OutChannels}, {l.Kernel}, {l.Stride})"
            channels <- l.OutChannels)
        if channels <> config.DModel then
            invalidArg "options" $"the last extra convolution must output d_model = {config.DModel} channels, but outputs {channels}"
        if options.Convs.OutputLength config.MaxSourcePositions < 1 then
            invalidArg "options" "the extra convolutions leave no encoder positions"
        if not (options.RopeTheta > 0.0) then invalidArg "options" $"RopeTheta must be positive, but is {options.RopeTheta}"
        if config.EncoderHeadDim % 2 <> 0 || config.DecoderHeadDim % 2 <> 0 then
            invalidArg "config" $"RoPE needs even head widths, but the encoder's is {config.EncoderHeadDim} and the decoder's {config.DecoderHeadDim}"
        { options with Predictors = options.Predictors |> List.sortBy (fun s -> s.Layer) }
