"""Shared fixtures: generated image folders and one small digits run trained once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from embedder.config import TrainConfig


def make_shapes_folder(
    root: Path, classes=("circle", "square", "triangle"), per_class: int = 12, size: int = 48, seed: int = 0
) -> Path:
    """An ImageFolder of generated shapes: one shape per class, random position, size and colour."""
    rng = np.random.default_rng(seed)
    for label in classes:
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(180, 256, 3)))
            draw = ImageDraw.Draw(img)
            r = int(rng.integers(size // 5, size // 3))
            cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
            color = tuple(int(v) for v in rng.integers(0, 120, 3))
            if label == "circle":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
            elif label == "square":
                draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=color)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
            img.save(folder / f"{i:03d}.png")
    return root


@pytest.fixture
def shapes_folder(tmp_path) -> Path:
    return make_shapes_folder(tmp_path / "shapes")


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> Path:
    """The digits demo set written into a per-session cache (never the user's ~/.cache)."""
    cache = tmp_path_factory.mktemp("cache")
    os.environ["EMBEDDER_CACHE"] = str(cache)
    from embedder.data import demo_dataset

    return demo_dataset(cache)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory, demo_cache) -> Path:
    """A real run: the convnet trained for 3 epochs on the digits (about 15 s on 2 cores)."""
    from embedder.pipeline import train

    out = tmp_path_factory.mktemp("runs") / "digits"
    train(TrainConfig(data=str(demo_cache), out=str(out), epochs=3, seed=0))
    return out


@pytest.fixture
def run_alone():
    """Run Python code in a fresh interpreter and return its output lines: a hang fails by timing out, and memory
    is measured apart from pytest's. The package's ``__init__`` is left out (it imports torch: 900 MB and 2 s),
    so only ``embedder.data``, ``embedder.decode`` and ``embedder.errors`` are importable there."""
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
