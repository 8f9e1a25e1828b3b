"""Many networks of one config, fitted side by side as one set of stacked tensors.

Every parameter of ``M`` networks is stacked along a new first dimension and the
network is evaluated with ``torch.func.vmap``: one kernel launch serves every network,
so a GPU fitting 24 small images (or the windows of one audio clip) is busy instead of
waiting on Python. A single network is simply a stack of one.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch.func import functional_call, stack_module_state, vmap

from nxcodec.model.config import ModelConfig
from nxcodec.model.experts import NeuralExperts


class ModelStack:
    """``M`` Neural-Experts networks with the same config, as stacked tensors ``(M, ...)``.

    ``params`` maps module paths (``encoder.0.weight``) to leaf tensors that require
    gradients; :meth:`stream_names` maps them to the stream's tensor names.
    """

    def __init__(self, models: list[NeuralExperts]) -> None:
        if not models:
            raise ValueError("a stack needs at least one network")
        self.cfg: ModelConfig = models[0].cfg
        if any(m.cfg != self.cfg for m in models):
            raise ValueError("every network of a stack must have the same config")
        params, _ = stack_module_state(models)
        self.params: dict[str, torch.Tensor] = params
        self.template = copy.deepcopy(models[0]).to("meta")
        path = {id(p): n for n, p in models[0].named_parameters()}
        self._paths = OrderedDict((stream, path[id(p)]) for stream, p in models[0].coded_tensors().items())
        self._manager = {path[id(p)] for p in models[0].manager_parameters()}
        self._encoder = {path[id(p)] for p in models[0].encoder.parameters()}

    @classmethod
    def fresh(cls, cfg: ModelConfig, m: int, device: torch.device) -> "ModelStack":
        """``m`` freshly initialised networks (drawn in turn from torch's global generator)."""
        return cls([NeuralExperts(cfg).to(device) for _ in range(m)])

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

        return vmap(one)(self.params if params is None else params, coords)

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
        probe = NeuralExperts(self.cfg)
        out = []
        for i in range(coords.shape[0]):
            for name, p in probe.named_parameters():
                p.copy_(params[name][i])
            out.append(probe.forward_routed(coords[i])[0])
        return torch.stack(out)

    def coded_tensors(self, i: int) -> "OrderedDict[str, torch.Tensor]":
        """Network ``i``'s tensors under their stream names (detached, on the stack's device)."""
        return OrderedDict((name, self.params[path][i].detach()) for name, path in self._paths.items())

    def model(self, i: int) -> NeuralExperts:
        """Network ``i`` as a stand-alone module (on the stack's device)."""
        device = next(iter(self.params.values())).device
        model = NeuralExperts(self.cfg).to(device)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(self.params[name][i])
        return model
