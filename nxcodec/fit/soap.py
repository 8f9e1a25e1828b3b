"""SOAP for stacks of small networks: Adam run in the eigenbasis of Shampoo's preconditioner.

SOAP (Vyas et al., "SOAP: Improving and Stabilizing Shampoo using Adam", 2024) keeps, for
a weight matrix G of a x b, running averages L of G G^T and R of G^T G, and runs Adam on
the gradient rotated into their eigenvectors, Q_L^T G Q_R. The eigenvectors are refreshed
every few steps by one power iteration and a QR decomposition. Cool-chic 5 fits its
networks with it and its latents with Adam.

Here every weight has leading dimensions that index the signals fitted side by side (and
the experts), so each matrix gets its own preconditioner: one batched ``eigh`` or ``qr``
over the stack. The networks are tiny (sides of 3 to 64), so this costs little beside the
forward pass. A parameter without a matrix view (biases, latents, filter taps) gets plain
Adam with its group's betas.
"""

from __future__ import annotations

import math

import torch


class StackSOAP(torch.optim.Optimizer):
    """SOAP over parameters whose matrices are stacked; ``views`` maps ``id(param)`` to (rows, columns).

    Group options: ``lr``; ``betas`` (Adam's, in the rotated basis); ``eps``; ``weight_decay`` (decoupled, as
    AdamW, and on the matrices only: biases and filter taps are not pulled to 0); ``precondition_frequency`` (steps
    between eigenbasis refreshes); ``shampoo_beta`` (the running averages' decay; None: ``betas[1]``).
    """

    def __init__(self, params, views: dict[int, tuple[int, int]], lr: float = 1e-2,
                 betas: tuple[float, float] = (0.95, 0.95), eps: float = 1e-8, weight_decay: float = 0.0,
                 precondition_frequency: int = 10, shampoo_beta: float | None = None) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "precondition_frequency": precondition_frequency, "shampoo_beta": shampoo_beta}
        super().__init__(params, defaults)
        self.views = views

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (torch's signature)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                view = self.views.get(id(p))
                if view is None:
                    self._adam(p, group)
                else:
                    self._soap(p, group, view)
        return None

    def _adam(self, p: torch.Tensor, group: dict) -> None:
        state = self.state[p]
        if not state:
            state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
        b1, b2 = group["betas"]
        state["step"] += 1
        t = state["step"]
        state["m"].lerp_(p.grad, 1 - b1)
        state["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
        size = group["lr"] * math.sqrt(1 - b2**t) / (1 - b1**t)
        p.addcdiv_(state["m"], state["v"].sqrt().add_(group["eps"]), value=-size)

    def _soap(self, p: torch.Tensor, group: dict, view: tuple[int, int]) -> None:
        a, b = view
        g = p.grad.reshape(-1, a, b)
        state = self.state[p]
        b1, b2 = group["betas"]
        beta = group["shampoo_beta"] if group["shampoo_beta"] is not None else b2
        if not state:  # the first gradient only starts the preconditioner (it is not used to project itself)
            left, right = (1 - beta) * g @ g.transpose(1, 2), (1 - beta) * g.transpose(1, 2) @ g
            state.update(step=0, m=torch.zeros_like(g), v=torch.zeros_like(g), left=left, right=right,
                         q_left=_eigenvectors(left), q_right=_eigenvectors(right))
            return
        ql, qr = state["q_left"], state["q_right"]
        rotated = ql.transpose(1, 2) @ g @ qr
        state["step"] += 1
        t = state["step"]
        m, v = state["m"], state["v"]
        m.lerp_(rotated, 1 - b1)
        v.mul_(b2).addcmul_(rotated, rotated, value=1 - b2)
        size = group["lr"] * math.sqrt(1 - b2**t) / (1 - b1**t)
        update = ql @ (m / (v.sqrt() + group["eps"])) @ qr.transpose(1, 2)
        p.add_(update.view_as(p), alpha=-size)
        if group["weight_decay"]:
            p.mul_(1 - group["lr"] * group["weight_decay"])
        state["left"].lerp_(g @ g.transpose(1, 2), 1 - beta)
        state["right"].lerp_(g.transpose(1, 2) @ g, 1 - beta)
        if t % group["precondition_frequency"] == 0:
            m_plain = ql @ m @ qr.transpose(1, 2)
            ql, order_l = _refresh(state["left"], ql)
            qr, order_r = _refresh(state["right"], qr)
            # The second moments follow their eigenvectors to the new order; the first is rotated anew.
            v.copy_(v.gather(1, order_l.unsqueeze(2).expand_as(v)).gather(2, order_r.unsqueeze(1).expand_as(v)))
            m.copy_(ql.transpose(1, 2) @ m_plain @ qr)
            state["q_left"], state["q_right"] = ql, qr


def _eigenvectors(mat: torch.Tensor) -> torch.Tensor:
    """(B, n, n) eigenvectors of symmetric matrices, largest eigenvalue first (in binary64 for robustness)."""
    eye = torch.eye(mat.shape[-1], dtype=torch.float64, device=mat.device)
    _, q = torch.linalg.eigh(mat.double() + 1e-30 * eye)
    return q.flip(-1).to(mat.dtype)


def _refresh(mat: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One power iteration from ``q`` towards the eigenvectors of ``mat``, re-orthonormalised by QR, with ``q``'s
    columns first sorted by their estimated eigenvalues (largest first); returns the new basis and that order."""
    estimate = torch.diagonal(q.transpose(1, 2) @ mat @ q, dim1=1, dim2=2)
    order = estimate.argsort(dim=1, descending=True)
    q = q.gather(2, order.unsqueeze(1).expand_as(q))
    basis, _ = torch.linalg.qr(mat @ q)
    return basis, order
