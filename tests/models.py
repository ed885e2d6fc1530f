"""Small real torch models and files shared by the tests (built from code, nothing downloaded)."""

from __future__ import annotations

import numpy as np
import torch

#: A module file defining ``build()``, for ``convexnet prune --arch tiny_arch:build``.
TINY_ARCH = '''import torch
def build():
    return torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
'''


def mlp(seed=0, dtype=torch.float64, sizes=(5, 16, 12, 3)) -> torch.nn.Sequential:
    """A ReLU MLP with the given layer sizes (no ReLU after the last layer)."""
    torch.manual_seed(seed)
    layers = []
    for index, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if index < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).to(dtype)


def tiny_files(folder, arch_folder=None) -> None:
    """A state dict of TINY_ARCH (``model.pt``) and calibration inputs (``calibration.npy``) in
    ``folder``; TINY_ARCH as ``tiny_arch.py`` in ``arch_folder`` (if given)."""
    namespace: dict = {}
    exec(TINY_ARCH, namespace)
    torch.manual_seed(0)
    torch.save(namespace["build"]().state_dict(), folder / "model.pt")
    np.save(folder / "calibration.npy",
            np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32))
    if arch_folder is not None:
        (arch_folder / "tiny_arch.py").write_text(TINY_ARCH)
