"""Helpers shared by the attention formula tests: randomised float64 modules and inputs."""

import torch
import torch.nn as nn


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomise(module: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    """Random parameters and BN running statistics, so that no gate sits at its initial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g, dtype=b.dtype) * 0.3)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g, dtype=b.dtype) + 0.5)
    return module


def float64_input(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def sigmoid(z: torch.Tensor) -> torch.Tensor:
    """Written out, so the tests do not lean on the sigmoid the modules use."""
    return 1.0 / (1.0 + torch.exp(-z))
