from contextlib import contextmanager

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """torch on one thread for the test (the control-loop and training sizes here run fastest so)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def killed_at_evaluation(monkeypatch):
    """``with killed_at_evaluation(module, n): train(...)``: the training module's ``evaluate_policy`` raises
    KeyboardInterrupt (the kill) at its ``n``-th call, the block must end by it, and the real one is back after."""

    @contextmanager
    def kill(module, n):
        real, calls = module.evaluate_policy, []

        def dying(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(module, "evaluate_policy", dying)
        with pytest.raises(KeyboardInterrupt):
            yield
        monkeypatch.setattr(module, "evaluate_policy", real)

    return kill
