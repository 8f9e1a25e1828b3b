"""The fitted networks' matrix product: cut into row chunks (as on a GPU), it gives the plain product's values
and gradients."""

import pytest
import torch

from nxcodec.fit import matmul
from nxcodec.fit.matmul import MAX_CHUNKS, MIN_ROWS, chunk_count, rows_matmul, stack_matmul, weight_grad


def test_chunks_divide_the_rows_and_are_never_too_short():
    assert chunk_count(768 * 512) == MAX_CHUNKS  # a Kodak image
    assert chunk_count(768 * 512, 100) == 96  # a product already of many batch entries: fewer chunks
    assert chunk_count(768 * 512, 0) == 1  # of too many to cut at all
    assert chunk_count(500 * 333) == 150  # 1110 rows each
    assert chunk_count(MIN_ROWS * 2 - 1) == 1
    assert chunk_count(1_000_003) == 1  # prime: no equal cut
    for rows in (4096, 65536, 98304, 166500, 250000):
        c = chunk_count(rows)
        assert rows % c == 0 and rows // c >= MIN_ROWS and c <= MAX_CHUNKS


@pytest.mark.parametrize("x_shape, w_shape", [
    ((3, 1, 6 * MIN_ROWS, 7), (3, 2, 7, 5)),  # experts: x broadcast over them
    ((2, 4 * MIN_ROWS, 9), (2, 9, 3)),
])
def test_a_chunked_product_and_its_gradients_match_the_plain_ones(x_shape, w_shape):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*x_shape, dtype=torch.float64, generator=gen)
    w = torch.randn(*w_shape, dtype=torch.float64, generator=gen)
    out_shape = torch.broadcast_shapes(x_shape[:-2], w_shape[:-2]) + (x_shape[-2], w_shape[-1])
    g = torch.randn(out_shape, dtype=torch.float64, generator=gen)
    chunks = chunk_count(x_shape[-2])
    assert chunks > 1
    torch.testing.assert_close(rows_matmul(x, w, chunks), x @ w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rows_matmul(g, w.mT, chunks), g @ w.mT, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(weight_grad(x, g, chunks).sum_to_size(w.shape), (x.mT @ g).sum_to_size(w.shape),
                               rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("cut", [False, True])  # True: rows cut as on a GPU
def test_the_autograd_product_gives_torchs_gradients(monkeypatch, cut):
    if cut:
        monkeypatch.setattr(matmul, "_chunks_for", lambda x, w: chunk_count(x.shape[-2]))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 3 * MIN_ROWS, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    g = torch.randn(2, 3, 3 * MIN_ROWS, 5, dtype=torch.float64, generator=gen)
    (stack_matmul(x, w) * g).sum().backward()
    grads = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    ((x @ w) * g).sum().backward()
    torch.testing.assert_close(grads[0], x.grad)
    torch.testing.assert_close(grads[1], w.grad)


def test_no_gradient_asked_for_a_frozen_weight():
    x = torch.randn(2, 3000, 4, requires_grad=True)
    w = torch.randn(2, 4, 3)
    stack_matmul(x, w).sum().backward()
    assert x.grad is not None and w.grad is None


@pytest.mark.parametrize("experts", [1, 2])
def test_a_fit_with_its_products_cut_as_on_a_gpu_follows_the_uncut_one(monkeypatch, experts):
    """The fitting code's shapes (experts broadcast, context models, a 64x64 image of 4096 rows) through the cut
    products and the unfold gathers of a GPU: the same losses up to the order of the sums."""
    from conftest import real_image
    from dataclasses import replace

    from nxcodec.fit import presets
    from nxcodec.fit import latent
    from nxcodec.fit.latent import LatentModel, LatentSchedule, fit
    from nxcodec.fit.latent_code import config_for
    from nxcodec.signals import for_name

    image = for_name("image")
    signal = image.from_array(real_image((64, 64)))
    d = signal.descriptor
    cfg = replace(config_for(presets.latent_preset(5), d), n_experts=experts, mgr_width=8 if experts > 1 else 0)
    target = image.targets(signal).unsqueeze(0).double()

    def losses() -> list[float]:
        model = LatentModel(cfg, 1, (d.height, d.width), d.channels, seed=0).double()
        with torch.random.fork_rng():
            return fit(model, target, 1e-3, LatentSchedule(iters=8, race=()), seed=0)

    whole = losses()
    used = []
    monkeypatch.setattr(matmul, "_chunks_for", lambda x, batch: used.append(chunk_count(x.shape[-2])) or used[-1])
    monkeypatch.setattr(latent, "few_kernels", lambda t: True)  # the GPU's context and upsampling gathers too
    cut = losses()
    assert max(used) == 4  # the finest grid's and the pixels' products were cut
    assert cut == pytest.approx(whole, rel=1e-9)
