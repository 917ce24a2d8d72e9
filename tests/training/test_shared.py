"""embedder/training/shared.py: the frozen stages' output computed once for every network of a cross-validation is
what each network would have computed itself, the trainable stages on it give the network's own embedding, and
each epoch's views are the same whenever and in whatever order they are asked for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedder.config import ModelConfig
from embedder.images.data import load_image
from embedder.images.transforms import eval_transform, train_transform
from embedder.network.model import EmbeddingNet, freeze_leading
from embedder.training.shared import FrozenStages, TopOnly
from tests.helpers import make_shapes_folder

MC = ModelConfig(backbone="efficientnet_lite0", dim=16, image_size=64, resize="crop", augment="photo", pretrained=False)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = make_shapes_folder(tmp_path_factory.mktemp("photos"), per_class=3, size=96)
    return sorted(root.rglob("*.png"))


def _network(seed: int):
    torch.manual_seed(seed)
    net = EmbeddingNet(MC).eval()  # random weights are enough: the frozen part must agree, whatever it holds
    return net, freeze_leading(net.backbone, 0.75)


def _stages(net, n_frozen, photos):
    return FrozenStages(net, n_frozen, photos, (eval_transform(MC), train_transform(MC)), load_image, batch_size=4)


def test_still__the_frozen_stages_of_another_network_with_the_same_weights_give_the_same_output(photos):
    net, n_frozen = _network(0)
    other, _ = _network(1)  # another head, another seed...
    other.backbone.load_state_dict(net.backbone.state_dict())  # ...the same backbone, as every fold starts from
    acts = _stages(net, n_frozen, photos).still(photos[::-1])
    with torch.no_grad():
        x = torch.stack([eval_transform(MC)(load_image(p)) for p in photos[::-1]])
        direct = other.backbone.run(x, 0, n_frozen).numpy()
        np.testing.assert_allclose(acts, direct, atol=1e-5)
        # and the trainable stages on them give the network's own embedding of the image
        np.testing.assert_allclose(TopOnly(other, n_frozen)(torch.from_numpy(acts)), other(x), atol=1e-5)


def test_views__the_same_views_whatever_the_order_and_another_set_each_epoch(photos):
    net, n_frozen = _network(0)
    first = _stages(net, n_frozen, photos)
    a1 = first.views(1, seed=0)
    a2 = first.views(2, seed=0)
    again = _stages(net, n_frozen, photos)  # a new cache: computed anew, epoch 2 first
    b2, b1 = again.views(2, seed=0), again.views(1, seed=0)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.allclose(a1, a2)  # a fresh augmentation every epoch
    assert first.views(1, seed=0) is a1  # kept: the last network's epochs reuse them
    assert not torch.allclose(_stages(net, n_frozen, photos).views(1, seed=1), a1)


def test_frozen__on_the_cpu_the_frozen_stages_run_through_onnxruntime_and_agree_with_torch(photos, monkeypatch):
    from embedder.network import fast
    from embedder.network.fast import OnnxRuntimeModule

    monkeypatch.setattr(fast, "MEASURE", False)  # 9 images of 64 px: whether onnxruntime is faster is a coin flip

    net, n_frozen = _network(0)
    stages = _stages(net, n_frozen, photos)
    acts = stages.still(photos)
    assert isinstance(stages._run, OnnxRuntimeModule)  # every view of every epoch goes the fast way
    with torch.no_grad():
        x = torch.stack([eval_transform(MC)(load_image(p)) for p in photos])
        np.testing.assert_allclose(acts, net.backbone.run(x, 0, n_frozen).numpy(), atol=1e-5)
