/// Test support for the trainer: a tiny MagnetWhisper, fixed synthetic batches (random mel, padded frames, labels
/// with −100 padding, target counts, recorded boundary actions) and parameter snapshots.
module MagnetWhisper.Tests.Training.TrainingFixtures

open TorchSharp
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Segments
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Training
open MagnetWhisper.Tests.Magnet
open MagnetWhisper.Tests.Data

type Tensor = torch.Tensor

/// Runs f, which must raise 'e, and returns the exception (for its message).
let raises<'e when 'e :> exn> (f: unit -> unit) : 'e =
    let outcome =
        try
            f ()
            None
        with
        | :? 'e as e -> Some e
        | e -> failwith $"expected {typeof<'e>.Name}, got {e.GetType().Name}: {e.Message}"
    match outcome with
    | Some e -> e
    | None -> failwith $"expected {typeof<'e>.Name}, nothing was raised"

/// The predictor layer of the fixtures' model.
let predictorLayer = 1

/// Labels per utterance (T).
let labelLength = 6L

/// A BP1 with mean pooling before encoder layer 1, so the cross-entropy also trains its scorer (DECISIONS #7).
let options =
    let slot = { PredictorSlot.Create(predictorLayer, Bp1, 0.3) with Predictor = { PredictorConfig.Default(Bp1, 0.3) with Pooling = MeanPooling } }
    MagnetOptions.Default.WithSlot slot

/// A tiny MagnetWhisper (MagnetFixtures.config, d_model 32) with the fixtures' predictor, in evaluation mode.
let model (seed: int64) (config: WhisperConfig) : MagnetWhisperModel = MagnetFixtures.magnet seed config options

/// A synthetic batch: mel (B, M, F) with garbage past each row's frames, its frame mask, labels (B, T) with −100 past
/// each row's token count, targets (1, B) and BP1 actions (B, L) (0/1 with probability ½).
type Batch =
    { Mel: Tensor
      Mask: Tensor
      Labels: Tensor
      Targets: Tensor
      Actions: Tensor }

    /// Rows lo .. hi − 1 of every tensor.
    member b.Rows(lo: int64, hi: int64) : Batch =
        let rows (t: Tensor) = t.narrow(0L, lo, hi - lo)
        { Mel = rows b.Mel; Mask = rows b.Mask; Labels = rows b.Labels; Targets = b.Targets.narrow(1L, lo, hi - lo); Actions = rows b.Actions }

    /// The batch cut into micro-batches of `size` rows.
    member b.Split(size: int64) : Batch list =
        let n = b.Mel.shape.[0]
        [ for lo in 0L .. size .. n - 1L -> b.Rows(lo, min n (lo + size)) ]

/// A batch of `b` utterances drawn from `seed` (frame lengths 20..48 of 48, token counts 1..6).
let batch (seed: int64) (config: WhisperConfig) (b: int) : Batch =
    use g = Boundaries.generator seed torch.CPU
    let frames = int64 config.InputFrames
    let lengths = torch.randint(20L, frames + 1L, [| int64 b |], generator = g, dtype = torch.int64).data<int64>().ToArray()
    let mel = torch.randn([| int64 b; int64 config.NumMelBins; frames |], generator = g)
    let mask = MagnetFixtures.frameMask frames lengths
    let mel = torch.where(mask.unsqueeze(1L).gt((0.0).ToScalar()), mel, torch.randn(mel.shape, generator = g) * 30.0)
    let tokens = torch.randint(0L, int64 config.VocabSize - 2L, [| int64 b; labelLength |], generator = g, dtype = torch.int64)
    let counts = torch.randint(1L, labelLength + 1L, [| int64 b; 1L |], generator = g, dtype = torch.int64)
    let labels = torch.where(torch.arange(labelLength).unsqueeze(0L).lt(counts), tokens, torch.tensor(-100L))
    let targets = (torch.tensor(lengths).to_type(torch.float32) / 2.0 / 4.0).round().clamp_min((1.0).ToScalar()).unsqueeze(0L)
    let actions = torch.rand([| int64 b; int64 config.MaxSourcePositions |], generator = g).lt((0.5).ToScalar()).to_type(torch.float32)
    { Mel = mel; Mask = mask; Labels = labels; Targets = targets; Actions = actions }

/// A training input that replays the batch's BP1 actions (deterministic boundaries, losses as when sampling).
let replayInput (generator: torch.Generator) (b: Batch) : ForwardInput =
    { ForwardInput.Training(b.Mel, Some b.Mask, b.Labels, Some b.Targets, generator) with Replay = Map [ predictorLayer, b.Actions ] }

/// A training input that samples BP1's boundaries from the generator.
let sampleInput (generator: torch.Generator) (b: Batch) : ForwardInput =
    ForwardInput.Training(b.Mel, Some b.Mask, b.Labels, Some b.Targets, generator)

/// Label tokens and utterances of a batch.
let counts (b: Batch) : BatchCounts = TrainingStep.countsOf b.Labels

/// Float64 copies of named tensors.
let copies<'t when 't :> Tensor> (named: (string * 't) list) : (string * Tensor) list =
    [ for n, t in named -> n, t.detach().to_type(torch.float64).clone() ]

/// The largest |a − b| over equally named tensors, relative to max(1, |b|) elementwise.
let maxRelativeDifference<'t when 't :> Tensor> (a: (string * 't) list) (b: (string * 't) list) : float =
    let other = dict b
    [ for n, t in a ->
          use x = t.detach().to_type(torch.float64)
          use y = other.[n].detach().to_type(torch.float64)
          use d = (x - y).abs() / y.abs().clamp_min((1.0).ToScalar())
          if d.numel() = 0L then 0.0 else d.max().item<float>() ]
    |> List.fold max 0.0

/// Names of the tensors that differ at all.
let changed<'t, 'u when 't :> Tensor and 'u :> Tensor> (before: (string * 't) list) (after: (string * 'u) list) : string list =
    let other = dict after
    [ for n, t in before do
          use eq = t.detach().to_type(torch.float64).eq(other.[n].detach().to_type(torch.float64)).all()
          if not (eq.item<bool>()) then n ]

/// Whisper's real vocabulary and 30 s window (collation needs both), everything else tiny: the run tests' model.
let runWhisper (dropout: float) : WhisperConfig =
    { WhisperConfig.preset "tiny" with
        DModel = 32
        EncoderLayers = 2
        DecoderLayers = 1
        EncoderAttentionHeads = 2
        DecoderAttentionHeads = 2
        EncoderFfnDim = 64
        DecoderFfnDim = 64
        Dropout = dropout }

/// Writes a corpus folder of 4 sine tones (sox) with short transcripts into dir.
let toneCorpus (dir: string) : unit =
    for i, text in List.indexed [ "one two"; "three"; "four five six"; "seven" ] do
        CorpusFixtures.tone (System.IO.Path.Combine(dir, $"u{i}.wav")) (0.4 + 0.2 * float i) 16000 (200.0 + 150.0 * float i) |> ignore
        System.IO.File.WriteAllText(System.IO.Path.Combine(dir, $"u{i}.txt"), text)

/// Saves a MagnetWhisper of `config` (drawn from seed 7) with the given predictor slot into dir.
let magnetFolder (dir: string) (config: WhisperConfig) (slot: PredictorSlot) : unit =
    torch.manual_seed 7L |> ignore
    use whisper = WhisperModel.create config
    use model = MagnetWhisperModel.FromWhisper(whisper, MagnetOptions.Default.WithSlot slot)
    MagnetFormat.save dir model

/// The normalised WER, CER and utterance count of a model folder on a corpus folder, by the Evaluator directly.
let scoresOf (modelDir: string) (corpusDir: string) (batchSize: int) : float * float * int =
    use model = MagnetFormat.load modelDir torch.CPU torch.float32
    let corpus =
        MagnetWhisper.Core.Data.Corpora.read MagnetWhisper.Core.Data.CorpusOptions.Default corpusDir
        |> MagnetWhisper.Core.Data.BatchLoader.measure 1 None System.Threading.CancellationToken.None
    let options = { MagnetWhisper.Core.Evaluation.EvaluationOptions.Default with BatchSize = batchSize; Workers = 1; Language = "en"; Ffmpeg = None }
    let result = MagnetWhisper.Core.Evaluation.Evaluator.evaluate model options corpus ignore System.Threading.CancellationToken.None
    result.Score.Words.Rate, result.Score.Characters.Rate, result.Utterances.Length

/// How the run tests run: on the CPU, to the end, WAV only.
let cpuRun: SupervisedOptions = { Device = torch.CPU; StopAtStep = None; Ffmpeg = None }

/// (step, key, value) of the metrics of a run's metrics.jsonl whose key passes `keep`.
let metrics (runDir: string) (keep: string -> bool) : (int64 * string * float) list =
    [ for line in MetricsJsonl.read (System.IO.Path.Combine(runDir, "metrics.jsonl")) do
          for k, v in line.Values do
              if keep k then line.Step, k, v ]

/// The parameters and buffers of a model folder (copies, outside any dispose scope).
let folderState (dir: string) : (string * Tensor) list =
    use m = MagnetFormat.load dir torch.CPU torch.float32
    [ for n, t in m.State -> n, t.detach().clone().DetachFromDisposeScope() ]

/// The dev losses of a model folder on a corpus folder, recomputed independently of DevLoss (float64 log-softmax,
/// one utterance at a time, evaluation mode): (Σ token cross-entropy / tokens, Σ boundary losses / utterances).
let devLosses (modelDir: string) (corpusDir: string) (targets: MagnetWhisper.Core.Data.TargetKind list) : float * float =
    use model = MagnetFormat.load modelDir torch.CPU torch.float32
    model.eval()
    let collate = MagnetWhisper.Core.Data.CollateOptions.ForMagnet(model, "en", MagnetWhisper.Core.Text.Transcribe, targets)
    let corpus = MagnetWhisper.Core.Data.Corpora.read MagnetWhisper.Core.Data.CorpusOptions.Default corpusDir
    let one: MagnetWhisper.Core.Data.BatchingOptions = { Seed = 0L; Shuffle = false; Size = MagnetWhisper.Core.Data.Utterances 1; BucketWindow = None }
    let loader = MagnetWhisper.Core.Data.BatchLoader(collate, one, { MagnetWhisper.Core.Data.LoaderOptions.Default with Workers = 1; Ffmpeg = None }, corpus.Utterances)
    use _ = torch.no_grad()
    let mutable ce, tokens, boundary, rows = 0.0, 0L, 0.0, 0
    for loaded in loader.Batches(MagnetWhisper.Core.Data.BatchPosition.Start, 0, System.Threading.CancellationToken.None) do
        use b = loaded.Batch
        use _ = torch.NewDisposeScope()
        use r = model.Forward { ForwardInput.Evaluation(b.Mel, Some b.FrameMask, b.Labels) with DecoderInputs = Some b.DecoderInputs; TokenMask = Some b.TokenMask; TargetMatrix = b.TargetMatrix }
        let logits = r.Logits.to_type(torch.float64)
        let labels = b.Labels.reshape(-1L)
        let counted = labels.ne(torch.tensor(-100L))
        let logp = torch.nn.functional.log_softmax(logits.reshape(-1L, logits.shape.[2]), 1L)
        let picked = logp.gather(1L, labels.clamp_min(0L).unsqueeze(1L)).squeeze(1L)
        ce <- ce - (picked * counted.to_type(torch.float64)).sum().item<float>()
        tokens <- tokens + counted.sum().item<int64>()
        boundary <- boundary + (r.Encoder.Layers |> List.sumBy (fun l -> l.Output.LossPerUtterance.to_type(torch.float64).sum().item<float>()))
        rows <- rows + 1
    if rows <> corpus.Utterances.Length then failwith $"devLosses saw {rows} of {corpus.Utterances.Length} utterances"
    ce / float tokens, boundary / float rows
