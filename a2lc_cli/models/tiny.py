"""The small default model for the built-in data: a dilated CNN of a few ten thousand parameters.

Structure: a full-resolution stem, ``down`` strided convolutions (each halving
the resolution), a stack of dilated residual 3×3 convolutions (the receptive
field grows with the dilations without further downsampling), bilinear
upsampling back to full resolution, concatenation with the stem's features
(colour and sharp borders at full resolution) and a 1×1 classifier. The default
(stride 4, dilations 1/2/4) trains on 2 CPU cores at ≈ 10 iterations of batch 16
on 64×64 crops per second; docs/training.md has the measurements behind it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn(cin: int, cout: int, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    def __init__(self, ch: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn(self.conv(x)), inplace=True)


class TinySeg(nn.Module):
    """Dilated CNN: (B,3,H,W) → logits (B,C,H,W); embedding (B,E,H,W) with E = width + stem."""

    def __init__(self, num_classes: int, *, stem: int, width: int, dilations: tuple[int, ...], down: int = 2):
        super().__init__()
        self.backbone = _conv_bn(3, stem)
        self.down = nn.Sequential(*[_conv_bn(stem if k == 0 else width, width, stride=2) for k in range(down)])
        self.body = nn.Sequential(*[_Residual(width, d) for d in dilations])
        self.embed_dim = width + stem
        self.classifier = nn.Conv2d(self.embed_dim, num_classes, 1)

    def _parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.backbone(x)
        return low, self.body(self.down(low))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B,3,H,W) normalised. Returns (logits (B,C,H,W), embedding (B,E,H,W) = [upsampled body, stem])."""
        low, h = self._parts(x)
        emb = torch.cat([F.interpolate(h, size=low.shape[-2:], mode="bilinear", align_corners=False), low], 1)
        return self.classifier(emb), emb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B,C,H,W): the same function as ``forward_features(x)[0]``, computed cheaply.

        The 1×1 classifier and bilinear upsampling are both linear, so they commute:
        the body's share of the classifier runs at the body's resolution and only C
        channels are upsampled, instead of concatenating E channels at full resolution.

        Memory: the full-resolution tensors are released as soon as they are used
        (the stem's features after their share of the classifier, the sum taken in
        place in the upsampled logits), so at most two (B,C,H,W) arrays live at once
        (docs/performance.md). The result is bitwise that of ``up + fine``.
        """
        low, h = self._parts(x)
        w, b = self.classifier.weight, self.classifier.bias
        k = h.shape[1]
        size = low.shape[-2:]
        fine = F.conv2d(low, w[:, k:])
        del low
        out = F.interpolate(F.conv2d(h, w[:, :k], b), size=size, mode="bilinear", align_corners=False)
        return out.add_(fine)
