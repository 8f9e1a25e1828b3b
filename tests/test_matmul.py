"""The fitted networks' matrix product: its chunked weight gradient equals the plain one."""

import pytest
import torch

from nxcodec.fit.matmul import MIN_ROWS, stack_matmul


@pytest.mark.parametrize("x_shape, w_shape", [
    ((3, 1, 5 * MIN_ROWS + 17, 7), (3, 2, 7, 5)),  # experts: x broadcast over them, rows left over after the chunks
    ((2, 4 * MIN_ROWS, 9), (2, 9, 4)),  # rows an exact multiple of the chunk
    ((2, 100, 3), (2, 3, 2)),  # too few rows to cut
])
def test_gradients_match_plain_matmul(x_shape, w_shape):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*x_shape, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(*w_shape, dtype=torch.float64, generator=gen, requires_grad=True)
    out_shape = torch.broadcast_shapes(x_shape[:-2], w_shape[:-2]) + (x_shape[-2], w_shape[-1])
    g = torch.randn(out_shape, dtype=torch.float64, generator=gen)
    out = stack_matmul(x, w)
    (out * g).sum().backward()
    grads = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    ref = x @ w
    (ref * g).sum().backward()
    assert torch.equal(out, ref)
    torch.testing.assert_close(grads[0], x.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[1], w.grad, rtol=1e-12, atol=1e-10)
    assert grads[1].shape == w.shape and grads[0].shape == x.shape


def test_no_gradient_asked_for_a_frozen_weight():
    x = torch.randn(2, 3000, 4, requires_grad=True)
    w = torch.randn(2, 4, 3)
    stack_matmul(x, w).sum().backward()
    assert x.grad is not None and w.grad is None
