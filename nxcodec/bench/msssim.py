"""MS-SSIM over RGB (pytorch-msssim), with the window shrunk for small images."""

from __future__ import annotations

import numpy as np
import torch
from pytorch_msssim import ms_ssim as _ms_ssim


def ms_ssim_rgb(a: np.ndarray, b: np.ndarray, device: str = "cpu") -> float:
    """MS-SSIM of two ``(H, W, C)`` uint8 images (5 scales; NaN when too small for a 3-pixel window).

    Computed in float64 on ``device``.
    """
    side = min(a.shape[0], a.shape[1])
    win = 11
    while win >= 3 and (win - 1) * 16 >= side:
        win -= 2
    if win < 3:
        return float("nan")
    x = torch.from_numpy(np.array(a, dtype=np.float64)).permute(2, 0, 1)[None].to(device)
    y = torch.from_numpy(np.array(b, dtype=np.float64)).permute(2, 0, 1)[None].to(device)
    return float(_ms_ssim(x, y, data_range=255.0, win_size=win))
