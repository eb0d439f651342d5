"""``beamner teach-update``: train a pipeline's NER from a file of binary answers.

:func:`teach_update` reads every answer first (a bad line stops the run
before anything is trained, with ``path:line``), merges them per text
(:func:`beamner.teach.answers.merge_answers`), splits the *texts* into a
training part and a held-out part by their input hash (deterministic,
independent of the order of the file), and runs ``n_epochs`` epochs of native
global updates over the training texts (shuffled per epoch with ``seed``).
It reports how often the model's accept/reject prediction (accept iff the
span's beam probability >= 0.5) matches the held-out answers, before
training and after every epoch. Spans on entities preset before the NER and
spans no parse can follow are not trained on (counted in the report's
``merge``: ``n_preset``, ``n_unreachable``; see :mod:`beamner.teach.answers`).
The default ``learn_rate`` is :data:`~beamner.teach.session.DEFAULT_LEARN_RATE`
(5e-5, not the pipeline's usual 1e-3; :mod:`beamner.engine.settings` says
why); ``None`` keeps the pipeline optimizer's.

The pipeline is saved serving the beam it was taught and measured with
(``beam_width``, ``beam_density``, ``normalize``, default ``"local"``, the
commands' normalization): they are written into the ``beamner_ner``
component's cfg and the pipeline's config, so ``spacy.load(output)`` restores
them.

``seed`` fixes everything random: the order of each epoch, and the dropout of
every update batch (``spacy.util.fix_random_seed`` before each batch, with a
seed derived from ``seed``, the epoch and the batch's number). Two runs with
the same inputs and seed write the same bytes (``teach_progress.json`` holds
no timings; the times are in the log only).

Output (beamner's output policy, :mod:`beamner.io.atomic`; checked by
:func:`beamner.io.atomic.check_output` before anything is read
into memory or written): ``output`` must not be the answers or the model, nor
hold them; an existing folder must be one beamner wrote (or empty), else it
is refused unless ``overwrite``; ``OUT.partial`` and ``OUT.old`` that beamner
did not write are refused and left as they are. Every input is read and
checked, and the examples built, before the first checkpoint.

Checkpoints and resuming: every ``checkpoint_every`` update batches and at
the end of every epoch, the pipeline and ``teach_progress.json`` (the input
hashes trained in the current epoch, the epochs done, the reports, the
settings) are built in ``OUT.partial`` and swapped in for ``OUT``
(:func:`~beamner.io.atomic.swap_directory`: a crash between the renames is
repaired on the next start from ``OUT.old``). Model and progress are always
saved together, so a run interrupted at any point resumes from ``OUT`` (a
folder beamner wrote, holding ``teach_progress.json``; ``overwrite`` starts
afresh instead) and trains each text exactly once per epoch: the updates
after the last checkpoint were lost with the process and are redone, with
the same dropout, the ones before it are never repeated. The optimizer's
moment estimates are not saved: a resumed run restarts them.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import spacy
from spacy.language import Language

from beamner.engine.pipes import find_ner, load_model, mark_derived
from beamner.engine.settings import CLI_NORMALIZE, BeamSettings
from beamner.io.atomic import check_output, is_marked, on_disk, swap_directory
from beamner.io.records import plural
from beamner.pipeline import BeamnerEntityRecognizer
from beamner.probabilities.beams import beam_docs
from beamner.teach.answers import (
    TextAnswers,
    doc_span,
    examples_by_text,
    merge_answers,
    predicted_docs,
    read_answers,
)
from beamner.teach.session import (
    DEFAULT_LEARN_RATE,
    DEFAULT_NEG_KEY,
    prepare_pipeline,
    step_seed,
    teach_settings,
    train_answers,
)
from beamner.teach.tasks import preset_tokens

__all__ = ["PROGRESS_FILE", "answer_agreement", "split_holdout", "teach_update"]

PROGRESS_FILE = "teach_progress.json"


def split_holdout(
    merged: Sequence[TextAnswers], holdout: float
) -> tuple[list[TextAnswers], list[TextAnswers]]:
    """(train, held-out) by input hash: a text is held out iff ``hash % 10000 <
    holdout * 10000``; the same text always lands on the same side."""
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    cut = round(holdout * 10000)
    train = [m for m in merged if m.input_hash % 10000 >= cut]
    held = [m for m in merged if m.input_hash % 10000 < cut]
    return train, held


def answer_agreement(
    nlp: Language,
    merged: Sequence[TextAnswers],
    settings: BeamSettings | None = None,
    *,
    docs: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """How often ``p >= 0.5`` (beam probability of the span and label under
    ``settings``, default the component's) agrees with the answers:
    ``accuracy`` over all decided spans, per answer kind, and the mean
    probability the model gives accepted and rejected spans. Spans touching
    entities preset before the NER are left out (not the NER's decision)."""
    pipe = find_ner(nlp)
    if settings is None:
        settings = BeamSettings.from_pipe(pipe)
    if docs is None:
        docs = predicted_docs(nlp, merged)
    nonempty = [i for i, d in enumerate(docs) if len(d)]
    beams = beam_docs(pipe, [docs[i] for i in nonempty], settings)
    entities: dict[int, dict[tuple[int, int, str], float]] = {
        i: b.entities for i, b in zip(nonempty, beams)
    }
    probs: dict[str, list[float]] = {"accept": [], "reject": []}
    for i, (m, doc) in enumerate(zip(merged, docs)):
        ents = entities.get(i, {})
        preset = preset_tokens(doc)
        for kind, spans in (("accept", m.accepted), ("reject", m.rejected)):
            for s in spans:
                span = doc_span(doc, s, m.where)
                if any(t in preset for t in range(span.start, span.end)):
                    continue  # a preset entity's p is 1 or 0 by construction
                probs[kind].append(ents.get((span.start, span.end, span.label_), 0.0))
    right_accept = sum(p >= 0.5 for p in probs["accept"])
    right_reject = sum(p < 0.5 for p in probs["reject"])
    n = len(probs["accept"]) + len(probs["reject"])

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    return {
        "n": n,
        "accuracy": (right_accept + right_reject) / n if n else None,
        "n_accept": len(probs["accept"]),
        "n_reject": len(probs["reject"]),
        "accept_accuracy": right_accept / len(probs["accept"]) if probs["accept"] else None,
        "reject_accuracy": right_reject / len(probs["reject"]) if probs["reject"] else None,
        "mean_p_accept": mean(probs["accept"]),
        "mean_p_reject": mean(probs["reject"]),
    }


#: beamner's default width and density (engine/settings.py says why).
_BEAM = BeamSettings()
#: What the marker of a teach-update folder says (no time: runs must write the same bytes).
_MARKER_INFO = {"written_by": "beamner teach-update"}


def _checkpoint(nlp: Language, output: Path, progress: dict[str, Any]) -> None:
    def build(folder: Path) -> None:
        mark_derived(nlp, "teach-update")
        nlp.to_disk(folder)
        (folder / PROGRESS_FILE).write_text(json.dumps(progress, indent=1) + "\n")

    swap_directory(output, build, info=_MARKER_INFO)


def _checkpoint_to_resume(output: Path) -> Path | None:
    """The folder holding ``output``'s checkpoint: ``output`` itself or, after a
    crash between the renames of a swap, ``output.old``; None if there is none
    (only folders beamner wrote count)."""
    old = output.with_name(output.name + ".old")
    for folder in (output, old):
        if folder.is_dir() and is_marked(folder) and (folder / PROGRESS_FILE).is_file():
            return folder
        if folder.exists():
            return None  # output itself is there: .old is a leftover, not the checkpoint
    return None


def teach_update(
    model: str | os.PathLike[str] | Language,
    answers: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    n_epochs: int = 5,
    holdout: float = 0.2,
    update_batch: int = 16,
    beam_width: int = _BEAM.width,
    beam_density: float = _BEAM.density,
    normalize: str | None = CLI_NORMALIZE,
    update_width: int | None = None,
    learn_rate: float | None = DEFAULT_LEARN_RATE,
    drop: float = 0.1,
    seed: int = 0,
    checkpoint_every: int = 20,
    incorrect_spans_key: str = DEFAULT_NEG_KEY,
    overwrite: bool = False,
    on_batch: Callable[[int, list[int]], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``model``'s NER from the binary answers in ``answers`` and save it to
    ``output`` (see the module docstring). If ``output`` holds an interrupted
    run's checkpoint, continue it (same ``holdout``, ``seed`` and beam
    required), unless ``overwrite``: then start afresh. ``normalize=None``
    keeps the component's own. ``on_batch(epoch, input_hashes)`` is called
    after each update batch (and its checkpoint, if one was due). Returns the
    report (also in ``output/teach_progress.json``)."""
    if n_epochs < 1 or update_batch < 1 or checkpoint_every < 1:
        raise ValueError("n_epochs, update_batch and checkpoint_every must be >= 1")
    say = log or (lambda msg: None)
    # Nothing is written, moved or removed before every input has been checked.
    out = check_output(output, on_disk(answers, model), overwrite=overwrite, folder=True)
    assert out is not None  # a folder name, never stdout
    all_answers = list(read_answers(answers))  # every line validated before training
    if not all_answers:
        raise ValueError(f"{answers}: no answers")
    resume_from = None if overwrite else _checkpoint_to_resume(out)
    progress: dict[str, Any] | None = None
    if resume_from is not None:
        progress = json.loads((resume_from / PROGRESS_FILE).read_text())
        nlp = spacy.load(resume_from)
    else:
        nlp = load_model(model)
    settings = teach_settings(
        nlp, beam_width=beam_width, beam_density=beam_density, normalize=normalize
    )
    beam = {"width": settings.width, "density": settings.density, "normalize": settings.normalize}
    if progress is not None:
        started = (progress["holdout"], progress["seed"], progress.get("beam"))
        if started != (holdout, seed, beam):
            raise ValueError(
                f"{out} was started with --holdout {progress['holdout']} --seed "
                f"{progress['seed']} and the beam {progress.get('beam')}: resume with the same "
                "values, or pass --overwrite to start afresh"
            )
        say(f"resuming {out}: {plural(progress['completed_epochs'], 'epoch')} done")
    elif out.exists() and any(out.iterdir()):
        why = "--overwrite" if overwrite else "a folder beamner wrote, not a checkpoint"
        say(f"{out} will be replaced ({why})")
    pipe = prepare_pipeline(nlp, settings, incorrect_spans_key=incorrect_spans_key)
    merged, report = merge_answers(all_answers, pipe.labels)
    train, held = split_holdout(merged, holdout)
    if not train:
        raise ValueError(f"{answers}: no answers left to train on (holdout {holdout})")
    held_docs = predicted_docs(nlp, held)
    # Spans on preset entities, or that no parse can follow, are dropped here (counted).
    train_examples = examples_by_text(nlp, train, incorrect_spans_key, report=report)
    by_hash = {m.input_hash: eg for m, eg in train_examples}
    if not by_hash:
        raise ValueError(
            f"{answers}: no answers left to train on ({report.n_preset} on preset entities, "
            f"{report.n_unreachable} no parse can follow)"
        )

    def agreement() -> dict[str, Any]:
        return answer_agreement(nlp, held, settings, docs=held_docs)

    if progress is None:
        progress = {
            "model": str(model) if not isinstance(model, Language) else nlp.meta.get("name"),
            "answers": str(answers),
            "holdout": holdout,
            "seed": seed,
            "beam": beam,
            "n_epochs": n_epochs,
            "completed_epochs": 0,
            "trained": [],
            "before": agreement(),
            "epochs": [],
        }
        say(f"held-out agreement before: {_fmt(progress['before'])}")
    progress.update(
        n_epochs=n_epochs,
        merge=report.as_dict(),
        n_train_texts=len(by_hash),
        n_heldout_texts=len(held),
    )
    optimizer = nlp.create_optimizer()  # type: ignore[no-untyped-call]
    if learn_rate is not None:
        optimizer.learn_rate = learn_rate
    width = update_width or settings.width
    for epoch in range(progress["completed_epochs"], n_epochs):
        t0 = time.perf_counter()
        order = sorted(by_hash)
        random.Random(step_seed(seed, epoch)).shuffle(order)
        done = set(progress["trained"])
        todo = [h for h in order if h not in done]
        # Batches keep their number within the epoch across a resume (checkpoints
        # fall between whole batches), and with it their dropout seed.
        first = len(done) // update_batch
        loss = 0.0
        for b, i in enumerate(range(0, len(todo), update_batch), start=1):
            hashes = todo[i : i + update_batch]
            batch_loss, _ = train_answers(
                nlp,
                _ner(nlp),
                [by_hash[h] for h in hashes],
                optimizer,
                update_width=width,
                update_batch=update_batch,
                drop=drop,
                seeds=[step_seed(seed, epoch, first + b - 1)],
            )
            loss += batch_loss
            progress["trained"].extend(hashes)
            if b % checkpoint_every == 0:
                _checkpoint(nlp, out, progress)
            if on_batch is not None:
                on_batch(epoch, hashes)
        result = agreement()
        progress["epochs"].append(
            {
                "epoch": epoch + 1,
                "loss": loss,
                "n_texts": len(todo),
                "resumed": len(todo) < len(order),
                "heldout": result,
            }
        )
        progress["completed_epochs"] = epoch + 1
        progress["trained"] = []
        _checkpoint(nlp, out, progress)
        say(
            f"epoch {epoch + 1}/{n_epochs}: loss {loss:.4f}, held-out agreement {_fmt(result)} "
            f"({time.perf_counter() - t0:.1f} s)"
        )
    progress["after"] = progress["epochs"][-1]["heldout"] if progress["epochs"] else None
    return progress


def _ner(nlp: Language) -> BeamnerEntityRecognizer:
    pipe = find_ner(nlp)
    assert isinstance(pipe, BeamnerEntityRecognizer)
    return pipe


def _fmt(result: dict[str, Any]) -> str:
    if result["accuracy"] is None:
        return "no held-out answers"
    return f"{result['accuracy']:.3f} ({plural(result['n'], 'span')})"
