"""Marginal decoding: the entities the beam believes more likely than not.

``doc.ents`` from spaCy's beam is the best parse. Marginal decoding instead
keeps every entity whose marginal probability (the summed probability of the
beam's parses that contain it) exceeds 0.5.

These never overlap. A parse is a segmentation: two overlapping (distinct)
entities are never in the same parse, so the sets of parses holding each are
disjoint and their marginals sum to at most 1 -- they cannot both exceed 0.5.
The same holds for two labels of one span. (Marginals are float sums; a pair
within rounding error of 0.5 each is still resolved, in favour of the higher.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

__all__ = ["marginal_entities", "most_probable_entities"]

Label = TypeVar("Label", int, str)


def marginal_entities(
    marginals: Mapping[tuple[int, int, Label], float], threshold: float = 0.5
) -> list[tuple[int, int, Label]]:
    """Entities with marginal ``> threshold`` (``threshold >= 0.5``), by start.
    Label-less entries (label ``0`` or ``""``: blocked spans) are skipped."""
    if not 0.5 <= threshold < 1.0:
        raise ValueError(f"the marginal threshold must be in [0.5, 1), got {threshold}")
    chosen = sorted(
        (
            (prob, key)
            for key, prob in marginals.items()
            if prob > threshold and key[2] not in (0, "")
        ),
        key=lambda item: (-item[0], item[1][0], item[1][1]),
    )
    taken: list[tuple[int, int, Label]] = []
    for _, (start, end, label) in chosen:
        if all(end <= s or start >= e for s, e, _ in taken):
            taken.append((start, end, label))
    return sorted(taken, key=lambda ent: (ent[0], ent[1]))


def most_probable_entities(
    probabilities: dict[tuple[int, int, str], float], threshold: float
) -> list[tuple[int, int, str]]:
    """Entities with probability >= ``threshold`` (``decode="precision"``); where
    two overlap (possible below 0.5, or with per-label maps) the more probable
    is kept (ties: the earlier, then the label's name)."""
    ranked = sorted(
        ((p, key) for key, p in probabilities.items() if key[2] and p >= threshold),
        key=lambda item: (-item[0], item[1]),
    )
    taken: set[int] = set()
    kept = []
    for _, (start, end, label) in ranked:
        if taken.isdisjoint(range(start, end)):
            taken.update(range(start, end))
            kept.append((start, end, label))
    return sorted(kept)
