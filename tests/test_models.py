"""The model registry: every model builds and maps (B,3,H,W) to logits (B,C,H,W); pretrained weights from disk only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models import mobilenet_v3_large

from a2lc_cli.errors import A2LCError
from a2lc_cli.models import IMAGENET_MEAN, MODELS, build_model, count_parameters, to_input


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_gives_logits_at_input_size(name):
    torch.manual_seed(0)
    model = build_model(name, 5).eval()
    seen = {}
    if hasattr(model, "aspp"):  # DeepLabV3+: ASPP runs on stride-16 features
        model.aspp.register_forward_hook(lambda m, inp, out: seen.update(aspp_in=inp[0].shape))
    x = torch.randn(1, 3, 40, 56)  # not a multiple of the output stride
    with torch.no_grad():
        logits, emb = model.forward_features(x)
    assert logits.shape == (1, 5, 40, 56)
    assert emb.shape[:2] == (1, model.embed_dim) and emb.ndim == 4
    assert torch.isfinite(logits).all()
    assert sum(1 for _ in model.backbone.parameters()) > 0
    if hasattr(model, "aspp"):
        assert seen["aspp_in"][-2:] == (3, 4)  # ceil(40/16), ceil(56/16)
        assert emb.shape[-2:] == (10, 14)  # decoder at stride 4
    else:
        model.train()
        assert model(torch.randn(2, 3, 40, 56)).shape == (2, 5, 40, 56)


def test_tiny_forward_is_forward_features_logits_with_the_same_gradients():
    """forward (classifier before the upsampling, sum in place) = the classifier on the concatenated embedding."""
    torch.manual_seed(0)
    model = build_model("tiny", 5)
    x = torch.randn(2, 3, 37, 50)
    model.eval()
    with torch.no_grad():
        fast, (ref, _) = model(x), model.forward_features(x)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    model.train()  # the in-place sum must keep autograd valid; gradients of both forms agree
    grads = []
    for f in (lambda t: model(t), lambda t: model.forward_features(t)[0]):
        model.zero_grad()
        torch.manual_seed(1)
        (f(x) * torch.randn(2, 5, 37, 50)).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_tiny_model_is_small_and_deeplab_is_the_papers_size():
    assert 15_000 < count_parameters(build_model("tiny", 19)) < 60_000
    # DeepLabV3+ R101: ~59M parameters (torchvision backbone 42.5M + ASPP/decoder)
    assert 55e6 < count_parameters(build_model("deeplabv3plus_r101", 19)) < 65e6


def test_to_input_normalises_with_imagenet_statistics():
    mean = np.round(np.array(IMAGENET_MEAN) * 255).astype(np.uint8)
    images = np.broadcast_to(mean, (2, 4, 6, 3)).copy()
    images[1] = 255
    x = to_input(images, "cpu", channels_last=True)
    assert x.shape == (2, 3, 4, 6) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert x[0].abs().max() < 0.01  # the mean colour maps to ~0
    assert torch.allclose(x[1, 0], torch.full((4, 6), (1 - 0.485) / 0.229))
    with pytest.raises(ValueError):
        to_input(np.zeros((4, 6, 3), np.uint8), "cpu")


def test_unknown_model_is_an_error():
    with pytest.raises(A2LCError, match="unknown model 'resnet9'.*tiny"):
        build_model("resnet9", 3)


def test_imagenet_weights_come_from_the_torch_cache_only(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    with pytest.raises(A2LCError, match="not found in .*checkpoints.*nothing is downloaded"):
        build_model("mobilenet", 3, pretrained="imagenet")
    with pytest.raises(A2LCError, match="no ImageNet"):
        build_model("tiny", 3, pretrained="imagenet")
    # a torchvision-format file (full classifier network, as torchvision ships it)
    torch.manual_seed(1)
    ref = mobilenet_v3_large()
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(ref.state_dict(), hub / "checkpoints" / "mobilenet_v3_large-8738ca79.pth")
    model = build_model("mobilenet", 3, pretrained="imagenet")
    got = model.backbone.features.state_dict()
    for k, v in ref.features.state_dict().items():
        assert torch.equal(got[k], v), k


def test_pretrained_local_file(tmp_path):
    torch.manual_seed(2)
    src = build_model("tiny", 7)
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": src.state_dict()}, path)
    model = build_model("tiny", 3, pretrained=str(path))  # other class count: classifier not copied
    for k, v in src.state_dict().items():
        if k.startswith("classifier"):
            assert model.state_dict()[k].shape != v.shape
        else:
            assert torch.equal(model.state_dict()[k], v), k
    with pytest.raises(A2LCError, match="do not exist"):
        build_model("tiny", 3, pretrained=str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(A2LCError, match="junk.pt: not a readable"):
        build_model("tiny", 3, pretrained=str(tmp_path / "junk.pt"))
    torch.save({"x": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(A2LCError, match="do not fit model 'tiny'"):
        build_model("tiny", 3, pretrained=str(tmp_path / "other.pt"))
