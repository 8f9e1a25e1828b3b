"""Losses of the Neural-Experts fit, one value per network of a stack."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gated_mse(preds: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over points of sum_k q_k(x) * mse(f_k(x), y): each expert's error weighted by its gate.

    ``preds`` is ``(..., K, N, C)``, ``logits`` ``(..., N, K)``, ``target`` ``(..., N, C)``; the
    result has the leading shape ``...`` (one loss per network of a stack).
    """
    err = (preds - target.unsqueeze(-3)).pow(2).mean(dim=-1)  # (..., K, N)
    gates = torch.softmax(logits, dim=-1).transpose(-1, -2)
    return (gates * err).sum(dim=-2).mean(dim=-1)


def balanced_label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Manager pretraining loss, per network: cross-entropy to random labels plus 0.1 BCE towards 1/K.

    ``logits`` is ``(M, N, K)``, ``labels`` ``(M, N)``; the result is ``(M,)``.
    """
    m, n, k = logits.shape
    ce = F.cross_entropy(logits.reshape(m * n, k), labels.reshape(m * n), label_smoothing=0.01, reduction="none")
    q = torch.softmax(logits, dim=-1).clamp(1e-6, 1 - 1e-6)
    uniform = torch.full_like(q, 1.0 / k)
    bce = F.binary_cross_entropy(q, uniform, reduction="none").mean(dim=(1, 2))
    return ce.view(m, n).mean(dim=1) + 0.1 * bce
