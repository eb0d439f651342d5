"""Blind A/B comparison of two NER pipelines where no gold data exists.

``ab_tasks`` runs both models over unlabelled text and writes one task per
document on which they disagree (after label maps): the text, its tokens and
two ``options``, each one model's entities as Prodigy-style ``spans``, in an
order shuffled per task (seeded by ``seed`` and the task, so reruns agree). The
task file says nothing about which option is which model: that mapping goes to
a separate key file (``<tasks>.key.jsonl`` by default), one line per task,
``{"_task_hash", "sides": {"1": "A", "2": "B"}, "models": {...}}``.

Answers (``ab_score``) are JSONL lines of the task with ``"answer"`` and the
chosen option id in ``"accept"``, as Prodigy's choice interface writes them:
``{"_task_hash": ..., "answer": "accept", "accept": [2]}``. ``"accept"`` with
no option chosen, ``"reject"`` and ``"ignore"`` count as *no preference*. A
task answered more than once counts once (its last answer). The score is the
share of preferences that went to B, with a Wilson interval and an exact
two-sided binomial test against 0.5 (:func:`scipy.stats.binomtest`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc

from beamner.engine.pipes import load_model
from beamner.io.atomic import check_output, same_file
from beamner.io.gold import parse_label_map
from beamner.io.records import Record, batched, jsonl_output, read_json_objects, read_records

__all__ = [
    "AbSummary",
    "ab_score",
    "ab_tasks",
    "default_key_path",
    "stable_hash",
]

ANSWERS = ("accept", "reject", "ignore")


def stable_hash(obj: Any) -> int:
    """A signed 32-bit hash of ``obj``'s canonical JSON (the range of
    Prodigy's ``_input_hash``/``_task_hash``); the same in every process."""
    data = json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=4).digest(), "big", signed=True)


def default_key_path(tasks: str | os.PathLike[str]) -> Path:
    """``tasks.jsonl`` -> ``tasks.key.jsonl``."""
    path = Path(tasks)
    return path.with_name(f"{path.stem}.key.jsonl")


@dataclass
class AbSummary:
    """What ``ab_tasks`` did."""

    n_docs: int = 0
    written: int = 0
    key_path: str = ""
    invalid_lines: list[int] = field(default_factory=list)

    @property
    def n_agree(self) -> int:
        return self.n_docs - self.written


CharEntity = tuple[int, int, str]


def _spans(doc: Doc, ents: set[CharEntity]) -> list[dict[str, Any]]:
    """Prodigy-style spans; token indices are those of ``doc`` (the task's tokens)."""
    out = []
    for start, end, label in sorted(ents):
        span: dict[str, Any] = {"start": start, "end": end, "label": label}
        tokens = doc.char_span(start, end, alignment_mode="expand")
        if tokens is not None:
            span.update(token_start=tokens.start, token_end=tokens.end - 1)
        out.append(span)
    return out


def _tokens(doc: Doc) -> list[dict[str, Any]]:
    return [
        {
            "text": t.text,
            "start": t.idx,
            "end": t.idx + len(t.text),
            "id": t.i,
            "ws": bool(t.whitespace_),
        }
        for t in doc
    ]


def _mapped_ents(doc: Doc, label_map: dict[str, str] | None) -> set[CharEntity]:
    """Entities by character offsets (the two models may tokenize differently)."""
    ents = {(e.start_char, e.end_char, e.label_) for e in doc.ents}
    if label_map is None:
        return ents
    return {(s, e, label_map[lab]) for s, e, lab in ents if lab in label_map}


def _a_first(seed: int, task_hash: int) -> bool:
    """Whether model A is option 1 of this task: a seeded coin per task."""
    digest = hashlib.blake2b(f"{seed}:{task_hash}".encode(), digest_size=1).digest()
    return digest[0] % 2 == 0


def _pairs(
    nlp_a: Language,
    nlp_b: Language,
    records: Iterator[Record],
    batch_size: int,
) -> Iterator[tuple[Record, Doc, Doc]]:
    """Each record's doc after A and after B, each tokenized by its own model."""
    for chunk in batched(records, batch_size):
        docs_a = nlp_a.pipe((r.make_doc(nlp_a) for r in chunk), batch_size=batch_size)
        docs_b = nlp_b.pipe((r.make_doc(nlp_b) for r in chunk), batch_size=batch_size)
        yield from zip(chunk, docs_a, docs_b)


def ab_tasks(
    model_a: str | os.PathLike[str] | Language,
    model_b: str | os.PathLike[str] | Language,
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    key_output: str | os.PathLike[str] | None = None,
    label_map_a: str | dict[str, str] | None = None,
    label_map_b: str | dict[str, str] | None = None,
    fmt: str = "auto",
    seed: int = 0,
    batch_size: int = 64,
    skip_invalid: bool = False,
    gpu_id: int = -1,
    overwrite: bool = False,
) -> AbSummary:
    """Write A/B tasks for the documents of ``source`` on which the two models
    disagree to ``output`` and the side mapping to ``key_output`` (default
    :func:`default_key_path`). Input keys other than the task's own are kept;
    ``meta`` gets the input line.

    Both files follow :mod:`beamner.io.atomic`: neither may be the source (nor
    the key the tasks), an existing one is refused unless ``overwrite``, and
    both are written beside and renamed at the end, so a failed run changes
    no file."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if str(output) == "-":
        raise ValueError("ab-tasks needs an output file (the key file is written next to it)")
    key_path = Path(key_output) if key_output is not None else default_key_path(output)
    if same_file(key_path, output):
        raise ValueError("the key file must not be the task file")
    tasks_path = check_output(output, [source], overwrite=overwrite)
    key_path = check_output(key_path, [source], overwrite=overwrite) or key_path
    map_a, map_b = parse_label_map(label_map_a), parse_label_map(label_map_b)
    summary = AbSummary(key_path=str(key_path))
    records = read_records(source, fmt, skip_invalid=skip_invalid, invalid=summary.invalid_lines)
    nlp_a = load_model(model_a, gpu_id)
    nlp_b = load_model(model_b, gpu_id)
    models = {
        "A": str(model_a) if not isinstance(model_a, Language) else str(nlp_a.meta.get("name")),
        "B": str(model_b) if not isinstance(model_b, Language) else str(nlp_b.meta.get("name")),
    }
    with jsonl_output(tasks_path) as tasks, jsonl_output(key_path) as keys:
        for record, doc_a, doc_b in _pairs(nlp_a, nlp_b, records, batch_size):
            summary.n_docs += 1
            ents_a, ents_b = _mapped_ents(doc_a, map_a), _mapped_ents(doc_b, map_b)
            if ents_a == ents_b:
                continue
            spans = {"A": _spans(doc_a, ents_a), "B": _spans(doc_a, ents_b)}
            input_hash = stable_hash({"text": record.text})
            # The same pair of outputs hashes the same whichever side it is shown on.
            task_hash = stable_hash(
                {"input": input_hash, "options": sorted(json.dumps(s) for s in spans.values())}
            )
            order = ("A", "B") if _a_first(seed, task_hash) else ("B", "A")
            extra_meta = record.extra.get("meta")
            meta = dict(extra_meta) if isinstance(extra_meta, dict) else {}
            meta["line"] = record.line
            task = {k: v for k, v in record.extra.items() if not k.startswith("_")}
            task.update(
                {
                    "text": record.text,
                    "tokens": _tokens(doc_a),
                    "options": [
                        {"id": i, "text": record.text, "spans": spans[side]}
                        for i, side in enumerate(order, start=1)
                    ],
                    "meta": meta,
                    "_input_hash": input_hash,
                    "_task_hash": task_hash,
                }
            )
            tasks.write(task)
            keys.write(
                {
                    "_task_hash": task_hash,
                    "sides": {str(i): side for i, side in enumerate(order, start=1)},
                    "models": models,
                }
            )
            summary.written += 1
    return summary


def _task_hash(path: str | os.PathLike[str], lineno: int, obj: dict[str, Any]) -> int:
    value = obj.get("_task_hash")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f'{path}:{lineno}: no integer "_task_hash"')
    return value


def _preference(
    path: str | os.PathLike[str], lineno: int, obj: dict[str, Any], sides: dict[str, str]
) -> str | None:
    """ "A", "B" or None (no preference) from one answer line."""
    answer = obj.get("answer")
    if answer not in ANSWERS:
        raise ValueError(f'{path}:{lineno}: "answer" must be one of {ANSWERS}, got {answer!r}')
    if answer != "accept":
        return None
    chosen = obj.get("accept", [])
    if not isinstance(chosen, list):
        raise ValueError(f'{path}:{lineno}: "accept" must be a list of option ids')
    if not chosen:
        return None
    if len(chosen) > 1:
        raise ValueError(f"{path}:{lineno}: {len(chosen)} options accepted; choose one")
    side = sides.get(str(chosen[0]))
    if side is None:
        raise ValueError(f"{path}:{lineno}: accepted option {chosen[0]!r} is not one of the task's")
    return side


def ab_score(
    tasks: str | os.PathLike[str],
    answers: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str] | None = None,
    confidence_level: float = 0.95,
) -> dict[str, Any]:
    """Tally the answers to the tasks of ``tasks`` (key file ``key``, default
    :func:`default_key_path`): preferences for A and B, no-preference answers,
    the share for B with a Wilson interval and an exact binomial p-value."""
    from beamner.evaluation.compare import scipy_stats

    binomtest = scipy_stats().binomtest
    if not 0.0 < confidence_level < 1.0:
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level}")
    key_path = Path(key) if key is not None else default_key_path(tasks)
    if not key_path.exists():
        raise ValueError(f"no key file {key_path} (written by ab-tasks next to the tasks)")
    sides: dict[int, dict[str, str]] = {}
    models: dict[str, str] = {}
    for lineno, obj in read_json_objects(key_path):
        task_sides = obj.get("sides")
        if not isinstance(task_sides, dict) or sorted(map(str, task_sides.values())) != ["A", "B"]:
            raise ValueError(f'{key_path}:{lineno}: "sides" must map the two option ids to A and B')
        sides[_task_hash(key_path, lineno, obj)] = {str(k): str(v) for k, v in task_sides.items()}
        models = obj.get("models", models)
    task_hashes = [_task_hash(tasks, n, obj) for n, obj in read_json_objects(tasks)]
    missing = [h for h in task_hashes if h not in sides]
    if missing:
        raise ValueError(f"{key_path} has no sides for {len(missing)} tasks of {tasks}")
    latest: dict[int, str | None] = {}
    n_lines = 0
    for lineno, obj in read_json_objects(answers):
        n_lines += 1
        h = _task_hash(answers, lineno, obj)
        if h not in sides:
            raise ValueError(f"{answers}:{lineno}: task {h} is not one of the tasks in {tasks}")
        latest[h] = _preference(answers, lineno, obj, sides[h])
    wins = {"A": 0, "B": 0}
    for pref in latest.values():
        if pref is not None:
            wins[pref] += 1
    n = wins["A"] + wins["B"]
    result: dict[str, Any] = {
        "models": models,
        "n_tasks": len(task_hashes),
        "n_answer_lines": n_lines,
        "n_answered_tasks": len(latest),
        "n_repeated_answers": n_lines - len(latest),
        "n_unanswered": len(set(task_hashes) - set(latest)),
        "wins": wins,
        "no_preference": len(latest) - n,
        "confidence_level": confidence_level,
    }
    if n:
        test = binomtest(wins["B"], n, 0.5)
        ci = test.proportion_ci(confidence_level, method="wilson")
        result.update(
            preference_b=wins["B"] / n,
            preference_b_low=float(ci.low),
            preference_b_high=float(ci.high),
            p_value=float(test.pvalue),
        )
    else:
        result.update(preference_b=None, preference_b_low=None, preference_b_high=None)
        result["p_value"] = None
    return result
