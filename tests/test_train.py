import torch

from embedder.train import _miner


def test_semihard_miner__every_triplet_obeys_the_condition():
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(32, 8), dim=1)
    labels = torch.arange(8).repeat_interleave(4)
    a, p, n = _miner("semihard", 0.2)(emb, labels)
    assert len(a) > 0
    d = torch.cdist(emb, emb)
    assert (labels[a] == labels[p]).all() and (labels[a] != labels[n]).all()
    assert (d[a, p] < d[a, n]).all() and (d[a, n] <= d[a, p] + 0.2 + 1e-6).all()
