from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import mlp

import ember


@pytest.fixture(scope="session")
def mlp_artifact(tmp_path_factory: pytest.TempPathFactory) -> ember.Artifact:
    """The tiny MLP compiled once for buckets (1, 4, 8)."""
    out = tmp_path_factory.mktemp("mlp") / "mlp.ember"
    return ember.compile(mlp(), batch_sizes=(1, 4, 8), output=out)


@pytest.fixture(scope="session")
def mlp_model(mlp_artifact: ember.Artifact) -> ember.Model:
    return ember.load(mlp_artifact.path)
