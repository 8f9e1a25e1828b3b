"""A PyTorch ``Dataset`` over a tree that ``nxcodec batch`` compressed, decoded on access.

    from torch.utils.data import DataLoader
    from nxcodec.data import NxcDataset

    loader = DataLoader(NxcDataset("compressed/", transform=to_tensor), batch_size=16, num_workers=2)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from torch.utils.data import Dataset

import nxcodec
from nxcodec import signals
from nxcodec.batch import MANIFEST, read_manifest
from nxcodec.errors import InputError


class NxcDataset(Dataset):
    """The signals of one kind in a compressed tree, sorted by source path; item ``i`` is decoded when asked for.

    ``root`` is the DST of ``nxcodec batch SRC DST``: its manifest lists every source and
    its stream; sources that failed, and those of other kinds, are left out. ``kind`` is
    "image" (the default), "audio" or "shape". An item is ``transform(x)``, or ``x`` as
    :func:`nxcodec.decode` returns it: an image ``(H, W, C)`` uint8 (uint16 for 16-bit gray),
    a clip ``(frames, channels)`` of samples in [-1, 1], a shape its mesh. ``sources[i]`` is
    the file item ``i`` came from (relative to SRC), and ``info(i)`` what its stream's header
    declares (:func:`nxcodec.info`: a clip's ``["signal"]["sample_rate"]``, say), read without
    decoding. The dataset holds only paths, so DataLoader workers get it cheaply and each
    decodes its own items. Clips of different lengths and meshes do not stack into batches:
    load them with ``batch_size=None`` or a ``collate_fn`` of your own. ``resolution`` is the
    marching-cubes grid meshes are extracted on (the stream's default if None).
    """

    def __init__(self, root: str | Path, transform: Callable[[Any], Any] | None = None, kind: str = "image",
                 resolution: int | None = None) -> None:
        self.root = Path(root)
        self.transform = transform
        if kind not in ("image", "audio", "shape"):
            raise InputError(f"kind must be image, audio or shape, not {kind!r}")
        if resolution is not None and kind != "shape":
            raise InputError(f"resolution is a shape's marching-cubes grid; {kind} items take none")
        self.resolution = resolution
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            raise InputError(f"{self.root}: no {MANIFEST}; not a tree that nxcodec batch wrote")
        records = read_manifest(manifest)
        extensions = signals.for_name(kind).extensions
        self.sources = sorted(source for source, rec in records.items()
                              if rec["status"] == "ok" and Path(source).suffix.lower() in extensions)
        self.paths = [self.root / Path(source).parent / records[source]["output"] for source in self.sources]

    def info(self, index: int) -> dict[str, Any]:
        """What item ``index``'s stream declares, from its header alone (:func:`nxcodec.info`)."""
        return nxcodec.info(self.paths[index].read_bytes())

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Any:
        array = nxcodec.decode(self.paths[index].read_bytes(), resolution=self.resolution)
        return self.transform(array) if self.transform else array
