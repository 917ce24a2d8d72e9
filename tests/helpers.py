"""Small helpers several test files share (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os

import numpy as np


def unit(rows) -> np.ndarray:
    """Rows scaled to unit length, float32: hand-placed embeddings."""
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def copy_run(src, dst):
    dst.mkdir(parents=True)
    for name in os.listdir(src):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def rewrite_checksums(run_dir):
    """What an attacker who can plant a file can also do: make config.json's checksums match it."""
    from embedder.folders import sha256

    config = json.loads((run_dir / "config.json").read_text())
    config["checksums"] = {name: sha256(run_dir / name) for name in config["checksums"]}
    (run_dir / "config.json").write_text(json.dumps(config))


class Payload:
    """Unpickling this touches a file: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        from pathlib import Path

        return Path.touch, (Path(self.marker),)


def cfg(data, out, **kw):
    """A TrainConfig for a seconds-long training on a tiny generated set."""
    from embedder.config import TrainConfig

    base = dict(data=str(data), out=str(out), epochs=1, dim=16, classes_per_batch=3, per_class=4, seed=0)
    return TrainConfig(**{**base, **kw})


def digits_subset(demo_cache, root, per_class=15):
    """The first ``per_class`` digits of each class copied into ``root``."""
    import shutil

    for d in range(10):
        (root / str(d)).mkdir(parents=True)
        for f in sorted((demo_cache / str(d)).glob("*.png"))[:per_class]:
            shutil.copy(f, root / str(d) / f.name)
    return root


def held_out_digit(run_dir) -> tuple[bytes, str]:
    """The first held-out test image that the run labels right, as (PNG bytes, true label)."""
    from embedder.data import load_image
    from embedder.predict import Predictor
    from embedder.run import load_run

    run = load_run(run_dir)
    paths, labels = run.queries("test")
    predictor = Predictor(run)
    for path, label in zip(paths[:20], labels[:20]):
        if (
            predictor.predict([load_image(path)], k=5, unknown_threshold=predictor.calibrated_threshold)[0].label
            == run.classes[label]
        ):
            return path.read_bytes(), run.classes[label]
    raise AssertionError("the fixture run labels none of its first 20 held-out images right")
