"""Adam over a stack of networks, with a learning rate per network.

Adam is elementwise, so one optimizer over stacked tensors is exactly one Adam per
network. The per-network learning rate is what lets one network of a stack back off
after a divergence while the others go on.
"""

from __future__ import annotations

import torch


class StackAdam:
    """Adam (no weight decay) for tensors whose first dimension indexes networks."""

    def __init__(self, params: dict[str, torch.Tensor], scales: dict[str, float] | None = None,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = params
        self.scales = scales or {}
        self.b1, self.b2 = betas
        self.eps = eps
        self.t = 0
        self.exp_avg = {k: torch.zeros_like(p) for k, p in params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(p) for k, p in params.items()}

    @torch.no_grad()
    def step(self, lr: torch.Tensor, skip: set[str] = frozenset()) -> None:
        """One update with learning rate ``lr[i]`` for network ``i``; ``skip`` names frozen tensors.

        Gradients are consumed (set to None).
        """
        self.t += 1
        c1, c2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        for name, p in self.params.items():
            g = p.grad
            p.grad = None
            if g is None or name in skip:
                continue
            m, v = self.exp_avg[name], self.exp_avg_sq[name]
            m.lerp_(g, 1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            rate = (lr * (self.scales.get(name, 1.0) / c1)).view(-1, *[1] * (p.dim() - 1))
            p.sub_(rate * m / ((v / c2).sqrt_().add_(self.eps)))

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        """A copy of the moments (for restoring networks after a divergence)."""
        return {"m": {k: v.clone() for k, v in self.exp_avg.items()},
                "v": {k: v.clone() for k, v in self.exp_avg_sq.items()}}

    @torch.no_grad()
    def restore(self, state: dict[str, dict[str, torch.Tensor]], networks: torch.Tensor) -> None:
        """Put back the moments of the networks selected by the boolean mask ``networks``."""
        for k in self.exp_avg:
            self.exp_avg[k][networks] = state["m"][k][networks]
            self.exp_avg_sq[k][networks] = state["v"][k][networks]
