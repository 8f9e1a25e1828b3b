"""Losses of the Neural-Experts fit."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gated_mse(preds: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over points of sum_k q_k(x) * mse(f_k(x), y): each expert's error weighted by its gate.

    ``preds`` is ``(K, N, C)``, ``logits`` ``(N, K)``, ``target`` ``(N, C)``.
    """
    err = (preds - target.unsqueeze(0)).pow(2).mean(dim=-1)  # (K, N)
    gates = torch.softmax(logits, dim=-1).transpose(0, 1)
    return (gates * err).sum(dim=0).mean()


def balanced_label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Manager pretraining loss: cross-entropy to random balanced labels plus 0.1 BCE towards 1/K."""
    k = logits.shape[-1]
    ce = F.cross_entropy(logits, labels, label_smoothing=0.01)
    q = torch.softmax(logits, dim=-1)
    uniform = torch.full_like(q, 1.0 / k)
    return ce + 0.1 * F.binary_cross_entropy(q.clamp(1e-6, 1 - 1e-6), uniform)
