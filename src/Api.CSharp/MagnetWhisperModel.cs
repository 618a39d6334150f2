using System;
using System.Threading;
using System.Threading.Tasks;
using System.Collections.Generic;
using System.Linq;
using MagnetWhisper.Core.Decoding;
using Microsoft.FSharp.Core;
using TorchSharp;
using static TorchSharp.torch;
using Mg = MagnetWhisper.Core.Magnet;
using WhisperCore = MagnetWhisper.Core.Whisper;

namespace MagnetWhisper
{
    /// <summary>What one boundary predictor did in a forward pass. The tensors belong to the result that holds this entry.</summary>
    public sealed class BoundaryLayerResult
    {
        internal BoundaryLayerResult(Mg.EncoderPredictorLayer l)
        {
            Layer = l.Index;
            Type = l.Kind.IsBp1 ? PredictorType.Bp1 : l.Kind.IsBp2 ? PredictorType.Bp2 : l.Kind.IsBp3 ? PredictorType.Bp3 : PredictorType.Bp4;
            InputLength = l.InputLength;
            OutputLength = l.OutputLength;
            KeptFraction = l.KeptFraction;
            BoundaryCounts = l.Output.BoundaryCounts;
            ValidCounts = l.Output.ValidCounts;
            Loss = l.Output.Loss;
            LossPerUtterance = l.Output.LossPerUtterance;
            Boundaries = l.Output.Boundaries;
            Probabilities = l.Output.Probabilities;
            SpacingCv = l.Output.MeanSpacingCv;
            Adjacency = l.Output.AdjacencyOverall;
            Actions = l.Output.Actions;
            LogProbability = l.Output.LogProb is null ? null : l.Output.LogProb.Value;
        }

        /// <summary>The encoder layer the predictor runs before.</summary>
        public int Layer { get; }

        /// <summary>The predictor type.</summary>
        public PredictorType Type { get; }

        /// <summary>Sequence length before the predictor.</summary>
        public long InputLength { get; }

        /// <summary>Sequence length after it (the largest boundary count of the batch).</summary>
        public long OutputLength { get; }

        /// <summary>Boundaries / valid positions over the batch (1 / compression).</summary>
        public double KeptFraction { get; }

        /// <summary>(B) boundaries per utterance.</summary>
        public Tensor BoundaryCounts { get; }

        /// <summary>(B) valid positions per utterance.</summary>
        public Tensor ValidCounts { get; }

        /// <summary>() the predictor's mean boundary loss (0 at inference).</summary>
        public Tensor Loss { get; }

        /// <summary>(B) each utterance's boundary loss.</summary>
        public Tensor LossPerUtterance { get; }

        /// <summary>(B, L) the hard boundaries that were pooled.</summary>
        public Tensor Boundaries { get; }

        /// <summary>(B, L) boundary probabilities.</summary>
        public Tensor Probabilities { get; }

        /// <summary>() mean coefficient of variation of the boundary spacing.</summary>
        public Tensor SpacingCv { get; }

        /// <summary>() fraction of boundary gaps equal to one frame.</summary>
        public Tensor Adjacency { get; }

        /// <summary>
        /// (B, L) the predictor's raw actions, 1 = boundary, before masking and the forced last boundary: what
        /// <see cref="MagnetForwardInput.Replay"/> takes to replay this pass.
        /// </summary>
        public Tensor Actions { get; }

        /// <summary>(B) log-probability of this predictor's actions (sampling, replay and RL modes), else null.</summary>
        public Tensor? LogProbability { get; }
    }

    /// <summary>The encoder output of MagnetWhisper with its boundary statistics. Dispose it to free its tensors.</summary>
    public sealed class MagnetEncoderResult : IDisposable
    {
        readonly Mg.EncoderOutput output;

        internal MagnetEncoderResult(Mg.EncoderOutput output)
        {
            this.output = output;
            Layers = output.Layers.Select(l => new BoundaryLayerResult(l)).ToArray();
            Actions = Layers.ToDictionary(l => l.Layer, l => l.Actions);
        }

        /// <summary>(B, S, D) encoder states.</summary>
        public Tensor Hidden => output.Hidden;

        /// <summary>(B, S) validity of the S positions.</summary>
        public Tensor Mask => output.Mask;

        /// <summary>One entry per predictor, in layer order.</summary>
        public IReadOnlyList<BoundaryLayerResult> Layers { get; }

        /// <summary>The sequence length each encoder layer ran on.</summary>
        public IReadOnlyList<long> LayerLengths => output.LayerLengths;

        /// <summary>() the summed boundary loss of all predictors.</summary>
        public Tensor BoundaryLoss => output.BoundaryLoss;

        /// <summary>(B) log-probability of the sampled boundaries, summed over the predictors (sampling, replay and RL modes), else null.</summary>
        public Tensor? LogProbability => output.LogProb is null ? null : output.LogProb.Value;

        /// <summary>Every predictor's raw actions by encoder layer, ready for <see cref="MagnetForwardInput.Replay"/> (valid until this result is disposed).</summary>
        public IReadOnlyDictionary<int, Tensor> Actions { get; }

        /// <inheritdoc />
        public void Dispose() => ((IDisposable)output).Dispose();
    }

    /// <summary>The result of a forward pass with labels. Dispose it to free its tensors.</summary>
    public sealed class MagnetForwardResult : IDisposable
    {
        readonly Mg.ForwardResult result;

        internal MagnetForwardResult(Mg.ForwardResult result)
        {
            this.result = result;
            Encoder = new MagnetEncoderResult(result.Encoder);
        }

        /// <summary>() token-mean cross-entropy + the summed boundary losses.</summary>
        public Tensor Loss => result.Loss;

        /// <summary>(B, T, V) next-token logits.</summary>
        public Tensor Logits => result.Logits;

        /// <summary>() token-mean cross-entropy.</summary>
        public Tensor CrossEntropy => result.CrossEntropy;

        /// <summary>() summed boundary losses.</summary>
        public Tensor BoundaryLoss => result.BoundaryLoss;

        /// <summary>(B) each utterance's cross-entropy.</summary>
        public Tensor CrossEntropyPerUtterance => result.CrossEntropyPerUtterance;

        /// <summary>(B) each utterance's cross-entropy plus its own boundary losses (the RL reward is its negative).</summary>
        public Tensor LossPerUtterance => result.LossPerUtterance;

        /// <summary>The encoder output and the boundary statistics of every predictor.</summary>
        public MagnetEncoderResult Encoder { get; }

        /// <summary>The boundary statistics of every predictor (same as <c>Encoder.Layers</c>).</summary>
        public IReadOnlyList<BoundaryLayerResult> Layers => Encoder.Layers;

        /// <inheritdoc />
        public void Dispose() => ((IDisposable)result).Dispose();
    }

    /// <summary>
    /// MagnetWhisper: a Whisper model whose encoder shortens its sequence with learnable boundary predictors, with rotary
    /// position embeddings in every attention. Convert a Whisper folder with <see cref="FromWhisper"/>, reopen a saved model
    /// with <see cref="Load"/>, import a checkpoint of the original Python project with <see cref="ImportOriginal"/>.
    /// Calls on one instance (forward passes, encoding, generation, transcription, saving) run one at a time. Dispose the
    /// model to free its parameters.
    /// </summary>
    public sealed class MagnetWhisperModel : IDisposable
    {
        readonly Mg.MagnetWhisperModel model;

        // Serialises every call on the weights, the transcriptions included (they share it), and frees them on Dispose.
        readonly ModelGate gate;

        // The decoding strategies (beam search, timestamps, fallback, long form) over this model, under the same gate;
        // created on first use, because their tokenizer needs a released Whisper vocabulary.
        readonly Lazy<WhisperModel> transcription;

        MagnetWhisperModel(Mg.MagnetWhisperModel model)
        {
            this.model = model;
            gate = new ModelGate(model, nameof(MagnetWhisperModel));
            transcription = new Lazy<WhisperModel>(() => WhisperModel.Over(model, gate));
        }

        /// <summary>
        /// The TorchSharp module: parameters (for an optimiser), state dict, gradients. Calls made on it directly bypass
        /// this model's one-call-at-a-time rule.
        /// </summary>
        public nn.Module Module => model;

        /// <summary>The core model, for the evaluator.</summary>
        internal Mg.MagnetWhisperModel CoreModel => model;

        /// <summary>The model's one-call-at-a-time gate, for the evaluator.</summary>
        internal ModelGate Gate => gate;

        /// <summary>The device of the parameters.</summary>
        public Device Device => model.Device;

        /// <summary>The predictors, extra convolutions and compatibility options.</summary>
        public MagnetOptions Options => MagnetOptions.FromCore(model.Options);

        /// <summary>Model width d_model.</summary>
        public int DModel => model.Config.DModel;

        /// <summary>Number of encoder layers (and predictor slots).</summary>
        public int EncoderLayers => model.Config.EncoderLayers;

        /// <summary>Vocabulary size.</summary>
        public int VocabSize => model.Config.VocabSize;

        /// <summary>Mel frames per window (3000 for released models).</summary>
        public int InputFrames => model.Config.InputFrames;

        /// <summary>Number of parameter elements.</summary>
        public long ParameterCount => gate.Run(() => model.parameters().Sum(p => p.numel()));

        static Device ParseDevice(string device) => Core.Device.parse(device ?? throw new ArgumentNullException(nameof(device)));

        /// <summary>
        /// Converts a Hugging Face Whisper folder: same Whisper weights, RoPE in every attention, no absolute positions, and
        /// new boundary predictors and extra convolutions as <paramref name="options"/> says.
        /// </summary>
        /// <param name="whisperDir">Folder with config.json and model.safetensors.</param>
        /// <param name="options">Predictors, convolutions and compatibility options.</param>
        /// <param name="device">"auto", "cpu", "cuda" or "cuda:N".</param>
        public static MagnetWhisperModel FromWhisper(string whisperDir, MagnetOptions options, string device = "auto")
        {
            if (whisperDir is null) throw new ArgumentNullException(nameof(whisperDir));
            if (options is null) throw new ArgumentNullException(nameof(options));
            using var whisper = WhisperCore.WhisperModel.FromPretrained(whisperDir, ParseDevice(device), ScalarType.Float32);
            var model = Mg.MagnetWhisperModel.FromWhisper(whisper, options.ToCore(whisper.Config.DModel));
            model.eval();
            return new MagnetWhisperModel(model);
        }

        /// <summary>Loads a MagnetWhisper folder (written by <see cref="Save"/> or <c>magnet convert</c>), validating every tensor.</summary>
        public static MagnetWhisperModel Load(string dir, string device = "auto") =>
            new(Mg.MagnetFormat.load(dir ?? throw new ArgumentNullException(nameof(dir)), ParseDevice(device), ScalarType.Float32));

        /// <summary>Imports a checkpoint saved by the original Python project (boundary_params.pt, boundary_predictors.bin, ...).</summary>
        /// <param name="dir">The original checkpoint folder.</param>
        /// <param name="device">"auto", "cpu", "cuda" or "cuda:N".</param>
        /// <param name="originalCompatibility">True (default) keeps the original's numbers; false uses the project's behaviour.</param>
        public static MagnetWhisperModel ImportOriginal(string dir, string device = "auto", bool originalCompatibility = true) =>
            new(Mg.OriginalCheckpoint.import(
                originalCompatibility ? Mg.ImportOptions.Original : Mg.ImportOptions.Project,
                dir ?? throw new ArgumentNullException(nameof(dir)), ParseDevice(device), ScalarType.Float32));

        /// <summary>Saves the model as a MagnetWhisper folder (Hugging Face files plus magnet.json), atomically.</summary>
        public void Save(string dir)
        {
            if (dir is null) throw new ArgumentNullException(nameof(dir));
            gate.Run(() => Mg.MagnetFormat.save(dir, model));
        }

        /// <summary>Switches to training mode (dropout on).</summary>
        public void Train() => gate.Run(() => model.train());

        /// <summary>Switches to evaluation mode.</summary>
        public void Eval() => gate.Run(() => model.eval());

        /// <summary>Makes only the boundary predictors trainable; returns the names of the trainable parameters.</summary>
        public IReadOnlyList<string> FreezeAllButPredictors() => gate.Run(() => model.SetTrainable(new[] { Mg.ParameterGroup.Predictors }).ToArray());

        /// <summary>Runs the encoder in inference mode (deterministic thresholded boundaries).</summary>
        /// <param name="mel">(B, n_mels, 3000) log-mel features.</param>
        /// <param name="frameMask">(B, 3000) frame validity, or null when every frame is real audio.</param>
        public MagnetEncoderResult Encode(Tensor mel, Tensor? frameMask = null)
        {
            if (mel is null) throw new ArgumentNullException(nameof(mel));
            return gate.Run(() => new MagnetEncoderResult(model.Encode(mel, SegmentPooling.Option(frameMask))));
        }

        /// <summary>
        /// Forward pass with labels: loss = token-mean cross-entropy + boundary losses, logits and boundary statistics.
        /// With a <see cref="MagnetForwardInput.Seed"/> the predictors sample boundaries (training; reproducible for a
        /// seed), without one they threshold (evaluation, boundary loss 0).
        /// </summary>
        public MagnetForwardResult Forward(MagnetForwardInput input)
        {
            if (input is null) throw new ArgumentNullException(nameof(input));
            return gate.Run(() =>
            {
                using var generator = input.Seed is long s ? new Generator((ulong)s, model.Device) : null;
                return new MagnetForwardResult(model.Forward(input.ToCore(model.Options, model.Device, generator)));
            });
        }

        /// <summary>Greedy token ids of each row after the start-of-transcript prompt, up to end-of-text.</summary>
        /// <param name="mel">(B, n_mels, 3000) log-mel features.</param>
        /// <param name="frameMask">(B, 3000) frame validity, or null.</param>
        /// <param name="maxTokens">At most this many new tokens per row.</param>
        public IReadOnlyList<int[]> GenerateTokens(Tensor mel, Tensor? frameMask = null, int maxTokens = 224)
        {
            if (mel is null) throw new ArgumentNullException(nameof(mel));
            return gate.Run(() => Core.Decoding.Search.greedyTokens(model, mel, SegmentPooling.Option(frameMask), Core.Decoding.Search.checkpointPrompt(model.Config), maxTokens));
        }

        /// <summary>
        /// Transcribes the first 30 s of an audio file with greedy decoding (a minimal generator; beam search, timestamps and
        /// long-form transcription come with <see cref="Transcribe"/>). Needs a released Whisper vocabulary.
        /// </summary>
        public string Generate(string audioPath, int maxTokens = 224)
        {
            if (audioPath is null) throw new ArgumentNullException(nameof(audioPath));
            return gate.Run(() => Core.Decoding.Search.greedyTranscribeFile(model, audioPath, maxTokens));
        }

        /// <summary>
        /// Transcribes an audio file through the compressed encoder with Whisper's full decoding (greedy or beam search,
        /// timestamps, temperature fallback, long-form seeking). Boundaries are thresholded, so results are deterministic.
        /// </summary>
        public Transcription Transcribe(string audioPath, TranscribeOptions? options = null) =>
            transcription.Value.Transcribe(audioPath, options);

        /// <summary>As <see cref="Transcribe"/>, on a background thread; cancellation stops between decoding steps.</summary>
        public Task<Transcription> TranscribeAsync(string audioPath, TranscribeOptions? options = null, CancellationToken cancellationToken = default) =>
            transcription.Value.TranscribeAsync(audioPath, options, cancellationToken);

        /// <summary>
        /// Yields the segments of each 30-second window as soon as it is decoded, for long audio. The model is busy until
        /// the enumeration ends.
        /// </summary>
        public IAsyncEnumerable<TranscriptSegment> TranscribeSegmentsAsync(string audioPath, TranscribeOptions? options = null, CancellationToken cancellationToken = default) =>
            transcription.Value.TranscribeSegmentsAsync(audioPath, options, cancellationToken);

        /// <summary>Frees the parameters once the running call has finished; later calls throw <see cref="ObjectDisposedException"/>.</summary>
        public void Dispose() => gate.Dispose();
    }
}
