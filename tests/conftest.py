"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def single_torch_thread():
    """The suite's layers are tiny: on a busy 2-core machine a second intra-op thread makes them
    many times slower (measured in benchmarks/admm.py), so the whole suite uses one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
