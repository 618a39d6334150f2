/// `magnet convert`: a Whisper folder plus predictor options → a MagnetWhisper folder, or an original project's
/// checkpoint → a MagnetWhisper folder.
module MagnetWhisper.Cli.Commands.Convert

open System
open System.IO
open Argu
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Cli

type ConvertArgs =
    | Whisper of dir: string
    | Original of dir: string
    | Model of dir: string
    | Drop_Ctc_Head
    | [<AltCommandLine("-p")>] Predictor of spec: string
    | Conv_Strides of strides: string
    | Original_Compat
    | Project_Compat
    | Dtype of name: string
    | Seed of int
    | No_Check
    | Audio of path: string
    | [<AltCommandLine("-o"); Mandatory>] Output of dir: string
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Whisper _ -> "Hugging Face Whisper folder (config.json + model.safetensors) to convert."
            | Original _ -> "folder saved by the original Python project (boundary_params.pt, boundary_predictors.bin, ...) to import."
            | Model _ -> "MagnetWhisper folder to re-save with --dtype (default: its own) and/or --drop-ctc-head."
            | Drop_Ctc_Head -> "with --model: leave the auxiliary CTC head (ctc_head.*) out, e.g. to ship a model pretrained with ctc_weight."
            | Predictor _ -> "LAYER:TYPE[:PRIOR[:POOLING]], e.g. 3:bp1:0.08:mean; TYPE bp1..bp4, POOLING attention|mean (repeatable)."
            | Conv_Strides _ -> "extra stride convolutions after conv2, e.g. 2,2 (kernel 3, d_model channels)."
            | Original_Compat -> "with --whisper: the original's numbers (query-only encoder masks, double target scheduling, CE over all positions, batch-dependent forcing and tail, BP1 all-ones RL pooling, BP3's cropped U-Net)."
            | Project_Compat -> "with --original: the project's behaviour (DECISIONS.md) instead of the original's numbers."
            | Dtype _ -> "stored dtype: float32 (default; with --model the source's), float16 or bfloat16."
            | Seed _ -> "random seed of the new predictor and convolution weights (default 0)."
            | No_Check -> "skip reloading the saved folder and the greedy sanity decode."
            | Audio _ -> "measure each predictor's compression on this file's first 30 s (default: 11 s of synthetic voiced audio)."
            | Output _ -> "the MagnetWhisper folder to write (atomically)."

/// The dtypes a checkpoint folder stores: float32, float16 or bfloat16.
let private parseDtype (name: string) =
    match Output.parseDtype name with
    | d when d = torch.float64 -> invalidArg "dtype" $"unknown dtype '{name}': use float32, float16 or bfloat16"
    | d -> d

/// Parses LAYER:TYPE[:PRIOR[:POOLING]] (PredictorSpec.parse, errors naming --predictor).
let parsePredictor (spec: string) : PredictorSlot = PredictorSpec.parse "--predictor" spec

/// Parses "2,2" (PredictorSpec.parseStrides, errors naming --conv-strides).
let parseStrides (text: string) : int list = PredictorSpec.parseStrides "--conv-strides" text

/// Prints the slots of a model.
let describe (m: MagnetWhisperModel) =
    let c = m.Config
    printfn "whisper     d_model %d, encoder %d layers × %d heads, decoder %d layers, vocab %d" c.DModel c.EncoderLayers c.EncoderAttentionHeads c.DecoderLayers c.VocabSize
    for s in m.Options.Predictors do
        let p = s.Predictor
        printfn "predictor   before layer %d: %s prior %g, temperature %g, threshold %g, %A, targets %s" s.Layer (Predictors.typeName p.Kind) p.Prior p.Temperature p.Threshold p.Pooling (MagnetJson.targetSourceName s.Targets)
    match m.Options.Convs.Layers with
    | [] -> ()
    | ls ->
        let strides = String.Join(",", ls |> List.map (fun l -> string l.Stride))
        printfn "extra convs strides %s (total encoder stride %d): %d → %d positions" strides (2 * m.Options.Convs.TotalStride) c.MaxSourcePositions m.Encoder.InitialLength
    let compat = m.Options.Compatibility
    printfn "compat      encoder masks %A, targets %A, per-utterance CE %A" compat.EncoderSelfAttentionMask compat.TargetScheduling compat.CrossEntropyPerUtterance

/// Reloads a saved folder, checks the outputs equal the model's, and decodes 30 s of silence greedily.
let check (dir: string) (m: MagnetWhisperModel) =
    use _ = torch.NewDisposeScope()
    use loaded = MagnetFormat.load dir torch.CPU m.DType
    let c = m.Config
    let mel = torch.zeros([| 1L; int64 c.NumMelBins; int64 c.InputFrames |], dtype = m.DType) - 1.5
    let frameMask = torch.ones(1L, int64 c.InputFrames)
    use a = m.Encode(mel, Some frameMask)
    use b = loaded.Encode(mel, Some frameMask)
    let same = a.Hidden.shape = b.Hidden.shape && (use e = a.Hidden.eq(b.Hidden).all() in e.item<bool>())
    if not same then failwith "sanity check failed: the reloaded model's encoder output differs"
    let tokens = MagnetWhisper.Core.Decoding.Search.greedyTokens (loaded :> MagnetWhisper.Core.Decoding.ISpeechModel) mel (Some frameMask) (MagnetWhisper.Core.Decoding.Search.checkpointPrompt c) 5
    printfn "check       reloaded: identical encoder output (%d positions); greedy tokens of silence: [%s]" b.Hidden.shape.[1] (String.Join(", ", tokens.[0]))

/// The output folder must not be a source folder (the atomic save would replace its weights) nor any other folder
/// holding a checkpoint that is not a MagnetWhisper folder; a usage error naming the flag otherwise.
let checkOutput (flag: string) (output: string) (sources: (string * string) list) : unit =
    let full (p: string) = Path.GetFullPath(p).TrimEnd(Path.DirectorySeparatorChar)
    if File.Exists output then invalidArg flag $"{flag} {output} is a file, not a folder"
    for sourceFlag, source in sources do
        if full source = full output then
            invalidArg flag $"{flag} {output} is the {sourceFlag} folder: converting onto it would replace its weights; choose another output folder"
    let holdsWeights =
        Directory.Exists output
        && Directory.EnumerateFiles output
           |> Seq.exists (fun f ->
               let name = Path.GetFileName f
               name.EndsWith ".safetensors" || name.StartsWith "pytorch_model" || name.EndsWith ".bin" || name.EndsWith ".pt")
    if holdsWeights && not (MagnetFormat.isMagnetFolder output) then
        invalidArg flag $"{flag} {output} holds a checkpoint that is not a MagnetWhisper folder; it would be replaced: choose another output folder"

/// The boundary statistics of each predictor on the first 30 s of the samples.
let measureCompression (m: MagnetWhisperModel) (samples: float32[]) : EncoderPredictorLayer list =
    use _ = torch.NewDisposeScope()
    use _ = torch.inference_mode()
    use features = MagnetWhisper.Core.Audio.LogMel.extract m.Config.NumMelBins torch.CPU [ samples ]
    use mel = features.Mel.to_type m.DType
    use encoded = m.Encode(mel, Some features.Mask)
    encoded.Layers

/// Prints the measured compression of each predictor; fresh predictors are said to be untrained, since their
/// compression has nothing to do with the prior they will be trained toward (SPEC §6.1).
let reportCompression (m: MagnetWhisperModel) (untrained: bool) (samples: float32[]) (source: string) =
    let layers = measureCompression m samples
    for l in layers do
        let slot = m.Options.TryFind l.Index
        let kept = l.KeptFraction
        let measured = $"on {source} it keeps {100.0 * kept:F2}%% of the positions ({1.0 / max kept 1e-9:F1}×)"
        match slot with
        | Some s when untrained ->
            printfn "compression before layer %d: untrained (random weights): %s; training pulls it toward the prior %g (%.1f×)" l.Index measured s.Predictor.Prior (1.0 / s.Predictor.Prior)
        | _ -> printfn "compression before layer %d: %s" l.Index measured

let private sizeText (bytes: int64) = $"{float bytes / 1048576.0:F2} MB"

/// `convert --model DIR -o OUT [--dtype D] [--drop-ctc-head]`: the folder re-saved (MagnetResave), then checked
/// against its source unless --no-check.
let private resave (args: ParseResults<ConvertArgs>) (source: string) (output: string) : int =
    let others =
        [ if args.Contains Whisper then "--whisper"
          if args.Contains Original then "--original"
          if not (args.GetResults Predictor).IsEmpty then "--predictor"
          if args.Contains Conv_Strides then "--conv-strides"
          if args.Contains Original_Compat then "--original-compat"
          if args.Contains Project_Compat then "--project-compat"
          if args.Contains Seed then "--seed"
          if args.Contains Audio then "--audio" ]
    match others with
    | flag :: _ -> invalidArg flag $"{flag} does not apply to --model, which re-saves a MagnetWhisper folder as it is (only --dtype, --drop-ctc-head and --no-check)"
    | [] -> ()
    if not (Directory.Exists source) then raise (DirectoryNotFoundException $"--model {source}: folder not found")
    if not (MagnetFormat.isMagnetFolder source) then
        invalidArg "--model" $"--model {source}: not a MagnetWhisper folder (no magnet.json); convert a Hugging Face folder with --whisper"
    let options: ResaveOptions =
        { DType = args.TryGetResult Dtype |> Option.map (fun d -> Args.value "--dtype" (fun () -> parseDtype d))
          DropCtcHead = args.Contains Drop_Ctc_Head }
    Output.progress false $"re-saving {source}"
    let report = MagnetResave.run options source output
    printfn "wrote       %s" (Path.GetFullPath output)
    printfn "dtype       %s → %s" (Checkpoint.TorchDtypeName report.SourceDType) (Checkpoint.TorchDtypeName report.DType)
    let head (classes: int option) = match classes with Some n -> $"{n} classes" | None -> "none"
    printfn "ctc head    %s → %s" (head report.SourceCtcHead) (head report.CtcHead)
    printfn "weights     %s → %s (%.1f%%)" (sizeText report.SourceBytes) (sizeText report.Bytes) (100.0 * float report.Bytes / float (max 1L report.SourceBytes))
    if not (args.Contains No_Check) then
        MagnetResave.verify source output report
        printfn "check       reloaded: every tensor equals the source's rounded to %s" (Checkpoint.TorchDtypeName report.DType)
    0

let run (args: ParseResults<ConvertArgs>) : int =
    let output = args.GetResult Output
    let outputFlag = Args.typed [ "-o"; "--output" ]
    checkOutput outputFlag output [ for d in args.GetResults Whisper -> "--whisper", d
                                    for d in args.GetResults Original -> "--original", d
                                    for d in args.GetResults Model -> "--model", d ]
    match args.TryGetResult Model with
    | Some source -> resave args source output
    | None ->
    if args.Contains Drop_Ctc_Head then invalidArg "--drop-ctc-head" "--drop-ctc-head applies to --model (a MagnetWhisper folder with a CTC head)"
    let measureOn =
        match args.TryGetResult Audio with
        | Some path -> MagnetWhisper.Core.Audio.Audio.load path, Path.GetFileName path
        | None ->
            let samples = BenchTranscribe.synthetic ()
            samples, $"{float samples.Length / 16000.0:F0} s of synthetic voiced audio"
    let dtype = Args.value "--dtype" (fun () -> parseDtype (args.GetResult(Dtype, defaultValue = "float32")))
    torch.manual_seed (int64 (args.GetResult(Seed, defaultValue = 0))) |> ignore
    let model =
        match args.TryGetResult Whisper, args.TryGetResult Original with
        | Some _, Some _ -> invalidArg "whisper" "give either --whisper DIR or --original DIR, not both"
        | None, None -> invalidArg "whisper" "give --whisper DIR (with --predictor ...), --original DIR or --model DIR"
        | Some dir, None ->
            if args.Contains Project_Compat then invalidArg "--project-compat" "--project-compat applies to --original"
            if not (Directory.Exists dir) then raise (DirectoryNotFoundException $"--whisper {dir}: folder not found")
            let layers = (Checkpoint.ReadConfig dir).EncoderLayers
            let slots =
                args.GetResults Predictor
                |> List.map (fun spec ->
                    let slot = parsePredictor spec
                    if slot.Layer < 0 || slot.Layer >= layers then
                        invalidArg "--predictor" $"--predictor '{spec}': layer {slot.Layer} is not an encoder layer of {dir} (0 to {layers - 1})"
                    slot)
            use whisper = WhisperModel.fromPretrained dir torch.CPU torch.ScalarType.Float32
            let options =
                { MagnetOptions.Default with
                    Predictors = slots
                    Convs = ConvConfig.FromStrides(args.TryGetResult Conv_Strides |> Option.map parseStrides |> Option.defaultValue [], whisper.Config.DModel) }
            let options = if args.Contains Original_Compat then options.WithOriginalCompatibility() else options
            Output.progress false $"converting {dir}"
            MagnetWhisperModel.FromWhisper(whisper, options)
        | None, Some dir ->
            if not (Directory.Exists dir) then raise (DirectoryNotFoundException $"--original {dir}: folder not found")
            if not (args.GetResults Predictor).IsEmpty || args.Contains Conv_Strides || args.Contains Original_Compat then
                invalidArg "original" "--original takes its predictors and convolutions from the checkpoint (no --predictor, --conv-strides or --original-compat)"
            Output.progress false $"importing the original checkpoint {dir}"
            OriginalCheckpoint.import (if args.Contains Project_Compat then ImportOptions.Project else ImportOptions.Original) dir torch.CPU torch.ScalarType.Float32
    use model = model
    if dtype <> model.DType then model.``to``(dtype) |> ignore
    MagnetFormat.save output model
    printfn "wrote       %s" (Path.GetFullPath output)
    describe model
    reportCompression model (args.Contains Whisper) (fst measureOn) (snd measureOn)
    if not (args.Contains No_Check) then check output model
    0
