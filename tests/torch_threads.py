"""A fixture that runs a test with one torch thread (import it into a test module to use it)."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def one_torch_thread():
    # the CI machine is small and shared: several threads only fight each other here
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
