"""The network nxcodec fits to each signal."""

from nxcodec.model.config import ENCODING_FOURIER, ENCODING_SINE, ModelConfig
from nxcodec.model.experts import NeuralExperts, tensor_shapes

__all__ = ["ENCODING_FOURIER", "ENCODING_SINE", "ModelConfig", "NeuralExperts", "tensor_shapes"]
