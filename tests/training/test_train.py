import pytest


@pytest.mark.parametrize("loss", ["multi-similarity", "proxy-anchor"])
def test_other_losses__train_and_beat_the_untrained_network(shapes_folder, tmp_path, loss):
    from embedder.verbs.pipeline import train
    from tests.helpers import cfg

    result = train(cfg(shapes_folder, tmp_path / "run", loss=loss, epochs=3, val_fraction=0.2))
    val = result.metrics["validation_candidates"]
    assert result.history and result.history[0]["loss"] > 0
    assert val["the network before training"]["label_accuracy"] <= result.metrics["validation"]["label_accuracy"]
