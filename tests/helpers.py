"""Small helpers several test files share (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


# The ``train`` section of a run's config.json as written before the settings were split into stages (schema 2, the
# fields in their old order, before --finetune and --cv-patience existed): flat, as it still is.
TRAIN_OF_SCHEMA_2 = {
    "data": "/tmp/lab/e0/shapes", "out": "/tmp/lab/e0/runs/r", "backbone": "auto", "pretrained": None, "dim": 16,
    "epochs": 0, "image_size": None, "margin": 0.2, "loss": "triplet", "miner": "semihard", "classes_per_batch": 3,
    "per_class": 4, "lr": 0.001, "backbone_lr": 0.0001, "schedule": "cosine", "weight_decay": 0.0001,
    "freeze_bn": True, "freeze_fraction": 0.75, "average_share": 0.5, "patience": 10, "test_fraction": 0.2,
    "val_fraction": 0.1, "selection": "holdout", "folds": 4, "unseen_classes": None, "queries": None, "labels": None,
    "k": 5, "target_precision": 0.95, "n_trees": 20, "shard_items": 1000000, "batch_size_embed": 64, "seed": 0,
    "device": "auto", "resume": False, "overwrite": False,
}  # fmt: skip


def unit(rows) -> np.ndarray:
    """Rows scaled to unit length, float32: hand-placed embeddings."""
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_shapes_folder(
    root: Path, classes=("circle", "square", "triangle"), per_class: int = 12, size: int = 48, seed: int = 0
) -> Path:
    """An ImageFolder of generated shapes: one shape per class, random position, size and colour."""
    from PIL import Image, ImageDraw

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


def copy_run(src, dst, **changes):
    """A copy of a run with files replaced: ``config_json=dict or str`` replaces config.json, and so on; the
    checksums are made to match, as for a run written that way (damage a file after copying to see them fail)."""
    dst.mkdir(parents=True)
    for name in os.listdir(src):
        if (src / name).is_dir():  # projections/: the app's cache of maps
            continue
        (dst / name).write_bytes((src / name).read_bytes())
    for name, content in changes.items():
        (dst / name.replace("_json", ".json")).write_text(content if isinstance(content, str) else json.dumps(content))
    if changes:
        rewrite_checksums(dst)
    return dst


def rewrite_checksums(run_dir):
    """What an attacker who can plant a file can also do: make the recorded checksums match it (checksums.json's,
    and config.json's own in a schema 2 run)."""
    from embedder.runs.folders import sha256

    text = (run_dir / "config.json").read_text()
    if '"checksums"' in text:  # a schema 2 run (a damaged config.json of schema 3 need not even parse)
        config = json.loads(text)
        config["checksums"] = {name: sha256(run_dir / name) for name in config["checksums"]}
        (run_dir / "config.json").write_text(json.dumps(config))
    if (run_dir / "checksums.json").exists():
        files = json.loads((run_dir / "checksums.json").read_text())["sha256"]
        files = {name: sha256(run_dir / name) for name in files if (run_dir / name).exists()}
        (run_dir / "checksums.json").write_text(json.dumps({"sha256": files}))


class Payload:
    """Unpickling this touches a file: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        from pathlib import Path

        return Path.touch, (Path(self.marker),)


def cfg(data, out, **kw):
    """A TrainConfig for a seconds-long training on a tiny generated set. It keeps the model on the validation
    share (``selection="holdout"``): these runs test the epoch loop, checkpoints and resume; the cross-validated
    choice that "auto" makes on small data has its own tests (tests/training/test_crossval.py)."""
    from embedder.config import TrainConfig

    base = dict(
        data=str(data), out=str(out), epochs=1, dim=16, classes_per_batch=3, per_class=4, seed=0, selection="holdout"
    )
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
    from embedder.answers.predict import Predictor
    from embedder.images.data import load_image
    from embedder.runs.run import load_run

    run = load_run(run_dir)
    paths, labels = run.queries("test")
    predictor = Predictor(run)
    for path, label in zip(paths[:20], labels[:20]):
        if predictor.predict([load_image(path)], k=5, unknown=True)[0].label == run.classes[label]:
            return path.read_bytes(), run.classes[label]
    raise AssertionError("the fixture run labels none of its first 20 held-out images right")


# --- The app under AppTest ---------------------------------------------------------------------------------


def open_app(page: str | None = None):
    """A fresh AppTest session that enters through app.py, as a browser does, then opens ``page``."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    if page:
        at.switch_page(page).run()
    return at


def nodes(at) -> list:
    def walk(node):
        yield node
        for child in getattr(node, "children", {}).values():
            yield from walk(child)

    return list(walk(at._tree))


def page_text(at) -> str:
    """Everything the script sent towards the browser: element protos, with widget ids, labels and help."""
    return "\n".join(str(getattr(n, "proto", "")) for n in nodes(at))


def leaves(at) -> list[str]:
    """The kinds of element on the page, in order: what a visitor sees, without the layout around it."""
    return [type(n).__name__ for n in nodes(at) if not getattr(n, "children", None) and getattr(n, "proto", None)]


def enter_password(at, password: str):
    at.text_input(key="password").input(password)
    return at.button(key="password_enter").click().run()


def train_on_page(shapes, name: str, page=None, **settings):
    """A Train page session that submits a training of the folder ``shapes`` into runs/<name>."""
    at = page or open_app("pages/train.py")
    at.radio(key="train_source").set_value("Folder on the server").run()
    at.text_input(key="train_folder").set_value(str(shapes))
    at.text_input(key="train_name").set_value(name)
    for key, value in {"epochs": 1, **settings}.items():
        at.number_input(key=f"train_{key}").set_value(value)
    return at.button(key="train_submit").click().run()


def zip_of(folder, classes=None, prefix: str = "") -> bytes:
    """The PNGs under ``folder`` (only those of ``classes``, when given) as a .zip, paths under ``prefix``."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(folder.rglob("*.png")):
            if classes is None or f.parent.name in classes:
                zf.write(f, prefix + f.relative_to(folder).as_posix())
    return buf.getvalue()


def train_zip_on_page(data: bytes, name: str):
    """A Train page session that submits ``data`` as an uploaded .zip, trained into runs/<name>."""
    at = open_app("pages/train.py")
    at.radio(key="train_source").set_value("Upload a .zip").run()
    at.file_uploader(key="train_zip").set_value((f"{name}.zip", data, "application/zip"))
    at.text_input(key="train_name").set_value(name)
    at.number_input(key="train_epochs").set_value(1)
    return at.button(key="train_submit").click().run()


# --- A digits set with planted label problems (insights) ------------------------------------------------------


def planted_digits(demo_cache, root, per_class: int = 40, queries_per_class: int = 10) -> dict:
    """Digits in ``root/data`` with known problems, and held-out queries in ``root/queries``:

    - ``flipped``: one image of each of 8 digits moved into the next digit's folder (a wrong label);
    - ``duplicates``: 5 images copied within their own folder as ``dup-<name>`` (pairs of byte-identical files);
    - ``leaked``: 6 query images also copied into the data folder as ``leak-<name>`` (a train/test leak).

    Returns those three as lists of paths relative to ``root/data``: flipped files, (original, copy) pairs,
    (query path relative to ``root/queries``, leaked copy) pairs.
    """
    import shutil

    data, queries = root / "data", root / "queries"
    flipped, duplicates, leaked = [], [], []
    for d in range(10):
        files = sorted((demo_cache / str(d)).glob("*.png"))
        (data / str(d)).mkdir(parents=True, exist_ok=True)
        (queries / str(d)).mkdir(parents=True, exist_ok=True)
        for f in files[:per_class]:
            shutil.copy(f, data / str(d) / f.name)
        for f in files[per_class : per_class + queries_per_class]:
            shutil.copy(f, queries / str(d) / f.name)
    sources = [sorted((data / str(d)).glob("*.png"))[3] for d in range(8)]  # chosen before any moves
    for d, src in enumerate(sources):
        wrong = data / str(d + 1) / src.name
        shutil.move(src, wrong)
        flipped.append(wrong.relative_to(data).as_posix())
    for d in range(5):
        src = sorted((data / str(d)).glob("*.png"))[7]
        copy = src.with_name(f"dup-{src.name}")
        shutil.copy(src, copy)
        duplicates.append((src.relative_to(data).as_posix(), copy.relative_to(data).as_posix()))
    for d in range(6):
        q = sorted((queries / str(d)).glob("*.png"))[0]
        copy = data / str(d) / f"leak-{q.name}"
        shutil.copy(q, copy)
        leaked.append((q.relative_to(queries).as_posix(), copy.relative_to(data).as_posix()))
    return {"flipped": flipped, "duplicates": duplicates, "leaked": leaked}


def synthetic_run(
    out: Path, n: int = 100_000, n_classes: int = 30, dim: int = 16, seed: int = 0, shard_items=1_000_000, **index
) -> Path:
    """A real run bundle with a big gallery, assembled without training: an untrained tiny network, ``n`` gallery
    embeddings drawn from an overlapping Gaussian mixture (unit rows), a real Annoy index (in shards of
    ``shard_items`` rows past that size; ``index``: other IndexConfig fields), and a few real generated images per
    class that the gallery rows point at (2 files per class, shared by its rows)."""
    from embedder.config import IndexConfig, ModelConfig, TrainConfig
    from embedder.network.model import EmbeddingNet
    from embedder.runs.run import Run
    from embedder.search.index import build_index

    classes = [f"class{c:02d}" for c in range(n_classes)]
    data = make_shapes_folder(out.parent / f"{out.name}-images", classes=classes, per_class=2, size=32, seed=seed)
    # no HNSW graph unless asked for (method="graph"): at 100k its build would be most of a map test's time
    settings = {"n_trees": 5, "target_recall": 0.5, "recall_sample": 100, "graph_min_items": 10**9, **index}
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    centres = rng.normal(size=(n_classes, dim))
    emb = unit(centres[labels] + 1.2 * rng.normal(size=(n, dim)))  # neighbouring classes overlap
    model_config = ModelConfig(backbone="convnet", dim=dim, image_size=32)
    run = Run(
        path=out,
        model_config=model_config,
        train_config=TrainConfig(
            data=str(data), out=str(out), dim=dim, n_trees=settings["n_trees"], shard_items=shard_items
        ),
        classes=classes,
        data_root=data,
        gallery_paths=[f"{classes[lab]}/{i % 2:03d}.png" for i, lab in enumerate(labels)],
        gallery_labels=labels.astype(np.int64),
        gallery_embeddings=emb,
        split={"test": [], "val": [], "unseen_val": [], "unseen_test": [], "queries_root": None},
        info={"kept": "synthetic: untrained network, generated embeddings"},
    )
    run._model = EmbeddingNet(model_config, load_pretrained=False).eval()
    run._index = build_index(emb, IndexConfig(shard_items=shard_items, **settings))
    run.save()
    return out


@contextmanager
def writing_elsewhere(run_dir):
    """The run's write lock held by another thread for the block, as a second writer would hold it (this thread
    holding it itself would simply go on: the lock is its own)."""
    from embedder.runs import lock

    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock.writing(run_dir):
            taken.set()
            done.wait(60)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert taken.wait(10)
    try:
        yield
    finally:
        done.set()
        holder.join()
