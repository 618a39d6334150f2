/// `magnet bench encoder --predictors ...`: encoder time of MagnetWhisper without and with boundary predictors at
/// several compression ratios, against the theoretical FLOP reduction of running the later layers on fewer positions.
module MagnetWhisper.Cli.Commands.BenchEncoderMagnet

open System
open System.Diagnostics
open Argu
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Segments
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Cli

/// One measured configuration.
type MagnetBenchRow =
    { Ratio: float option
      /// Sequence length of every encoder layer.
      Lengths: int64[]
      MedianSeconds: float
      Flops: float }

/// Forces every BP1 of a model to boundary rate 1/r (scorer weights 0, final bias logit(1/r)).
let private force (model: MagnetWhisperModel) (ratio: float) =
    use _ = torch.no_grad()
    let rate = 1.0 / ratio
    for n, p in model.State do
        if n.Contains ".boundary_predictors." && n.Contains ".boundary_mlp." then
            if n.EndsWith "boundary_mlp.2.bias" then p.fill_(Math.Log(rate / (1.0 - rate))) |> ignore
            elif n.EndsWith ".weight" then p.zero_() |> ignore

/// Measures the configurations: no predictors, then a BP1 before each given layer at each ratio (boundaries drawn
/// at rate 1/r from a seeded generator in RL sampling mode, so no targets are needed and S ≈ L/r).
let measure (whisper: WhisperModel) (layers: int list) (ratios: float list) (batch: int) (warmup: int) (repeats: int) (quiet: bool) : MagnetBenchRow list =
    let config = whisper.Config
    let build (ratio: float option) =
        let options =
            match ratio with
            | None -> MagnetOptions.Default
            | Some r -> layers |> List.fold (fun (o: MagnetOptions) l -> o.WithPredictor(l, Bp1, 1.0 / r)) MagnetOptions.Default
        let m = MagnetWhisperModel.FromWhisper(whisper, options)
        m.eval()
        ratio |> Option.iter (force m)
        m
    let configurations = (None :: (ratios |> List.map Some)) |> List.map (fun r -> r, build r)
    try
        use _ = torch.inference_mode()
        use mel = torch.randn([| int64 batch; int64 config.NumMelBins; int64 config.InputFrames |])
        let once (model: MagnetWhisperModel) =
            use g = Boundaries.generator 7L torch.CPU
            let input = { EncoderInput.Inference(mel, None) with Mode = Sample g; Rl = true }
            let sw = Stopwatch.StartNew()
            use out = model.Encode input
            sw.Elapsed.TotalSeconds, out.LayerLengths
        let lengths =
            [ for r, m in configurations ->
                  Output.progress quiet (match r with None -> "warming up without predictors" | Some r -> $"warming up r = {r}")
                  let mutable l = [||]
                  for _ in 1 .. max 1 warmup do
                      l <- snd (once m)
                  l ]
        let times = Array.init configurations.Length (fun _ -> ResizeArray<float>())
        for k in 1 .. repeats do
            Output.progress quiet $"round {k}/{repeats}"
            configurations |> List.iteri (fun i (_, m) -> times.[i].Add(fst (once m)))
        [ for i, (r, _) in List.indexed configurations ->
              { Ratio = r
                Lengths = lengths.[i]
                MedianSeconds = MagnetWhisper.Core.Statistics.median (times.[i].ToArray())
                Flops = MagnetEncoderFlops.perWindow config lengths.[i] * float batch } ]
    finally
        for _, m in configurations do m.Dispose()

/// Times the encoder of a model without predictors on utterances of the given durations (seconds) inside a 30 s
/// window: the full 3000 frames against the features cut to the utterance (MagnetWhisperModel.CutToLongest, the
/// variable-length input of models without absolute positions). Returns (seconds, full median, cut median, frames).
let measureDurations (whisper: WhisperModel) (durations: float list) (batch: int) (warmup: int) (repeats: int) (quiet: bool) =
    let config = whisper.Config
    use model = MagnetWhisperModel.FromWhisper(whisper, MagnetOptions.Default)
    model.eval()
    use _ = torch.inference_mode()
    use mel = torch.randn([| int64 batch; int64 config.NumMelBins; int64 config.InputFrames |])
    [ for d in durations ->
          Output.progress quiet $"timing a {d:g} s utterance"
          let valid = min config.InputFrames (int (Math.Round(d * 100.0)))
          use mask = torch.arange(int64 config.InputFrames).lt((int64 valid).ToScalar()).to_type(torch.float32).unsqueeze(0L).expand(int64 batch, -1L).contiguous()
          let cutMel, cutMask = model.CutToLongest(mel, Some mask)
          let time (m: torch.Tensor) (fm: torch.Tensor option) =
              let once () =
                  let sw = Stopwatch.StartNew()
                  (use _ = model.Encode(EncoderInput.Inference(m, fm)) in ())
                  sw.Elapsed.TotalSeconds
              for _ in 1 .. max 1 warmup do once () |> ignore
              MagnetWhisper.Core.Statistics.median (Array.init repeats (fun _ -> once ()))
          let full = time mel (Some mask)
          let cut = time cutMel cutMask
          d, full, cut, cutMel.shape.[2] ]

/// Prints the table for `bench encoder --predictors/--ratios`: the encoder without predictors, then with a BP1
/// before each given layer at each ratio. layers/ratios: the raw option values, or None for the defaults.
let report (whisper: WhisperModel) (description: string) (layers: string option) (ratios: string option) (batch: int) (warmup: int) (repeats: int) (quiet: bool) : int =
    let config = whisper.Config
    let layers =
        layers
        |> Option.map (fun s -> [ for x in s.Split(',', StringSplitOptions.RemoveEmptyEntries) -> int (x.Trim()) ])
        |> Option.defaultValue [ 1 ]
    for l in layers do
        if l < 0 || l >= config.EncoderLayers then invalidArg "predictors" $"layer {l} is outside 0..{config.EncoderLayers - 1}"
    let ratios =
        ratios
        |> Option.map (fun s -> [ for x in s.Split(',', StringSplitOptions.RemoveEmptyEntries) -> Double.Parse(x.Trim(), Globalization.CultureInfo.InvariantCulture) ])
        |> Option.defaultValue [ 2.0; 4.0; 8.0 ]
    for r in ratios do
        if not (r > 1.0) then invalidArg "ratios" $"ratio {r} must be above 1"
    let rows = measure whisper layers ratios batch warmup repeats quiet
    let baseline = rows.Head
    let layersText = String.Join(",", layers)
    printfn "encoder     %s: d_model %d, %d layers, %d heads, ffn %d; BP1 before layer(s) %s" description config.DModel config.EncoderLayers config.EncoderAttentionHeads config.EncoderFfnDim layersText
    printfn "runtime     %O %O, %d threads, batch %d, median of %d round-robin forwards, inference mode" whisper.Device whisper.DType (torch.get_num_threads ()) batch repeats
    printfn "%-12s %-28s %12s %10s %12s %10s %8s" "predictors" "positions per layer" "median" "speed-up" "GFLOP" "FLOP red." "ratio"
    for r in rows do
        let name = match r.Ratio with None -> "none" | Some x -> $"r = {x:g}"
        // Run-length form: "1500×3 386×9".
        let runs =
            r.Lengths
            |> Array.fold (fun acc l ->
                match acc with
                | (v, n) :: rest when v = l -> (v, n + 1) :: rest
                | _ -> (l, 1) :: acc) []
            |> List.rev
        let positions = String.Join(" ", runs |> List.map (fun (v, n) -> if n = 1 then string v else $"{v}×{n}"))
        let speedUp = baseline.MedianSeconds / r.MedianSeconds
        let reduction = baseline.Flops / r.Flops
        printfn "%-12s %-28s %9.0f ms %9.2f× %12.1f %9.2f× %8.2f" name positions (r.MedianSeconds * 1000.0) speedUp (r.Flops / 1e9) reduction (speedUp / reduction)
    printfn "(ratio = measured speed-up / FLOP reduction; FLOPs count convolutions and encoder layers, not the predictor)"
    printfn ""
    printfn "%-12s %12s %14s %14s %10s" "utterance" "mel frames" "30 s window" "cut input" "speed-up"
    for d, full, cut, frames in measureDurations whisper [ 5.0; 15.0 ] batch warmup repeats quiet do
        printfn "%-12s %12d %11.0f ms %11.0f ms %9.2f×" $"{d:g} s" frames (full * 1000.0) (cut * 1000.0) (full / cut)
    printfn "(no predictors; RoPE without absolute positions lets the encoder run only the frames an utterance needs)"
    0
