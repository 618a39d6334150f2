/// A toy task that exercises the whole tensor core: a small boundary scorer learns to segment synthetic
/// "phone" sequences (piecewise-constant vectors plus noise). Each pooled segment should be pure, close to one
/// clean prototype of its utterance, the role the decoder's loss plays for MagnetWhisper; that error reaches the
/// scorer only through segment-mean downsampling's boundary gradient and the straight-through estimator
/// (SPEC §2.1). The binomial count loss pulls the boundary count toward the true
/// segment count. It is what `magnet demo` runs and what the notebooks start from.
module MagnetWhisper.Core.Training.SyntheticSegmentation

open System
open TorchSharp
open TorchSharp.Modules
open MagnetWhisper.Core
open MagnetWhisper.Core.Segments

type Tensor = torch.Tensor

/// Sizes and optimisation settings of the toy task.
type Settings =
    { /// Utterances per batch.
      Batch: int
      /// Padded frames per utterance.
      Frames: int
      /// Width of the hidden vectors.
      Dim: int
      /// Shortest and longest segment, in frames.
      MinSegment: int
      MaxSegment: int
      /// Standard deviation of the frame noise around each segment's prototype.
      Noise: float
      /// Training steps and Adam learning rate.
      Steps: int
      LearningRate: float
      /// Weight of the binomial count loss.
      CountWeight: float
      /// Gumbel-sigmoid temperature.
      Temperature: float
      Seed: int64 }

    /// Defaults that train in a few seconds on a CPU.
    static member Default =
        { Batch = 16
          Frames = 120
          Dim = 16
          MinSegment = 3
          MaxSegment = 10
          Noise = 0.15
          Steps = 300
          LearningRate = 1e-2
          CountWeight = 1.0
          Temperature = 1.0
          Seed = 0L }

/// One synthetic batch: hidden (B,L,D), mask (B,L), true boundaries (B,L) (1 at each segment's last frame), the
/// true segment counts (B,) and the clean summary (B,K,D): each segment's prototype, zero rows after a row's count.
type Batch =
    { Hidden: Tensor
      Mask: Tensor
      Boundaries: Tensor
      Counts: Tensor
      Summary: Tensor }

    interface IDisposable with
        member b.Dispose() =
            b.Hidden.Dispose()
            b.Mask.Dispose()
            b.Boundaries.Dispose()
            b.Counts.Dispose()
            b.Summary.Dispose()

/// Draws a batch on the device: each row has a random valid length in [L/2, L], cut into segments of random
/// lengths whose frames are one random prototype plus Gaussian noise; padding frames hold garbage.
let makeBatch (settings: Settings) (rng: Random) (device: torch.Device) : Batch =
    let b, l, d = settings.Batch, settings.Frames, settings.Dim
    let hidden = Array.zeroCreate<float32> (b * l * d)
    let mask = Array.zeroCreate<float32> (b * l)
    let bounds = Array.zeroCreate<float32> (b * l)
    let counts = Array.zeroCreate<float32> b
    let prototypes = Array.init b (fun _ -> ResizeArray<float[]>())
    let gauss () =
        // Box-Muller: the demo stays dependency-free and reproducible from one seed.
        let u1 = 1.0 - rng.NextDouble()
        let u2 = rng.NextDouble()
        sqrt (-2.0 * log u1) * cos (2.0 * Math.PI * u2)
    for row in 0 .. b - 1 do
        let valid = l / 2 + rng.Next(l - l / 2 + 1)
        let mutable t = 0
        while t < valid do
            let len = min (valid - t) (settings.MinSegment + rng.Next(settings.MaxSegment - settings.MinSegment + 1))
            let proto = Array.init d (fun _ -> gauss ())
            prototypes.[row].Add proto
            for f in t .. t + len - 1 do
                for k in 0 .. d - 1 do
                    hidden.[(row * l + f) * d + k] <- float32 (proto.[k] + settings.Noise * gauss ())
                mask.[row * l + f] <- 1.0f
            bounds.[row * l + t + len - 1] <- 1.0f
            counts.[row] <- counts.[row] + 1.0f
            t <- t + len
        for f in valid .. l - 1 do
            for k in 0 .. d - 1 do
                hidden.[(row * l + f) * d + k] <- float32 (5.0 * gauss ())
    let make (values: float32[]) (dims: int64[]) = torch.tensor(values, device = device).reshape(dims)
    let k = prototypes |> Array.map (fun p -> p.Count) |> Array.max
    let summary = Array.zeroCreate<float32> (b * k * d)
    for row in 0 .. b - 1 do
        prototypes.[row] |> Seq.iteri (fun s proto -> proto |> Array.iteri (fun j v -> summary.[(row * k + s) * d + j] <- float32 v))
    { Hidden = make hidden [| int64 b; int64 l; int64 d |]
      Mask = make mask [| int64 b; int64 l |]
      Boundaries = make bounds [| int64 b; int64 l |]
      Counts = make counts [| int64 b |]
      Summary = make summary [| int64 b; int64 k; int64 d |] }

/// A per-frame boundary scorer that sees the frame and its change to the next frame:
/// logits_t = MLP([h_t, h_{t+1} − h_t]). Output bias −2.5 as BP1 (≈7.6 % initial boundary rate).
type Scorer(dim: int, hiddenWidth: int) as this =
    inherit torch.nn.Module<Tensor, Tensor>("Scorer")
    let input = torch.nn.Linear(int64 (2 * dim), int64 hiddenWidth)
    let output = torch.nn.Linear(int64 hiddenWidth, 1L)
    do
        this.register_module("input", input)
        this.register_module("output", output)
        use _ = torch.no_grad()
        output.bias.fill_(-2.5) |> ignore

    /// hidden (B,L,D) → logits (B,L).
    override _.forward(hidden: Tensor) : Tensor =
        use _ = torch.NewDisposeScope()
        let l = hidden.shape.[1]
        let next = torch.cat([| hidden.narrow(1, 1L, l - 1L); hidden.narrow(1, l - 1L, 1L) |], 1L)
        let features = torch.cat([| hidden; next - hidden |], -1L)
        output.forward(torch.nn.functional.relu(input.forward features)).squeeze(-1L).MoveToOuterDisposeScope()

/// Losses and statistics of one step (plain numbers: read once per step).
type StepReport =
    { Step: int
      /// Segment impurity: distance of each pooled segment to the nearest clean prototype (see `impurity`).
      Impurity: float
      /// Mean binomial count loss toward the true segment count.
      CountLoss: float
      /// Predicted boundaries / valid frames (the kept fraction) at inference.
      KeptFraction: float
      /// True segments / valid frames.
      TrueFraction: float
      /// Fraction of predicted boundaries within one frame of a true boundary, and vice versa.
      Precision: float
      Recall: float }

/// Impurity of the segments: each pooled segment's squared distance to the nearest clean prototype of its own
/// utterance, averaged over the row's segments and the dimensions. A segment that mixes two phones has a mean between
/// their prototypes and scores badly; the count loss stops the trivial answer of one segment per frame.
/// pooled (B,S,D), its shortened mask (B,S), summary (B,K,D), counts (B,) of true segments.
let impurity (pooled: Tensor) (pooledMask: Tensor) (summary: Tensor) (counts: Tensor) : Tensor =
    use _ = torch.NewDisposeScope()
    let k = summary.shape.[1]
    let distances = (pooled.unsqueeze(2L) - summary.to_type(pooled.dtype).unsqueeze(1L)).square().sum([| -1L |])
    let absent = torch.arange(k, device = pooled.device).unsqueeze(0L).ge(counts.unsqueeze(1L)).unsqueeze(1L)
    let nearest = distances.masked_fill(absent, System.Double.PositiveInfinity).amin([| -1L |]) * pooledMask
    (nearest.sum() / (pooledMask.sum().clamp_min(1.0) * float pooled.shape.[2])).MoveToOuterDisposeScope()

/// Boundary precision and recall with a tolerance of one frame, over valid frames.
let private matchRates (predicted: Tensor) (truth: Tensor) (mask: Tensor) =
    use _ = torch.NewDisposeScope()
    let near (b: Tensor) =
        torch.nn.functional.max_pool1d(b.unsqueeze(1L), 3L, stride = 1L, padding = 1L).squeeze(1L)
    let p = predicted * mask
    let t = truth * mask
    let precision = (p * near t).sum() / p.sum().clamp_min(1.0)
    let recall = (t * near p).sum() / t.sum().clamp_min(1.0)
    Tensors.toFloat precision, Tensors.toFloat recall

/// Inference: boundary probabilities (B,L) and thresholded boundaries (B,L), masked, with the forced last frame.
let infer (scorer: Scorer) (batch: Batch) : Tensor * Tensor =
    use _ = torch.no_grad()
    scorer.eval()
    let p = torch.sigmoid(scorer.forward batch.Hidden)
    p, Boundaries.maskAndForce (Some batch.Mask) (Boundaries.hard 0.5 p)

/// Trains a scorer on fresh synthetic batches and reports every `every` steps (and the last step).
let train (settings: Settings) (device: torch.Device) (every: int) (report: StepReport -> unit) : Scorer =
    torch.manual_seed settings.Seed |> ignore
    let rng = Random(int settings.Seed)
    let generator = Boundaries.generator settings.Seed device
    let scorer = new Scorer(settings.Dim, 32)
    scorer.``to``(device) |> ignore
    use optimizer = torch.optim.Adam(scorer.parameters(), settings.LearningRate)
    for step in 1 .. settings.Steps do
        use _ = torch.NewDisposeScope()
        use batch = makeBatch settings rng device
        scorer.train()
        optimizer.zero_grad()
        let logits = scorer.forward batch.Hidden
        let z = Boundaries.relaxedSampleLogits generator settings.Temperature logits
        let h = Boundaries.hard 0.5 z
        let hb = Boundaries.steThenMask (Some batch.Mask) h z
        let pooled = Downsample.downsample Downsample.defaultOptions hb batch.Hidden (Some batch.Mask)
        let fit = impurity pooled (Boundaries.shortenedMask hb) batch.Summary batch.Counts
        let k = Boundaries.counts hb
        let n = Boundaries.validCounts (Some batch.Mask) hb
        let countLoss = (Losses.binomialFromTargets k n batch.Counts).mean()
        let loss = fit + countLoss * settings.CountWeight
        Tensors.requireFinite "loss" loss
        loss.backward()
        optimizer.step() |> ignore
        if step % every = 0 || step = settings.Steps then
            use _ = torch.no_grad()
            let _, predicted = infer scorer batch
            let valid = Tensors.toFloat (batch.Mask.sum())
            let precision, recall = matchRates predicted batch.Boundaries batch.Mask
            report
                { Step = step
                  Impurity =
                    let pooled = Downsample.downsample Downsample.defaultOptions predicted batch.Hidden (Some batch.Mask)
                    Tensors.toFloat (impurity pooled (Boundaries.shortenedMask predicted) batch.Summary batch.Counts)
                  CountLoss = Tensors.toFloat countLoss
                  KeptFraction = Tensors.toFloat (predicted.sum()) / valid
                  TrueFraction = Tensors.toFloat (batch.Counts.sum()) / valid
                  Precision = precision
                  Recall = recall }
    scorer
