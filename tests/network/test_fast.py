"""embedder/network/fast.py: a fixed network exported for onnxruntime gives torch's embeddings; a network in
training, or too few images, stay with torch."""

from __future__ import annotations

import numpy as np
import torch

from embedder.config import ModelConfig
from embedder.network import fast
from embedder.network.embed import embed_images
from embedder.network.fast import OnnxRuntimeModule, for_cpu
from embedder.network.model import EmbeddingNet


def _net() -> EmbeddingNet:
    torch.manual_seed(0)
    return EmbeddingNet(ModelConfig(backbone="convnet", dim=16, image_size=32), load_pretrained=False).eval()


def test_for_cpu__the_export_gives_torchs_embeddings_and_is_made_once(monkeypatch):
    monkeypatch.setattr(fast, "MEASURE", False)  # the small CNN is not faster through onnxruntime: export it anyway
    net, x = _net(), torch.rand(8, 3, 32, 32)
    runner = for_cpu(net, x)
    assert isinstance(runner, OnnxRuntimeModule) and for_cpu(net, x) is runner
    with torch.no_grad():
        np.testing.assert_allclose(runner(x).numpy(), net(x).numpy(), atol=1e-5)


def test_for_cpu__a_photo_network_goes_through_onnxruntime_where_it_runs_faster_than_torch():
    torch.manual_seed(0)
    lite0 = EmbeddingNet(ModelConfig(backbone="efficientnet_lite0", image_size=224), load_pretrained=False).eval()
    x = torch.rand(16, 3, 224, 224)
    assert isinstance(for_cpu(lite0, x), OnnxRuntimeModule)  # 3-4x torch's eager speed on the CPU


def test_for_cpu__a_network_in_training_stays_with_torch():
    net = _net().train()
    assert for_cpu(net, torch.rand(2, 3, 32, 32)) is net


def test_embed_images__fast_from_enough_images_gives_the_same_embeddings(monkeypatch):
    from PIL import Image
    from torchvision.transforms import ToTensor

    net, rng = _net(), np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(12)]
    plain = embed_images(net, images, ToTensor(), batch_size=4)
    monkeypatch.setattr("embedder.network.fast.FAST_PIXELS", 10 * 32 * 32)
    monkeypatch.setattr(fast, "MEASURE", False)
    exported = embed_images(net, images, ToTensor(), batch_size=4, fast=True)
    assert isinstance(fast._EXPORTED.get(net), OnnxRuntimeModule)  # it did go through onnxruntime
    np.testing.assert_allclose(exported, plain, atol=1e-5)


def test_pays__photos_from_a_few_dozen_tiny_images_from_thousands():
    photo, tiny = torch.zeros(1, 3, 224, 224), torch.zeros(1, 3, 32, 32)
    assert fast.pays(64, photo) and not fast.pays(63, photo)
    assert not fast.pays(1_000, tiny) and fast.pays(4_000, tiny)
