"""The conformance streams of bitstream/ decode to their expected images and weights."""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from nxcodec.codec import decode_stream

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "bitstream" / "conformance"
sys.path.insert(0, str(ROOT / "bitstream"))
from make_conformance import weights_digest  # noqa: E402

CASES = json.loads((HERE / "manifest.json").read_text())


def test_there_are_conformance_streams():
    assert len(CASES) >= 3


@pytest.mark.parametrize("case", CASES, ids=[c["stream"] for c in CASES])
def test_stream_decodes_to_expected_result(case):
    data = (HERE / case["stream"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == case["stream_sha256"]
    assert weights_digest(data) == case["weights_sha256"]
    decoded = decode_stream(data)[1]
    assert list(decoded.shape) == case["shape"]
    if case["expected"].endswith(".wav"):  # audio: integer PCM samples, 16-bit
        expected = sf.read(HERE / case["expected"], dtype="int16", always_2d=True)[0]
        decoded = np.rint(decoded.astype(np.float64) * 32768)
    else:
        expected = np.asarray(Image.open(HERE / case["expected"])).reshape(decoded.shape)
    diff = np.abs(decoded.astype(int) - expected.astype(int))
    assert diff.max() <= 1
    assert np.mean(diff > 0) <= 0.005
