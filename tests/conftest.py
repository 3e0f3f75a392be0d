import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import models  # noqa: E402


@pytest.fixture(autouse=True)
def private_build_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test starts with an empty build cache of its own (never the user's ~/.cache/edgekit)."""
    folder = tmp_path_factory.mktemp("edgekit-cache")
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(folder))
    # and a cache key of its own (cache rule 5), never the user's ~/.config/edgekit/cache.key
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
    monkeypatch.delenv("EDGEKIT_CACHE_KEY", raising=False)
    monkeypatch.delenv("EDGEKIT_CACHE_URL", raising=False)  # and no shared remote cache unless a test starts one
    return folder


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory) -> Path:
    return models.tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def vit_dir(tmp_path_factory) -> Path:
    return models.tiny_vit(tmp_path_factory.mktemp("tiny-vit"))


@pytest.fixture(scope="session")
def cnn_onnx(tmp_path_factory) -> Path:
    return models.tiny_cnn_onnx(tmp_path_factory.mktemp("cnn") / "cnn.onnx")


@pytest.fixture(scope="session")
def cnn_onnx_opset11(tmp_path_factory) -> Path:
    return models.tiny_cnn_onnx(tmp_path_factory.mktemp("cnn11") / "cnn11.onnx", opset=11)


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    return models.images(tmp_path_factory.mktemp("images"), count=12)


@pytest.fixture
def quick_profile(tmp_path) -> Path:
    """A user profile with a short benchmark, so end-to-end tests stay quick."""
    path = tmp_path / "quick.toml"
    path.write_text(
        'description = "tests: balanced, short benchmark"\n'
        'precision = "int8"\n'
        # the INT8 artifact itself is what these tests look at (tests/test_candidates.py covers the competition)
        "fp32_candidate = false\n"
        "[budgets]\nmin_cosine = 0.9\n"
        "[data]\ncalibration_samples = 16\neval_samples = 8\nseed = 0\n"
        "[benchmark]\nsequence_length = 32\nmin_runs = 10\nmin_seconds = 0.2\nmax_seconds = 5.0\n"
    )
    return path


@pytest.fixture(scope="session")
def cnn_bundle(tmp_path_factory, cnn_onnx) -> Path:
    """A small real bundle (the CNN for cpu and intel-cpu, quick profile). Read-only: copy it to change it."""
    import edgekit

    root = tmp_path_factory.mktemp("cnn-bundle")
    profile = root / "quick.toml"
    profile.write_text('precision = "int8"\nfp32_candidate = false\n[budgets]\nmin_cosine = 0.9\n[data]\ncalibration_samples = 8\neval_samples = 4\n'
                       "[benchmark]\nmin_runs = 10\nmin_seconds = 0.2\nmax_seconds = 5.0\n")
    out = root / "bundle"
    edgekit.compile(str(cnn_onnx), targets=["cpu", "intel-cpu"], shapes=["input=1,3,32,32"], profile=str(profile), output=out)
    return out
