"""embedder/verbs/import_model.py and `python -m embedder import-model`: a small torch CNN exported to ONNX (as PyTorch
does, NCHW, and as Keras does, NHWC in 0-1) and imported on generated images gives the run the same embeddings,
and so the same neighbours, as running the torch network on the same images by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from embedder.answers.evaluate import evaluate_run
from embedder.answers.predict import Predictor
from embedder.cli.main import main
from embedder.errors import EmbedderError
from embedder.runs.run import load_run
from embedder.verbs.import_model import ImportConfig, import_model
from tests.helpers import make_shapes_folder

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter, on purpose
SIDE = 32


class SmallCNN(nn.Module):
    """Untrained but seeded: two convolutions, a pooled (B, 16, 2, 2) map (an output of rank 4), optionally
    taking channels-last input as a Keras model does, optionally ending in a softmax as a classifier does."""

    def __init__(self, nhwc: bool = False, softmax: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.nhwc, self.softmax = nhwc, softmax
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        z = self.pool(self.features(x))  # (B, 16, 2, 2)
        return z.flatten(1).softmax(1) if self.softmax else z


def export(net: nn.Module, path, nhwc: bool = False) -> bytes:
    """The network as another framework's exporter would leave it: a fixed image size, a dynamic batch."""
    shape = (1, SIDE, SIDE, 3) if nhwc else (1, 3, SIDE, SIDE)
    torch.onnx.export(
        net.eval(),
        (torch.zeros(shape),),
        str(path),
        dynamo=False,
        input_names=["input_1"],
        output_names=["features"],
        dynamic_axes={"input_1": {0: "batch"}},
    )
    return path.read_bytes()


def by_hand(net: nn.Module, paths, mean: float, std: float, nhwc: bool) -> np.ndarray:
    """The oracle: each image resized with PIL, scaled to 0-1, normalised, run through the torch network,
    flattened and L2-normalised; no code of the package involved."""
    rows = []
    for p in paths:
        img = Image.open(p).convert("RGB").resize((SIDE, SIDE), Image.BILINEAR)
        x = (np.asarray(img, dtype=np.float32) / 255.0 - mean) / std  # (H, W, 3)
        x = torch.from_numpy(x if nhwc else x.transpose(2, 0, 1).copy())[None]
        with torch.no_grad():
            rows.append(F.normalize(net(x).flatten(1), dim=1)[0].numpy())
    return np.stack(rows)


@pytest.mark.parametrize(
    "nhwc, flags, mean, std",
    [
        (False, {"mean": "0.5", "std": "0.25"}, 0.5, 0.25),  # PyTorch: NCHW, normalised
        (True, {"scale": "0-1"}, 0.0, 1.0),  # Keras: NHWC, pixels in 0-1
    ],
)
def test_import__same_neighbours_as_the_torch_network_itself(tmp_path, nhwc, flags, mean, std):
    shapes = make_shapes_folder(tmp_path / "shapes", per_class=10)
    net = SmallCNN(nhwc=nhwc).eval()
    data = export(net, tmp_path / "m.onnx", nhwc)
    cfg = ImportConfig(data=str(shapes), out=str(tmp_path / "run"), pretrained_baseline=False, **flags)
    import_model(data, cfg)

    run = load_run(tmp_path / "run")
    assert (run.onnx.layout, run.onnx.height, run.onnx.dim) == ("nhwc" if nhwc else "nchw", SIDE, 64)
    raw = by_hand(net, run.gallery_files(), mean, std, nhwc)
    # ReLU features share a positive offset: the import centres them by the gallery mean (network/centre.py)
    centre = raw.mean(axis=0) if run.info["centring"]["centred"] else None
    move = lambda x: x if centre is None else (x - centre) / np.linalg.norm(x - centre, axis=1, keepdims=True)
    want = move(raw)
    np.testing.assert_allclose(run.gallery_embeddings, want, atol=1e-5)

    queries, _ = run.queries("test")
    q = move(by_hand(net, queries, mean, std, nhwc))
    exact = np.argsort(-(q @ want.T), axis=1)[:, :5]  # brute force over the torch embeddings
    found = Predictor(run).predict([str(p) for p in queries], k=5)
    assert [[n.index for n in p.neighbours] for p in found] == exact.tolist()


def test_import__the_run_evaluates_against_raw_pixels_and_says_whether_it_beats_them(tmp_path):
    shapes = make_shapes_folder(tmp_path / "shapes", per_class=10)
    data = export(SmallCNN(), tmp_path / "m.onnx")
    result = import_model(data, ImportConfig(data=str(shapes), out=str(tmp_path / "run"), pretrained_baseline=False))
    test = result.metrics["test"]
    assert set(test["baselines"]) == {"raw_pixels"} and test["n_queries"] == 6
    raw = test["baselines"]["raw_pixels"]["knn_accuracy"]
    assert result.notes[-1].startswith("label accuracy on 6 held-out images: the imported model ")
    assert f"raw pixels ({test['knn_accuracy']:.3f} vs {raw:.3f})" in result.notes[-1]
    # The run is a run: evaluate reuses the baselines measured at import, predict answers.
    again = main(["evaluate", str(tmp_path / "run"), "--json"])
    assert again == 0


def test_import__the_novelty_reference_is_a_sample_of_the_imported_embeddings(tmp_path):
    shapes = make_shapes_folder(tmp_path / "shapes", per_class=90)  # a gallery past novelty.REFERENCE_MIN
    cfg = ImportConfig(data=str(shapes), out=str(tmp_path / "run"), pretrained_baseline=False, mean="0.5", std="0.25")
    import_model(export(SmallCNN().eval(), tmp_path / "m.onnx"), cfg)
    run = load_run(tmp_path / "run")
    assert run.metrics["novelty"]["space"] == "embedding"  # an ONNX graph has no backbone to ask
    reference = run.novelty_reference.astype(np.float32)
    assert len(reference) == len(run.gallery_embeddings)  # under 5,000: every gallery image
    assert np.abs(reference - run.gallery_embeddings).max() < 1e-3  # float16 of the same vectors
    (answer,) = Predictor(run).predict([str(run.gallery_files()[0])])
    assert answer.novelty_distance < 1e-2 and not answer.novel  # a gallery image is not unlike the gallery


def test_import__a_classifier_is_accepted_but_the_run_says_so(tmp_path):
    shapes = make_shapes_folder(tmp_path / "shapes", per_class=6)
    data = export(SmallCNN(softmax=True), tmp_path / "m.onnx")
    result = import_model(data, ImportConfig(data=str(shapes), out=str(tmp_path / "run"), pretrained_baseline=False))
    assert any("ends in Softmax: its output looks like class scores" in n for n in result.notes)
    assert load_run(tmp_path / "run").info["notes"] == result.notes


def test_import__a_bad_file_or_setting_fails_before_any_image_is_read(tmp_path):
    shapes = make_shapes_folder(tmp_path / "shapes", per_class=6)
    cfg = ImportConfig(data=str(shapes), out=str(tmp_path / "run"))
    with pytest.raises(EmbedderError, match="^not a usable ONNX model: the file is not an ONNX model"):
        import_model(b"definitely not protobuf", cfg)
    data = export(SmallCNN(), tmp_path / "m.onnx")
    with pytest.raises(EmbedderError, match=r"^--image-size 64 does not fit the graph's fixed input 32x32$"):
        import_model(data, ImportConfig(data=str(shapes), out=str(tmp_path / "run"), image_size=64))
    with pytest.raises(EmbedderError, match=r"^--mean takes 1 or 3 numbers separated by commas, got '1,2'$"):
        import_model(data, ImportConfig(data=str(shapes), out=str(tmp_path / "run"), mean="1,2"))
    assert not (tmp_path / "run").exists()


def test_cli__an_invalid_model_file_is_one_line_and_exit_2(tmp_path, capsys):
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n not a model")
    code = main(["import-model", str(junk), "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err == "error: not a usable ONNX model: the file is not an ONNX model (it does not parse)\n"


def test_cli__import_model_writes_a_run_that_predict_uses(tmp_path, capsys):
    shapes = make_shapes_folder(tmp_path / "shapes", per_class=8)
    export(SmallCNN(nhwc=True), tmp_path / "keras.onnx", nhwc=True)
    out = tmp_path / "run"
    args = ["import-model", str(tmp_path / "keras.onnx"), "--data", str(shapes), "--out", str(out)]
    assert main([*args, "--scale", "0-255", "--no-pretrained-baseline"]) == 0
    printed = capsys.readouterr().out
    assert f"run written to {out}" in printed and "raw_pixels" in printed and "the imported model" in printed
    assert json.loads((out / "config.json").read_text())["onnx"]["scale"] == "0-255"
    run = load_run(out)
    image, label = run.gallery_files()[0], run.classes[run.gallery_labels[0]]
    assert main(["predict", str(out), str(image), "--json"]) == 0
    nearest = json.loads(capsys.readouterr().out)[0]["neighbors"][0]
    assert (nearest["label"], nearest["distance"]) == (
        label,
        pytest.approx(0, abs=1e-3),
    )  # a gallery image finds itself


def test_import__the_projects_pretrained_backbone_is_a_baseline_when_its_weights_are_here(tmp_path):
    from embedder.network.model import pretrained_available

    if not pretrained_available("efficientnet_lite0"):
        pytest.skip("EfficientNet-Lite0 weights are not installed")
    shapes = make_shapes_folder(tmp_path / "shapes", per_class=5)
    result = import_model(
        export(SmallCNN(), tmp_path / "m.onnx"), ImportConfig(data=str(shapes), out=str(tmp_path / "r"))
    )
    assert set(result.metrics["test"]["baselines"]) == {"raw_pixels", "pretrained"}
    assert "pretrained (" in result.notes[-1]
    run = load_run(tmp_path / "r")
    assert (run.info["baseline_model"]["backbone"], run.info["baseline_model"]["image_size"]) == (
        "efficientnet_lite0",
        224,
    )
    # Asked about other queries, evaluate measures the baselines again, the pretrained one included.
    again = evaluate_run(run, queries=str(shapes))
    assert set(again["baselines"]) == {"raw_pixels", "pretrained"} and "baselines_reused" not in again


def test_import__the_insights_and_the_triplet_explainer_work_on_an_imported_run(tmp_path):
    from embedder.insights.explain import BatchDraw, explain_batch
    from embedder.insights.findings import gallery_findings

    shapes = make_shapes_folder(tmp_path / "shapes", per_class=10)
    data = export(SmallCNN(), tmp_path / "m.onnx")
    import_model(data, ImportConfig(data=str(shapes), out=str(tmp_path / "run"), pretrained_baseline=False))
    run = load_run(tmp_path / "run")
    e = explain_batch(run, BatchDraw(classes_per_batch=2, per_class=3))
    assert e.before_name == "raw pixels" and e.triplets  # no untrained twin of a network trained elsewhere
    assert sum(e.counts["after"].values()) == sum(e.counts["before"].values())
    assert len(gallery_findings(run).outliers) == len(run.gallery_labels)


def _offset_projection(tmp_path):
    """An LDA projection of 32x32 digits fitted on the first 900 of scikit-learn's digits, exported as ONNX with a
    large common offset (no centring: norm ~2e5, spread ~15 per dimension), and a folder of the other 897 digits,
    which the projection never saw."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from embedder.images.data import demo_dataset

    files = sorted(demo_dataset(tmp_path / "cache").glob("*/*.png"), key=lambda p: int(p.stem))
    pixels = lambda p: np.asarray(Image.open(p).convert("L"), dtype=np.float32).ravel() / 255.0  # what 0-1 gray feeds
    seen = [p for p in files if int(p.stem) < 900]
    lda = LinearDiscriminantAnalysis(n_components=9).fit(
        np.stack([pixels(p) for p in seen]), [p.parent.name for p in seen]
    )
    net = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 9))
    with torch.no_grad():
        net[1].weight.copy_(torch.from_numpy(5 * lda.scalings_[:, :9].T.astype(np.float32)))
        net[1].bias.fill_(66_667.0)  # every output shares it, as all-positive ReLU features share their mean
    torch.onnx.export(net.eval(), (torch.zeros(1, 1, SIDE, SIDE),), str(tmp_path / "lda.onnx"), dynamo=False,
                      input_names=["pixels"], output_names=["z"], dynamic_axes={"pixels": {0: "batch"}})  # fmt: skip
    new = tmp_path / "new-digits"
    for p in files[900:]:
        (new / p.parent.name).mkdir(parents=True, exist_ok=True)
        (new / p.parent.name / p.name).write_bytes(p.read_bytes())
    return (tmp_path / "lda.onnx").read_bytes(), new


def test_import__outputs_with_a_large_common_offset_are_centred_and_label_new_digits(tmp_path):
    data, new = _offset_projection(tmp_path)
    result = import_model(data, ImportConfig(data=str(new), out=str(tmp_path / "run"), pretrained_baseline=False))
    run = load_run(tmp_path / "run")
    assert run.info["centring"]["centred"] and run.info["centring"]["offset_share"] > 0.99
    assert any(n.startswith("embeddings centred by the gallery mean") for n in result.notes)
    spread = np.linalg.norm(run.gallery_embeddings.mean(axis=0))
    assert spread < 0.5  # no longer nearly parallel: the mean of the unit rows is far from length 1
    queries, labels = run.queries("test")
    assert len(queries) >= 150
    found = Predictor(load_run(tmp_path / "run")).predict([str(p) for p in queries], k=1)
    right = np.mean([p.label == run.classes[c] for p, c in zip(found, labels)])
    assert right >= 0.9, right  # 0.195 when every distance of the nearly parallel vectors rounded alike
    assert run.metrics["test"]["knn_accuracy"] >= 0.9
