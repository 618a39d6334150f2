namespace MagnetWhisper.Core.Magnet

// Re-saving a MagnetWhisper folder in another storage dtype and/or without its auxiliary CTC head (`magnet convert
// --model`): e.g. to ship a model pretrained with the CTC loss in float16, whose head only served training. The model
// is loaded in float32 (exact for every stored dtype) and written with SaveOptions.DType, so each tensor is the
// source's rounded once to the new dtype.

open System.IO
open TorchSharp
open MagnetWhisper.Core.Whisper

/// What a re-save changes.
type ResaveOptions =
    { /// The stored dtype of the floating-point tensors (float32, float16 or bfloat16); None keeps the source's.
      DType: torch.ScalarType option
      /// Leave the auxiliary CTC head (`ctc_head.*`, magnet.json's ctc_head_classes) out.
      DropCtcHead: bool }

    /// Same dtype, head kept: a plain copy through the loader.
    static member Default = { DType = None; DropCtcHead = false }

/// What a re-save did.
type ResaveReport =
    { /// The source's stored floating-point dtype.
      SourceDType: torch.ScalarType
      /// The written folder's.
      DType: torch.ScalarType
      /// The CTC head's classes in the source (None: it had none).
      SourceCtcHead: int option
      /// The CTC head's classes in the written folder.
      CtcHead: int option
      /// Bytes of the source's weight files.
      SourceBytes: int64
      /// Bytes of the written weight files.
      Bytes: int64 }

/// Re-saving MagnetWhisper folders.
[<RequireQualifiedAccess>]
module MagnetResave =
    /// The dtypes a folder may store.
    let storable = [ torch.float32; torch.float16; torch.bfloat16 ]

    /// The floating-point dtype most of a folder's stored tensors have (the weights are stored in one dtype).
    let storedDType (dir: string) : torch.ScalarType =
        use weights = CheckpointWeights.Open dir
        let floating =
            [ for n in weights.Names do
                  match (weights.Info n).DType with
                  | F64 | F32 | F16 | BF16 as d -> SafeDType.toTorch d
                  | _ -> () ]
        match floating |> List.countBy id |> List.sortByDescending snd with
        | (t, _) :: _ -> t
        | [] -> raise (InvalidDataException $"{dir}: the weights hold no floating-point tensor")

    /// Bytes of a folder's weight files (model.safetensors, or its shards).
    let weightBytes (dir: string) : int64 =
        Directory.GetFiles(dir, "*.safetensors") |> Array.sumBy (fun f -> FileInfo(f).Length)

    /// Writes `source` (a MagnetWhisper folder) to `output` with the options, atomically. The output may not be the
    /// source folder (the caller checks that, naming its flag).
    let run (options: ResaveOptions) (source: string) (output: string) : ResaveReport =
        options.DType
        |> Option.iter (fun d ->
            if not (List.contains d storable) then invalidArg "dtype" $"cannot store {d}: use float32, float16 or bfloat16")
        let sourceDType = storedDType source
        let sourceBytes = weightBytes source
        use model = MagnetFormat.load source torch.CPU torch.float32
        let dtype = options.DType |> Option.defaultValue sourceDType
        let keepHead = not options.DropCtcHead
        MagnetFormat.saveAs keepHead { SaveOptions.Default with DType = Some dtype } output model
        { SourceDType = sourceDType
          DType = dtype
          SourceCtcHead = model.CtcHeadClasses
          CtcHead = (if keepHead then model.CtcHeadClasses else None)
          SourceBytes = sourceBytes
          Bytes = weightBytes output }

    /// Checks a re-saved folder against its source: it loads, stores `report.DType`, and every tensor loaded in
    /// float32 equals the source's rounded through that dtype; the CTC head is there exactly when kept. Raises
    /// InvalidDataException naming the first difference.
    let verify (source: string) (output: string) (report: ResaveReport) : unit =
        use _ = torch.NewDisposeScope()
        use original = MagnetFormat.load source torch.CPU torch.float32
        use written = MagnetFormat.load output torch.CPU torch.float32
        let stored = storedDType output
        if stored <> report.DType then raise (InvalidDataException $"{output}: stores {stored}, expected {report.DType}")
        if written.CtcHeadClasses <> report.CtcHead then
            raise (InvalidDataException $"{output}: CTC head {written.CtcHeadClasses}, expected {report.CtcHead}")
        let mine = dict written.State
        for name, tensor in original.State do
            if report.CtcHead.IsSome || not (name.StartsWith MagnetWhisperModel.CtcHeadPrefix) then
                match mine.TryGetValue name with
                | true, w ->
                    let expected = if tensor.is_floating_point () then tensor.to_type(report.DType).to_type(torch.float32) else tensor
                    if expected.shape <> w.shape || not ((expected.eq w).all().item<bool> ()) then raise (InvalidDataException $"{output}: tensor '{name}' differs from the source rounded to {report.DType}")
                | _ -> raise (InvalidDataException $"{output}: tensor '{name}' is missing")
