/// Test support for the Whisper model: tiny configurations, temporary folders, the Hugging Face key list written out
/// independently of the modules, and an independent float64 forward pass built from plain tensor operations.
module MagnetWhisper.Tests.Whisper.WhisperReference

open System
open System.Collections.Generic
open System.IO
open TorchSharp
open MagnetWhisper.Core.Whisper

type Tensor = torch.Tensor

/// A tiny multilingual-style configuration (fast to build and run).
let tinyConfig =
    { WhisperConfig.preset "tiny" with
        VocabSize = 97
        NumMelBins = 16
        DModel = 32
        EncoderLayers = 2
        DecoderLayers = 2
        EncoderAttentionHeads = 4
        DecoderAttentionHeads = 4
        EncoderFfnDim = 64
        DecoderFfnDim = 48
        MaxSourcePositions = 12
        MaxTargetPositions = 20
        PadTokenId = 96
        BosTokenId = 96
        EosTokenId = 96
        DecoderStartTokenId = 95
        BeginSuppressTokens = [| 3; 96 |]
        SuppressTokens = [| 1; 2 |] }

/// A temporary folder deleted on dispose.
type TempDir() =
    let path = Path.Combine(Path.GetTempPath(), "mw-whisper-" + Guid.NewGuid().ToString("N"))
    do Directory.CreateDirectory path |> ignore
    member _.Path = path
    member _.Sub(name: string) = Path.Combine(path, name)
    interface IDisposable with
        member _.Dispose() = if Directory.Exists path then Directory.Delete(path, true)

/// The Hugging Face WhisperForConditionalGeneration state-dict keys and shapes of a configuration, written out
/// from the published layout (not from the modules), without proj_out.
let hfKeys (c: WhisperConfig) : (string * int64[]) list =
    let d, v = int64 c.DModel, int64 c.VocabSize
    let attn prefix =
        [ $"{prefix}.k_proj.weight", [| d; d |]
          $"{prefix}.v_proj.weight", [| d; d |]
          $"{prefix}.v_proj.bias", [| d |]
          $"{prefix}.q_proj.weight", [| d; d |]
          $"{prefix}.q_proj.bias", [| d |]
          $"{prefix}.out_proj.weight", [| d; d |]
          $"{prefix}.out_proj.bias", [| d |] ]
    let norm prefix = [ $"{prefix}.weight", [| d |]; $"{prefix}.bias", [| d |] ]
    let ffn prefix (f: int64) =
        [ $"{prefix}.fc1.weight", [| f; d |]; $"{prefix}.fc1.bias", [| f |]; $"{prefix}.fc2.weight", [| d; f |]; $"{prefix}.fc2.bias", [| d |] ]
    [ yield "model.encoder.conv1.weight", [| d; int64 c.NumMelBins; 3L |]
      yield "model.encoder.conv1.bias", [| d |]
      yield "model.encoder.conv2.weight", [| d; d; 3L |]
      yield "model.encoder.conv2.bias", [| d |]
      yield "model.encoder.embed_positions.weight", [| int64 c.MaxSourcePositions; d |]
      for i in 0 .. c.EncoderLayers - 1 do
          let p = $"model.encoder.layers.{i}"
          yield! attn $"{p}.self_attn"
          yield! norm $"{p}.self_attn_layer_norm"
          yield! ffn p (int64 c.EncoderFfnDim)
          yield! norm $"{p}.final_layer_norm"
      yield! norm "model.encoder.layer_norm"
      yield "model.decoder.embed_tokens.weight", [| v; d |]
      yield "model.decoder.embed_positions.weight", [| int64 c.MaxTargetPositions; d |]
      for i in 0 .. c.DecoderLayers - 1 do
          let p = $"model.decoder.layers.{i}"
          yield! attn $"{p}.self_attn"
          yield! norm $"{p}.self_attn_layer_norm"
          yield! attn $"{p}.encoder_attn"
          yield! norm $"{p}.encoder_attn_layer_norm"
          yield! ffn p (int64 c.DecoderFfnDim)
          yield! norm $"{p}.final_layer_norm"
      yield! norm "model.decoder.layer_norm" ]

/// True when two tensors have the same dtype, shape and values (bit-for-bit for floats, NaN-free).
let identical (a: Tensor) (b: Tensor) =
    a.dtype = b.dtype && a.shape = b.shape && (use e = a.eq(b) in use all = e.all() in all.item<bool>())

/// A random model whose every parameter (biases and LayerNorms included) is perturbed away from its initial value,
/// so that no parameter can be silently ignored by a parity test.
let randomModel (seed: int64) (config: WhisperConfig) : WhisperModel =
    torch.manual_seed seed |> ignore
    let m = new WhisperModel(config)
    use _ = torch.no_grad()
    for struct (_, p) in m.named_parameters() do
        use noise = torch.randn_like(p).mul_((0.1).ToScalar())
        p.add_(noise) |> ignore
    m.eval()
    m

/// Named float64 CPU copies of a model's parameters.
let parameters64 (m: WhisperModel) : Dictionary<string, Tensor> =
    let d = Dictionary<string, Tensor>()
    for struct (n, p) in m.named_parameters() do
        d.[n] <- p.detach().to_type(torch.float64).cpu().clone()
    d

/// Random log-mel features (B, M, 2S).
let randomMel (seed: int64) (c: WhisperConfig) (batch: int64) : Tensor =
    torch.manual_seed seed |> ignore
    torch.randn(batch, int64 c.NumMelBins, int64 c.InputFrames)

/// Random token ids (B, T) in [0, V).
let randomTokens (seed: int64) (c: WhisperConfig) (batch: int64) (len: int64) : Tensor =
    torch.manual_seed seed |> ignore
    torch.randint(int64 c.VocabSize, [| batch; len |], dtype = torch.int64)

/// Independent float64 forward of Whisper from plain matmuls, softmax and elementwise ops on named parameters.
module Forward =
    let private sqrt2 = Math.Sqrt 2.0

    let linear (x: Tensor) (w: Tensor) (b: Tensor option) =
        let y = x.matmul(w.t())
        match b with
        | Some b -> y + b
        | None -> y

    let layerNorm (x: Tensor) (w: Tensor) (b: Tensor) =
        let mu = x.mean([| -1L |], true)
        let c = x - mu
        let var = (c * c).mean([| -1L |], true)
        c / (var + 1e-5).sqrt() * w + b

    /// Exact GELU from its definition x·Φ(x).
    let gelu (x: Tensor) = x * 0.5 * ((x / sqrt2).erf() + 1.0)

    /// Conv1d with kernel 3, padding 1, as a sum of three shifted matrix products. x (B, C, N), w (O, C, 3).
    let conv3 (x: Tensor) (w: Tensor) (b: Tensor) (stride: int64) =
        let n = x.shape.[2]
        let padded = torch.nn.functional.pad (x, [| 1L; 1L |])
        let outLen = (n + 2L - 3L) / stride + 1L
        let mutable y = torch.zeros(x.shape.[0], w.shape.[0], outLen, dtype = x.dtype)
        for k in 0L .. 2L do
            let taps = padded.narrow(2, k, stride * (outLen - 1L) + 1L).index_select(2, torch.arange(0L, stride * (outLen - 1L) + 1L, stride))
            y <- y + w.select(2, k).matmul(taps)
        y + b.view(1L, -1L, 1L)

    /// Multi-head attention with q scaled by head_dim^−0.5 and an optional bool allowed-mask (Tq, Tk).
    let attention (p: IDictionary<string, Tensor>) (prefix: string) (heads: int64) (xq: Tensor) (xkv: Tensor) (allowed: Tensor option) =
        let b, tq, d = xq.shape.[0], xq.shape.[1], xq.shape.[2]
        let tk = xkv.shape.[1]
        let dh = d / heads
        let q = linear xq p.[prefix + ".q_proj.weight"] (Some p.[prefix + ".q_proj.bias"]) * Math.Pow(float dh, -0.5)
        let k = linear xkv p.[prefix + ".k_proj.weight"] None
        let v = linear xkv p.[prefix + ".v_proj.weight"] (Some p.[prefix + ".v_proj.bias"])
        let split (t: Tensor) (len: int64) = t.reshape(b, len, heads, dh).permute(0, 2, 1, 3)
        let scores = (split q tq).matmul((split k tk).transpose(2, 3))
        let scores =
            match allowed with
            | Some a -> scores.masked_fill(a.logical_not(), Double.NegativeInfinity)
            | None -> scores
        let weights = scores.softmax(-1L)
        let out = weights.matmul(split v tk).permute(0, 2, 1, 3).reshape(b, tq, d)
        linear out p.[prefix + ".out_proj.weight"] (Some p.[prefix + ".out_proj.bias"])

    let private ffn (p: IDictionary<string, Tensor>) (prefix: string) (x: Tensor) =
        let h = gelu (linear x p.[prefix + ".fc1.weight"] (Some p.[prefix + ".fc1.bias"]))
        linear h p.[prefix + ".fc2.weight"] (Some p.[prefix + ".fc2.bias"])

    /// mel (B, M, 2S) → (B, S, D).
    let encode (c: WhisperConfig) (p: IDictionary<string, Tensor>) (mel: Tensor) =
        let x = gelu (conv3 mel p.["model.encoder.conv1.weight"] p.["model.encoder.conv1.bias"] 1L)
        let x = gelu (conv3 x p.["model.encoder.conv2.weight"] p.["model.encoder.conv2.bias"] 2L)
        let mutable h = x.permute(0, 2, 1) + p.["model.encoder.embed_positions.weight"]
        for i in 0 .. c.EncoderLayers - 1 do
            let pre = $"model.encoder.layers.{i}"
            let n1 = layerNorm h p.[pre + ".self_attn_layer_norm.weight"] p.[pre + ".self_attn_layer_norm.bias"]
            h <- h + attention p (pre + ".self_attn") (int64 c.EncoderAttentionHeads) n1 n1 None
            let n2 = layerNorm h p.[pre + ".final_layer_norm.weight"] p.[pre + ".final_layer_norm.bias"]
            h <- h + ffn p pre n2
        layerNorm h p.["model.encoder.layer_norm.weight"] p.["model.encoder.layer_norm.bias"]

    /// tokens (B, T) and encoder output (B, S, D) → decoder hidden states (B, T, D), full causal sequence.
    let decodeHidden (c: WhisperConfig) (p: IDictionary<string, Tensor>) (tokens: Tensor) (enc: Tensor) =
        let t = tokens.shape.[1]
        let emb = p.["model.decoder.embed_tokens.weight"].index_select(0, tokens.reshape(-1L)).reshape(tokens.shape.[0], t, -1L)
        let mutable h = emb + p.["model.decoder.embed_positions.weight"].narrow(0, 0L, t)
        let causal = torch.ones(t, t, dtype = torch.ScalarType.Bool).tril()
        for i in 0 .. c.DecoderLayers - 1 do
            let pre = $"model.decoder.layers.{i}"
            let n1 = layerNorm h p.[pre + ".self_attn_layer_norm.weight"] p.[pre + ".self_attn_layer_norm.bias"]
            h <- h + attention p (pre + ".self_attn") (int64 c.DecoderAttentionHeads) n1 n1 (Some causal)
            let n2 = layerNorm h p.[pre + ".encoder_attn_layer_norm.weight"] p.[pre + ".encoder_attn_layer_norm.bias"]
            h <- h + attention p (pre + ".encoder_attn") (int64 c.DecoderAttentionHeads) n2 enc None
            let n3 = layerNorm h p.[pre + ".final_layer_norm.weight"] p.[pre + ".final_layer_norm.bias"]
            h <- h + ffn p pre n3
        layerNorm h p.["model.decoder.layer_norm.weight"] p.["model.decoder.layer_norm.bias"]

    /// Logits (B, T, V): hidden · proj_outᵀ, where proj_out is embed_tokens unless the parameters hold proj_out.weight.
    let logits (c: WhisperConfig) (p: IDictionary<string, Tensor>) (mel: Tensor) (tokens: Tensor) =
        let enc = encode c p (mel.to_type torch.float64)
        let h = decodeHidden c p tokens enc
        let proj =
            match p.TryGetValue "proj_out.weight" with
            | true, w -> w
            | _ -> p.["model.decoder.embed_tokens.weight"]
        h.matmul(proj.t())
