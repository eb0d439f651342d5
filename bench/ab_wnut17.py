"""``beamner ab-tasks`` / ``ab-score`` on two real models with a simulated blind
annotator: greedy ``ner`` (A) vs ``beamner_ner`` (B) from bench/compare_wnut17.py
(run that first), on the WNUT-17 test sentences as unlabelled text.

The annotator sees only the task file (options in shuffled order, no key) and
prefers the option with fewer errors against the gold entities (spans in one
option and not in gold, or in gold and not in the option); equal errors: no
preference (``ignore``). Only ``ab-score`` reads the key.

    nice -n 10 python bench/ab_wnut17.py

Writes bench/results/ab_wnut17.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from beamner.evaluation.ab import ab_score, ab_tasks
from beamner.io.conll import read_conll

ROOT = Path(__file__).resolve().parents[1]
TEST = ROOT.parent / "shared" / "data" / "wnut17" / "emerging.test.annotated"


def sentence_with_gold(sent: list[tuple[str, str]]) -> tuple[str, set[tuple[int, int, str]]]:
    """The sentence's text (tokens joined by spaces) and its gold entities as
    character offsets into that text."""
    text, gold, offset = "", set(), 0
    current: list[Any] | None = None  # [start, end, label]
    for i, (token, tag) in enumerate(sent):
        start = offset + (1 if i else 0)
        text += (" " if i else "") + token
        offset = start + len(token)
        if tag.startswith("I-") and current is not None and current[2] == tag[2:]:
            current[1] = offset
            continue
        if current is not None:
            gold.add((current[0], current[1], current[2]))
        current = [start, offset, tag[2:]] if tag[:2] in ("B-", "I-") else None
    if current is not None:
        gold.add((current[0], current[1], current[2]))
    return text, gold


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path, default=ROOT / "training" / "compare-ab")
    parser.add_argument("--work", type=Path, default=ROOT / "training" / "ab-wnut17")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench" / "results" / "ab_wnut17.json"
    )
    args = parser.parse_args()
    model_a = args.models / "ner-0-2000" / "model-last"
    model_b = args.models / "beamner_ner-0-2000" / "model-last"
    args.work.mkdir(parents=True, exist_ok=True)
    source = args.work / "test.jsonl"
    gold: dict[str, set[tuple[int, int, str]]] = {}
    with open(source, "w", encoding="utf-8") as f:
        for sent in read_conll(TEST):
            text, ents = sentence_with_gold(sent)
            gold[text] = ents
            f.write(json.dumps({"text": text}) + "\n")
    tasks_path = args.work / "tasks.jsonl"
    summary = ab_tasks(model_a, model_b, source, tasks_path, seed=0)
    answers_path = args.work / "answers.jsonl"
    with open(tasks_path, encoding="utf-8") as tasks, open(answers_path, "w") as answers:
        for line in tasks:
            task = json.loads(line)
            truth = gold[task["text"]]
            errors = {
                option["id"]: len(
                    {(s["start"], s["end"], s["label"]) for s in option["spans"]} ^ truth
                )
                for option in task["options"]
            }
            best = min(errors.values())
            chosen = [i for i, e in errors.items() if e == best]
            if len(chosen) == 1:
                task.update(answer="accept", accept=chosen)
            else:
                task.update(answer="ignore", accept=[])
            answers.write(json.dumps(task) + "\n")
    result = ab_score(tasks_path, answers_path)
    result["n_docs"] = summary.n_docs
    result["n_agree"] = summary.n_agree
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    wins = result["wins"]
    print(
        f"{summary.n_docs} test sentences, the models disagree on {summary.written}; "
        f"gold-guided blind preferences: A (greedy) {wins['A']}, B (beamner_ner) {wins['B']}, "
        f"no preference {result['no_preference']}; share for B {result['preference_b']:.3f} "
        f"[{result['preference_b_low']:.3f}, {result['preference_b_high']:.3f}], "
        f"p = {result['p_value']:.3g}"
    )


if __name__ == "__main__":
    main()
