"""The matrix product of the fitted networks, ``x @ w`` over a stack of signals, with a weight gradient a GPU can
spread out.

Every network of a latent-grid fit multiplies activations of one row per sample (M signals, N of up to millions
of rows, a few dozen columns) by a small weight matrix per signal. The weight's gradient is ``x^T @ g``: a tiny
output (columns x columns) per signal, summed over the N rows. Handed to one batched product, a GPU computes
each signal's sum in one tile of threads, so only M of its 132 multiprocessors work: on an H200, fitting 12 Kodak
images, that one kernel took 59% of the device time (bench/fit_speed.py, bench/results/fit_speed_h200.json).
Here the rows are cut into up to ``MAX_CHUNKS`` chunks, each chunk's product is one batch entry, and the
partial sums are added: the same sum in another order, over M x chunks tiles.
"""

from __future__ import annotations

import torch

MAX_CHUNKS = 256
MIN_ROWS = 1024  # rows per chunk at the least: shorter products are not worth a kernel of their own


class _StackMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return x @ w

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, w = ctx.saved_tensors
        gx = (g @ w.mT).sum_to_size(x.shape) if ctx.needs_input_grad[0] else None
        gw = weight_grad(x, g).sum_to_size(w.shape) if ctx.needs_input_grad[1] else None
        return gx, gw


def stack_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w`` for ``x`` (..., N, F) and ``w`` (..., F, H), batch dimensions broadcast as by ``torch.matmul``;
    its weight gradient is computed by :func:`weight_grad`."""
    return _StackMatmul.apply(x, w)


def weight_grad(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``x^T @ g`` over the rows (dimension -2) of ``x`` (..., N, F) and ``g`` (..., N, H), summed chunk by chunk."""
    n = x.shape[-2]
    chunks = min(MAX_CHUNKS, n // MIN_ROWS)
    if chunks < 2:
        return x.mT @ g
    rows = n // chunks
    head = chunks * rows
    xs = x[..., :head, :].unflatten(-2, (chunks, rows))
    gs = g[..., :head, :].unflatten(-2, (chunks, rows))
    out = (xs.mT @ gs).sum(-3)
    if head < n:
        out = out + x[..., head:, :].mT @ g[..., head:, :]
    return out
