#!/usr/bin/env python3
"""Reference MagnetWhisper training step in plain PyTorch, for `magnet bench train --pytorch`.

Copyright (c) MagnetWhisper contributors. MIT licence (see LICENSE at the repository root).

One supervised update of the model of magnet_reference.py (same folder, written from docs/SPEC.md): forward with
sampled boundaries, token-mean cross-entropy plus the utterance-mean boundary loss, backward, global-norm gradient
clipping, one torch.optim.AdamW step. Written from SPEC §4.1 (sampling recipe), §4.2 (BP1, supervised loss), §2.1
(differentiable segment mean), §3 (binomial loss from target counts) and §8.1, with the project's DECISIONS:

  predictor  p from the scorer (BP1: σ(MLP(dropout₀.₁(h))), pooled features h itself); z = σ((logit p̃ + ln u −
             ln(1−u))/τ) with u ~ U(0,1) from a seeded generator; h = 1[z > ½]; straight-through hb = h + z − sg(z);
             masked; a boundary forced at every row's last valid position (DECISIONS #1); attention pooling (no
             gradient to the boundaries) or the segment mean of SPEC §2.1 (gradient to the boundaries through the
             exclusive prefix count); + sinusoidal segment embedding; shortened mask.
  loss       Σ CE over labels ≠ −100 / their count + mean over utterances of Σ_predictors 10·NLL_Bin(Σhb; n, p)/n,
             n = valid positions, p = clamp(min(t, n)/n, 1e-6, 1−1e-6), t the utterance's target count (one row
             per count-trained predictor, DECISIONS #3; BP3 takes none).
  optimizer  AdamW (β 0.9/0.999, ε 1e-8) with weight decay on every parameter except biases, vectors (norm
             weights, pool queries) and embeddings; clip_grad_norm_ to 2.0 over the trained parameters.

Usage
  train_reference.py MODEL_DIR --inputs DIR [--bench] [--threads N] [--warmup W] [--repeats R] [--lr LR]
    DIR holds mel.npy (B, mels, frames) float32, mask.npy (B, frames), tokens.npy and labels.npy (B, T) int64 and,
    when some predictor reads targets, targets.npy (rows, B) float32.
    Without --bench: one update, printing "loss <total> ce <ce> boundary <boundary>".
    With --bench: W untimed then R timed updates, printing
    "pytorch <version> train median_ms <ms> min_ms <ms> max_ms <ms> threads <n> batch <b> first_ce <ce>" (the
    cross-entropy of the first update, before any step: equal to ours for the same weights and inputs).

Needs PyTorch and numpy (on Debian: apt-get install python3-torch). Runs in float32 on the CPU.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import magnet_reference as ref  # noqa: E402  (same folder)

BOUNDARY_LOSS_SCALE = 10.0
CLIP_NORM = 2.0


def sample_boundaries(p, mask, tau, generator):
    """Straight-through boundaries (B, L): value 1[z > ½]·mask plus the forced last boundary, gradient of z."""
    eps = torch.finfo(p.dtype).eps
    logit = torch.logit(p.clamp(eps, 1 - eps))
    u = torch.rand(p.shape, generator=generator, dtype=p.dtype).clamp(eps, 1 - eps)
    z = torch.sigmoid((logit + torch.log(u) - torch.log1p(-u)) / tau).clamp(eps, 1 - eps)
    hard = (z > 0.5).to(z.dtype)
    m = mask.to(z.dtype)
    hb = (hard + z - z.detach()) * m
    lengths = mask.sum(dim=1)
    last = F.one_hot((lengths - 1).clamp(min=0), mask.shape[1]).to(z.dtype) * (lengths > 0)[:, None].to(z.dtype)
    return torch.maximum(hb, last)


def differentiable_mean(hb, x, mask):
    """SPEC §2.1 segment means (B, S, D) with the gradient to hb through the exclusive prefix count."""
    s = int(hb.detach().sum(dim=1).max())
    c = torch.cumsum(hb, dim=1) - hb  # (B, L), exclusive count
    offset = torch.arange(s, dtype=hb.dtype)[None, None, :] - c[:, :, None]  # (B, L, S)
    w = (1 - offset) * (offset.detach() == 0).to(hb.dtype) * mask.to(hb.dtype)[:, :, None]
    w = w / (w.sum(dim=1, keepdim=True) + 1e-9)
    return w.transpose(1, 2) @ x


def train_predictor(pred, x, mask, targets, tau, generator):
    """(pooled (B, S, D), shortened mask (B, S), per-utterance boundary loss (B,))."""
    if isinstance(pred, ref.BP1):
        p = torch.sigmoid(pred.boundary_mlp(F.dropout(x, 0.1, training=True)).squeeze(-1))
        features = x
    else:
        p, features = pred.probabilities(x, mask)
    hb = sample_boundaries(p, mask, tau, generator)
    member, counts = ref.membership(hb.detach() > 0.5, mask, False)
    pooled = differentiable_mean(hb, features, mask) if pred.pooling == "mean" else pred.pool(member, features)
    s = member.shape[1]
    pooled = pooled + ref.sinusoidal(s, x.shape[2])[None]
    short = torch.arange(s)[None, :] < counts[:, None]
    if targets is None:
        return pooled, short, torch.zeros(x.shape[0])
    k = hb.sum(dim=1)
    n = mask.sum(dim=1).to(hb.dtype).clamp(min=1)
    prob = (torch.minimum(targets, n) / n).clamp(1e-6, 1 - 1e-6)
    nll = -(torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1) + k * torch.log(prob) + (n - k) * torch.log1p(-prob))
    return pooled, short, BOUNDARY_LOSS_SCALE * nll / n


def training_loss(model, mel, frame_mask, tokens, labels, targets, tau, generator):
    """(total, cross-entropy, boundary) of one batch; the encoder of magnet_reference with training predictors."""
    enc = model.encoder
    x = F.gelu(enc.conv2(F.gelu(enc.conv1(mel))))
    for conv in enc.additional_convs:
        x = F.gelu(conv(x))
    x = x.transpose(1, 2)
    b, length = x.shape[0], x.shape[1]
    frames = frame_mask.shape[1]
    padded = F.pad(frame_mask != 0, (0, (-frames) % enc.stride), value=False)
    mask = padded.view(b, -1, enc.stride).any(dim=2)[:, :length]
    boundary = torch.zeros(b)
    row = 0
    for i, layer in enumerate(enc.layers):
        key = str(i)
        if key in enc.boundary_predictors:
            pred = enc.boundary_predictors[key]
            reads_targets = not isinstance(pred, ref.BP3)
            t = targets[row] if reads_targets else None
            row += 1 if reads_targets else 0
            x, mask, loss = train_predictor(pred, x, mask, t, 1.0, generator)
            boundary = boundary + loss
        x = layer(x, mask)
    logits = model.logits(tokens, enc.layer_norm(x), mask)
    counted = (labels != -100).sum()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum") / counted
    boundary = boundary.mean()
    return ce + boundary, ce, boundary


def optimizer_of(model, lr):
    decayed, undecayed = [], []
    for name, p in model.named_parameters():
        if name.endswith("bias") or p.dim() <= 1 or "embed_tokens" in name or "embed_positions" in name:
            undecayed.append(p)
        else:
            decayed.append(p)
    return torch.optim.AdamW([{"params": decayed, "weight_decay": 0.01}, {"params": undecayed, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.999), eps=1e-8)


def update(model, optimizer, inputs, generator):
    optimizer.zero_grad(set_to_none=True)
    total, ce, boundary = training_loss(model, *inputs, generator=generator, tau=1.0)
    total.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], CLIP_NORM)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(total), float(ce), float(boundary)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="MagnetWhisper folder (config.json + model.safetensors + magnet.json)")
    p.add_argument("--inputs", required=True, help="folder of mel.npy, mask.npy, tokens.npy, labels.npy, targets.npy")
    p.add_argument("--bench", action="store_true", help="time updates instead of printing one update's losses")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-5)
    args = p.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be at least 1 and --warmup at least 0")
    model = ref.load(args.model).train()

    def read(name, dtype):
        return torch.from_numpy(np.load(os.path.join(args.inputs, name)).astype(dtype))

    targets_path = os.path.join(args.inputs, "targets.npy")
    targets = read("targets.npy", np.float32) if os.path.exists(targets_path) else None
    inputs = (read("mel.npy", np.float32), read("mask.npy", np.float32), read("tokens.npy", np.int64),
              read("labels.npy", np.int64), targets)
    optimizer = optimizer_of(model, args.lr)
    generator = torch.Generator().manual_seed(1)
    if not args.bench:
        total, ce, boundary = update(model, optimizer, inputs, generator)
        print(f"loss {total:.6g} ce {ce:.6g} boundary {boundary:.6g}")
        return
    first = None
    for _ in range(args.warmup):
        losses = update(model, optimizer, inputs, generator)
        first = first or losses
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        losses = update(model, optimizer, inputs, generator)
        times.append((time.perf_counter() - start) * 1000.0)
        first = first or losses
    print(f"pytorch {torch.__version__} train median_ms {statistics.median(times):.4f} min_ms {min(times):.4f} "
          f"max_ms {max(times):.4f} threads {torch.get_num_threads()} batch {inputs[0].shape[0]} first_ce {first[1]:.9g}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"train_reference.py: error: {e}", file=sys.stderr)
        sys.exit(2)
