"""Shared fixtures: where the real MNIST files are, MNIST itself, and a tiny trained model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mnistpack.data import DATA_ENV_VAR, Mnist, load_mnist
from mnistpack.model import ensure_keras_backend
from mnistpack.train import TrainConfig, save_model, train

# Before any test module imports keras (none of the imports above does), so tests get JAX
# unless KERAS_BACKEND says otherwise.
ensure_keras_backend()

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "mnist"

# 784-16-10 on 2,000 images: ~87% test accuracy in about a second of fitting. The high
# learning rate and no dropout make 3 short epochs enough for a model whose weights look trained.
# No augmentation: tests/test_train.py checks that on its own, smaller still.
TINY_CONFIG = TrainConfig(
    hidden=16,
    max_epochs=3,
    batch_size=32,
    learning_rate=1e-2,
    dropout=0.0,
    limit=2000,
    player_copies=0,
    warp_copies=0,
)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with the real MNIST IDX files ($MNISTPACK_DATA or ../shared/mnist); skips without."""
    env = os.environ.get(DATA_ENV_VAR, "").strip()
    folder = Path(env) if env else SHARED_MNIST
    if not folder.is_dir():
        pytest.skip(f"no MNIST data: set {DATA_ENV_VAR} or put the IDX files in {SHARED_MNIST}")
    return folder


@pytest.fixture(scope="session")
def mnist_data(mnist_dir: Path) -> Mnist:
    """All of real MNIST, loaded once per session (float32 images in 0..1)."""
    return load_mnist(mnist_dir, allow_download=False)


@pytest.fixture(scope="session")
def tiny_config() -> TrainConfig:
    """How tiny_model was trained."""
    return TINY_CONFIG


@pytest.fixture(scope="session")
def tiny_model(mnist_data: Mnist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained 784-16-10 Keras model file (TINY_CONFIG), shared by the whole session."""
    model, _ = train(mnist_data, TINY_CONFIG, log=lambda line: None)
    path = tmp_path_factory.mktemp("tiny_model") / "tiny16.keras"
    save_model(model, path)
    return path
