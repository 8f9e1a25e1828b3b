"""NxcDataset: a compressed tree as a PyTorch dataset, indexed by its manifest, decoded on access."""

import numpy as np
import pytest
import soundfile as sf
from conftest import real_image
from PIL import Image
from torch.utils.data import DataLoader

import nxcodec
from nxcodec.batch import EncodeSettings, run_batch
from nxcodec.data import NxcDataset


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A batch-compressed tree: three images in two folders, two short clips (mono at 8 kHz, stereo at 16 kHz), a
    file that failed and one that is not a signal."""
    src, dst = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dst")
    for rel, size in (("b/two.png", (20, 12)), ("a/one.png", (16, 12)), ("three.jpg", (12, 16))):
        (src / rel).parent.mkdir(exist_ok=True)
        Image.fromarray(real_image(size)).save(src / rel)
    for rel, rate, channels in (("talk/x.wav", 8000, 1), ("talk/duet.flac", 16000, 2)):
        (src / rel).parent.mkdir(exist_ok=True)
        t = np.arange(rate // 4)[:, None] / rate
        sf.write(src / rel, 0.3 * np.sin(2 * np.pi * 440 * (1 + np.arange(channels)) * t), rate, subtype="PCM_16")
    (src / "a" / "broken.png").write_bytes(b"\x89PNG but not really")
    (src / "notes.txt").write_text("not a signal")
    summary = run_batch("encode", src, dst, EncodeSettings(iters=30), device="cpu")
    assert summary.ok == 5 and summary.failed == 1
    return dst


def test_items_are_the_decoded_streams_in_source_order(tree):
    ds = NxcDataset(tree)
    assert len(ds) == 3
    assert ds.sources == ["a/one.png", "b/two.png", "three.jpg"]
    for i, (rel, shape) in enumerate(zip(ds.sources, [(12, 16, 3), (12, 20, 3), (16, 12, 3)])):
        expected = nxcodec.decode((tree / (rel + ".nxc")).read_bytes())
        assert ds[i].shape == shape and np.array_equal(ds[i], expected)
    assert NxcDataset(tree, transform=lambda a: a.shape)[2] == (16, 12, 3)


def test_a_dataloader_with_two_workers_yields_every_item(tree):
    ds = NxcDataset(tree, transform=lambda a: a[:12, :12].astype(np.float32) / 255)
    batches = list(DataLoader(ds, batch_size=2, num_workers=2))
    assert [tuple(b.shape) for b in batches] == [(2, 12, 12, 3), (1, 12, 12, 3)]
    items = np.concatenate([b.numpy() for b in batches])
    assert np.array_equal(items, np.stack([ds[i] for i in range(len(ds))]))


def test_clips_are_a_dataset_of_their_own_with_their_sample_rates(tree):
    ds = NxcDataset(tree, kind="audio")
    assert ds.sources == ["talk/duet.flac", "talk/x.wav"]
    for i, (rate, channels) in enumerate([(16000, 2), (8000, 1)]):
        assert ds.info(i)["signal"]["sample_rate"] == rate and ds.info(i)["modality"] == "audio"
        assert ds[i].shape == (rate // 4, channels)
        assert np.array_equal(ds[i], nxcodec.decode(ds.paths[i].read_bytes()))
    assert NxcDataset(tree).info(0)["signal"]["width"] == 16  # a/one.png
    with pytest.raises(nxcodec.InputError, match="kind must be image, audio or shape"):
        NxcDataset(tree, kind="video")


def test_meshes_are_a_dataset_of_their_own(tmp_path):
    """kind="shape", on a tree whose manifest lists one mesh (a conformance stream, as batch would have written it:
    fitting a mesh takes longer than this suite affords) and a clip that is left out."""
    import json
    from pathlib import Path

    from nxcodec.batch import MANIFEST

    conformance = Path(__file__).resolve().parents[1] / "bitstream" / "conformance"
    (tmp_path / "torus.ply.nxc").write_bytes((conformance / "v8" / "shape" / "torus_g4_builtin_k2.nxc").read_bytes())
    (tmp_path / "x.wav.nxc").write_bytes((conformance / "v11" / "audio" / "mono_8khz_1s.nxc").read_bytes())
    (tmp_path / MANIFEST).write_text("".join(json.dumps({"source": s, "output": s + ".nxc", "status": "ok"}) + "\n"
                                             for s in ("torus.ply", "x.wav")))
    ds = NxcDataset(tmp_path, kind="shape")
    assert ds.sources == ["torus.ply"] and ds.info(0)["modality"] == "shape" and ds.info(0)["signal"]["grid_log2"] == 4
    expected = nxcodec.decode((tmp_path / "torus.ply.nxc").read_bytes())
    assert len(ds[0].faces) > 1000 and np.array_equal(ds[0].vertices, expected.vertices)
    coarse = NxcDataset(tmp_path, kind="shape", resolution=32)[0]
    stream = (tmp_path / "torus.ply.nxc").read_bytes()
    assert np.array_equal(coarse.vertices, nxcodec.decode(stream, resolution=32).vertices)
    assert 100 < len(coarse.faces) < len(ds[0].faces) // 2
    with pytest.raises(nxcodec.InputError, match="resolution"):
        NxcDataset(tmp_path, kind="audio", resolution=32)
    with pytest.raises(nxcodec.InputError, match="resolution"):
        nxcodec.decode((tmp_path / "x.wav.nxc").read_bytes(), resolution=32)


def test_a_folder_without_a_manifest_is_refused(tmp_path):
    with pytest.raises(nxcodec.InputError, match="manifest"):
        NxcDataset(tmp_path)
