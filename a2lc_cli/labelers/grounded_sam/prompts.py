"""Text prompts of Grounded SAM: per-class phrases, the caption, and the token → class map.

The caption is every class's phrases joined with `` . `` (the authors' prompt is
the class names joined this way). Each GroundingDINO box takes the class of its
highest-scoring caption token (the authors' rule), and is kept when that score
exceeds the class's box threshold (0.2 by default, as the authors used).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...data.base import VOID, ClassInfo
from ...errors import A2LCError
from ...textio import check_name

MAX_TEXT_LEN = 256  # GroundingDINO's text length


@dataclass(frozen=True)
class PromptSet:
    """The prompts of a run.

    phrases: (P,) the phrases in caption order; phrase_class: (P,) int their class index.
    thresholds: (C,) float32 box threshold per class (NaN for classes without a phrase).
    caption: the phrases joined with " . ", lower-case, ending with " .".
    """

    phrases: tuple[str, ...]
    phrase_class: tuple[int, ...]
    thresholds: np.ndarray
    caption: str

    def spans(self) -> list[tuple[int, int]]:
        """Character span [start, end) of each phrase in :attr:`caption`."""
        out, pos = [], 0
        for p in self.phrases:
            out.append((pos, pos + len(p)))
            pos += len(p) + 3  # " . "
        return out


def build_prompts(
    classes: ClassInfo, *, prompts: dict[str, list[str]], thresholds: dict[str, float], box_threshold: float
) -> PromptSet:
    """Resolve the config's per-class prompts and thresholds against the dataset's classes.

    prompts: class name → phrases (synonyms); classes not named use their own name;
    an empty list leaves a class unprompted. thresholds: class name → box threshold.
    Unknown class names, phrases containing "." and phrases shared by two classes
    are errors.
    """
    by_class: dict[int, list[str]] = {c: [classes.names[c]] for c in range(classes.num_classes)}
    for name, phrases in prompts.items():
        c = _class_index(classes, name, "grounded_sam.prompts")
        if isinstance(phrases, str):
            phrases = [phrases]
        by_class[c] = list(phrases)
    thr = np.full(classes.num_classes, np.float32(box_threshold), np.float32)
    for name, t in thresholds.items():
        c = _class_index(classes, name, "grounded_sam.thresholds")
        if not 0.0 <= float(t) <= 1.0:
            raise A2LCError(f"grounded_sam.thresholds[{name!r}]: {t} is not in [0, 1]")
        thr[c] = float(t)
    phrases_out: list[str] = []
    classes_out: list[int] = []
    owner: dict[str, int] = {}
    for c in range(classes.num_classes):
        for raw in by_class[c]:
            p = " ".join(check_name(str(raw), where=f"grounded_sam.prompts[{classes.names[c]!r}]").lower().split())
            if not p:
                raise A2LCError(f"grounded_sam.prompts[{classes.names[c]!r}]: empty phrase")
            if "." in p:
                raise A2LCError(f"grounded_sam.prompts[{classes.names[c]!r}]: phrase {raw!r} contains '.', the phrase separator")
            if p in owner and owner[p] != c:
                raise A2LCError(
                    f"grounded_sam.prompts: phrase {p!r} is used for both {classes.names[owner[p]]!r} and {classes.names[c]!r}"
                )
            if p in owner:
                continue
            owner[p] = c
            phrases_out.append(p)
            classes_out.append(c)
    if not phrases_out:
        raise A2LCError("grounded_sam.prompts: no class has a phrase; nothing to detect")
    prompted = np.zeros(classes.num_classes, bool)
    prompted[classes_out] = True
    thr[~prompted] = np.nan
    return PromptSet(tuple(phrases_out), tuple(classes_out), thr, " . ".join(phrases_out) + " .")


def token_classes(prompts: PromptSet, tokenizer, *, max_text_len: int = MAX_TEXT_LEN) -> np.ndarray:
    """(L,) int64 class index of each caption token as GroundingDINO tokenizes it; -1 for special tokens and ".".

    L ≤ ``max_text_len``; a caption whose phrase tokens would be cut off is an error.
    """
    enc = tokenizer(prompts.caption, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    out = np.full(len(offsets), -1, np.int64)
    spans = prompts.spans()
    starts = np.array([s for s, _ in spans])
    for t, (s, e) in enumerate(offsets):
        if e <= s:
            continue  # special token
        p = int(np.searchsorted(starts, s, side="right")) - 1
        if p >= 0 and e <= spans[p][1]:
            out[t] = prompts.phrase_class[p]
    if len(out) > max_text_len and (out[max_text_len:] >= 0).any():
        raise A2LCError(
            f"grounded_sam.prompts: the caption is {len(out)} tokens, GroundingDINO reads at most {max_text_len}; "
            "use fewer or shorter phrases"
        )
    covered = set(out[out >= 0].tolist())
    for p, c in zip(prompts.phrases, prompts.phrase_class):
        if c not in covered:  # pragma: no cover - a phrase always has a token
            raise A2LCError(f"grounded_sam.prompts: phrase {p!r} produced no token")
    return out[:max_text_len]


def _class_index(classes: ClassInfo, name: str, where: str) -> int:
    try:
        c = classes.index(name)
    except A2LCError:
        raise A2LCError(f"{where}: unknown class {name!r} (classes: {', '.join(classes.names)})") from None
    if c == VOID:
        raise A2LCError(f"{where}: 'void' is not a class that can be prompted")
    return c
