"""Planning: splits, batch shape and model choice decided before training, with user errors up front."""

import pytest

from embedder.errors import EmbedderError
from embedder.training.plan import plan
from tests.helpers import cfg as _cfg


def test_plan__lonely_classes_stay_in_gallery_and_are_named(shapes_folder, tmp_path):
    (shapes_folder / "star").mkdir()
    (shapes_folder / "circle" / "000.png").rename(shapes_folder / "star" / "only.png")
    pl = plan(_cfg(shapes_folder, tmp_path / "run"))
    assert any("star" in note and "fewer than 2 training images" in note for note in pl.notes)
    star = pl.images.classes.index("star")
    assert star not in pl.trainable_classes
    assert star in pl.images.labels[pl.train_idx]
    assert pl.model_config.backbone == "convnet" and pl.model_config.image_size == 32  # 48 px images are "tiny"


def test_plan__batch_keeps_its_size_when_classes_are_few(shapes_folder, tmp_path):
    pl = plan(_cfg(shapes_folder, tmp_path / "run", classes_per_batch=8, per_class=4))
    assert (pl.classes_per_batch, pl.per_class) == (3, 10)


def test_plan__bad_settings_are_user_errors(shapes_folder, tmp_path):
    with pytest.raises(EmbedderError, match="unknown --miner .easy."):
        plan(_cfg(shapes_folder, tmp_path / "run", miner="easy"))
    with pytest.raises(EmbedderError, match="no pretrained weights"):
        plan(_cfg(shapes_folder, tmp_path / "run", backbone="convnet", pretrained=True))


def test_unseen_classes__too_few_is_a_user_error(shapes_folder, tmp_path):
    with pytest.raises(EmbedderError, match="need 4 unseen"):
        plan(_cfg(shapes_folder, tmp_path / "run", unseen_classes=0.34))


def test_plan__a_label_file_corrects_what_training_learns_from(shapes_folder, tmp_path):
    """``train --labels``: the label file's labels replace the folders' (a new one becomes a class), its removals
    leave the images out, and the folder is not touched."""
    before = sorted(p.relative_to(shapes_folder).as_posix() for p in shapes_folder.rglob("*.png"))
    labels = tmp_path / "fixes.csv"
    labels.write_text(f"path,label,action\ncircle/000.png,square,\n{shapes_folder / 'circle' / '001.png'},,remove\n")
    pl = plan(_cfg(shapes_folder, tmp_path / "run", labels=str(labels)))
    images = pl.images
    assert images.classes[images.labels[images.paths.index(shapes_folder / "circle" / "000.png")]] == "square"
    assert shapes_folder / "circle" / "001.png" not in images.paths and len(images) == len(before) - 1
    assert "labels from the label file: 1 changed, 1 left out" in pl.notes
    assert sorted(p.relative_to(shapes_folder).as_posix() for p in shapes_folder.rglob("*.png")) == before
    with pytest.raises(EmbedderError, match="label file not found"):
        plan(_cfg(shapes_folder, tmp_path / "run", labels=str(tmp_path / "none.csv")))
