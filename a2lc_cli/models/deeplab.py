"""DeepLabV3+ (Chen et al. 2018) on torchvision backbones: the paper's segmentation model.

Encoder: a torchvision ResNet with its last stage dilated (output stride 16) or
MobileNetV3-Large with its last stages dilated (output stride 16). ASPP
(torchvision's module: 1×1, three atrous 3×3 at rates 6/12/18, image pooling)
on the stride-16 features. Decoder: the stride-4 low-level features reduced to
48 channels by a 1×1 convolution, concatenated with the upsampled ASPP output,
two 3×3 convolutions (256 channels), a 1×1 classifier; logits are upsampled
bilinearly to the input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import mobilenet_v3_large, resnet50, resnet101
from torchvision.models.segmentation.deeplabv3 import ASPP

RESNETS = {"resnet50": resnet50, "resnet101": resnet101}


class ResNetEncoder(nn.Module):
    """torchvision ResNet without avgpool/fc; returns (low (B,256,H/4,W/4), high (B,2048,H/16,W/16))."""

    low_channels = 256
    high_channels = 2048

    def __init__(self, arch: str):
        super().__init__()
        net = RESNETS[arch](weights=None, replace_stride_with_dilation=[False, False, True])
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        return low, self.layer4(self.layer3(self.layer2(low)))


class MobileNetEncoder(nn.Module):
    """torchvision MobileNetV3-Large features, dilated; returns (low (B,24,H/4,W/4), high (B,960,H/16,W/16))."""

    low_channels = 24
    high_channels = 960

    def __init__(self, arch: str = "mobilenet_v3_large"):
        super().__init__()
        self.features = mobilenet_v3_large(weights=None, dilated=True).features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.features[:4](x)
        return low, self.features[4:](low)


ENCODERS = {"resnet": ResNetEncoder, "mobilenet": MobileNetEncoder}


class DeepLabV3Plus(nn.Module):
    """(B,3,H,W) → logits (B,C,H,W); embedding = decoder features (B,256,H/4,W/4)."""

    def __init__(self, num_classes: int, *, encoder: str, arch: str, aspp_rates: tuple[int, ...] = (6, 12, 18),
                 aspp_channels: int = 256, low_channels: int = 48, decoder_channels: int = 256):
        super().__init__()
        self.backbone = ENCODERS[encoder](arch)
        self.aspp = ASPP(self.backbone.high_channels, list(aspp_rates), aspp_channels)
        self.reduce = nn.Sequential(
            nn.Conv2d(self.backbone.low_channels, low_channels, 1, bias=False),
            nn.BatchNorm2d(low_channels),
            nn.ReLU(inplace=True),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(aspp_channels + low_channels, decoder_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(decoder_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(decoder_channels, decoder_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(decoder_channels),
            nn.ReLU(inplace=True),
        )
        self.embed_dim = decoder_channels
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)
        for m in [*self.reduce.modules(), *self.decoder.modules()]:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B,3,H,W) normalised. Returns (logits (B,C,H,W), embedding (B,256,H/4,W/4))."""
        low, high = self.backbone(x)
        a = F.interpolate(self.aspp(high), size=low.shape[-2:], mode="bilinear", align_corners=False)
        emb = self.decoder(torch.cat([a, self.reduce(low)], 1))
        logits = F.interpolate(self.classifier(emb), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits, emb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
