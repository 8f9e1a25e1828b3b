"""Round trips of real images through the whole codec."""


import numpy as np
import pytest
import torch
from conftest import FAST_ITERS, PSNR_FLOOR, fast_encode, real_image

import nxcodec
from nxcodec import container
from nxcodec.codec import EncodeOptions, decode_stream, encode_signals
from nxcodec.model import NeuralExperts
from nxcodec.quant import dequantize
from nxcodec.signals import for_name


def psnr(a, b, peak=255.0):
    return 10 * np.log10(peak**2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


def test_round_trip_keeps_size_and_reaches_a_psnr_floor(rgb_image, rgb_result):
    decoded = nxcodec.decode(rgb_result.data)
    assert decoded.shape == rgb_image.shape and decoded.dtype == np.uint8
    assert psnr(rgb_image, decoded) == pytest.approx(rgb_result.metrics["psnr"])
    assert psnr(rgb_image, decoded) > PSNR_FLOOR
    assert rgb_result.metrics["psnr"] > rgb_result.float_metrics["psnr"] - 2.0
    assert rgb_result.rate == pytest.approx(8 * len(rgb_result.data) / (48 * 40))


def test_decoder_output_is_the_quantized_models_routed_prediction(rgb_image, rgb_stream):
    stream = container.read(rgb_stream)
    assert len(stream.sections) == 1
    model = NeuralExperts(stream.sections[0].config)
    params = model.coded_tensors()
    with torch.no_grad():
        for name, qt in stream.sections[0].tensors.items():
            params[name].copy_(torch.from_numpy(dequantize(qt.ints, qt.code)).reshape(params[name].shape))
    image = for_name("image")
    desc = image.unpack_descriptor(stream.descriptor)
    preds, logits = model.forward_all(image.coords(desc, 0, desc.width * desc.height))
    chosen = preds[logits.argmax(-1), torch.arange(preds.shape[1])].detach().numpy()
    expected = np.rint((np.clip(chosen, -1, 1) + 1) * 127.5).reshape(rgb_image.shape)
    decoded = nxcodec.decode(rgb_stream).astype(float)
    assert np.mean(decoded == expected) > 0.999
    assert np.abs(decoded - expected).max() <= 1


def test_quantized_weights_match_the_stream_bit_for_bit(rgb_stream):
    a, b = container.read(rgb_stream), container.read(rgb_stream)
    for name, qt in a.sections[0].tensors.items():
        np.testing.assert_array_equal(qt.ints, b.sections[0].tensors[name].ints)
    assert container.write(a) == rgb_stream


def test_cpu_encode_is_reproducible_with_a_seed(rgb_image):
    small = rgb_image[:16, :20]
    assert fast_encode(small, iters=40, seed=3).data == fast_encode(small, iters=40, seed=3).data
    assert fast_encode(small, iters=40, seed=3).data != fast_encode(small, iters=40, seed=4).data


def test_grayscale_stays_grayscale_and_odd_sizes_survive():
    gray = real_image((23, 17)).mean(axis=2).astype(np.uint8)
    res = fast_encode(gray, iters=400)
    out = nxcodec.decode(res.data)
    assert out.shape == (17, 23, 1)
    assert psnr(gray[..., None], out) > PSNR_FLOOR - 2


def test_alpha_is_coded_as_a_channel():
    rgba = np.concatenate([real_image((20, 16)), np.full((16, 20, 1), 200, np.uint8)], axis=2)
    rgba[:, :10, 3] = 50
    out = nxcodec.decode(fast_encode(rgba, iters=150).data)
    assert out.shape == (16, 20, 4)
    assert out[:, :10, 3].mean() < 100 < out[:, 10:, 3].mean()
    assert np.abs(out[..., 3].astype(int) - rgba[..., 3]).mean() < 25


def test_sixteen_bit_grayscale_keeps_its_depth():
    gray16 = (real_image((16, 16)).mean(axis=2) * 257).astype(np.uint16)
    out = nxcodec.decode(fast_encode(gray16, iters=150).data)
    assert out.dtype == np.uint16 and out.shape == (16, 16, 1)
    assert psnr(gray16[..., None], out, 65535.0) > 20.0


def test_rate_target_is_met(rgb_image):
    budget = 2.0  # bits per pixel over the whole file
    res = fast_encode(rgb_image, iters=100, rate=budget)
    assert res.rate <= budget
    assert len(res.data) * 8 <= budget * rgb_image.shape[0] * rgb_image.shape[1]


def test_higher_quality_spends_more_bits_for_more_psnr():
    image = real_image((96, 96))
    low, high = fast_encode(image, quality=1), fast_encode(image, quality=9)
    assert high.n_params > low.n_params
    assert len(high.data) > len(low.data)
    assert high.metrics["psnr"] > low.metrics["psnr"]


def test_encoding_from_a_file_path(tmp_path, rgb_image):
    from PIL import Image

    path = tmp_path / "crop.png"
    Image.fromarray(rgb_image).save(path)
    data = nxcodec.encode(path, iters=50, device="cpu")
    assert nxcodec.decode(data).shape == rgb_image.shape


@pytest.mark.parametrize("fmt", ["JPEG", "BMP", "TIFF", "WEBP"])
def test_other_input_formats_are_read(tmp_path, fmt):
    from PIL import Image

    path = tmp_path / f"x.{fmt.lower()}"
    Image.fromarray(real_image((12, 10))).save(path, format=fmt)
    sig = for_name("image").read(path)
    assert sig.data.shape == (10, 12, 3)


def test_decode_is_chunked_for_large_images(monkeypatch):
    import nxcodec.signals.base as base

    image = real_image((30, 20))
    data = fast_encode(image, iters=20).data
    whole = decode_stream(data)[1]
    monkeypatch.setattr(base, "DECODE_CHUNK", 7)
    np.testing.assert_array_equal(decode_stream(data)[1], whole)


def test_a_multi_megapixel_image_round_trips():
    rng = np.random.default_rng(0)
    small = real_image((64, 32))
    big = np.kron(small, np.ones((32, 32, 1), dtype=np.uint8))  # 2048 x 1024 = 2.1 megapixels
    big = np.clip(big.astype(int) + rng.integers(-2, 3, big.shape), 0, 255).astype(np.uint8)
    res = fast_encode(big, iters=2, quality=1, format=12)  # the default format; format 2 is a legacy mode
    out = nxcodec.decode(res.data)
    assert out.shape == big.shape and out.dtype == np.uint8
    assert psnr(big, out) == pytest.approx(res.metrics["psnr"])


def test_number_of_experts_follows_the_image_size():
    from nxcodec.fit.presets import NETWORK_POLICIES
    from nxcodec.signals.image import ImageDescriptor

    shape_of = NETWORK_POLICIES["image"].network_shape
    assert shape_of(ImageDescriptor(64, 64, 3, 8)).n_experts == 1
    assert shape_of(ImageDescriptor(400, 400, 3, 8)).n_experts == 2
    assert shape_of(ImageDescriptor(768, 512, 3, 8)).n_experts == 4


def test_sixteen_bit_colour_is_refused_clearly():
    from nxcodec.errors import InputError

    with pytest.raises(InputError, match="grayscale only"):
        nxcodec.encode(np.zeros((8, 8, 3), np.uint16), iters=1)


def test_images_encoded_together_each_decode_to_their_own(rgb_image):
    image = for_name("image")
    second = np.ascontiguousarray(rgb_image[::-1, ::-1])  # same size, different content
    results = encode_signals(image, [image.from_array(rgb_image), image.from_array(second)],
                             EncodeOptions(iters=FAST_ITERS, device="cpu"))
    assert len(results) == 2
    for original, other, res in zip((rgb_image, second), (second, rgb_image), results):
        decoded = nxcodec.decode(res.data)
        assert psnr(original, decoded) > PSNR_FLOOR - 2.5  # two networks share the steps' random draws
        assert psnr(original, decoded) == pytest.approx(res.metrics["psnr"])
        assert psnr(other, decoded) < psnr(original, decoded) - 3


def test_rate_shift_spares_the_first_layer_and_single_values():
    from collections import OrderedDict

    from nxcodec.codec import _shifted

    tensors = OrderedDict([("encoder.0.weight", torch.zeros(1, 8)), ("encoder.1.weight", torch.zeros(8, 8)),
                           ("experts.out.bias", torch.zeros(1, 1, 1))])
    codes = {"encoder.0.weight": 60, "encoder.1.weight": 50, "experts.out.bias": 40}
    assert _shifted(codes, 11, tensors) == {"encoder.0.weight": 60, "encoder.1.weight": 39, "experts.out.bias": 40}
