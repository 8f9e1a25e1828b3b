"""The matrix product of the fitted networks, ``x @ w`` over a stack of signals, cut so that a GPU can spread it.

Every network of a latent-grid fit multiplies activations of one row per sample (M signals, N of up to millions
of rows, a few dozen columns) by a small weight matrix per signal. Handed to one batched product per signal,
a GPU gives each signal's product one tile of threads (or a few), so only about M of its 132 multiprocessors
work. On an H200, fitting 12 Kodak images (bench/fit_speed.py, bench/results/fit_speed_h200), the weight
gradients ``x^T @ g`` (a tiny matrix per signal, summed over 393k rows) took 59% of the device time in such a
kernel, 1.45 ms a call, and a forward product with 3 output columns 9% in another, 11.7 ms a call.

On a GPU the rows are therefore cut into chunks (:func:`chunk_count`), each chunk one batch entry: the
products then run over M x chunks entries, and a weight gradient is the sum of its chunks' partial sums
(the same sum in another order). On a CPU, where one product already runs on every core, the products stay
whole.
"""

from __future__ import annotations

import functools
import math

import torch

MAX_CHUNKS = 256
MIN_ROWS = 1024  # rows per chunk at the least: shorter products are not worth a batch entry of their own
MAX_BATCH = 65535  # batch entries of one product at the most: the grid limit of some GPU kernels


@functools.lru_cache(maxsize=None)
def chunk_count(rows: int, most: int = MAX_CHUNKS) -> int:
    """The largest number of chunks, at most ``most``, that divides ``rows`` into equal chunks of at least
    ``MIN_ROWS`` rows; 1 (no cut) where there is none."""
    for chunks in range(min(most, rows // MIN_ROWS), 1, -1):
        if rows % chunks == 0:
            return chunks
    return 1


def rows_matmul(a: torch.Tensor, b: torch.Tensor, chunks: int) -> torch.Tensor:
    """``a @ b`` for ``a`` (..., N, K) and ``b`` (..., K, H), with ``a``'s rows cut into ``chunks`` batch entries
    (``chunks`` divides N)."""
    if chunks == 1:
        return a @ b
    return (a.unflatten(-2, (chunks, -1)) @ b.unsqueeze(-3)).flatten(-3, -2)


def weight_grad(x: torch.Tensor, g: torch.Tensor, chunks: int) -> torch.Tensor:
    """``x^T @ g`` over the rows (dimension -2) of ``x`` (..., N, F) and ``g`` (..., N, H), summed chunk by chunk
    (``chunks`` divides N)."""
    if chunks == 1:
        return x.mT @ g
    return (x.unflatten(-2, (chunks, -1)).mT @ g.unflatten(-2, (chunks, -1))).sum(-3)


class _StackMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.chunks = _chunks_for(x, w)
        return rows_matmul(x, w, ctx.chunks)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, w = ctx.saved_tensors
        chunks = ctx.chunks
        gx = rows_matmul(g, w.mT, chunks).sum_to_size(x.shape) if ctx.needs_input_grad[0] else None
        gw = weight_grad(x, g, chunks).sum_to_size(w.shape) if ctx.needs_input_grad[1] else None
        return gx, gw


def _chunks_for(x: torch.Tensor, w: torch.Tensor) -> int:
    """Chunks for the rows of ``x`` in ``x @ w``: on a GPU only, and no more than keep the product's batch entries
    within ``MAX_BATCH``."""
    if not x.is_cuda:
        return 1
    batch = math.prod(torch.broadcast_shapes(x.shape[:-2], w.shape[:-2]))
    return chunk_count(x.shape[-2], min(MAX_CHUNKS, MAX_BATCH // max(batch, 1)))


def stack_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w`` for ``x`` (..., N, F) and ``w`` (..., F, H), batch dimensions broadcast as by ``torch.matmul``;
    on a GPU the rows are cut into chunks, forward and backward."""
    return _StackMatmul.apply(x, w)
