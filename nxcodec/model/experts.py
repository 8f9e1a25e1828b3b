"""The Neural-Experts network: a shared expert encoder, K experts and a manager.

Training evaluates every expert on every point and weights each expert's error by its
gate (:meth:`NeuralExperts.forward_all`). Decoding routes each point to the expert with
the largest gate and evaluates only that expert (:meth:`NeuralExperts.forward_routed`).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from nxcodec.model.config import ModelConfig, tensor_shapes  # noqa: F401 (re-exported)
from nxcodec.model.sine import SineLayer, StackedSineLayer, fourier_encode


class NeuralExperts(nn.Module):
    """Mixture-of-experts implicit neural representation for one signal."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w0f, w0h = float(cfg.w0_first), float(cfg.w0_hidden)
        widths = [cfg.encoded_dim] + [cfg.enc_width] * cfg.enc_depth
        self.encoder = nn.ModuleList(
            SineLayer(a, b, w0f if i == 0 else w0h, first=i == 0)
            for i, (a, b) in enumerate(zip(widths, widths[1:]))
        )
        k = cfg.n_experts
        widths = [cfg.enc_width] + [cfg.expert_width] * cfg.expert_depth
        self.experts = nn.ModuleList(StackedSineLayer(k, a, b, w0h) for a, b in zip(widths, widths[1:]))
        self.experts_out = StackedSineLayer(k, widths[-1], cfg.out_dim, 0.0)
        self.manager_encoder = nn.ModuleList()
        self.manager = nn.ModuleList()
        if k > 1:
            widths = [cfg.encoded_dim] + [cfg.mgr_width] * cfg.mgr_enc_depth
            self.manager_encoder.extend(
                SineLayer(a, b, w0f if i == 0 else w0h, first=i == 0)
                for i, (a, b) in enumerate(zip(widths, widths[1:]))
            )
            fan_in = (cfg.mgr_width if cfg.mgr_enc_depth else 0) + cfg.enc_width
            widths = [fan_in] + [cfg.mgr_width] * cfg.mgr_depth
            self.manager.extend(SineLayer(a, b, w0h) for a, b in zip(widths, widths[1:]))
            self.manager_out = SineLayer(widths[-1], k, 0.0)

    def coded_tensors(self) -> "OrderedDict[str, nn.Parameter]":
        """Every parameter under its stream name, in stream order."""
        out: OrderedDict[str, nn.Parameter] = OrderedDict()
        for prefix, layers in (("encoder", self.encoder), ("experts", self.experts)):
            for i, layer in enumerate(layers):
                out[f"{prefix}.{i}.weight"], out[f"{prefix}.{i}.bias"] = layer.weight, layer.bias
        out["experts.out.weight"], out["experts.out.bias"] = self.experts_out.weight, self.experts_out.bias
        if self.cfg.n_experts > 1:
            for prefix, layers in (("manager_encoder", self.manager_encoder), ("manager", self.manager)):
                for i, layer in enumerate(layers):
                    out[f"{prefix}.{i}.weight"], out[f"{prefix}.{i}.bias"] = layer.weight, layer.bias
            out["manager.out.weight"], out["manager.out.bias"] = self.manager_out.weight, self.manager_out.bias
        return out

    def manager_parameters(self) -> list[nn.Parameter]:
        """Parameters that only the manager uses (trained alone during pretraining)."""
        if self.cfg.n_experts == 1:
            return []
        return [*self.manager_encoder.parameters(), *self.manager.parameters(), *self.manager_out.parameters()]

    def encode(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoded coordinates and the shared expert-encoder features."""
        g = fourier_encode(coords, self.cfg.n_freq)
        h = g
        for layer in self.encoder:
            h = layer(h)
        return g, h

    def gate_logits(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Manager logits ``(N, K)``, conditioned on the expert-encoder features ``h``."""
        m = g
        for layer in self.manager_encoder:
            m = layer(m)
        m = torch.cat([m, h], dim=-1) if self.cfg.mgr_enc_depth else h
        for layer in self.manager:
            m = layer(m)
        return self.manager_out(m)

    def _first_expert_input(self, h: torch.Tensor) -> torch.Tensor:
        return h.unsqueeze(0).expand(self.cfg.n_experts, -1, -1)

    def forward_all(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every expert's prediction ``(K, N, C)`` and the manager's logits ``(N, K)``."""
        g, h = self.encode(coords)
        z = self._first_expert_input(h)
        for layer in self.experts:
            z = layer(z)
        preds = self.experts_out(z)
        if self.cfg.n_experts == 1:
            return preds, torch.zeros(coords.shape[0], 1, dtype=coords.dtype, device=coords.device)
        return preds, self.gate_logits(g, h)

    def forward(self, coords, mode: str = "all"):
        """One entry point for ``torch.func.functional_call`` (many networks fitted at once).

        ``all``: :meth:`forward_all`; ``encode``: :meth:`encode`'s ``(g, h)``; ``gate``: the
        manager's logits from ``coords = (g, h)`` (manager pretraining); ``hard``: the top-1
        routed prediction ``(N, C)``, computed densely from every expert so that it vectorises
        (the decoder uses :meth:`forward_routed`).
        """
        if mode == "all":
            return self.forward_all(coords)
        if mode == "encode":
            return self.encode(coords)
        if mode == "gate":
            return self.gate_logits(*coords)
        if mode == "hard":
            preds, logits = self.forward_all(coords)
            if self.cfg.n_experts == 1:
                return preds[0]
            choice = logits.argmax(dim=-1)
            return preds.gather(0, choice.view(1, -1, 1).expand(1, -1, preds.shape[-1])).squeeze(0)
        raise ValueError(f"unknown mode {mode!r}")

    @torch.no_grad()
    def forward_routed(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hard top-1 routing: each point gets only its chosen expert's prediction.

        Returns the predictions ``(N, C)`` and the chosen expert per point ``(N,)``.
        """
        g, h = self.encode(coords)
        n = coords.shape[0]
        if self.cfg.n_experts == 1:
            choice = torch.zeros(n, dtype=torch.long, device=coords.device)
        else:
            choice = self.gate_logits(g, h).argmax(dim=-1)
        out = torch.empty(n, self.cfg.out_dim, dtype=h.dtype, device=h.device)
        for k in range(self.cfg.n_experts):
            idx = (choice == k).nonzero(as_tuple=True)[0]
            if idx.numel() == 0:
                continue
            z = h.index_select(0, idx)
            for layer in self.experts:
                z = layer.forward_one(z, k)
            out[idx] = self.experts_out.forward_one(z, k)
        return out, choice

    @torch.no_grad()
    def predict(self, coords: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
        """Routed predictions for any number of points, ``chunk`` at a time (bounded memory)."""
        parts = [self.forward_routed(coords[i : i + chunk])[0] for i in range(0, coords.shape[0], chunk)]
        return torch.cat(parts) if parts else coords.new_zeros(0, self.cfg.out_dim)
