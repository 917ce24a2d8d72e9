import pytest
import torch

from embedder.config import TrainConfig
from embedder.train import _loss_and_miner


def test_semihard_miner__every_triplet_obeys_the_condition():
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(32, 8), dim=1)
    labels = torch.arange(8).repeat_interleave(4)
    a, p, n = _loss_and_miner(TrainConfig(miner="semihard", margin=0.2))[1](emb, labels)
    assert len(a) > 0
    d = torch.cdist(emb, emb)
    assert (labels[a] == labels[p]).all() and (labels[a] != labels[n]).all()
    assert (d[a, p] < d[a, n]).all() and (d[a, n] <= d[a, p] + 0.2 + 1e-6).all()


def test_set_learning_rate__cosine_decays_to_near_zero_and_constant_stays():
    from embedder.config import TrainConfig
    from embedder.train import set_learning_rate

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    cfg = TrainConfig(epochs=10, schedule="cosine")
    lrs = []
    for epoch in range(1, 11):
        set_learning_rate(opt, cfg, epoch)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-3) and lrs[5] == pytest.approx(0.5e-3)
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 0.03e-3
    set_learning_rate(opt, TrainConfig(epochs=10, schedule="constant"), 7)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_multi_similarity_loss__trains_and_beats_the_untrained_network(shapes_folder, tmp_path):
    from helpers import cfg

    from embedder.pipeline import train

    result = train(cfg(shapes_folder, tmp_path / "run", loss="multi-similarity", epochs=3, val_fraction=0.2))
    val = result.metrics["validation_candidates"]
    assert result.history and result.history[0]["loss"] > 0
    assert val["the network before training"]["label_accuracy"] <= result.metrics["validation"]["label_accuracy"]
