"""Many networks of one family, fitted side by side as one set of stacked tensors.

Every parameter of ``M`` networks is stacked along a new first dimension and the
network is evaluated with ``torch.func.vmap``: one kernel launch serves every network,
so a GPU fitting 24 small images (or the windows of many audio clips) is busy instead of
waiting on Python. A single network is simply a stack of one.

Networks of one *family* (:func:`family`: configs that differ only in their layer widths
and first-layer frequency) share a stack too. Each network is then stored zero-padded to
the widest of the stack (its "envelope"), its tensors in the leading corner of the
envelope's; the forward pass multiplies every tensor by a fixed 0/1 mask, so padded
units stay exactly zero (their gradient is zero, and sin(0) = 0 feeds nothing onward),
and multiplies the first layer's weight and bias by ``w0_i / w0_envelope``, so network
``i`` computes exactly ``sin(w0_i (x W + b))``. The arithmetic is that of the separate
networks; the cost is that of the envelope.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from dataclasses import replace

from torch.func import functional_call, stack_module_state, vmap

from nxcodec.model.config import ModelConfig
from nxcodec.model.experts import NeuralExperts

_VARIABLE = ("enc_width", "expert_width", "mgr_width", "w0_first")  # what may differ within a stack


def family(cfg: ModelConfig) -> tuple:
    """A key equal for configs whose networks can share one stack.

    Widths may differ unless the manager has an encoder of its own (its features are
    concatenated with the expert encoder's, so padding would misplace them).
    """
    fixed = ("w0_first",) if cfg.mgr_enc_depth and cfg.n_experts > 1 else _VARIABLE
    return tuple((f, getattr(cfg, f)) for f in cfg.__dataclass_fields__ if f not in fixed)


def envelope(cfgs: list[ModelConfig]) -> ModelConfig:
    """The smallest config that holds each of ``cfgs`` (all of one :func:`family`)."""
    if len({family(c) for c in cfgs}) != 1:
        raise ValueError("every network of a stack must be of one family (configs differing only in widths and w0)")
    return replace(cfgs[0], **{f: max(getattr(c, f) for c in cfgs) for f in _VARIABLE})


class ModelStack:
    """``M`` Neural-Experts networks of one family, as stacked tensors ``(M, ...)``.

    ``params`` maps module paths (``encoder.0.weight``) to leaf tensors that require
    gradients; :meth:`stream_names` maps them to the stream's tensor names. ``cfgs`` are
    the networks' own configs, ``cfg`` the envelope (their common config when they agree).
    """

    def __init__(self, models: list[NeuralExperts]) -> None:
        if not models:
            raise ValueError("a stack needs at least one network")
        self.cfgs: list[ModelConfig] = [m.cfg for m in models]
        self.cfg: ModelConfig = envelope(self.cfgs)
        self._shapes = [{n: tuple(p.shape) for n, p in m.named_parameters()} for m in models]
        self._mult: dict[str, torch.Tensor] = {}  # per-path multipliers (masks, first-layer scales), if mixed
        if all(c == self.cfg for c in self.cfgs):
            params, _ = stack_module_state(models)
            self.template = copy.deepcopy(models[0]).to("meta")
        else:
            big = NeuralExperts(self.cfg).to("meta")
            device = next(models[0].parameters()).device
            params = {}
            for name, p in big.named_parameters():
                t = torch.zeros(len(models), *p.shape, dtype=p.dtype, device=device)
                mult = torch.zeros_like(t)
                for i, m in enumerate(models):
                    part = dict(m.named_parameters())[name].detach()
                    t[i][_corner(part.shape)] = part
                    mult[i][_corner(part.shape)] = self._first_scale(name, i)
                params[name] = t.requires_grad_()
                self._mult[name] = mult
            self.template = big
            models = [big]
        self.params: dict[str, torch.Tensor] = params
        path = {id(p): n for n, p in models[0].named_parameters()}
        self._paths = OrderedDict((stream, path[id(p)]) for stream, p in models[0].coded_tensors().items())
        self._manager = {path[id(p)] for p in models[0].manager_parameters()}
        self._encoder = {path[id(p)] for p in models[0].encoder.parameters()}

    def _first_scale(self, path: str, i: int) -> float:
        """``w0_i / w0_envelope`` for a first sine layer's tensors, else 1."""
        first = path.startswith("encoder.0.") or path.startswith("manager_encoder.0.")
        return self.cfgs[i].w0_first / self.cfg.w0_first if first else 1.0

    @classmethod
    def fresh(cls, cfg: ModelConfig | list[ModelConfig], m: int, device: torch.device) -> "ModelStack":
        """``m`` freshly initialised networks of ``cfg`` (or one of each config of a list), drawn in turn from
        torch's global generator."""
        cfgs = cfg if isinstance(cfg, list) else [cfg] * m
        return cls([NeuralExperts(c).to(device) for c in cfgs])

    def effective(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The tensors the envelope network is evaluated with: padding masked, first layers rescaled."""
        if not self._mult:
            return params
        return {k: v * self._mult[k] for k, v in params.items()}

    def stacked(self, networks: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Module path -> stacked (zero-padded) tensors, from each network's tensors under their stream names."""
        out = {}
        for name, path in self._paths.items():
            if not self._mult:
                out[path] = torch.stack([net[name] for net in networks])
                continue
            t = self.params[path].new_zeros(self.params[path].shape)
            for i, net in enumerate(networks):
                t[i][_corner(net[name].shape)] = net[name]
            out[path] = t
        return out

    def _own(self, params: dict[str, torch.Tensor], path: str, i: int) -> torch.Tensor:
        """Network ``i``'s tensor at ``path``, cut from the stacked ``params`` to its own shape."""
        return params[path][i][_corner(self._shapes[i][path])]

    @property
    def size(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def stream_names(self) -> "OrderedDict[str, str]":
        """Stream tensor name -> module path, in stream order."""
        return self._paths

    def manager_paths(self) -> set[str]:
        """Module paths of the manager's own parameters."""
        return set(self._manager)

    def shared_paths(self) -> set[str]:
        """Parameters every point depends on (expert encoder and manager): frozen at the end of a fit."""
        return self._encoder | self._manager

    def __call__(self, coords: torch.Tensor, mode: str = "all", params: dict[str, torch.Tensor] | None = None):
        """Evaluate network ``i`` on ``coords[i]`` for every ``i`` (see :meth:`NeuralExperts.forward`)."""

        def one(p: dict[str, torch.Tensor], x: torch.Tensor):
            return functional_call(self.template, p, (x,), {"mode": mode})

        return vmap(one)(self.effective(self.params if params is None else params), coords)

    @torch.no_grad()
    def predict(self, coords: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Every network's top-1 routed prediction ``(M, N, C)`` at ``coords[i]``.

        On a GPU the whole stack is evaluated at once, densely (every expert, then the chosen
        one's output): one launch serves all networks. On a CPU each network evaluates only
        the expert it routes each point to, a K-th of the arithmetic.
        """
        params = self.params if params is None else params
        if coords.device.type != "cpu":
            return self(coords, "hard", params)
        out = []
        for i in range(coords.shape[0]):
            probe = NeuralExperts(self.cfgs[i])
            for name, p in probe.named_parameters():
                p.copy_(self._own(params, name, i))
            out.append(probe.forward_routed(coords[i])[0])
        return torch.stack(out)

    def coded_tensors(self, i: int) -> "OrderedDict[str, torch.Tensor]":
        """Network ``i``'s tensors under their stream names (detached, on the stack's device)."""
        return OrderedDict((name, self._own(self.params, path, i).detach()) for name, path in self._paths.items())

    def model(self, i: int) -> NeuralExperts:
        """Network ``i`` as a stand-alone module (on the stack's device)."""
        device = next(iter(self.params.values())).device
        model = NeuralExperts(self.cfgs[i]).to(device)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(self._own(self.params, name, i))
        return model


def _corner(shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The leading corner of a padded tensor that holds a tensor of ``shape``."""
    return tuple(slice(0, n) for n in shape)
