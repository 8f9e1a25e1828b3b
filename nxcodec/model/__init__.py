"""The network nxcodec fits to each signal.

The config and tensor layout are plain Python (the stream reader needs them without
torch); the torch network itself is imported on first use.
"""

from typing import Any

from nxcodec.model.config import ENCODING_FOURIER, ENCODING_SINE, ModelConfig, tensor_shapes

__all__ = ["ENCODING_FOURIER", "ENCODING_SINE", "ModelConfig", "NeuralExperts", "tensor_shapes"]


def __getattr__(name: str) -> Any:
    if name == "NeuralExperts":
        from nxcodec.model.experts import NeuralExperts

        return NeuralExperts
    raise AttributeError(f"module 'nxcodec.model' has no attribute '{name}'")
