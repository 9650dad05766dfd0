"""A model's parameters as PyTorch leaves, and its loss and hand-derived gradient against PyTorch's autograd of
the same loss in float64 (the model tests' oracle for the objectives beyond PyTorch's example VAE)."""

import numpy as np
import pytest


def torch_params(model) -> dict:
    """``{name: float64 tensor requiring its gradient}`` of every parameter tensor of ``model``."""
    import torch

    return {n: torch.tensor(model.params.view(n), requires_grad=True) for n in model.params.names}


def assert_autograd_agrees(model, ours: float, loss, params: dict) -> None:
    """``loss.backward()``; then ``ours`` (our loss) equals ``loss`` to 1e-12 and every tensor of ``model.grad`` its
    leaf's gradient in ``params`` to 1e-9."""
    loss.backward()
    assert ours == pytest.approx(loss.item(), rel=1e-12)
    for name, t in params.items():
        np.testing.assert_allclose(model.params.view(name, model.grad), t.grad.numpy(), rtol=1e-9, atol=1e-13,
                                   err_msg=name)
