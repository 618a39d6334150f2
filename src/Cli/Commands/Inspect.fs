/// `magnet inspect DIR`: structure, predictor slots and parameter counts of a Whisper, MagnetWhisper or original
/// MagnetWhisper folder (read from the weight headers, nothing is loaded); with --audio, a greedy transcription and
/// the compression of every predictor.
module MagnetWhisper.Cli.Commands.Inspect

open System
open System.IO
open Argu
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Decoding
open MagnetWhisper.Cli

type InspectArgs =
    | [<MainCommand; ExactlyOnce>] Dir of dir: string
    | Audio of path: string
    | Max_Tokens of count: int
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Dir _ -> "a Whisper, MagnetWhisper or original-project folder."
            | Audio _ -> "also transcribe this file greedily (first 30 s) and print each predictor's compression."
            | Max_Tokens _ -> "with --audio: at most this many tokens (default 100)."

/// Parameter counts by group from tensor names and shapes.
let private counts (shapes: (string * int64[]) seq) =
    let size (s: int64[]) = Array.fold (*) 1L s
    shapes
    |> Seq.groupBy (fun (n, _) ->
        let parts = n.Split('.')
        if n.Contains ".boundary_predictors." then
            let i = Array.IndexOf(parts, "boundary_predictors")
            $"predictor before layer {parts.[i + 1]}"
        elif n.Contains ".additional_convs." then "extra convolutions"
        elif n.StartsWith "model.encoder." then "whisper encoder"
        elif n.StartsWith "model.decoder." then "whisper decoder"
        else "other")
    |> Seq.map (fun (g, xs) -> g, xs |> Seq.sumBy (snd >> size))
    |> Seq.sortBy (fun (g, _) ->
        match g with
        | "whisper encoder" -> 0, 0
        | "extra convolutions" -> 1, 0
        | "whisper decoder" -> 3, 0
        | "other" -> 4, 0
        | _ -> 2, (match Int32.TryParse(g.Substring(g.LastIndexOf ' ' + 1)) with | true, l -> l | _ -> 0))
    |> List.ofSeq

let private printCounts (shapes: (string * int64[]) list) =
    let groups = counts shapes
    for g, n in groups do
        printfn "parameters  %-28s %12s" g (n.ToString("N0"))
    printfn "parameters  %-28s %12s" "total" ((groups |> List.sumBy snd).ToString("N0"))

let private printConfig (c: WhisperConfig) =
    printfn "config      d_model %d, encoder %d × %d heads (ffn %d), decoder %d × %d heads (ffn %d)" c.DModel c.EncoderLayers c.EncoderAttentionHeads c.EncoderFfnDim c.DecoderLayers c.DecoderAttentionHeads c.DecoderFfnDim
    printfn "            vocab %d, %d mel bins, %d encoder positions, %d decoder positions, tied embeddings %b" c.VocabSize c.NumMelBins c.MaxSourcePositions c.MaxTargetPositions c.TieWordEmbeddings

let private printSlots (c: WhisperConfig) (o: MagnetOptions) =
    for layer in 0 .. c.EncoderLayers - 1 do
        match o.TryFind layer with
        | None -> printfn "slot %2d     Identity" layer
        | Some s ->
            let p = s.Predictor
            let pooling = match p.Pooling with AttentionPooling -> "attention" | MeanPooling -> "mean"
            printfn "slot %2d     %s prior %g (training target ≈ %.1f×), temperature %g, threshold %g, %s pooling, targets %s" layer (Predictors.typeName p.Kind) p.Prior (1.0 / p.Prior) p.Temperature p.Threshold pooling (MagnetJson.targetSourceName s.Targets)
    if not o.Predictors.IsEmpty then
        printfn "            the prior is what training aims at, not what these weights do: --audio FILE measures that"
    match o.Convs.Layers with
    | [] -> ()
    | ls ->
        let text = String.Join(", ", ls |> List.map (fun l -> $"({l.OutChannels}, k{l.Kernel}, s{l.Stride})"))
        printfn "convs       extra %s: %d → %d positions" text c.MaxSourcePositions (o.Convs.OutputLength c.MaxSourcePositions)
    let compat = o.Compatibility
    printfn "compat      encoder masks %A, targets %A, per-utterance CE %A, RoPE θ %g" compat.EncoderSelfAttentionMask compat.TargetScheduling compat.CrossEntropyPerUtterance o.RopeTheta

let run (args: ParseResults<InspectArgs>) : int =
    let dir = args.GetResult Dir
    if not (Directory.Exists dir) then raise (DirectoryNotFoundException $"folder not found: {dir}")
    let config = Checkpoint.ReadConfig dir
    let kind =
        if MagnetFormat.isMagnetFolder dir then "MagnetWhisper"
        elif OriginalCheckpoint.isOriginalFolder dir then "original MagnetWhisper (Python) checkpoint"
        else "Whisper"
    printfn "folder      %s (%s)" (Path.GetFullPath dir) kind
    printConfig config
    match kind with
    | "MagnetWhisper" ->
        let _, options = MagnetFormat.readOptions dir
        printSlots config options
        use w = CheckpointWeights.Open dir
        printCounts [ for n in w.Names -> n, (w.Info n).Shape ]
    | "Whisper" ->
        use w = CheckpointWeights.Open dir
        printCounts [ for n in w.Names -> n, (w.Info n).Shape ]
    | _ ->
        let p = OriginalCheckpoint.readParams dir
        printfn "original    layer_types %A" p.LayerTypes
        printfn "            layer_priors %A, temps %A, thresholds %A, conv_config %A" p.LayerPriors p.LayerTemps p.LayerThresholds p.ConvConfig
    match args.TryGetResult Audio with
    | None -> ()
    | Some audio ->
        let maxTokens = args.GetResult(Max_Tokens, defaultValue = 100)
        Args.require "--max-tokens" (maxTokens >= 1) $"must be at least 1, but is {maxTokens}"
        use model =
            match kind with
            | "MagnetWhisper" -> MagnetFormat.load dir torch.CPU torch.ScalarType.Float32
            | "Whisper" ->
                use w = WhisperModel.fromPretrained dir torch.CPU torch.ScalarType.Float32
                MagnetWhisperModel.FromWhisper(w, MagnetOptions.Default)
            | _ -> OriginalCheckpoint.import ImportOptions.Original dir torch.CPU torch.ScalarType.Float32
        if kind = "Whisper" then Output.progress false "note: a plain Whisper folder is run as MagnetWhisper without predictors (RoPE, no absolute positions)"
        use _ = torch.NewDisposeScope()
        let samples = MagnetWhisper.Core.Audio.Audio.load audio
        use features = MagnetWhisper.Core.Audio.LogMel.extract config.NumMelBins torch.CPU [ samples ]
        use enc = model.Encode(features.Mel, Some features.Mask)
        for l in enc.Layers do
            printfn "compression before layer %d: %d → %d positions, kept %.3f (%.1f×)" l.Index l.InputLength l.OutputLength l.KeptFraction (1.0 / max l.KeptFraction 1e-9)
        printfn "encoder     %d positions reach the decoder (%d valid)" enc.Hidden.shape.[1] (int (Tensors.toFloat (enc.Mask.sum())))
        let ids = Search.greedyTokens (model :> ISpeechModel) features.Mel (Some features.Mask) (Search.checkpointPrompt config) maxTokens
        match config.VocabSize with
        | 51864 | 51865 | 51866 ->
            let tokenizer = MagnetWhisper.Core.Text.Tokenizer.ofVocabSize config.VocabSize
            printfn "greedy      %s" (tokenizer.Decode(ids.[0], MagnetWhisper.Core.Text.SkipAll).Trim())
        | _ -> printfn "greedy      tokens [%s]" (String.Join(", ", ids.[0]))
    0
