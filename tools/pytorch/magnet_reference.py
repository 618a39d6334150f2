#!/usr/bin/env python3
"""Reference MagnetWhisper forward (inference) in plain PyTorch, for MagnetWhisper's parity tests.

Copyright (c) MagnetWhisper contributors. MIT licence (see LICENSE at the repository root).

Written independently of MagnetWhisper's F# code, from docs/SPEC.md (§1.3, §2.1, §4, §5, §6.2–§6.4) with the
project's defaults of docs/DECISIONS.md:

  encoder   x = gelu(conv1(mel)); x = gelu(conv2(x)); x = gelu(extra_conv_i(x)) for each extra convolution;
            no positional embedding; frame mask max-pooled by the total stride. Per layer i: the boundary predictor
            of slot i (if any) pools x and shortens the mask, then pre-LN layer i runs with RoPE positions 0..S-1;
            final layer_norm.
  attention q = q_proj(x)·head_dim^-1/2, k = k_proj(src) (no bias), v = v_proj(src); RoPE on q and k with
            interleaved pairs (2i, 2i+1) rotated by pos·θ^(-2i/head_dim); 1-D masks: padded keys (and, with
            "queries_and_keys", padded queries) get -inf; fully masked rows give 0 (so out_proj.bias).
  predictor threshold mode: p (B, L) from the scorer; h = 1[p > threshold]·mask; a boundary forced at every row's
            last valid frame (DECISIONS #1); frames after a row's last boundary are not pooled; pooling is
            single-head (BP1) or 8-head LayerNorm (BP2/BP3) learned-query attention restricted to each segment, or
            the segment mean; + sinusoidal embedding of the segment ordinal; shortened mask [1]*n + [0]*(S-n).
            BP1 p = σ(MLP(h)); BP2 p_t = clamp((1 - (q_t·k_{t+1} + β))/2, 0, 1) with q = W_q norm(ĥ + MLP(ĥ)),
            ĥ = norm(h_t); BP3 the same on e = h + UNet(h) with separate MLPs and no residual; BP4 a k3 conv + 1x1
            conv whose output i is the logit of frame i+2 (frames 0, 1: logit -10). p_{L-1} = 0 for BP2/BP3.
  U-Net     (BP3) aligned (DECISIONS #6): enc = drop(gelu(BN(conv_s2(x)))), bott = drop(gelu(BN(conv(enc)))),
            up = convT_s2(bott) fitted to L, skip = enc repeated ×2 fitted to L, j = gelu(BN(cat(up, skip))),
            out = BN(refine(j)); padded frames (half-resolution steps whose centre frame is padded) are zeroed
            before each convolution. original_crop: up cut to ⌈L/2⌉, cat with enc, BN, gelu, linear
            interpolation to L, refine, BN (no masking).
  decoder   token embeddings (no positions); causal RoPE self-attention (positions 0..T-1); RoPE cross-attention
            (keys at encoder positions 0..S-1, key mask = the encoder's mask); FFN; final layer_norm;
            logits = h @ embed_tokens^T (or proj_out).

Inputs: a MagnetWhisper folder (config.json, model.safetensors, magnet.json), parsed with numpy.

Usage
  magnet_reference.py MODEL_DIR --mel mel.npy [--mask mask.npy] [--tokens tokens.npy] --out DIR [--threads N]
    mel.npy (B, num_mel_bins, 2*max_source_positions) float32; mask.npy (B, frames) 0/1; tokens.npy (B, T).
    Writes DIR/encoder.npy (B, S, D), DIR/encoder_mask.npy (B, S), DIR/logits.npy (B, T, V) with --tokens, and for
    each predictor slot N: DIR/layer{N}_probabilities.npy (B, L), DIR/layer{N}_boundaries.npy (B, L),
    DIR/layer{N}_mask.npy (B, S), DIR/layer{N}_pooled.npy (B, S, D).
  magnet_reference.py --unet DIR --alignment aligned|original_crop
    BP3's U-Net alone (evaluation mode): DIR holds its state-dict tensors as NAME.npy (encoder_conv.weight.npy, …,
    BatchNorm running statistics included), x.npy (B, L, D) and mask.npy (B, L); writes DIR/y.npy (B, L, D).

Needs PyTorch and numpy (on Debian: apt-get install python3-torch). Runs in float32 on the CPU.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from whisper_reference import activation, read_checkpoint  # noqa: E402  (same folder)

NEG_INF = float("-inf")


# ---------------------------------------------------------------- attention and layers

def rope(x, positions, theta):
    """x (B, H, T, dh) rotated pairwise: (x_2i, x_2i+1) as a complex number times exp(j·pos·θ^(-2i/dh))."""
    dh = x.shape[-1]
    freqs = theta ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh)
    angles = positions.to(torch.float64)[:, None] * freqs[None, :]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    pairs = x.reshape(*x.shape[:-1], dh // 2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).reshape(x.shape)


class Attention(nn.Module):
    def __init__(self, d, heads, theta):
        super().__init__()
        if d % heads != 0 or (d // heads) % 2 != 0:
            raise ValueError(f"d_model {d} with {heads} heads does not give an even head width")
        self.heads, self.head_dim, self.theta = heads, d // heads, theta
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def split(self, x):
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x, source=None, causal=False, query_mask=None, key_mask=None):
        """x (B, Tq, D); source (B, Tk, D) or None (self); masks (B, T) bool or None."""
        source = x if source is None else source
        tq, tk = x.shape[1], source.shape[1]
        q = rope(self.split(self.q_proj(x) * self.head_dim ** -0.5), torch.arange(tq), self.theta)
        k = rope(self.split(self.k_proj(source)), torch.arange(tk), self.theta)
        v = self.split(self.v_proj(source))
        scores = q @ k.transpose(-1, -2)
        if causal:
            scores = scores.masked_fill(torch.ones(tq, tk, dtype=torch.bool).triu(1), NEG_INF)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], NEG_INF)
        if query_mask is not None:
            scores = scores.masked_fill(~query_mask[:, None, :, None], NEG_INF)
        weights = torch.nan_to_num(scores.softmax(dim=-1), nan=0.0)
        a = weights @ v
        b = a.shape[0]
        return self.out_proj(a.transpose(1, 2).reshape(b, tq, self.heads * self.head_dim))


class EncoderLayer(nn.Module):
    def __init__(self, d, heads, ffn, act, theta, key_masking):
        super().__init__()
        self.self_attn = Attention(d, heads, theta)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.act, self.key_masking = act, key_masking

    def forward(self, x, mask):
        keys = mask if self.key_masking else None
        x = x + self.self_attn(self.self_attn_layer_norm(x), query_mask=mask, key_mask=keys)
        return x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))


class DecoderLayer(nn.Module):
    def __init__(self, d, heads, ffn, act, theta):
        super().__init__()
        self.self_attn = Attention(d, heads, theta)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = Attention(d, heads, theta)
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.act = act

    def forward(self, h, enc, enc_mask):
        h = h + self.self_attn(self.self_attn_layer_norm(h), causal=True)
        h = h + self.encoder_attn(self.encoder_attn_layer_norm(h), source=enc, key_mask=enc_mask)
        return h + self.fc2(self.act(self.fc1(self.final_layer_norm(h))))


# ---------------------------------------------------------------- segmentation and pooling

def threshold_boundaries(p, mask, threshold):
    """Hard boundaries (B, L) bool: 1[p > threshold] on valid frames, plus every row's last valid frame."""
    h = (p > threshold) & mask
    positions = torch.arange(mask.shape[1])
    for row in range(mask.shape[0]):
        valid = positions[mask[row]]
        if len(valid) > 0:
            h[row, valid[-1]] = True
    return h


def membership(h, mask, original_tail):
    """(B, S, L) bool: frame l belongs to segment s (= number of boundaries before l), valid frames only.
    Frames after a row's last boundary are dropped (default), or form segment n_row when n_row < S (original)."""
    counts = h.sum(dim=1)
    s = int(counts.max()) if h.shape[0] > 0 else 0
    before = torch.cumsum(h.long(), dim=1) - h.long()
    member = (before[:, None, :] == torch.arange(s)[None, :, None]) & mask[:, None, :]
    if not original_tail:
        member &= before[:, None, :] < counts[:, None, None]
    return member, counts


def mean_pool(member, x):
    total = member.sum(dim=2, keepdim=True).clamp(min=1).to(x.dtype)
    return (member.to(x.dtype) @ x) / total


def attention_pool(member, scores, values):
    """scores (B, H, L), values (B, L, H, dh) → (B, S, H·dh): per head, softmax of scores over each segment."""
    logits = scores[:, :, None, :].masked_fill(~member[:, None, :, :], NEG_INF)  # (B, H, S, L)
    weights = torch.nan_to_num(logits.softmax(dim=-1), nan=0.0)
    pooled = weights @ values.transpose(1, 2)  # (B, H, S, dh)
    b, heads, s, dh = pooled.shape
    return pooled.transpose(1, 2).reshape(b, s, heads * dh)


def sinusoidal(s, d):
    """(S, D): PE[s, 2i] = sin(s·10000^(-2i/D)), PE[s, 2i+1] = cos(s·10000^(-2i/D))."""
    positions = torch.arange(s, dtype=torch.float64)[:, None]
    angles = positions * 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)[None, :]
    return torch.stack((angles.sin(), angles.cos()), dim=-1).reshape(s, d).to(torch.float32)


def normalize(x):
    return F.normalize(x, p=2.0, dim=-1, eps=1e-12)


class Predictor(nn.Module):
    """Shared threshold-mode pipeline; subclasses define probabilities(x, mask) → (p, features)."""

    def __init__(self, slot):
        super().__init__()
        self.threshold = float(slot.get("threshold", 0.5))
        self.pooling = slot.get("pooling", "attention")
        self.original_batching = slot.get("batching", "batch_independent") == "original"

    def boundaries(self, p, mask):
        if not self.original_batching:
            return threshold_boundaries(p, mask, self.threshold)
        # The original (SPEC §4.1 step 5): force only when some row is padded, just before each padded row's first pad.
        h = (p > self.threshold) & mask
        if (~mask).any():
            for row in range(mask.shape[0]):
                pads = (~mask[row]).nonzero()
                if len(pads) > 0 and pads[0, 0] > 0:
                    h[row, pads[0, 0] - 1] = True
        return h

    def pool(self, member, features):
        raise NotImplementedError

    def forward(self, x, mask):
        p, features = self.probabilities(x, mask)
        p = p * mask.to(p.dtype)
        h = self.boundaries(p, mask)
        member, counts = membership(h, mask, self.original_batching)
        pooled = mean_pool(member, features) if self.pooling == "mean" else self.pool(member, features)
        s = member.shape[1]
        pooled = pooled + sinusoidal(s, x.shape[2])[None]
        short = torch.arange(s)[None, :] < counts[:, None]
        return pooled, short, {"probabilities": p, "boundaries": h.to(torch.float32), "mask": short.to(torch.float32),
                               "pooled": pooled}


class BP1(Predictor):
    def __init__(self, slot, d, hidden, attention):
        super().__init__(slot)
        self.boundary_mlp = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        if attention:
            self.pool_query = nn.Parameter(torch.zeros(d))
            self.pool_key = nn.Linear(d, d, bias=False)
            self.pool_value = nn.Linear(d, d, bias=False)
            self.pool_output = nn.Linear(d, d, bias=False)

    def probabilities(self, x, mask):
        return torch.sigmoid(self.boundary_mlp(x).squeeze(-1)), x

    def pool(self, member, x):
        d = x.shape[2]
        scores = (self.pool_key(x) @ self.pool_query) * d ** -0.5  # (B, L)
        return self.pool_output(attention_pool(member, scores[:, None, :], self.pool_value(x)[:, :, None, :]))


class MultiHeadPoolMixin:
    """BP2/BP3's 8-head pooling over LayerNorm(features) with an unscaled learned query."""

    heads = 8

    def add_pooling(self, d):
        self.learned_query = nn.Parameter(torch.zeros(d))
        self.pool_key = nn.Linear(d, d, bias=False)
        self.pool_value = nn.Linear(d, d, bias=False)
        self.pool_output = nn.Linear(d, d, bias=False)
        self.pool_layernorm = nn.LayerNorm(d)

    def pool(self, member, features):
        b, l, d = features.shape
        dh = d // self.heads
        normed = self.pool_layernorm(features)
        keys = self.pool_key(normed).view(b, l, self.heads, dh)
        values = self.pool_value(normed).view(b, l, self.heads, dh)
        q = self.learned_query.view(self.heads, dh)
        scores = torch.einsum("blhe,he->bhl", keys, q) * dh ** -0.5
        return self.pool_output(attention_pool(member, scores, values))


def similarity_probabilities(q, k, bias):
    """q, k (B, L-1, D) → p (B, L) = clamp((1 - (q·k + β))/2, 0, 1), with p = 0 at the last frame."""
    p = ((1.0 - ((q * k).sum(-1) + bias)) / 2.0).clamp(0.0, 1.0)
    return F.pad(p, (0, 1), value=0.0)


class BP2(MultiHeadPoolMixin, Predictor):
    def __init__(self, slot, d, hidden, attention):
        Predictor.__init__(self, slot)
        self.boundary_mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.q_proj_layer = nn.Linear(d, d, bias=False)
        self.k_proj_layer = nn.Linear(d, d, bias=False)
        self.similarity_bias = nn.Parameter(torch.zeros(()))
        if attention:
            self.add_pooling(d)

    def side(self, x, projection):
        xn = normalize(x)
        return projection(normalize(xn + self.boundary_mlp(xn)))

    def probabilities(self, x, mask):
        q = self.side(x[:, :-1], self.q_proj_layer)
        k = self.side(x[:, 1:], self.k_proj_layer)
        return similarity_probabilities(q, k, self.similarity_bias), x


def fit(x, length):
    """Trims or zero-pads the last dimension of (B, C, T) to length."""
    t = x.shape[2]
    return x[:, :, :length] if t >= length else F.pad(x, (0, length - t))


class UNet(nn.Module):
    def __init__(self, d, alignment):
        super().__init__()
        if d % 2 != 0:
            raise ValueError(f"BP3's U-Net needs an even width, got {d}")
        h = d // 2
        self.encoder_conv = nn.Conv1d(d, h, 3, stride=2, padding=1)
        self.encoder_norm = nn.BatchNorm1d(h)
        self.bottleneck_conv = nn.Conv1d(h, h, 3, padding=1)
        self.bottleneck_norm = nn.BatchNorm1d(h)
        self.decoder_conv = nn.ConvTranspose1d(h, h, 4, stride=2, padding=1)
        self.decoder_norm1 = nn.BatchNorm1d(d)
        self.refine_conv = nn.Conv1d(d, d, 3, padding=1)
        self.decoder_norm2 = nn.BatchNorm1d(d)
        if alignment not in ("aligned", "original_crop"):
            raise ValueError(f"unknown unet_alignment {alignment!r}")
        self.aligned = alignment == "aligned"

    def forward(self, x, mask):
        """x (B, L, D), mask (B, L) bool → (B, L, D)."""
        l = x.shape[1]
        c = x.transpose(1, 2)
        if self.aligned:
            full = mask[:, None, :].to(x.dtype)
            half = mask[:, None, 0::2].to(x.dtype)  # encoder step j is centred on frame 2j
            enc = F.gelu(self.encoder_norm(self.encoder_conv(c * full))) * half
            bott = F.gelu(self.bottleneck_norm(self.bottleneck_conv(enc))) * half
            up = fit(self.decoder_conv(bott), l)
            skip = fit(enc.repeat_interleave(2, dim=2), l)
            joined = F.gelu(self.decoder_norm1(torch.cat((up, skip), dim=1))) * full
            out = self.decoder_norm2(self.refine_conv(joined))
        else:
            enc = F.gelu(self.encoder_norm(self.encoder_conv(c)))
            bott = F.gelu(self.bottleneck_norm(self.bottleneck_conv(enc)))
            up = fit(self.decoder_conv(bott), enc.shape[2])
            joined = F.gelu(self.decoder_norm1(torch.cat((up, enc), dim=1)))
            if joined.shape[2] != l:
                joined = F.interpolate(joined, size=l, mode="linear", align_corners=False)
            out = self.decoder_norm2(self.refine_conv(joined))
        return out.transpose(1, 2)


class BP3(MultiHeadPoolMixin, Predictor):
    def __init__(self, slot, d, hidden, attention):
        Predictor.__init__(self, slot)
        self.unet = UNet(d, slot.get("unet_alignment", "aligned"))
        self.q_mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.k_mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.q_proj_layer = nn.Linear(d, d, bias=False)
        self.k_proj_layer = nn.Linear(d, d, bias=False)
        self.similarity_bias = nn.Parameter(torch.zeros(()))
        if attention:
            self.add_pooling(d)

    def probabilities(self, x, mask):
        e = x + self.unet(x, mask)
        q = self.q_proj_layer(normalize(self.q_mlp(normalize(e[:, :-1]))))
        k = self.k_proj_layer(normalize(self.k_mlp(normalize(e[:, 1:]))))
        return similarity_probabilities(q, k, self.similarity_bias), e


class BP4(Predictor):
    def __init__(self, slot, d, hidden, attention):
        super().__init__(slot)
        if attention:
            raise ValueError("BP4 has mean pooling only")
        self.boundary_conv = nn.Sequential(nn.Conv1d(d, hidden, 3), nn.ReLU(), nn.Conv1d(hidden, 1, 1))

    def probabilities(self, x, mask):
        b, l, _ = x.shape
        logits = torch.full((b, l), -10.0, dtype=x.dtype)
        if l >= 3:
            logits[:, 2:] = self.boundary_conv(x.transpose(1, 2)).squeeze(1)  # output i ends at frame i + 2
        return torch.sigmoid(logits), x


PREDICTORS = {"BoundaryPredictor1": BP1, "BoundaryPredictor2": BP2, "BoundaryPredictor3": BP3,
              "BoundaryPredictor4": BP4}


def scorer_width(kind, prefix, tensors):
    """Hidden width of a predictor's scorer, read from its first layer's weight."""
    first = {"BoundaryPredictor1": "boundary_mlp.0.weight", "BoundaryPredictor2": "boundary_mlp.0.weight",
             "BoundaryPredictor3": "q_mlp.0.weight", "BoundaryPredictor4": "boundary_conv.0.weight"}[kind]
    name = prefix + first
    if name not in tensors:
        raise KeyError(f"the checkpoint has no {name} for the {kind} of magnet.json")
    return tensors[name].shape[0]


# ---------------------------------------------------------------- encoder, decoder, model

class Encoder(nn.Module):
    def __init__(self, c, magnet, tensors):
        super().__init__()
        d = c["d_model"]
        act = activation(c.get("activation_function", "gelu"))
        theta = float(magnet.get("rope_theta", 10000.0))
        mask_rule = magnet.get("compatibility", {}).get("encoder_self_attention_mask", "queries_and_keys")
        self.conv1 = nn.Conv1d(c["num_mel_bins"], d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(c["max_source_positions"], d)  # kept in the checkpoint, never added
        convs, channels, self.stride = [], d, 2
        for out, kernel, stride in (magnet.get("conv_config") or {}).get("layers", []):
            convs.append(nn.Conv1d(channels, out, kernel, stride=stride, padding=kernel // 2))
            channels, self.stride = out, self.stride * stride
        self.additional_convs = nn.ModuleList(convs)
        self.layers = nn.ModuleList(
            EncoderLayer(d, c["encoder_attention_heads"], c["encoder_ffn_dim"], act, theta, mask_rule == "queries_and_keys")
            for _ in range(c["encoder_layers"]))
        self.layer_norm = nn.LayerNorm(d)
        predictors = {}
        for slot in magnet["slots"]:
            kind = slot["type"]
            if kind == "Identity":
                continue
            if kind not in PREDICTORS:
                raise ValueError(f"unknown predictor type {kind!r}")
            prefix = f"model.encoder.boundary_predictors.{slot['layer']}."
            hidden = scorer_width(kind, prefix, tensors)
            predictors[str(slot["layer"])] = PREDICTORS[kind](slot, d, hidden, slot.get("pooling") != "mean")
        self.boundary_predictors = nn.ModuleDict(predictors)
        self.frames, self.mels = 2 * c["max_source_positions"], c["num_mel_bins"]

    def forward(self, mel, frame_mask):
        if mel.dim() != 3 or mel.shape[1] != self.mels or mel.shape[2] != self.frames:
            raise ValueError(f"mel must be (B, {self.mels}, {self.frames}), got {tuple(mel.shape)}")
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel))))
        for conv in self.additional_convs:
            x = F.gelu(conv(x))
        x = x.transpose(1, 2)
        b, l = x.shape[0], x.shape[1]
        if frame_mask is None:
            mask = torch.ones(b, l, dtype=torch.bool)
        else:
            frames = frame_mask.shape[1]
            padded = F.pad(frame_mask != 0, (0, (-frames) % self.stride), value=False)
            mask = padded.view(b, -1, self.stride).any(dim=2)
            if mask.shape[1] != l:
                raise ValueError(f"the pooled frame mask has {mask.shape[1]} positions, the convolutions give {l}")
        layers = {}
        for i, layer in enumerate(self.layers):
            key = str(i)
            if key in self.boundary_predictors:
                x, mask, layers[i] = self.boundary_predictors[key](x, mask)
            x = layer(x, mask)
        return self.layer_norm(x), mask, layers


class Decoder(nn.Module):
    def __init__(self, c, magnet):
        super().__init__()
        d = c["d_model"]
        act = activation(c.get("activation_function", "gelu"))
        theta = float(magnet.get("rope_theta", 10000.0))
        self.embed_tokens = nn.Embedding(c["vocab_size"], d)
        self.embed_positions = nn.Embedding(c["max_target_positions"], d)  # kept, never added
        self.layers = nn.ModuleList(
            DecoderLayer(d, c["decoder_attention_heads"], c["decoder_ffn_dim"], act, theta) for _ in range(c["decoder_layers"]))
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, tokens, enc, enc_mask):
        h = self.embed_tokens(tokens)
        for layer in self.layers:
            h = layer(h, enc, enc_mask)
        return self.layer_norm(h)


class MagnetWhisper(nn.Module):
    def __init__(self, c, magnet, tensors):
        super().__init__()
        self.encoder = Encoder(c, magnet, tensors)
        self.decoder = Decoder(c, magnet)
        self.proj_out = None if c.get("tie_word_embeddings", True) else nn.Linear(c["d_model"], c["vocab_size"], bias=False)

    def logits(self, tokens, enc, enc_mask):
        h = self.decoder(tokens, enc, enc_mask)
        w = self.decoder.embed_tokens.weight if self.proj_out is None else self.proj_out.weight
        return h @ w.t()


def load(folder):
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(folder, "magnet.json")) as f:
        magnet = json.load(f)
    if magnet.get("format") != "magnet-whisper":
        raise ValueError(f"{folder}/magnet.json: format is {magnet.get('format')!r}, expected 'magnet-whisper'")
    tensors = read_checkpoint(folder)
    model = MagnetWhisper(config, magnet, tensors)
    state = {}
    for name, value in tensors.items():
        if name.startswith("model."):
            state[name[len("model."):]] = value
        elif name == "proj_out.weight":
            if model.proj_out is not None:
                state[name] = value
        else:
            raise KeyError(f"{folder}: unexpected tensor {name}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def run_unet(folder, alignment):
    x = torch.from_numpy(np.load(os.path.join(folder, "x.npy")).astype(np.float32))
    mask = torch.from_numpy(np.load(os.path.join(folder, "mask.npy"))) != 0
    unet = UNet(x.shape[2], alignment)
    state = {}
    for name in os.listdir(folder):
        key = name[:-len(".npy")]
        if name.endswith(".npy") and key not in ("x", "mask", "y"):
            state[key] = torch.from_numpy(np.load(os.path.join(folder, name)).astype(np.float32))
    missing, unexpected = unet.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise KeyError(f"{folder}: missing U-Net tensors {missing}, unexpected {unexpected}")
    with torch.inference_mode():
        np.save(os.path.join(folder, "y.npy"), unet.eval()(x, mask).numpy())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", help="MagnetWhisper folder (config.json + model.safetensors + magnet.json)")
    p.add_argument("--unet", help="run BP3's U-Net alone on the tensors of this folder (see the usage)")
    p.add_argument("--alignment", default="aligned", help="U-Net alignment with --unet: aligned or original_crop")
    p.add_argument("--mel", help="input log-mel .npy (B, mels, frames)")
    p.add_argument("--mask", help="frame mask .npy (B, frames), nonzero = valid")
    p.add_argument("--tokens", help="decoder input token ids .npy (B, T)")
    p.add_argument("--out", help="folder for the output .npy files")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    args = p.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    if args.unet is not None:
        run_unet(args.unet, args.alignment)
        return
    if args.model is None or args.mel is None or args.out is None:
        p.error("give MODEL_DIR, --mel and --out (or --unet DIR)")
    model = load(args.model)
    mel = torch.from_numpy(np.load(args.mel).astype(np.float32))
    mask = None if args.mask is None else torch.from_numpy(np.load(args.mask).astype(np.float32))
    os.makedirs(args.out, exist_ok=True)

    def save(name, t):
        np.save(os.path.join(args.out, name), t.detach().to(torch.float32).numpy())

    with torch.inference_mode():
        enc, enc_mask, layers = model.encoder(mel, mask)
        save("encoder.npy", enc)
        save("encoder_mask.npy", enc_mask.to(torch.float32))
        for i, out in layers.items():
            for key, value in out.items():
                save(f"layer{i}_{key}.npy", value)
        if args.tokens is not None:
            tokens = torch.from_numpy(np.load(args.tokens).astype(np.int64))
            save("logits.npy", model.logits(tokens, enc, enc_mask))


if __name__ == "__main__":
    try:
        main()
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"magnet_reference.py: error: {e}", file=sys.stderr)
        sys.exit(2)
