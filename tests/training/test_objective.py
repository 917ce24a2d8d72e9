"""embedder/training/objective.py: the loss and miner by name, the optimizer's groups, the schedule; each made
from the training stage's settings alone."""

import pytest
import torch

from embedder.config import ModelConfig, TrainingSettings
from embedder.network.model import EmbeddingNet
from embedder.training.objective import PROXY_LR, loss_and_miner, optimizer_for, set_learning_rate


def test_semihard_miner__every_triplet_obeys_the_condition():
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(32, 8), dim=1)
    labels = torch.arange(8).repeat_interleave(4)
    a, p, n = loss_and_miner(TrainingSettings(miner="semihard", margin=0.2), 8, 8)[1](emb, labels)
    assert len(a) > 0
    d = torch.cdist(emb, emb)
    assert (labels[a] == labels[p]).all() and (labels[a] != labels[n]).all()
    assert (d[a, p] < d[a, n]).all() and (d[a, n] <= d[a, p] + 0.2 + 1e-6).all()


def test_set_learning_rate__cosine_decays_to_near_zero_and_constant_stays():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    cfg = TrainingSettings(epochs=10, schedule="cosine")
    lrs = []
    for epoch in range(1, 11):
        set_learning_rate(opt, cfg, epoch)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-3) and lrs[5] == pytest.approx(0.5e-3)
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 0.03e-3
    set_learning_rate(opt, TrainingSettings(epochs=10, schedule="constant"), 7)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_proxy_anchor__its_proxies_train_in_a_group_of_their_own_and_follow_the_schedule():
    cfg = TrainingSettings(loss="proxy-anchor", lr=1e-3, epochs=10)
    loss_fn, miner = loss_and_miner(cfg, 5, 16)
    assert miner is None and loss_fn.proxies.shape == (5, 16)  # one proxy a class, in the embedding's space
    model = EmbeddingNet(ModelConfig(backbone="convnet", dim=16))
    optimizer = optimizer_for(model, cfg, loss_fn)
    group = optimizer.param_groups[-1]
    assert group["params"] == [loss_fn.proxies] and group["lr"] == pytest.approx(PROXY_LR * 1e-3)
    assert group["weight_decay"] == 0  # decay would shrink the proxies toward each other
    set_learning_rate(optimizer, cfg, 6)
    assert group["lr"] == pytest.approx(PROXY_LR * 0.5e-3)
    before = loss_fn.proxies.detach().clone()
    x, y = torch.randn(10, 3, 32, 32), torch.arange(5).repeat(2)
    loss_fn(model(x), y).backward()
    optimizer.step()
    assert not torch.equal(before, loss_fn.proxies.detach())  # the proxies learn
    assert len(optimizer_for(model, TrainingSettings(), loss_and_miner(TrainingSettings(), 5, 16)[0]).param_groups) == 2
