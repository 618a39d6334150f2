/// The four boundary predictors: shapes and masks, the forced last boundary, statistics, losses, log-probabilities,
/// samples and pooled outputs against float64 formulas written out in the tests (Formulas.fs), determinism and batch invariance at inference, seeded reproducibility while
/// sampling, where gradients flow (count loss, downsample, RL log-probability), state-dict names and initialisation.
module MagnetWhisper.Tests.Magnet.PredictorTests

open System
open Expecto
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Segments
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Tests.Reference

type Tensor = torch.Tensor

// ---------------------------------------------------------------------------------------------------------------
// Fixtures

/// Width D (divisible by 8 for BP2/BP3 pooling, even for BP3's U-Net).
let private dim = 16

/// Valid frames per row: B = 3, L = 13 (odd), two padded rows.
let private lengths = [| 13L; 9L; 4L |]

let private batchSize = int64 lengths.Length
let private maxLength = Array.max lengths

/// Target boundary counts per row.
let private targetValues = [| 4.0; 3.0; 1.0 |]

let private sc (x: float) = Scalar.op_Implicit x

/// (B, L) 0/1 prefix mask of the given lengths.
let private maskOf (lens: int64[]) (l: int64) : Tensor =
    let positions = torch.arange(l, dtype = torch.int64).unsqueeze(0L)
    positions.lt(torch.tensor(lens).unsqueeze(1L)).to_type(torch.float32)

/// Piecewise-constant hidden states (B, L, D): segments of 1–4 frames share a random prototype plus noise 0.3, so that
/// the similarity scorers of BP2/BP3 find real boundaries; padded frames hold large garbage. Returns hidden and mask.
let private batchData (seed: int64) (lens: int64[]) (l: int64) : Tensor * Tensor =
    use g = Boundaries.generator seed torch.CPU
    let rng = Random(int seed)
    let b = int64 lens.Length
    let segmentOf = Array.init (int (b * l)) (fun _ -> 0L)
    for row in 0 .. int b - 1 do
        let mutable t = 0
        let mutable id = int64 row * l
        while t < int l do
            let len = 1 + rng.Next 4
            for f in t .. min (int l) (t + len) - 1 do
                segmentOf.[row * int l + f] <- id
            id <- id + 1L
            t <- t + len
    let prototypes = torch.randn([| b * l; int64 dim |], generator = g)
    let hidden = prototypes.index_select(0L, torch.tensor(segmentOf)).reshape(b, l, int64 dim)
    let noisy = hidden + torch.randn([| b; l; int64 dim |], generator = g) * 0.3
    let garbage = torch.randn([| b; l; int64 dim |], generator = g) * 50.0
    let mask = maskOf lens l
    torch.where(mask.unsqueeze(-1L).gt(sc 0.0), noisy, garbage), mask

let private targets () = torch.tensor(targetValues, dtype = torch.float32)

/// A named parameter of a module.
let private param (m: torch.nn.Module) (name: string) : Modules.Parameter =
    m.named_parameters() |> Seq.pick (fun struct (n, p) -> if n = name then Some p else None)

/// The parameter the scorer starts with (gets no gradient from attention-pooled outputs).
let private scorerParameter (kind: PredictorKind) =
    match kind with
    | Bp1 | Bp2 -> "boundary_mlp.0.weight"
    | Bp3 -> "q_mlp.0.weight"
    | Bp4 -> "boundary_conv.0.weight"

/// Every parameter of the scorer alone (not the pooling, not BP3's U-Net).
let private scorerParameters (kind: PredictorKind) =
    match kind with
    | Bp1 -> [ "boundary_mlp.0.weight"; "boundary_mlp.0.bias"; "boundary_mlp.2.weight"; "boundary_mlp.2.bias" ]
    | Bp2 ->
        [ "boundary_mlp.0.weight"; "boundary_mlp.2.weight"; "q_proj_layer.weight"; "k_proj_layer.weight"; "similarity_bias" ]
    | Bp3 -> [ "q_mlp.0.weight"; "k_mlp.2.weight"; "q_proj_layer.weight"; "k_proj_layer.weight"; "similarity_bias" ]
    | Bp4 -> [ "boundary_conv.0.weight"; "boundary_conv.2.bias" ]

/// Norm of a parameter's gradient (0 when it has none).
let private gradNorm (p: Modules.Parameter) =
    match p.grad with
    | null -> 0.0
    | g -> Tensors.toFloat (g.norm())

/// The predictor/pooling combinations under test.
let private cases =
    [ Bp1, AttentionPooling; Bp1, MeanPooling; Bp2, AttentionPooling; Bp2, MeanPooling; Bp3, AttentionPooling
      Bp3, MeanPooling; Bp4, MeanPooling ]

let private caseName (kind: PredictorKind, pooling: PoolingKind) = $"{kind}/{pooling}"

/// A predictor with seeded initial weights. BP1/BP4's final bias is set to 0 so that boundaries are frequent
/// (the −2.5 initialisation is checked separately).
let private build (kind: PredictorKind, pooling: PoolingKind) (seed: int64) : BoundaryPredictor =
    torch.manual_seed seed |> ignore
    let predictor = Predictors.create { PredictorConfig.Default(kind, 0.25) with Pooling = pooling } dim
    use _ = torch.no_grad ()
    match kind with
    | Bp1 -> (param predictor "boundary_mlp.2.bias").fill_(0.0) |> ignore
    | Bp4 -> (param predictor "boundary_conv.2.bias").fill_(0.0) |> ignore
    | Bp2 | Bp3 -> ()
    predictor

let private rowOf (t: Tensor) (beta: int) = Tensors.toFloatArray (t.select(0L, int64 beta))

let private inference (hidden: Tensor) (mask: Tensor option) = PredictorInput.Create(hidden, mask, Threshold)

let private sampling (generator: torch.Generator) (hidden: Tensor) (mask: Tensor) =
    { PredictorInput.Create(hidden, Some mask, Sample generator) with Targets = Some(targets ()) }

/// Shapes, the shortened mask, the forced last boundary and nothing past the mask.
let private checkStructure (what: string) (o: PredictorOutput) =
    let b = batchSize
    let counts = Tensors.toFloatArray o.BoundaryCounts
    let s = int64 (Array.max counts)
    Expect.sequenceEqual o.Pooled.shape [| b; s; int64 dim |] $"{what}: pooled (B, S, D)"
    Expect.sequenceEqual o.Mask.shape [| b; s |] $"{what}: mask (B, S)"
    for name, t in
        [ "loss per utterance", o.LossPerUtterance; "counts", o.BoundaryCounts; "valid", o.ValidCounts
          "confidence", o.Confidence; "entropy", o.Entropy; "cv", o.SpacingCv; "cv defined", o.CvDefined
          "adjacency", o.Adjacency ] do
        Expect.sequenceEqual t.shape [| b |] $"{what}: {name} (B,)"
    Expect.equal o.Loss.Dimensions 0L $"{what}: loss is 0-d"
    Expect.sequenceEqual o.Boundaries.shape [| b; maxLength |] $"{what}: boundaries (B, L)"
    Expect.sequenceEqual (Tensors.toFloatArray o.ValidCounts) (lengths |> Array.map float) $"{what}: valid counts"
    for beta in 0 .. int b - 1 do
        let n = int counts.[beta]
        let expectedMask = Array.init (int s) (fun j -> if j < n then 1.0 else 0.0)
        Expect.sequenceEqual (rowOf o.Mask beta) expectedMask $"{what}: shortened mask row {beta}"
        let bs = rowOf o.Boundaries beta
        let ps = rowOf o.Probabilities beta
        let len = int lengths.[beta]
        Expect.equal bs.[len - 1] 1.0 $"{what}: forced boundary at the last valid frame of row {beta}"
        for j in len .. bs.Length - 1 do
            Expect.equal bs.[j] 0.0 $"{what}: no boundary past the mask (row {beta}, frame {j})"
            Expect.equal ps.[j] 0.0 $"{what}: no probability past the mask (row {beta}, frame {j})"
        Expect.isTrue (bs |> Array.forall (fun v -> v = 0.0 || v = 1.0)) $"{what}: boundaries are 0/1"
        Expect.equal (Array.sum bs) counts.[beta] $"{what}: counts are the row sums"
    Expect.isFalse (Tensors.toFloatArray o.Pooled |> Array.exists Double.IsNaN) $"{what}: pooled has no NaN"

/// Valid frames of each row as a 0/1 float64 array of length L.
let private validRow (len: int64) (l: int64) = Array.init (int l) (fun f -> if int64 f < len then 1.0 else 0.0)

/// The statistics equal their definitions (SPEC §4.2 step 8, DECISIONS #5) written out in float64 from the returned
/// probabilities and boundaries.
let private checkStats (what: string) (o: PredictorOutput) (lens: int64[]) =
    let p, b = Formulas.rows o.Probabilities, Formulas.rows o.Boundaries
    let l = o.Boundaries.shape.[1]
    let m = lens |> Array.map (fun len -> validRow len l)
    let g = Array.init lens.Length (fun r -> Formulas.gaps b.[r] (int lens.[r]))
    let perRow f = Array.init lens.Length f
    let check name (actual: Tensor) expected = Formulas.expectClose 1e-5 $"{what}: {name}" (Tensors.toFloatArray actual) expected
    check "counts" o.BoundaryCounts (perRow (fun r -> Array.sum b.[r]))
    check "valid" o.ValidCounts (lens |> Array.map float)
    check "confidence" o.Confidence (perRow (fun r -> Formulas.confidence p.[r] m.[r]))
    check "entropy" o.Entropy (perRow (fun r -> Formulas.entropy p.[r] m.[r]))
    let cv = perRow (fun r -> Formulas.spacingCv g.[r])
    check "cv" o.SpacingCv cv
    let defined = perRow (fun r -> g.[r].Length >= 2)
    check "cv defined" (o.CvDefined.to_type(torch.float32)) (defined |> Array.map (fun d -> if d then 1.0 else 0.0))
    let definedCv = Array.zip cv defined |> Array.filter snd |> Array.map fst
    check "mean cv" o.MeanSpacingCv [| (if definedCv.Length = 0 then 0.0 else Array.average definedCv) |]
    check "adjacency" o.Adjacency (perRow (fun r -> Formulas.adjacencyFraction g.[r]))
    let all = Array.concat g
    check "adjacency overall" o.AdjacencyOverall [| Formulas.adjacencyFraction all |]
    Expect.isFalse (Tensors.toFloatArray o.SpacingCv |> Array.exists Double.IsNaN) $"{what}: CV is never NaN"

/// Σ over each row's valid frames except its last (forced, not an action) of b ln p + (1 − b) ln(1 − p), float64.
let private expectedLogProb (o: PredictorOutput) (lens: int64[]) =
    let p, b = Formulas.rows o.Probabilities, Formulas.rows o.Boundaries
    let l = o.Boundaries.shape.[1]
    Array.init lens.Length (fun r -> Formulas.logProb p.[r] b.[r] (validRow (lens.[r] - 1L) l))

/// The loss the output should have, written out in float64 (SPEC §3, §4.2 steps 6–7, §4.4) from its own counts.
let private expectedLoss (config: PredictorConfig) (input: PredictorInput) (o: PredictorOutput) (lens: int64[]) =
    let k, n = Tensors.toFloatArray o.BoundaryCounts, lens |> Array.map float
    let b = Formulas.rows o.Boundaries
    let l = o.Boundaries.shape.[1]
    let schedule = input.Schedule
    let t = input.Targets |> Option.map Tensors.toFloatArray
    Array.init lens.Length (fun r ->
        match input.Mode with
        | Threshold -> 0.0
        | Sample _ | Replay _ when input.Rl ->
            let prior = Formulas.scheduledPrior config.Prior schedule.PriorSchedule
            let binomial = Formulas.binomialFromPrior prior k.[r] n.[r]
            let capped = if config.Kind = Bp1 then min binomial 1.0 else binomial
            let m = validRow lens.[r] l
            capped + Formulas.repulsion b.[r] m + Formulas.adjacentPenalty b.[r] m
        | Sample _ | Replay _ ->
            match config.Kind, t with
            | (Bp1 | Bp4), Some t ->
                10.0 * Formulas.binomialFromTarget k.[r] n.[r] (Formulas.compressionTarget schedule.CompressionSchedule n.[r] t.[r])
            | (Bp2 | Bp3), Some t -> 10.0 * Formulas.binomialFromTarget k.[r] n.[r] t.[r]
            | Bp3, None ->
                let prior = Formulas.scheduledPrior config.Prior schedule.PriorSchedule
                10.0 * schedule.BoundaryLossWeight * Formulas.binomialFromPrior prior k.[r] n.[r]
            | _, None -> failwith "no targets")

let private schedule =
    { Temperature = 0.7; CompressionSchedule = 0.5; PriorSchedule = 0.5; BoundaryLossWeight = 0.7; TargetProgress = 1.0 }

// ---------------------------------------------------------------------------------------------------------------
// Expected state-dict keys (SPEC §6.9)

let private attentionKeys1 = [ "pool_query"; "pool_key.weight"; "pool_value.weight"; "pool_output.weight" ]

let private attentionKeys8 =
    [ "learned_query"; "pool_key.weight"; "pool_value.weight"; "pool_output.weight"; "pool_layernorm.weight"
      "pool_layernorm.bias" ]

let private mlpKeys (prefix: string) =
    [ for i in [ 0; 2 ] do
          for p in [ "weight"; "bias" ] -> $"{prefix}.{i}.{p}" ]

let private unetKeys =
    [ for conv in [ "encoder_conv"; "bottleneck_conv"; "decoder_conv"; "refine_conv" ] do
          for p in [ "weight"; "bias" ] -> $"unet.{conv}.{p}"
      for norm in [ "encoder_norm"; "bottleneck_norm"; "decoder_norm1"; "decoder_norm2" ] do
          for p in [ "weight"; "bias"; "running_mean"; "running_var"; "num_batches_tracked" ] -> $"unet.{norm}.{p}" ]

let private expectedKeys (kind: PredictorKind) (pooling: PoolingKind) =
    let similarity = [ "q_proj_layer.weight"; "k_proj_layer.weight"; "similarity_bias" ]
    let pool keys = if pooling = AttentionPooling then keys else []
    match kind with
    | Bp1 -> mlpKeys "boundary_mlp" @ pool attentionKeys1
    | Bp2 -> mlpKeys "boundary_mlp" @ similarity @ pool attentionKeys8
    | Bp3 -> unetKeys @ mlpKeys "q_mlp" @ mlpKeys "k_mlp" @ similarity @ pool attentionKeys8
    | Bp4 -> mlpKeys "boundary_conv"

let private keysOf (m: torch.nn.Module) = m.state_dict().Keys |> Seq.sort |> List.ofSeq

/// A parent that registers a predictor as its submodule "3", as an encoder's slot list would.
type private Parent(child: BoundaryPredictor) as this =
    inherit torch.nn.Module<Tensor, Tensor>("Parent")
    do this.register_module("3", child)
    override _.forward(x: Tensor) = x

// ---------------------------------------------------------------------------------------------------------------
// Tests

let private perCase (name: string) (body: PredictorKind * PoolingKind -> unit) =
    testList name [
        for c in cases ->
            testCase (caseName c) (fun () ->
                use _ = torch.NewDisposeScope()
                body c)
    ]

[<Tests>]
let tests =
    testList "predictors" [
        perCase "inference: shapes, shortened mask, forced last boundary, nothing past the mask, statistics" (fun c ->
            use p = build c 1L
            p.eval ()
            let hidden, mask = batchData 11L lengths maxLength
            use o = p.forward(inference hidden (Some mask))
            checkStructure "inference" o
            let counts = Tensors.toFloatArray o.BoundaryCounts
            Expect.isTrue (Array.exists2 (fun k n -> k > 1.0 && k < float n) counts lengths) $"a non-trivial segmentation: {counts}"
            checkStats "inference" o lengths
            Expect.equal (Tensors.toFloat o.Loss) 0.0 "inference loss is 0"
            Expect.isNone o.LogProb "no log-probability at inference"
            // The threshold decides (DECISIONS #5): boundaries are 1[p > threshold] masked, last valid frame forced.
            let probabilities = Formulas.rows o.Probabilities
            for r in 0 .. lengths.Length - 1 do
                Expect.sequenceEqual (rowOf o.Boundaries r) (Formulas.thresholdBoundaries p.Config.Threshold probabilities.[r] (int lengths.[r]))
                    $"row {r}: 1[p > threshold] on valid frames, last valid frame forced")

        perCase "sampling: shapes, shortened mask, forced last boundary, statistics, log-probability" (fun c ->
            use p = build c 2L
            p.train ()
            let hidden, mask = batchData 12L lengths maxLength
            use g = Boundaries.generator 5L torch.CPU
            use o = p.forward(sampling g hidden mask)
            checkStructure "sampling" o
            checkStats "sampling" o lengths
            match o.LogProb with
            | Some lp ->
                Formulas.expectClose 1e-5 "log-prob over the sampled (unforced) frames" (Tensors.toFloatArray lp) (expectedLogProb o lengths)
            | None -> failtest "sampling returns a log-probability")

        perCase "inference is deterministic and batch-invariant (a row alone = the row in a padded batch)" (fun c ->
            use p = build c 3L
            p.eval ()
            let hidden, mask = batchData 13L lengths maxLength
            use o = p.forward(inference hidden (Some mask))
            use again = p.forward(inference hidden (Some mask))
            for name, a, b in [ "pooled", o.Pooled, again.Pooled; "boundaries", o.Boundaries, again.Boundaries
                                "p", o.Probabilities, again.Probabilities ] do
                close 0.0 $"same output twice: {name}" a b
            let counts = Tensors.toFloatArray o.BoundaryCounts
            for beta in 0 .. lengths.Length - 1 do
                let len = lengths.[beta]
                let alone = hidden.narrow(0L, int64 beta, 1L).narrow(1L, 0L, len)
                use a = p.forward(inference alone None)
                let n = int64 counts.[beta]
                let inBatch (t: Tensor) = t.narrow(0L, int64 beta, 1L)
                close 1e-5 $"row {beta}: boundaries" a.Boundaries ((inBatch o.Boundaries).narrow(1L, 0L, len))
                close 1e-5 $"row {beta}: probabilities" a.Probabilities ((inBatch o.Probabilities).narrow(1L, 0L, len))
                close 1e-5 $"row {beta}: pooled segments" a.Pooled ((inBatch o.Pooled).narrow(1L, 0L, n))
                for name, x, y in
                    [ "counts", a.BoundaryCounts, inBatch o.BoundaryCounts; "confidence", a.Confidence, inBatch o.Confidence
                      "entropy", a.Entropy, inBatch o.Entropy; "cv", a.SpacingCv, inBatch o.SpacingCv
                      "adjacency", a.Adjacency, inBatch o.Adjacency ] do
                    close 1e-5 $"row {beta}: {name}" x y)

        perCase "sampling is reproducible with the same seed, dropout included" (fun c ->
            use p = build c 4L
            p.train ()
            let hidden, mask = batchData 14L lengths maxLength
            let run seed =
                use g = Boundaries.generator seed torch.CPU
                p.forward(sampling g hidden mask)
            use a = run 21L
            use b = run 21L
            use other = run 22L
            for name, x, y in
                [ "pooled", a.Pooled, b.Pooled; "boundaries", a.Boundaries, b.Boundaries; "loss", a.Loss, b.Loss
                  "p", a.Probabilities, b.Probabilities; "log-prob", a.LogProb.Value, b.LogProb.Value ] do
                close 0.0 $"same seed: {name}" x y
            Expect.isGreaterThan (maxAbsDiff a.Probabilities other.Probabilities + maxAbsDiff a.Boundaries other.Boundaries) 0.0
                "another seed: other dropout or other samples")

        perCase "the loss equals the direct formula (supervised, RL, inference)" (fun c ->
            use p = build c 5L
            p.train ()
            let hidden, mask = batchData 15L lengths maxLength
            let check (what: string) (input: PredictorInput) =
                use o = p.forward input
                let expected = expectedLoss p.Config input o lengths
                Formulas.expectClose 1e-5 $"{what}: per utterance" (Tensors.toFloatArray o.LossPerUtterance) expected
                Formulas.expectClose 1e-5 $"{what}: mean" [| Tensors.toFloat o.Loss |] [| Array.average expected |]
            use g = Boundaries.generator 31L torch.CPU
            let supervised = { sampling g hidden mask with Schedule = schedule }
            check "supervised" supervised
            check "RL" { supervised with Rl = true; Targets = None }
            check "inference" { supervised with Mode = Threshold }
            if fst c = Bp3 then
                check "BP3 without targets" { supervised with Targets = None }
                use o = p.forward { supervised with Targets = None; Schedule = Schedule.Default }
                Expect.equal (Tensors.toFloat o.Loss) 0.0 "BP3 without targets and the default weight 0: loss 0")

        perCase "the count loss trains the scorer" (fun c ->
            use p = build c 6L
            p.train ()
            let hidden, mask = batchData 16L lengths maxLength
            use g = Boundaries.generator 41L torch.CPU
            use o = p.forward { sampling g hidden mask with Schedule = schedule }
            o.Loss.backward ()
            Expect.isGreaterThan (gradNorm (param p (scorerParameter (fst c)))) 0.0 "scorer gradient from the count loss")

        perCase "a loss on the pooled output alone reaches the scorer only with mean pooling (DECISIONS #7)" (fun c ->
            let kind, pooling = c
            use p = build c 7L
            p.train ()
            let hidden, mask = batchData 17L lengths maxLength
            use g = Boundaries.generator 51L torch.CPU
            use o = p.forward(sampling g hidden mask)
            use w = torch.randn_like(o.Pooled)
            (o.Pooled * w).sum().backward ()
            let norms = scorerParameters kind |> List.map (fun name -> name, gradNorm (param p name))
            match pooling with
            | MeanPooling ->
                Expect.isGreaterThan (snd norms.Head) 0.0 $"{fst norms.Head}: gradient through downsample"
            | AttentionPooling ->
                for name, norm in norms do
                    Expect.equal norm 0.0 $"{name}: no gradient through attention pooling")

        perCase "RL: the sampled boundaries are pooled and the log-probability has a gradient" (fun c ->
            use p = build c 8L
            p.train ()
            let hidden, mask = batchData 18L lengths maxLength
            use g = Boundaries.generator 61L torch.CPU
            let input = { PredictorInput.Create(hidden, Some mask, Sample g) with Rl = true }
            use o = p.forward input
            checkStructure "RL" o
            let counts = Tensors.toFloatArray o.BoundaryCounts
            Expect.equal o.Pooled.shape.[1] (int64 (Array.max counts)) "pooled length follows the samples"
            Expect.isTrue (Array.exists2 (fun k n -> k < float n) counts lengths) "the samples are not all ones"
            Formulas.expectClose 1e-5 "RL loss" (Tensors.toFloatArray o.LossPerUtterance) (expectedLoss p.Config input o lengths)
            let lp = o.LogProb.Value
            Formulas.expectClose 1e-5 "log-prob of the samples" (Tensors.toFloatArray lp) (expectedLogProb o lengths)
            Expect.isTrue lp.requires_grad "log-prob is differentiable"
            lp.sum().backward ()
            Expect.isGreaterThan (gradNorm (param p (scorerParameter (fst c)))) 0.0 "scorer gradient from the log-prob")

        perCase "the pooled output is the chosen pooling of the scored features plus the sinusoidal embedding" (fun c ->
            let kind, pooling = c
            use p = build c 23L
            p.eval ()
            let hidden, mask = batchData 24L lengths maxLength
            use o = p.forward(inference hidden (Some mask))
            // Written out in float64 from SPEC §2.1, §4.2 step 4, §4.3 step 4, §4.6 on the returned boundaries.
            let sd = p.state_dict()
            let w (name: string) = sd.[name].to_type(torch.float64)
            let x = hidden.to_type(torch.float64)
            let features = if kind = Bp3 then x + Formulas.unet sd "unet." true x lengths else x
            let members = Formulas.membership (Formulas.rows o.Boundaries) (lengths |> Array.map int)
            let b, l, d = features.shape.[0], features.shape.[1], int64 dim
            let project (name: string) (t: Tensor) = t.matmul(w(name).t())
            let pooled =
                match kind, pooling with
                | _, MeanPooling -> Formulas.meanPool members features
                | Bp1, AttentionPooling ->
                    // One head: score_l = q·(W_k x_l)/√D, pooled_s = W_o Σ_l α_sl W_v x_l.
                    let scores = (project "pool_key.weight" features).matmul(w "pool_query") / sqrt (float dim)
                    let values = (project "pool_value.weight" features).unsqueeze(2L)
                    project "pool_output.weight" (Formulas.attentionPool members (scores.unsqueeze(1L)) values)
                | _, AttentionPooling ->
                    // LayerNorm, then 8 heads of width D/8 scored against the (unscaled) learned query.
                    let mean = features.mean([| -1L |], keepdim = true)
                    let variance = (features - mean).pow(sc 2.0).mean([| -1L |], keepdim = true)
                    let normed = (features - mean) / (variance + 1e-5).sqrt() * w "pool_layernorm.weight" + w "pool_layernorm.bias"
                    let heads = 8L
                    let dh = d / heads
                    let keys = (project "pool_key.weight" normed).reshape(b, l, heads, dh)
                    let values = (project "pool_value.weight" normed).reshape(b, l, heads, dh)
                    let scores = (keys * w("learned_query").reshape(heads, dh)).sum(-1L).permute(0L, 2L, 1L) / sqrt (float dh)
                    project "pool_output.weight" (Formulas.attentionPool members scores values)
            close 1e-5 "pooled" o.Pooled (pooled + Formulas.sinusoidalTable pooled.shape.[1] dim))

        testCase "the scorers compute the original's formulas" <| fun () ->
            use _ = torch.NewDisposeScope()
            let hidden, _ = batchData 22L lengths maxLength
            let l = maxLength
            let linear (sd: Collections.Generic.Dictionary<string, Tensor>) (prefix: string) (x: Tensor) =
                torch.nn.functional.linear(x, sd.[prefix + ".weight"], sd.[prefix + ".bias"])
            let norm (x: Tensor) = torch.nn.functional.normalize(x, 2.0, -1L, 1e-12)
            let gelu (x: Tensor) = torch.nn.functional.gelu(x)
            let current (x: Tensor) = x.narrow(1L, 0L, l - 1L)
            let next (x: Tensor) = x.narrow(1L, 1L, l - 1L)
            let probability (sd: Collections.Generic.Dictionary<string, Tensor>) (q: Tensor) (k: Tensor) =
                let similarity = (q * k).sum(-1L)
                let p = ((1.0 - (similarity + sd.["similarity_bias"])) * 0.5).clamp(sc 0.0, sc 1.0)
                torch.nn.functional.pad(p, [| 0L; 1L |])
            // BP1: σ(W2 relu(W1 h + b1) + b2).
            use bp1 = build (Bp1, AttentionPooling) 15L
            bp1.eval ()
            let sd1 = bp1.state_dict()
            use o1 = bp1.forward(inference hidden None)
            let expected1 = (linear sd1 "boundary_mlp.2" ((linear sd1 "boundary_mlp.0" hidden).relu())).squeeze(-1L).sigmoid()
            close 1e-6 "BP1" o1.Probabilities expected1
            // BP2: q = W_q norm(q̂ + MLP(q̂)), q̂ = norm(h_t); k likewise from h_{t+1}.
            use bp2 = build (Bp2, AttentionPooling) 16L
            bp2.eval ()
            let sd2 = bp2.state_dict()
            let side2 (projection: string) (x: Tensor) =
                let xn = norm x
                let r = norm (xn + linear sd2 "boundary_mlp.2" (gelu (linear sd2 "boundary_mlp.0" xn)))
                torch.nn.functional.linear(r, sd2.[projection])
            use o2 = bp2.forward(inference hidden None)
            let expected2 = probability sd2 (side2 "q_proj_layer.weight" (current hidden)) (side2 "k_proj_layer.weight" (next hidden))
            close 1e-6 "BP2" o2.Probabilities expected2
            // BP3: e = h + UNet(h); q = W_q norm(MLP_q(norm(e_t))), k = W_k norm(MLP_k(norm(e_{t+1}))).
            use bp3 = build (Bp3, AttentionPooling) 17L
            bp3.eval ()
            let sd3 = bp3.state_dict()
            let unet = Formulas.unet sd3 "unet." true (hidden.to_type(torch.float64)) (Array.create lengths.Length l)
            let enhanced = hidden + unet.to_type(torch.float32)
            let side3 (mlp: string) (projection: string) (x: Tensor) =
                let r = norm (linear sd3 (mlp + ".2") (gelu (linear sd3 (mlp + ".0") (norm x))))
                torch.nn.functional.linear(r, sd3.[projection])
            use o3 = bp3.forward(inference hidden None)
            let expected3 =
                probability sd3 (side3 "q_mlp" "q_proj_layer.weight" (current enhanced)) (side3 "k_mlp" "k_proj_layer.weight" (next enhanced))
            close 1e-6 "BP3" o3.Probabilities expected3

        perCase "the samples come from the generator: RL draws 1[u < p], supervised 1[relaxed z > threshold]" (fun c ->
            let kind, pooling = c
            torch.manual_seed 25L |> ignore
            let config = { PredictorConfig.Default(kind, 0.25) with Pooling = pooling; Threshold = 0.6 }
            use p = Predictors.create config dim
            p.eval ()
            let hidden, mask = batchData 26L lengths maxLength
            let seed = 71L
            use g = Boundaries.generator seed torch.CPU
            use rl = p.forward { PredictorInput.Create(hidden, Some mask, Sample g) with Rl = true }
            // The same generator's uniforms, in frame order: RL boundaries 1[u < p] on valid frames, last one forced.
            let uniforms (seed: int64) (like: Tensor) =
                use g' = Boundaries.generator seed torch.CPU
                Formulas.rows (torch.rand(like.shape, dtype = torch.float32, generator = g'))
            let forced (decide: int -> int -> bool) (len: int64[]) =
                Array.init len.Length (fun r -> Array.init (int maxLength) (fun f ->
                    if f < int len.[r] && (f = int len.[r] - 1 || decide r f) then 1.0 else 0.0))
            let u, prl = uniforms seed rl.Probabilities, Formulas.rows rl.Probabilities
            Expect.sequenceEqual (Formulas.rows rl.Boundaries) (forced (fun r f -> u.[r].[f] < prl.[r].[f]) lengths)
                "RL boundaries = 1[u < p], masked, last valid frame forced"
            if kind = Bp2 || kind = Bp3 then
                use g3 = Boundaries.generator seed torch.CPU
                let input = { sampling g3 hidden mask with Schedule = { schedule with Temperature = 0.4 } }
                use o = p.forward input
                // Relaxed Bernoulli (SPEC §4.1 step 2): z = σ((logit p̃ + ln ũ − ln(1 − ũ))/τ), ε-clamped; h = 1[z > 0.6].
                let eps = 1.1920928955078125e-07 // float32 machine epsilon
                let logit (q: float) = let c = Math.Clamp(q, eps, 1.0 - eps) in Math.Log c - Math.Log(1.0 - c)
                let u, ps = uniforms seed o.Probabilities, Formulas.rows o.Probabilities
                let z r f = 1.0 / (1.0 + Math.Exp(-(logit ps.[r].[f] + logit u.[r].[f]) / 0.4))
                Expect.sequenceEqual (Formulas.rows o.Boundaries) (forced (fun r f -> z r f > 0.6) lengths) "supervised boundaries")

        perCase "float64 modules run on float64 states (inference and sampling)" (fun c ->
            use p = build c 27L
            p.``to``(torch.float64) |> ignore
            let hidden32, mask = batchData 28L lengths maxLength
            let hidden = hidden32.to_type(torch.float64)
            p.eval ()
            use o = p.forward(inference hidden (Some mask))
            Expect.equal o.Pooled.dtype torch.float64 "pooled keeps float64"
            checkStructure "float64 inference" o
            p.train ()
            use g = Boundaries.generator 3L torch.CPU
            use s = p.forward(sampling g hidden mask)
            checkStructure "float64 sampling" s
            Expect.equal s.LossPerUtterance.dtype torch.float64 "the loss is float64")

        perCase "a loaded state dict reproduces the predictor (BatchNorm running statistics included)" (fun c ->
            use source = build c 29L
            let hidden, mask = batchData 30L lengths maxLength
            source.train ()
            for seed in [ 1L; 2L ] do
                use g = Boundaries.generator seed torch.CPU
                use _ = source.forward(sampling g hidden mask)
                ()
            use target = build c 31L
            let struct (missing, unexpected) = target.load_state_dict(source.state_dict())
            Expect.isEmpty missing "no missing keys"
            Expect.isEmpty unexpected "no unexpected keys"
            source.eval ()
            target.eval ()
            use a = source.forward(inference hidden (Some mask))
            use b = target.forward(inference hidden (Some mask))
            close 0.0 "probabilities" a.Probabilities b.Probabilities
            close 0.0 "pooled" a.Pooled b.Pooled)

        perCase "parameter names equal the original's state-dict keys" (fun c ->
            let kind, pooling = c
            use p = build c 9L
            let expected = expectedKeys kind pooling |> List.sort
            Expect.sequenceEqual (keysOf p) expected "state_dict keys"
            // Registered inside a parent (as the encoder does), the keys are only prefixed.
            let parent = new Parent(p)
            Expect.sequenceEqual (keysOf parent) (expected |> List.map (fun k -> "3." + k)) "keys under a parent")

        testCase "parameter shapes and initialisation follow the original" <| fun () ->
            use _ = torch.NewDisposeScope()
            let d = int64 dim
            let shapeOf (m: torch.nn.Module) name = m.state_dict().[name].shape
            let identity (m: torch.nn.Module) name = close 0.0 $"{name} is the identity" (m.state_dict().[name]) (torch.eye(d))
            use bp1 = Predictors.create (PredictorConfig.Default(Bp1, 0.08)) dim
            Expect.equal (Tensors.toFloatArray (bp1.state_dict().["boundary_mlp.2.bias"])) [| -2.5 |] "BP1 bias −2.5"
            Expect.sequenceEqual (shapeOf bp1 "pool_query") [| d |] "BP1 pool_query (D)"
            Expect.isLessThan (Tensors.toFloat (bp1.state_dict().["pool_query"].abs().max())) 0.1 "BP1 query ~ N(0, 0.02²)"
            for name in [ "pool_key.weight"; "pool_value.weight"; "pool_output.weight" ] do identity bp1 name
            use bp2 = Predictors.create (PredictorConfig.Default(Bp2, 0.08)) dim
            Expect.sequenceEqual (shapeOf bp2 "similarity_bias") [||] "BP2 similarity_bias is a scalar"
            close 1e-7 "BP2 similarity bias" (bp2.state_dict().["similarity_bias"]) (torch.tensor(-0.7f))
            for name in [ "q_proj_layer.weight"; "k_proj_layer.weight"; "pool_key.weight"; "pool_value.weight"; "pool_output.weight" ] do
                identity bp2 name
            Expect.isGreaterThan (Tensors.toFloat (bp2.state_dict().["learned_query"].abs().max())) 0.5 "BP2 query ~ N(0, 1)"
            use bp3 = Predictors.create (PredictorConfig.Default(Bp3, 0.08)) dim
            close 1e-7 "BP3 similarity bias" (bp3.state_dict().["similarity_bias"]) (torch.tensor(-0.126f))
            Expect.sequenceEqual (shapeOf bp3 "unet.encoder_conv.weight") [| d / 2L; d; 3L |] "U-Net encoder D → D/2, k3"
            Expect.sequenceEqual (shapeOf bp3 "unet.decoder_conv.weight") [| d / 2L; d / 2L; 4L |] "U-Net ConvTranspose k4"
            Expect.sequenceEqual (shapeOf bp3 "unet.decoder_norm1.weight") [| d |] "BN after the concatenation: D"
            Expect.equal (Tensors.toFloat (bp3.state_dict().["unet.refine_conv.bias"].abs().max())) 0.0 "refine bias 0"
            let refineStd = Tensors.toFloat (bp3.state_dict().["unet.refine_conv.weight"].std())
            Expect.isTrue (refineStd > 0.008 && refineStd < 0.012) $"refine weights ~ N(0, 0.01²), std {refineStd}"
            use bp4 = Predictors.create (PredictorConfig.Default(Bp4, 0.08)) dim
            Expect.equal (Tensors.toFloatArray (bp4.state_dict().["boundary_conv.2.bias"])) [| -2.5 |] "BP4 bias −2.5"
            Expect.sequenceEqual (shapeOf bp4 "boundary_conv.0.weight") [| d / 3L; d; 3L |] "BP4 conv D → ⌊D/3⌋, k3"

        testCase "BP3's U-Net returns length L for odd and even L, both alignments" <| fun () ->
            use _ = torch.NewDisposeScope()
            for alignment in [ Aligned; OriginalCrop ] do
                torch.manual_seed 10L |> ignore
                use unet = new UNet1D(dim, 0.1, alignment)
                for training in [ false; true ] do
                    unet.train training
                    for l in 1L .. 9L do
                        let x = torch.randn(2L, l, int64 dim)
                        let mask = Some(maskOf [| l; (l + 1L) / 2L |] l)
                        let y = unet.Run(x, mask, None)
                        Expect.sequenceEqual y.shape [| 2L; l; int64 dim |] $"{alignment}, training {training}, L = {l}"

        testCase "BP3's aligned U-Net: a row alone equals the row in a padded batch (eval)" <| fun () ->
            use _ = torch.NewDisposeScope()
            torch.manual_seed 11L |> ignore
            use unet = new UNet1D(dim, 0.1, Aligned)
            unet.eval ()
            let lens = [| 10L; 7L; 4L; 1L |]
            use g = Boundaries.generator 3L torch.CPU
            let x = torch.randn([| 4L; 10L; int64 dim |], generator = g)
            let y = unet.Run(x, Some(maskOf lens 10L), None)
            for beta in 0 .. lens.Length - 1 do
                let alone = unet.Run(x.narrow(0L, int64 beta, 1L).narrow(1L, 0L, lens.[beta]), None, None)
                close 1e-5 $"row {beta}" alone (y.narrow(0L, int64 beta, 1L).narrow(1L, 0L, lens.[beta]))

        testCase "BP4: positions 0 and 1 have p = σ(−10); conv output i is the logit of position i+2" <| fun () ->
            use _ = torch.NewDisposeScope()
            use p = build (Bp4, MeanPooling) 12L
            p.eval ()
            let sd = p.state_dict()
            let floor = 1.0 / (1.0 + exp 10.0)
            for l in [ 1L; 2L; 3L; 8L ] do
                let hidden, _ = batchData 19L [| l; l |] l
                use o = p.forward(inference hidden None)
                let logits =
                    if l < 3L then torch.zeros(2L, 0L)
                    else
                        let first = torch.nn.functional.conv1d(hidden.transpose(1L, 2L), sd.["boundary_conv.0.weight"], sd.["boundary_conv.0.bias"])
                        torch.nn.functional.conv1d(first.relu(), sd.["boundary_conv.2.weight"], sd.["boundary_conv.2.bias"]).squeeze(1L)
                let head = o.Probabilities.narrow(1L, 0L, min l 2L)
                close 1e-9 $"L = {l}: p = σ(−10) at 0 and 1" head (torch.full_like(head, sc floor))
                if l >= 3L then
                    close 1e-6 $"L = {l}: p at i+2 = σ(conv output i)" (o.Probabilities.narrow(1L, 2L, l - 2L)) (logits.sigmoid())

        testCase "BP2/BP3: p = 0 at the last frame and at each row's last valid frame" <| fun () ->
            use _ = torch.NewDisposeScope()
            for kind in [ Bp2; Bp3 ] do
                use p = build (kind, AttentionPooling) 13L
                p.eval ()
                let hidden, mask = batchData 20L lengths maxLength
                use o = p.forward(inference hidden (Some mask))
                for beta in 0 .. lengths.Length - 1 do
                    Expect.equal (rowOf o.Probabilities beta).[int lengths.[beta] - 1] 0.0 $"{kind} row {beta}"
                use unmasked = p.forward(inference hidden None)
                Expect.equal (Tensors.toFloatArray (unmasked.Probabilities.select(1L, maxLength - 1L))) [| 0.0; 0.0; 0.0 |] $"{kind} last frame"

        testCase "configurations that do not fit fail with a clear message" <| fun () ->
            let fails (what: string) (f: unit -> unit) = Expect.throwsT<ArgumentException> f what
            fails "8 heads must divide D (BP2)" (fun () -> Predictors.create (PredictorConfig.Default(Bp2, 0.1)) 12 |> ignore)
            fails "8 heads must divide D (BP3)" (fun () -> Predictors.create (PredictorConfig.Default(Bp3, 0.1)) 20 |> ignore)
            fails "BP3 needs an even D" (fun () ->
                Predictors.create { PredictorConfig.Default(Bp3, 0.1) with Pooling = MeanPooling } 9 |> ignore)
            fails "BP4 has no attention pooling" (fun () ->
                Predictors.create { PredictorConfig.Default(Bp4, 0.1) with Pooling = AttentionPooling } 16 |> ignore)
            fails "the kind must match the class" (fun () -> new BoundaryPredictor1(PredictorConfig.Default(Bp2, 0.1), 16) |> ignore)
            fails "prior in (0, 1]" (fun () -> Predictors.create (PredictorConfig.Default(Bp1, 0.0)) 16 |> ignore)
            // A mean-pooling BP2 works for any D.
            use ok = Predictors.create { PredictorConfig.Default(Bp2, 0.1) with Pooling = MeanPooling } 12
            Expect.equal ok.Dim 12 "BP2 with mean pooling and D = 12"

        testCase "supervised sampling without targets is an error for BP1, BP2 and BP4" <| fun () ->
            use _ = torch.NewDisposeScope()
            let hidden, mask = batchData 21L lengths maxLength
            for kind in [ Bp1; Bp2; Bp4 ] do
                use p = build (kind, (if kind = Bp4 then MeanPooling else AttentionPooling)) 14L
                use g = Boundaries.generator 1L torch.CPU
                Expect.throwsT<InvalidOperationException>
                    (fun () -> p.forward(PredictorInput.Create(hidden, Some mask, Sample g)) |> ignore)
                    $"{kind} without targets"
    ]
