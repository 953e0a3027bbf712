"""Shared fixtures. ``assets_dir`` is ../shared/assets beside the project (real TF models, ImageNet
images, photos): present in CI and on the team's machines, absent for users, so tests that need it
are marked ``assets`` and skip cleanly without it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSETS_DIR = REPO_ROOT.parent / "shared" / "assets"


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    if not ASSETS_DIR.is_dir():
        pytest.skip(f"reference assets not found at {ASSETS_DIR}")
    return ASSETS_DIR


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A test marked `assets` skips where the folder is absent even if it forgets the fixture.
    if not ASSETS_DIR.is_dir():
        skip = pytest.mark.skip(reason=f"reference assets not found at {ASSETS_DIR}")
        for item in items:
            if "assets" in item.keywords:
                item.add_marker(skip)
    # A test marked `compiler` has inductor compile C++ on the CPU. Where no compiler is found (a
    # machine without g++, where `make` could not install it), the library falls back and says so,
    # which tests/test_optimize.py checks; these tests skip, with the library's own reason.
    compiling = [item for item in items if "compiler" in item.keywords]
    if compiling:
        import torch

        from mobilenet.optimized import compile_unavailable

        why = compile_unavailable(torch.device("cpu"))
        if why:
            for item in compiling:
                item.add_marker(pytest.mark.skip(reason=why))


# The deployment tests' shared model and inputs: a small model whose BatchNorms hold non-trivial
# statistics, and real photos preprocessed for it (module scope: built once per test file).
@pytest.fixture(scope="module")
def model():  # noqa: ANN201 - torch types are imported lazily to keep collection light
    from deploy_helpers import trained_looking_model

    return trained_looking_model()


@pytest.fixture(scope="module")
def images(model):  # noqa: ANN001, ANN201
    from mobilenet.deploy.verify import photo_batch

    return photo_batch(model)


# PyTorch's thread count is the process's: a test that sets it (a torch predictor or probe backend
# built directly) would change what later tests compile for (optimize keys its packages by it) and
# how fast they run.
@pytest.fixture(autouse=True)
def torch_threads_restored() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# Classify, evaluate and bench run PyTorch through mobilenet.optimize, whose first compile of each
# network and batch size costs tens of seconds here: tests that are not about the compiled path
# insist on the eager backend (as a user may, through the same variable). tests/test_optimize.py
# and the tests marked `compiled` clear it and compile for real.
@pytest.fixture(autouse=True)
def eager_torch_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("compiled") is None and request.node.module.__name__ != "test_optimize":
        monkeypatch.setenv("MOBILENET_TORCH_BACKEND", "eager")
    else:
        monkeypatch.delenv("MOBILENET_TORCH_BACKEND", raising=False)
