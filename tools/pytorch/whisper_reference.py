#!/usr/bin/env python3
"""Reference Whisper forward in plain PyTorch, for MagnetWhisper's parity test and encoder benchmark.

Copyright (c) MagnetWhisper contributors. MIT licence (see LICENSE at the repository root).

Written independently of MagnetWhisper's F# code, from Whisper's published architecture and the
Hugging Face checkpoint layout (`WhisperForConditionalGeneration` tensor names):

  encoder  x = gelu(conv1(mel)); x = gelu(conv2(x)) (k3, stride 2); x += embed_positions
           pre-LN blocks: x += attn(LN(x)); x += fc2(act(fc1(LN(x)))); final layer_norm
  decoder  h = embed_tokens(tokens) + embed_positions[:T]
           pre-LN blocks: causal self-attention, cross-attention over the encoder output, MLP; final layer_norm
  logits   h @ embed_tokens^T (or proj_out when tie_word_embeddings is false)
  attention  q = q_proj(x) * head_dim^-0.5, k = k_proj(x) (no bias), v = v_proj(x); softmax(q k^T) v; out_proj

Inputs: a folder with config.json and model.safetensors (or model.safetensors.index.json + shards),
parsed here with numpy (no safetensors/transformers packages needed).

Usage
  forward:  whisper_reference.py MODEL_DIR --mel mel.npy [--tokens tokens.npy]
                                 --encoder-out enc.npy [--logits-out logits.npy] [--threads N]
            mel.npy is (B, num_mel_bins, 2*max_source_positions) float32; tokens.npy is (B, T) integers.
  bench:    whisper_reference.py MODEL_DIR --bench [--threads N] [--warmup 2] [--repeats 10] [--batch 1]
            times the encoder forward on random log-mel input under torch.inference_mode and prints
            "pytorch <version> encoder median_ms <ms> min_ms <ms> max_ms <ms> threads <n> batch <b>".

Needs PyTorch and numpy (on Debian: apt-get install python3-torch). Runs in float32 on the CPU.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------- checkpoint

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """{name: float32 torch tensor} from one .safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        buf = raw[base + start:base + end]
        shape = info["shape"]
        dtype = info["dtype"]
        if dtype == "BF16":
            bits = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        elif dtype in _DTYPES:
            arr = np.frombuffer(buf, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<"))
        else:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        out[name] = torch.from_numpy(np.array(arr, dtype=np.float32).reshape(shape))
    return out


def read_checkpoint(folder):
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(single):
        return read_safetensors(single)
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        tensors = {}
        for name in files:
            tensors.update(read_safetensors(os.path.join(folder, name)))
        return tensors
    raise FileNotFoundError(f"{folder}: neither model.safetensors nor model.safetensors.index.json")


# ---------------------------------------------------------------- model

def activation(name):
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    if name in ("silu", "swish"):
        return F.silu
    raise ValueError(f"unsupported activation_function {name!r}")


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        if d % heads != 0:
            raise ValueError(f"d_model {d} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = d // heads
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def split(self, x):
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x, source=None, causal=False):
        source = x if source is None else source
        q = self.split(self.q_proj(x) * (self.head_dim ** -0.5))
        k = self.split(self.k_proj(source))
        v = self.split(self.v_proj(source))
        scores = q @ k.transpose(-1, -2)
        if causal:
            t, s = scores.shape[-2], scores.shape[-1]
            mask = torch.ones(t, s, dtype=torch.bool).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        a = scores.softmax(dim=-1) @ v
        b, _, t, _ = a.shape
        return self.out_proj(a.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class EncoderLayer(nn.Module):
    def __init__(self, d, heads, ffn, act):
        super().__init__()
        self.self_attn = Attention(d, heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.act = act

    def forward(self, x):
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))


class DecoderLayer(nn.Module):
    def __init__(self, d, heads, ffn, act):
        super().__init__()
        self.self_attn = Attention(d, heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = Attention(d, heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.act = act

    def forward(self, h, enc):
        h = h + self.self_attn(self.self_attn_layer_norm(h), causal=True)
        h = h + self.encoder_attn(self.encoder_attn_layer_norm(h), source=enc)
        return h + self.fc2(self.act(self.fc1(self.final_layer_norm(h))))


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        act = activation(c.get("activation_function", "gelu"))
        self.conv1 = nn.Conv1d(c["num_mel_bins"], d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(c["max_source_positions"], d)
        self.layers = nn.ModuleList(
            EncoderLayer(d, c["encoder_attention_heads"], c["encoder_ffn_dim"], act) for _ in range(c["encoder_layers"]))
        self.layer_norm = nn.LayerNorm(d)
        self.frames = 2 * c["max_source_positions"]
        self.mels = c["num_mel_bins"]

    def forward(self, mel):
        if mel.dim() != 3 or mel.shape[1] != self.mels or mel.shape[2] != self.frames:
            raise ValueError(f"mel must be (B, {self.mels}, {self.frames}), got {tuple(mel.shape)}")
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.embed_positions.weight[: x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x)


class Decoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        act = activation(c.get("activation_function", "gelu"))
        self.embed_tokens = nn.Embedding(c["vocab_size"], d)
        self.embed_positions = nn.Embedding(c["max_target_positions"], d)
        self.layers = nn.ModuleList(
            DecoderLayer(d, c["decoder_attention_heads"], c["decoder_ffn_dim"], act) for _ in range(c["decoder_layers"]))
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, tokens, enc):
        t = tokens.shape[1]
        if t > self.embed_positions.num_embeddings:
            raise ValueError(f"{t} tokens exceed max_target_positions {self.embed_positions.num_embeddings}")
        h = self.embed_tokens(tokens) + self.embed_positions.weight[:t]
        for layer in self.layers:
            h = layer(h, enc)
        return self.layer_norm(h)


class Whisper(nn.Module):
    def __init__(self, c, with_decoder=True):
        super().__init__()
        self.encoder = Encoder(c)
        self.decoder = Decoder(c) if with_decoder else None
        self.tied = c.get("tie_word_embeddings", True)
        self.proj_out = None
        if with_decoder and not self.tied:
            self.proj_out = nn.Linear(c["d_model"], c["vocab_size"], bias=False)

    def logits(self, tokens, enc):
        h = self.decoder(tokens, enc)
        w = self.decoder.embed_tokens.weight if self.proj_out is None else self.proj_out.weight
        return h @ w.t()


def load(folder, with_decoder=True):
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    model = Whisper(config, with_decoder)
    tensors = read_checkpoint(folder)
    state = {}
    for name, value in tensors.items():
        if name.startswith("model."):
            key = name[len("model."):]
        elif name == "proj_out.weight":
            if model.proj_out is None:
                continue  # tied: the logits use embed_tokens
            key = name
        else:
            raise KeyError(f"{folder}: unexpected tensor {name}")
        if not with_decoder and not key.startswith("encoder."):
            continue
        state[key] = value
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise KeyError(f"{folder}: missing tensors {missing}, unexpected tensors {unexpected}")
    return model.eval(), config


# ---------------------------------------------------------------- commands

def forward(args):
    model, _ = load(args.model, with_decoder=args.tokens is not None)
    mel = torch.from_numpy(np.load(args.mel).astype(np.float32))
    with torch.inference_mode():
        enc = model.encoder(mel)
        np.save(args.encoder_out, enc.numpy())
        if args.tokens is not None:
            if args.logits_out is None:
                raise SystemExit("--tokens needs --logits-out")
            tokens = torch.from_numpy(np.load(args.tokens).astype(np.int64))
            np.save(args.logits_out, model.logits(tokens, enc).numpy())


def bench(args):
    model, config = load(args.model, with_decoder=False)
    mel = torch.randn(args.batch, config["num_mel_bins"], 2 * config["max_source_positions"])
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.repeats):
            start = time.perf_counter()
            model.encoder(mel)
            elapsed = time.perf_counter() - start
            if i >= args.warmup:
                times.append(elapsed)
    print(f"pytorch {torch.__version__} encoder median_ms {1000 * statistics.median(times):.3f} "
          f"min_ms {1000 * min(times):.3f} max_ms {1000 * max(times):.3f} "
          f"threads {torch.get_num_threads()} batch {args.batch}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="Hugging Face Whisper folder (config.json + model.safetensors)")
    p.add_argument("--mel", help="input log-mel .npy (B, mels, frames)")
    p.add_argument("--tokens", help="decoder input token ids .npy (B, T)")
    p.add_argument("--encoder-out", help="where to write the encoder output .npy")
    p.add_argument("--logits-out", help="where to write the logits .npy")
    p.add_argument("--bench", action="store_true", help="time the encoder forward instead")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    if args.bench:
        if args.repeats < 1 or args.batch < 1 or args.warmup < 0:
            p.error("--repeats and --batch must be at least 1, --warmup at least 0")
        bench(args)
    else:
        if args.mel is None or args.encoder_out is None:
            p.error("give --mel and --encoder-out (or --bench)")
        forward(args)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"whisper_reference.py: error: {e}", file=sys.stderr)
        sys.exit(2)
