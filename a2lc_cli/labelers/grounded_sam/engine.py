"""Batched Grounded SAM inference: GroundingDINO boxes from text prompts, then one SAM mask per box.

Per batch of images: one GroundingDINO forward (images resized to a short side,
padded together), the per-box class from the highest-scoring caption token, one
batched SAM image-encoder forward, and per image one SAM decoder call over all
its boxes (in chunks to bound memory). Runs under bf16 autocast when asked.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...state import ImageProposal
from .models import quiet
from .prompts import PromptSet

GDINO_MEAN = (0.485, 0.456, 0.406)
GDINO_STD = (0.229, 0.224, 0.225)


@dataclass
class Detections:
    """Boxes of one image. boxes: (k,4) float32 x0,y0,x1,y1 in image pixels; score: (k,); label: (k,) int64 class."""

    boxes: torch.Tensor
    score: torch.Tensor
    label: torch.Tensor


def gdino_input_size(h: int, w: int, short_side: int, max_side: int | None) -> tuple[int, int]:
    """(h', w') with the short side ``short_side`` unless the long side would pass ``max_side``.

    The rule of GroundingDINO's ``RandomResize([short], max_size=max_side)`` (800/1333
    by default; 512/1024 for Cityscapes in the authors' setting).
    """
    size = short_side
    if max_side is not None:
        lo, hi = float(min(h, w)), float(max(h, w))
        if hi / lo * size > max_side:
            size = int(round(max_side * lo / hi))
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


def paint_masks_device(
    masks: torch.Tensor, labels: torch.Tensor, fill_label: int, *, chunk: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`a2lc_cli.labelers.base.paint_masks` on the masks' device, with the same result.

    masks: (k,H,W) bool; labels: (k,) int. Masks are painted largest first (ties in
    input order), so every pixel goes to the covering mask painted last: the one
    with the highest painting rank, found as a max over masks (in chunks of
    ``chunk`` to bound memory) instead of k sequential writes. Returns
    (segment (H,W) int32 local mask index or -1, label0 (H,W) uint8 with ``fill_label``
    where uncovered). On a GPU this takes milliseconds where the NumPy version
    takes about a second for 50 full-resolution Cityscapes masks.
    """
    k, h, w = masks.shape
    dev = masks.device
    if k == 0:
        return (torch.full((h, w), -1, dtype=torch.int32, device=dev),
                torch.full((h, w), fill_label, dtype=torch.uint8, device=dev))
    areas = masks.flatten(1).sum(1)
    order = torch.sort(-areas, stable=True).indices  # painting order: largest first
    rank = torch.empty_like(order)
    rank[order] = torch.arange(k, device=dev)
    best = torch.full((h, w), -1, dtype=torch.int64, device=dev)
    for c0 in range(0, k, chunk):  # chunks of masks, not single masks: bounded memory
        r = rank[c0 : c0 + chunk].view(-1, 1, 1)
        best = torch.maximum(best, torch.where(masks[c0 : c0 + chunk], r, -1).amax(0))
    covered = best >= 0
    segment = torch.where(covered, order[best.clamp(min=0)], -1).to(torch.int32)
    label0 = torch.where(covered, labels.to(dev)[segment.clamp(min=0).long()], fill_label).to(torch.uint8)
    return segment, label0


class GroundedSamEngine:
    """GroundingDINO + SAM on a device. Stateless per call; models are in eval mode."""

    def __init__(
        self,
        gdino: torch.nn.Module,
        sam: torch.nn.Module,
        *,
        prompts: PromptSet,
        token_class: np.ndarray,
        fill_label: int,
        device: torch.device,
        bf16: bool,
        short_side: int,
        max_side: int | None,
        nms_iou: float | None = None,
        max_boxes: int | None = None,
        box_chunk: int = 64,
    ):
        from segment_anything.utils.transforms import ResizeLongestSide

        self.gdino = gdino.to(device).eval()
        self.sam = sam.to(device).eval()
        self.prompts = prompts
        self.device = device
        self.bf16 = bf16
        self.gdino_bf16 = bf16  # turned off if GroundingDINO's code cannot run under bf16 autocast
        self.fill_label = int(fill_label)
        self.short_side, self.max_side = short_side, max_side
        self.nms_iou, self.max_boxes, self.box_chunk = nms_iou, max_boxes, box_chunk
        self.num_classes = len(prompts.thresholds)
        valid = np.flatnonzero(token_class >= 0)
        self._tok_idx = torch.as_tensor(valid, device=device)
        self._tok_cls = torch.as_tensor(token_class[valid], device=device)
        self._thr = torch.as_tensor(np.nan_to_num(prompts.thresholds, nan=np.inf), device=device)
        self._mean = torch.tensor(GDINO_MEAN, device=device).view(3, 1, 1)
        self._std = torch.tensor(GDINO_STD, device=device).view(3, 1, 1)
        self._sam_size = int(self.sam.image_encoder.img_size)
        self._resize = ResizeLongestSide(self._sam_size)

    def _autocast(self, enabled: bool | None = None) -> contextlib.AbstractContextManager:
        if not (self.bf16 if enabled is None else enabled):
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _gdino_forward(self, samples, n: int) -> dict[str, torch.Tensor]:
        """GroundingDINO's forward, under bf16 autocast if possible.

        groundingdino-py runs parts of its decoder with autocast disabled; should
        that meet bf16 tensors (a dtype error), the model runs in float32 from then on.
        """
        captions = [self.prompts.caption] * n
        if self.gdino_bf16:
            try:
                with quiet(), self._autocast(True):
                    return self.gdino(samples, captions=captions)
            except RuntimeError as e:
                if "dtype" not in str(e) and "type" not in str(e):
                    raise
                from ... import ui

                ui.info(f"GroundingDINO does not run under bf16 autocast here ({ui.esc(str(e).splitlines()[0][:120])}); using float32 for it")
                self.gdino_bf16 = False
        with quiet():
            return self.gdino(samples, captions=captions)

    @torch.inference_mode()
    def detect(self, images: list[torch.Tensor]) -> list[Detections]:
        """GroundingDINO boxes of a batch.

        images: B tensors (3,H,W) float 0..255 on the device (sizes may differ; padded together).
        Each of the ``num_queries`` boxes gets the class of its highest-scoring phrase
        token; it is kept if that score exceeds the class's threshold.
        """
        from groundingdino.util.misc import nested_tensor_from_tensor_list

        inputs = []
        for x in images:
            h, w = x.shape[-2:]
            size = gdino_input_size(int(h), int(w), self.short_side, self.max_side)
            x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
            inputs.append((x / 255.0 - self._mean) / self._std)
        samples = nested_tensor_from_tensor_list(inputs)
        out = self._gdino_forward(samples, len(images))
        probs = out["pred_logits"].float().sigmoid()[..., self._tok_idx]  # (B,nq,T) phrase tokens only
        b, nq, _ = probs.shape
        cls_score = torch.zeros(b, nq, self.num_classes, device=probs.device)
        cls_score.scatter_reduce_(2, self._tok_cls.expand(b, nq, -1), probs, reduce="amax")  # (B,nq,C)
        score, label = cls_score.max(-1)  # the class of the highest-scoring token
        keep = score > self._thr[label]
        boxes_n = out["pred_boxes"].float()  # (B,nq,4) cx,cy,w,h normalised to the image
        dets = []
        for i, x in enumerate(images):
            h, w = x.shape[-2:]
            k = keep[i]
            cx, cy, bw, bh = boxes_n[i, k].unbind(-1)
            xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
            xyxy = xyxy * torch.tensor([w, h, w, h], device=xyxy.device, dtype=xyxy.dtype)
            xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, w)
            xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, h)
            s, lab = score[i, k], label[i, k]
            if self.nms_iou is not None and len(s):
                from torchvision.ops import batched_nms

                order = batched_nms(xyxy, s, lab, self.nms_iou)
            else:
                order = torch.sort(s, descending=True, stable=True).indices
            if self.max_boxes is not None:
                order = order[: self.max_boxes]
            dets.append(Detections(xyxy[order], s[order], lab[order]))
        return dets

    @torch.inference_mode()
    def encode(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """SAM image embeddings of a batch: ((B,E,S/16,S/16), the resized (h,w) of each image before padding).

        images: B tensors (3,H,W) float 0..255 on the device; each is resized so its
        long side is SAM's input size S (1024), normalised and padded to S×S.
        """
        sam, size = self.sam, self._sam_size
        batch, input_sizes = [], []
        for x in images:
            h, w = x.shape[-2:]
            target = self._resize.get_preprocess_shape(int(h), int(w), size)
            x = F.interpolate(x[None], size=target, mode="bilinear", align_corners=False, antialias=True)
            batch.append(sam.preprocess(x))
            input_sizes.append(target)
        with quiet(), self._autocast():
            return sam.image_encoder(torch.cat(batch)), input_sizes

    @torch.inference_mode()
    def decode(
        self, embedding: torch.Tensor, boxes: torch.Tensor, input_size: tuple[int, int], image_size: tuple[int, int]
    ) -> torch.Tensor:
        """One SAM mask per box (single-mask output, as the authors): (k,H,W) bool.

        embedding: (1,E,S/16,S/16) of one image; boxes: (k,4) x0,y0,x1,y1 in image
        pixels; image_size: (H,W). All boxes go through the prompt encoder and mask
        decoder together, in chunks of ``box_chunk`` to bound memory.
        """
        sam = self.sam
        boxes = self._resize.apply_boxes_torch(boxes, image_size)
        masks = []
        with quiet(), self._autocast():
            pe = sam.prompt_encoder.get_dense_pe()
            for c0 in range(0, len(boxes), self.box_chunk):
                sparse, dense = sam.prompt_encoder(points=None, boxes=boxes[c0 : c0 + self.box_chunk], masks=None)
                low, _ = sam.mask_decoder(
                    image_embeddings=embedding,
                    image_pe=pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=False,
                )
                up = sam.postprocess_masks(low.float(), input_size, image_size)  # (k,1,H,W) logits
                masks.append(up[:, 0] > sam.mask_threshold)
        return torch.cat(masks)

    def segment(self, images: list[torch.Tensor], dets: list[Detections]) -> list[torch.Tensor]:
        """(k,H,W) bool masks of each image's boxes; the encoder runs once over the images that have boxes."""
        out = [torch.zeros((0, *x.shape[-2:]), dtype=torch.bool, device=self.device) for x in images]
        todo = [i for i, d in enumerate(dets) if len(d.score)]
        if not todo:
            return out
        emb, input_sizes = self.encode([images[i] for i in todo])
        for j, i in enumerate(todo):
            h, w = (int(v) for v in images[i].shape[-2:])
            out[i] = self.decode(emb[j : j + 1], dets[i].boxes, input_sizes[j], (h, w))
        return out

    def propose(self, images: list[np.ndarray]) -> list[ImageProposal]:
        """Correction units of a batch. images: B arrays (H,W,3) uint8 RGB.

        Masks are painted largest first so smaller ones win (SPEC §3; the same
        result as :func:`a2lc_cli.labelers.base.paint_masks`, computed on the
        device); uncovered pixels get the fill label; each mask carries its
        detector score and the class of its prompt.
        """
        tensors = [
            torch.from_numpy(np.ascontiguousarray(im)).to(self.device).permute(2, 0, 1).float() for im in images
        ]
        dets = self.detect(tensors)
        masks = self.segment(tensors, dets)
        props = []
        for d, m in zip(dets, masks):
            segment, label0 = paint_masks_device(m, d.label, self.fill_label)
            props.append(ImageProposal(
                segment=segment.cpu().numpy(),
                label0=label0.cpu().numpy(),
                score=d.score.float().cpu().numpy().astype(np.float32),
                prompt=d.label.cpu().numpy().astype(np.int16),
            ))
        return props
