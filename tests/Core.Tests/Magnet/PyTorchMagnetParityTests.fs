/// Parity with an independent plain-PyTorch MagnetWhisper (tools/pytorch/magnet_reference.py, written from SPEC.md and
/// DECISIONS.md): a small random MagnetWhisper folder saved by our code is run by both on a padded batch, and the
/// per-predictor probabilities, boundaries, shortened masks and pooled segments, the encoder output and its mask, and
/// the decoder logits must agree in float32, for every predictor type and pooling, BP3's U-Net (both alignments) and
/// extra convolutions, for the model in memory and loaded back from its folder. Skipped when /usr/bin/python3 cannot
/// import torch (Debian: apt-get install python3-torch).
module MagnetWhisper.Tests.Magnet.PyTorchMagnetParityTests

open System
open System.IO
open Expecto
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Decoding
open MagnetWhisper.Tests.PythonReference
open MagnetWhisper.Tests.Whisper.WhisperReference
open MagnetWhisper.Tests.Magnet.MagnetFixtures

/// d_model 32 (4 encoder heads of 8, BP2/BP3 pooling heads of 4), 3 encoder and 2 decoder layers, 80 mel frames →
/// 40 encoder positions, vocabulary 97.
let private parityConfig = { config with MaxSourcePositions = 40 }

/// Valid mel frames per row of the batch: full, odd (29 encoder positions), short (15).
let private frameLengths = [| 80L; 57L; 30L |]

/// Elementwise tolerance: float32 noise of two implementations (|diff| ≤ atol + rtol·|ref|).
let private rtol, atol = 1e-4, 1e-5

/// No probability may lie this close to the threshold, or a float32 rounding could flip a boundary.
let private thresholdMargin = 1e-4

type private Case =
    { Name: string
      Slots: PredictorSlot list
      ConvStrides: int list
      Masked: bool
      Seed: int64 }

let private slot (layer: int) (kind: PredictorKind) (pooling: PoolingKind) =
    { PredictorSlot.Create(layer, kind, 0.25) with Predictor = { PredictorConfig.Default(kind, 0.25) with Pooling = pooling } }

let private single kind pooling seed =
    { Name = $"{kind} {pooling}"; Slots = [ slot 1 kind pooling ]; ConvStrides = []; Masked = true; Seed = seed }

let private cases =
    [ single Bp1 AttentionPooling 101L
      single Bp1 MeanPooling 102L
      single Bp2 AttentionPooling 103L
      single Bp2 MeanPooling 104L
      single Bp3 AttentionPooling 105L
      single Bp3 MeanPooling 106L
      single Bp4 MeanPooling 107L
      { Name = "BP3 with the original's cropped U-Net"
        Slots = [ { slot 1 Bp3 AttentionPooling with Predictor = { (slot 1 Bp3 AttentionPooling).Predictor with UNetAlignment = OriginalCrop } } ]
        ConvStrides = []; Masked = true; Seed = 108L }
      { Name = "BP1 before layer 0 and BP3 before layer 2, extra convolution of stride 2"
        Slots = [ slot 0 Bp1 MeanPooling; slot 2 Bp3 AttentionPooling ]
        ConvStrides = [ 2 ]; Masked = true; Seed = 109L }
      { Name = "BP4 and BP2 without a frame mask, extra convolutions of strides 2, 1"
        Slots = [ slot 0 Bp4 MeanPooling; slot 1 Bp2 AttentionPooling ]
        ConvStrides = [ 2; 1 ]; Masked = false; Seed = 110L } ]

let private stateOf (m: MagnetWhisperModel) (name: string) = stateTensor m name

/// Perturbs every predictor and extra-convolution tensor (BatchNorm running statistics included), so that no
/// identity initialisation, zero bias or unit running variance hides a wrong formula.
let private perturb (m: MagnetWhisperModel) (seed: int64) =
    torch.manual_seed seed |> ignore
    use _ = torch.no_grad()
    for name, t in m.State do
        if (name.Contains ".boundary_predictors." || name.Contains ".additional_convs.") && t.is_floating_point() then
            if name.EndsWith "running_var" then t.copy_(torch.rand_like(t) + 0.5) |> ignore
            else t.add_(torch.randn_like(t) * 0.3) |> ignore

/// The valid frames of a predictor's rows that its threshold decides: all but each row's last valid frame (forced),
/// and for BP4 not frames 0 and 1 (their logit is fixed at −10). (B, L) bool.
let private decidedFrames (kind: PredictorKind) (valid: float[]) (length: int64) =
    let rows = valid.Length
    let m = Array2D.init rows (int length) (fun b l -> l < int valid.[b] - 1 && (kind <> Bp4 || l >= 2))
    torch.tensor(Array.init (rows * int length) (fun i -> m.[i / int length, i % int length])).reshape(int64 rows, length)

/// Moves a predictor's final bias so that its threshold falls in the widest gap between probabilities near the median
/// of the decided frames: segments of several lengths occur and no probability sits at the threshold.
let private spreadAroundThreshold (m: MagnetWhisperModel) (layer: int) (output: PredictorOutput) (kind: PredictorKind) (threshold: float) =
    use decided = decidedFrames kind (Tensors.toFloatArray output.ValidCounts) output.Probabilities.shape.[1]
    let p = Tensors.toFloatArray (output.Probabilities.masked_select decided) |> Array.sort
    let n = p.Length
    let k = [ n / 3 .. 2 * n / 3 - 1 ] |> List.maxBy (fun i -> p.[i + 1] - p.[i])
    let target = (p.[k] + p.[k + 1]) / 2.0
    let prefix = $"model.encoder.boundary_predictors.{layer}."
    use _ = torch.no_grad()
    let logit (x: float) = Math.Log(x / (1.0 - x))
    match kind with
    // p = σ(z + b): adding logit(threshold) − logit(target) to b maps target to the threshold.
    | Bp1 -> (stateOf m (prefix + "boundary_mlp.2.bias")).add_((logit threshold - logit target).ToScalar()) |> ignore
    | Bp4 -> (stateOf m (prefix + "boundary_conv.2.bias")).add_((logit threshold - logit target).ToScalar()) |> ignore
    // p = (1 − (s + β))/2: adding 2·(target − threshold) to β maps target to the threshold.
    | Bp2 | Bp3 -> (stateOf m (prefix + "similarity_bias")).add_((2.0 * (target - threshold)).ToScalar()) |> ignore

/// The lengths of a row's segments from its boundaries (frames up to and including each boundary).
let private segmentLengths (boundaries: float[]) =
    let ends = boundaries |> Array.indexed |> Array.filter (fun (_, b) -> b = 1.0) |> Array.map fst
    Array.append [| ends.[0] + 1 |] (Array.pairwise ends |> Array.map (fun (a, b) -> b - a))

let private npy (dir: string) (name: string) = Npy.read (Path.Combine(dir, name))

/// Expects every element within the tolerance and prints the largest difference.
let private expectClose (what: string) (ours: torch.Tensor) (theirs: torch.Tensor) =
    Expect.sequenceEqual ours.shape theirs.shape $"{what}: shape"
    let worst, bad = compare rtol atol ours theirs
    eprintfn "  %s: max |diff| %.3g" what worst
    Expect.equal bad 0L $"{what}: elements outside {atol} + {rtol}·|ref| (max |diff| {worst:g})"

let private runReference (folder: string) (mel: string) (mask: string option) (tokens: string) (out: string) =
    let script = script "magnet_reference.py"
    Expect.isTrue (File.Exists script) $"reference script {script}"
    let maskArgs = mask |> Option.map (fun m -> [ "--mask"; m ]) |> Option.defaultValue []
    let code, stdout, stderr =
        runProcess python ([ script; folder; "--mel"; mel ] @ maskArgs @ [ "--tokens"; tokens; "--out"; out; "--threads"; "1" ]) 120000
    if code <> 0 then failtest $"magnet_reference.py exited with {code}:\n{stdout}\n{stderr}"

let private check (case: Case) =
    requireTorch ()
    use _ = torch.NewDisposeScope()
    use temp = new Temp()
    let options =
        let withSlots = case.Slots |> List.fold (fun (o: MagnetOptions) s -> o.WithSlot s) MagnetOptions.Default
        if case.ConvStrides.IsEmpty then withSlots else withSlots.WithConvStrides(parityConfig.DModel, case.ConvStrides)
    use m = magnet case.Seed parityConfig options
    perturb m (case.Seed + 1L)
    let mel, frameMask = paddedMel (case.Seed + 2L) parityConfig frameLengths
    let mask = if case.Masked then Some frameMask else None
    let tokens = randomTokens (case.Seed + 3L) parityConfig 3L 5L
    let encode () = m.Encode(mel, mask)
    // Predictors in layer order: each one's threshold is placed among its probabilities on the states it now gets.
    for s in case.Slots do
        use enc = encode ()
        let layer = enc.Layers |> List.find (fun l -> l.Index = s.Layer)
        spreadAroundThreshold m s.Layer layer.Output s.Predictor.Kind s.Predictor.Threshold
    let folder = temp.Sub "model"
    MagnetFormat.save folder m
    let melPath, maskPath, tokensPath, out = temp.Sub "mel.npy", temp.Sub "mask.npy", temp.Sub "tokens.npy", temp.Sub "reference"
    Npy.write melPath mel
    Npy.write maskPath frameMask
    Npy.write tokensPath tokens
    runReference folder melPath (if case.Masked then Some maskPath else None) tokensPath out
    use _ = torch.no_grad()
    let compareAll (model: MagnetWhisperModel) (label: string) =
        use enc = model.Encode(mel, mask)
        let speech = model :> ISpeechModel
        let step = speech.Decode(tokens, { Hidden = enc.Hidden; Mask = Some enc.Mask }, None, None)
        eprintfn "MagnetWhisper PyTorch parity (%s%s):" case.Name label
        let failures = ResizeArray<string>()
        let attempt (what: string) (f: unit -> unit) =
            try f () with e -> failures.Add $"{what}: {e.Message}"
        for l in enc.Layers do
            let o = l.Output
            let predictor = (case.Slots |> List.find (fun s -> s.Layer = l.Index)).Predictor
            let refP = npy out $"layer{l.Index}_probabilities.npy"
            use decided = decidedFrames predictor.Kind (Tensors.toFloatArray o.ValidCounts) refP.shape.[1]
            attempt $"layer {l.Index} probabilities" (fun () ->
                expectClose $"layer {l.Index} probabilities (decided frames)" (o.Probabilities.masked_select decided) (refP.masked_select decided))
            if label = "" then
                // The test is only meaningful when no probability is at the threshold and the segments vary.
                let nearest = Tensors.toFloat ((refP.masked_select decided - predictor.Threshold).abs().min())
                Expect.isGreaterThan nearest thresholdMargin $"layer {l.Index}: a probability within {thresholdMargin} of the threshold"
                let lengths =
                    [ for b in 0L .. o.Boundaries.shape.[0] - 1L do
                          let valid = int (Tensors.toFloatArray o.ValidCounts).[int b]
                          if valid > 0 then yield! segmentLengths (Tensors.toFloatArray (o.Boundaries.[b].narrow(0L, 0L, int64 valid))) ]
                Expect.isGreaterThanOrEqual (List.distinct lengths).Length 3 $"layer {l.Index}: segments of several lengths ({lengths})"
            attempt $"layer {l.Index} boundaries" (fun () ->
                MagnetWhisper.Tests.Reference.close 0.0 $"layer {l.Index} boundaries" o.Boundaries (npy out $"layer{l.Index}_boundaries.npy"))
            attempt $"layer {l.Index} mask" (fun () ->
                MagnetWhisper.Tests.Reference.close 0.0 $"layer {l.Index} shortened mask" o.Mask (npy out $"layer{l.Index}_mask.npy"))
            attempt $"layer {l.Index} pooled" (fun () -> expectClose $"layer {l.Index} pooled" o.Pooled (npy out $"layer{l.Index}_pooled.npy"))
        attempt "encoder mask" (fun () -> MagnetWhisper.Tests.Reference.close 0.0 "encoder mask" enc.Mask (npy out "encoder_mask.npy"))
        attempt "encoder output" (fun () -> expectClose "encoder output" enc.Hidden (npy out "encoder.npy"))
        attempt "logits" (fun () -> expectClose "logits" step.Logits (npy out "logits.npy"))
        for t in step.Cache.Tensors do
            t.Dispose()
        List.ofSeq failures
    let failures = compareAll m ""
    if not failures.IsEmpty then failtest (String.Join("\n", failures))
    // The folder loaded back gives the same numbers.
    use loaded = MagnetFormat.load folder torch.CPU torch.float32
    let loadedFailures = compareAll loaded ", loaded from the saved folder"
    if not loadedFailures.IsEmpty then failtest (String.Join("\n", loadedFailures))
    // The comparison can fail: a 1e-2 change of one predictor tensor or of the final LayerNorm bias shows up.
    let probe =
        let s = case.Slots.Head
        let prefix = $"model.encoder.boundary_predictors.{s.Layer}."
        match s.Predictor.Kind with
        | Bp1 | Bp2 -> prefix + "boundary_mlp.0.bias"
        | Bp3 -> prefix + "unet.refine_conv.bias"
        | Bp4 -> prefix + "boundary_conv.0.bias"
    for name, what in [ probe, "probabilities"; "model.encoder.layer_norm.bias", "encoder output" ] do
        let t = stateOf m name
        use saved = t.clone()
        t.add_((1e-2).ToScalar()) |> ignore
        let perturbed = compareAll m $", {name} + 1e-2"
        Expect.exists perturbed (fun f -> f.Contains what) $"a 1e-2 change of {name} is detected in the {what}"
        t.copy_(saved) |> ignore

/// BP3's U-Net alone (evaluation mode, perturbed weights and running statistics, a padded batch of odd and even
/// lengths) against the reference's; the output of every frame must agree.
let private checkUNet (alignment: UNetAlignment) =
    requireTorch ()
    use _ = torch.NewDisposeScope()
    use temp = new Temp()
    let dim = 16
    torch.manual_seed 201L |> ignore
    use unet = new UNet1D(dim, 0.1, alignment)
    unet.eval()
    let state = unet.state_dict()
    use _ = torch.no_grad()
    for KeyValue(name, t) in state do
        if name.EndsWith "running_var" then t.copy_(torch.rand_like(t) + 0.5) |> ignore
        elif t.is_floating_point() then t.add_(torch.randn_like(t) * 0.3) |> ignore
    for l, lens in [ 13L, [| 13L; 8L; 5L |]; 10L, [| 10L; 7L; 2L |] ] do
        let x = torch.randn(int64 lens.Length, l, int64 dim)
        let mask = frameMask l lens
        let dir = temp.Sub $"unet-{l}"
        Directory.CreateDirectory dir |> ignore
        for KeyValue(name, t) in state do
            if t.is_floating_point() then Npy.write (Path.Combine(dir, name + ".npy")) t
        Npy.write (Path.Combine(dir, "x.npy")) x
        Npy.write (Path.Combine(dir, "mask.npy")) mask
        let name = match alignment with Aligned -> "aligned" | OriginalCrop -> "original_crop"
        let code, stdout, stderr = runProcess python [ script "magnet_reference.py"; "--unet"; dir; "--alignment"; name; "--threads"; "1" ] 120000
        if code <> 0 then failtest $"magnet_reference.py --unet exited with {code}:\n{stdout}\n{stderr}"
        let ours = unet.Run(x, Some mask, None)
        let theirs = npy dir "y.npy"
        expectClose $"{alignment} U-Net, L = {l}" ours theirs
        // The comparison can fail: a 1e-2 change of the final BatchNorm's bias shows up.
        let bias = state.["decoder_norm2.bias"]
        bias.add_((1e-2).ToScalar()) |> ignore
        let _, bad = compare rtol atol (unet.Run(x, Some mask, None)) theirs
        bias.sub_((1e-2).ToScalar()) |> ignore
        Expect.isGreaterThan bad 0L "a 1e-2 change of decoder_norm2.bias is detected"

[<Tests>]
let tests =
    testList "magnet" [
        testList "pytorch parity" [
            for c in cases do
                yield test c.Name { check c }
            yield test "BP3's aligned U-Net equals the reference's (padded batch, odd and even L)" { checkUNet Aligned }
            yield test "BP3's original cropped U-Net equals the reference's" { checkUNet OriginalCrop }
        ]
    ]
