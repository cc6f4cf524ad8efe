#!/usr/bin/env python3
"""Trains a small character-level transformer language model whose attention is an attnc kernel
with a custom mask (the Sparse Transformer's fixed pattern) and learnable ALiBi slopes, through
attnc.torch, on a text every Debian system ships (the GPL-3 in /usr/share/common-licenses).
Prints the loss curve.

usage: examples/train_lm.py [--steps N] [--every K] [--threads T] [--text FILE]
       examples/train_lm.py --compare N   # N steps beside the same model in pure PyTorch:
                                          # the losses and slopes must agree to 1e-3 (exit 1 if not)

Needs python3-torch, python3-numpy and the attnc package (PYTHONPATH=python, or installed).
"""
import argparse
import math
import sys

import numpy as np
import torch

import attnc
import attnc.torch

SPEC = """
# Sparse Transformer (fixed pattern, blocks of 16, the last 2 of each block summarise it) with
# ALiBi: a linear penalty on distance whose slope each head learns.
attention lm {
    input f32 slope[heads];
    heads = 4; head_dim = 16;
    mask  = fixed(16, 2);
    score = score - slope[h] * (q - k);
}
"""

HEADS, HEAD_DIM, LAYERS, SEQ, BATCH = 4, 16, 2, 64, 8
DIM = HEADS * HEAD_DIM


def reference_attention(q, k, v, slope):
    """The same attention in plain PyTorch: materialized scores, the mask as a tensor."""
    L = q.shape[2]
    pos = torch.arange(L)
    qq, kk = pos[:, None], pos[None, :]
    mask = (kk <= qq) & ((kk // 16 == qq // 16) | (kk % 16 >= 14))
    s = q @ k.transpose(-1, -2) / math.sqrt(HEAD_DIM)
    s = s - slope[None, :, None, None] * (qq - kk).to(s.dtype)
    s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


class Block(torch.nn.Module):
    def __init__(self, attention):
        super().__init__()
        self.attention = attention
        self.ln1 = torch.nn.LayerNorm(DIM)
        self.ln2 = torch.nn.LayerNorm(DIM)
        self.qkv = torch.nn.Linear(DIM, 3 * DIM)
        self.out = torch.nn.Linear(DIM, DIM)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(DIM, 4 * DIM), torch.nn.GELU(), torch.nn.Linear(4 * DIM, DIM))
        self.slope = torch.nn.Parameter(torch.tensor([2.0 ** -(i + 1) for i in range(HEADS)]))

    def forward(self, x):
        B, L, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
        a = self.attention(q, k, v, self.slope).transpose(1, 2).reshape(B, L, DIM)
        x = x + self.out(a)
        return x + self.mlp(self.ln2(x))


class Model(torch.nn.Module):
    def __init__(self, vocab, attention):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, DIM)
        self.blocks = torch.nn.ModuleList(Block(attention) for _ in range(LAYERS))
        self.ln = torch.nn.LayerNorm(DIM)
        self.head = torch.nn.Linear(DIM, vocab)

    def forward(self, ids):
        x = self.embed(ids)
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln(x))


def batches(text, steps, seed):
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text], dtype=np.int64)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        at = rng.integers(0, len(ids) - SEQ - 1, size=BATCH)
        x = np.stack([ids[a:a + SEQ] for a in at])
        y = np.stack([ids[a + 1:a + SEQ + 1] for a in at])
        yield torch.from_numpy(x), torch.from_numpy(y)


def train(model, data, every=0):
    torch.manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step, (x, y) in enumerate(data):
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if every and (step % every == 0 or step == 0):
            print("step %4d  loss %.4f" % (step, loss.item()), flush=True)
    return losses


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    ap.add_argument("--compare", type=int, default=0, metavar="N")
    args = ap.parse_args()
    text = open(args.text, encoding="utf-8").read()
    vocab = len(set(text))
    kern = attnc.compile(SPEC)
    fast = attnc.torch.function(kern, threads=args.threads)

    def attnc_attention(q, k, v, slope):
        return fast(q, k, v, slope=slope)

    torch.manual_seed(0)
    model = Model(vocab, attnc_attention)
    if not args.compare:
        losses = train(model, batches(text, args.steps, 0), args.every)
        print("trained %d steps: loss %.4f -> %.4f; slopes %s" % (
            args.steps, losses[0], losses[-1], ", ".join("%.4f" % s for s in model.blocks[0].slope.tolist())))
        return 0
    torch.manual_seed(0)
    ref = Model(vocab, reference_attention)
    ref.load_state_dict(model.state_dict())
    a = train(model, batches(text, args.compare, 0))
    b = train(ref, batches(text, args.compare, 0))
    worst = max(abs(x - y) / abs(y) for x, y in zip(a, b))
    slopes = max((p - r).abs().max().item() for p, r in zip((m.slope for m in model.blocks), (m.slope for m in ref.blocks)))
    for i in range(0, args.compare, max(1, args.compare // 10)):
        print("step %4d  attnc %.6f  pytorch %.6f" % (i, a[i], b[i]))
    print("largest relative loss difference %.2e, largest slope difference %.2e" % (worst, slopes))
    return 0 if worst <= 1e-3 and slopes <= 1e-3 and a[-1] < a[0] else 1


if __name__ == "__main__":
    sys.exit(main())
