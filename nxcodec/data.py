"""A PyTorch ``Dataset`` over a tree that ``nxcodec batch`` compressed, decoded on access.

    from torch.utils.data import DataLoader
    from nxcodec.data import NxcDataset

    loader = DataLoader(NxcDataset("compressed/", transform=to_tensor), batch_size=16, num_workers=2)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch.utils.data import Dataset

import nxcodec
from nxcodec import signals
from nxcodec.batch import MANIFEST, read_manifest
from nxcodec.errors import InputError


class NxcDataset(Dataset):
    """The images of a compressed tree, sorted by source path; item ``i`` is decoded when asked for.

    ``root`` is the DST of ``nxcodec batch SRC DST``: its manifest lists every source and
    its stream; sources that failed, and audio clips and shapes, are left out. An item is
    ``transform(array)``, or the array: ``(H, W, C)`` uint8 (uint16 for 16-bit gray) as
    :func:`nxcodec.decode` returns it. ``sources[i]`` is the file item ``i`` came from
    (relative to SRC). The dataset holds only paths, so DataLoader workers get it cheaply
    and each decodes its own items.
    """

    def __init__(self, root: str | Path, transform: Callable[[np.ndarray], Any] | None = None) -> None:
        self.root = Path(root)
        self.transform = transform
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            raise InputError(f"{self.root}: no {MANIFEST}; not a tree that nxcodec batch wrote")
        records = read_manifest(manifest)
        image = signals.for_name("image")
        self.sources = sorted(source for source, rec in records.items()
                              if rec["status"] == "ok" and Path(source).suffix.lower() in image.extensions)
        self.paths = [self.root / Path(source).parent / records[source]["output"] for source in self.sources]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Any:
        array = nxcodec.decode(self.paths[index].read_bytes())
        return self.transform(array) if self.transform else array
