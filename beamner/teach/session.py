"""The yes/no loop: serve tasks, collect answers, update the model with beam updates.

Contract of :class:`TeachSession` (what a server builds on)
-----------------------------------------------------------

Task options (``order``, ``buffer``, ``batch_size``, ``threshold``,
``fmt``: :class:`~beamner.teach.tasks.StreamArgs`, passed on as given; and
``seed``): :class:`beamner.teach.tasks.TaskStream`.
``beam_width``, ``beam_density``, ``normalize``: the beam the tasks are
scored with (:attr:`TeachSession.settings`, a
:class:`~beamner.engine.settings.BeamSettings`; the component's other
settings, e.g. its temperature, are kept). They are written into the
component's cfg and the pipeline's config, so the pipeline :meth:`save`
writes serves what it was taught and scored with. ``normalize`` defaults to
:data:`~beamner.engine.settings.CLI_NORMALIZE` (``"local"``, the commands'
normalization); ``None`` keeps the component's own.
``seed``: fixes everything random: the task order (``order="random"``) and
the dropout of every update (``spacy.util.fix_random_seed`` with a seed
derived from ``seed`` and the update batch's number, before each batch), so
the same answers given in the same updates give the same weights.
``update_width``: beam width of the updates (default ``beam_width``);
``update_batch``: texts per native update; ``learn_rate``: the step of the
optimizer (the pipeline's ``[training.optimizer]``, a fresh one per
session), by default ``DEFAULT_LEARN_RATE`` = 5e-5, not the usual 1e-3 (the
reason beside its definition, :mod:`beamner.engine.settings`);
``None`` keeps the pipeline's optimizer's own rate;
``drop``: dropout during updates.

* ``nlp`` is changed in place: its NER becomes beamner's ``beamner_ner``
  component (:func:`beamner.accelerate`, weights shared), with
  ``incorrect_spans_key`` set on it. The NER must have its own tok2vec (a
  listener of a shared ``tok2vec`` would need that component trained too:
  ``ValueError``). ``labels`` must be labels of the NER.
* :meth:`next_task` -> a task ``dict`` (format: :mod:`beamner.teach.tasks`)
  or ``None`` when the source is exhausted. Each task is served once, even to
  concurrent callers, unless given back by :meth:`retract`. Scores come from
  the model as of the latest finished :meth:`update`. A bad line of a source
  file raises :class:`~beamner.io.records.InputError` (``path:line: ...``)
  from here.
* :meth:`answer` ``(task, "accept"|"reject"|"ignore")`` -> the answer ``dict``
  (the task plus ``"answer"``; what to append to a dataset file). It is kept
  as *pending* until an :meth:`update` takes it.
* :meth:`retract` ``(task_hash)`` -> the pending answer removed (undo), or
  ``None`` if it has already been taken by an update (or is unknown); the
  task is served again next.
* :meth:`update` ``(answers=None)`` -> :class:`UpdateResult`. With
  ``answers=None`` it takes every pending answer (they can no longer be
  retracted); with a list of answers (dicts or :class:`Answer`) it trains on
  those only (pending answers are untouched). Answers are merged per text
  (:func:`beamner.teach.answers.merge_answers`: the last answer about a span
  wins; overlapping accepted spans are dropped and counted in
  ``n_conflicts``), spans touching preset entities (set before the NER,
  e.g. by an ``entity_ruler``; never offered as tasks) and spans no parse
  can follow are dropped and counted in ``n_preset`` and ``n_unreachable``
  (:mod:`beamner.teach.answers`; the other answers are trained on), then one
  native global update (``BeamnerEntityRecognizer.update_beam``) per
  ``update_batch`` texts. A bad answer raises
  :class:`~beamner.io.records.InputError` before any training.
* :meth:`skip_hashes` ``(task_hashes)``: never serve these (resuming from a
  dataset file: pass the ``_task_hash`` of every answer in it).
* :meth:`stats` -> counts for a progress line; :meth:`save` ``(path,
  overwrite=False)`` writes the pipeline (consistent weights) to a folder by
  beamner's output policy (:mod:`beamner.io.atomic`: built beside it, swapped
  in, marked; a non-empty folder beamner did not write is refused unless
  ``overwrite``); :meth:`to_disk` ``(folder)`` writes it into a folder being
  built (a server's :func:`~beamner.io.atomic.swap_directory` step).

What an update learns
---------------------

An accept makes the span a gold entity with every other token *missing*; a
reject makes it a negative span (``incorrect_spans_key``). spaCy's global
update (max violation) then pushes up the beam's parses consistent with the
answers and pushes down the others, from the steps where the beam's best
states contradict the answers. So an answer the best parse already agrees
with (accepting an entity the model predicts, rejecting one it does not)
teaches little or nothing; answers about entities near p = 0.5 teach the
most, which is what uncertainty order serves first.

Locking model
-------------

Two locks. ``stream lock``: the task buffer, the source iterator, pending
answers and the counters; held by :meth:`next_task`, :meth:`answer`,
:meth:`retract`, :meth:`skip_hashes` and briefly by :meth:`update` (to take
the pending answers). ``model lock``: the NER's parameters; held while the
beam scores docs (inside :meth:`next_task`, nested in the stream lock), by
the optimizer step at the end of each update batch, and by :meth:`save`.
The long part of an update (forward and backward passes, which only read
parameters and write gradients) runs without either lock, so
:meth:`next_task` waits at most for one optimizer step, never for training.
Updates are serialized among themselves (a third lock; a second
:meth:`update` waits for the first). Lock order is always stream -> model.
After an update, the buffered tasks are re-scored before the next one is
served.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spacy.language import Language
from thinc.api import fix_random_seed, set_dropout_rate

from beamner.engine.pipes import find_ner, mark_derived
from beamner.engine.settings import CLI_NORMALIZE, DEFAULT_LEARN_RATE, BeamSettings
from beamner.io.atomic import check_output, swap_directory
from beamner.pipeline import BeamnerEntityRecognizer, accelerate
from beamner.teach.answers import (
    Answer,
    MergeReport,
    build_examples,
    merge_answers,
    parse_answer,
)
from beamner.teach.sampling import answered_precision
from beamner.teach.tasks import Source, StreamArgs, TaskStream

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "DEFAULT_LEARN_RATE",
    "TeachSession",
    "UpdateResult",
    "prepare_pipeline",
    "step_seed",
    "teach_settings",
    "train_answers",
]

DEFAULT_NEG_KEY = "incorrect_spans"


@dataclass
class UpdateResult(MergeReport):
    """What one :meth:`TeachSession.update` did: the merge report of its
    answers (:class:`~beamner.teach.answers.MergeReport`) and the training."""

    loss: float = 0.0
    n_batches: int = 0
    seconds: float = 0.0
    model_version: int = 0


#: The beam teach uses unless told otherwise: BeamSettings' width and density,
#: the commands' normalization (engine/settings.py says why).
_DEFAULTS = BeamSettings(normalize=CLI_NORMALIZE)


def teach_settings(
    nlp: Language,
    *,
    beam_width: int = _DEFAULTS.width,
    beam_density: float = _DEFAULTS.density,
    normalize: str | None = _DEFAULTS.normalize,
) -> BeamSettings:
    """The beam ``nlp``'s NER is taught, scored and measured with: its
    component's settings (temperature, calibration, spans) with this width,
    density and normalization (``normalize=None``: the component's own)."""
    return BeamSettings.from_pipe(
        find_ner(nlp), width=beam_width, density=beam_density, normalize=normalize
    )


def prepare_pipeline(
    nlp: Language,
    settings: BeamSettings | None = None,
    *,
    incorrect_spans_key: str = DEFAULT_NEG_KEY,
) -> BeamnerEntityRecognizer:
    """Make ``nlp``'s NER beamner's component (in place) serving ``settings``
    (width, density, normalization, in its cfg and the pipeline's config, so a
    saved pipeline serves what it was taught with; default
    :func:`teach_settings`) with ``incorrect_spans_key`` set, check it can be
    trained alone, and return it."""
    settings = settings if settings is not None else teach_settings(nlp)
    accelerate(
        nlp,
        beam_width=settings.width,
        beam_density=settings.density,
        normalize=settings.normalize,
    )
    pipe = find_ner(nlp)
    if not isinstance(pipe, BeamnerEntityRecognizer):  # pragma: no cover - accelerate did it
        raise TypeError("the NER is not beamner's component")
    if any(node.name.startswith("tok2vec-listener") for node in pipe.model.walk()):
        raise ValueError(
            "the NER listens to a shared tok2vec component; teach trains the NER alone, "
            "which needs an NER with its own tok2vec (en_core_web_sm's has one)"
        )
    pipe.cfg["incorrect_spans_key"] = incorrect_spans_key
    pipe.moves.cfg["neg_key"] = incorrect_spans_key
    name = next(n for n, p in nlp.components if p is pipe)
    config = dict(nlp._pipe_configs[name])
    config["incorrect_spans_key"] = incorrect_spans_key
    nlp._pipe_configs[name] = type(nlp._pipe_configs[name])(config)
    return pipe


def step_seed(seed: int, *step: int) -> int:
    """The seed of one update batch: a function of the run's ``seed`` and the
    batch's position (e.g. epoch and batch number), so every batch draws the
    same dropout masks in every run, resumed or not, whatever ran before it."""
    value = seed % 2**32
    for s in step:
        value = (value * 1_000_003 + s + 1) % 2**32
    return value


def train_answers(
    nlp: Language,
    pipe: BeamnerEntityRecognizer,
    examples: Sequence[Any],
    optimizer: Any,
    *,
    update_width: int,
    update_batch: int,
    drop: float,
    model_lock: threading.Lock | None = None,
    seeds: Sequence[int] | None = None,
) -> tuple[float, int]:
    """Native global updates on ``examples``, ``update_batch`` at a time; the
    optimizer step runs under ``model_lock``. ``seeds``: one per batch, given
    to ``spacy.util.fix_random_seed`` before it (the dropout masks are drawn
    from numpy's global generator). Returns (loss, batches)."""
    loss = 0.0
    n_batches = 0
    lock = model_lock or threading.Lock()
    starts = range(0, len(examples), update_batch)
    if seeds is not None and len(seeds) < len(starts):
        raise ValueError(f"{len(starts)} update batches need as many seeds, got {len(seeds)}")
    for b, i in enumerate(starts):
        batch = examples[i : i + update_batch]
        losses: dict[str, float] = {}
        if seeds is not None:
            fix_random_seed(seeds[b])
        set_dropout_rate(pipe.model, drop)
        pipe.update_beam(batch, beam_width=update_width, sgd=None, losses=losses, beam_density=0.0)
        with lock:
            pipe.finish_update(optimizer)
        loss += losses.get(pipe.name, 0.0)
        n_batches += 1
    return loss, n_batches


class TeachSession:
    """Serve candidate-entity tasks and learn from yes/no answers (see the module
    docstring for the full contract and the locking model). ``stream_options``
    (:class:`~beamner.teach.tasks.StreamArgs`) go to the
    :class:`~beamner.teach.tasks.TaskStream` as given."""

    def __init__(
        self,
        nlp: Language,
        source: Source,
        labels: Sequence[str],
        *,
        beam_width: int = _DEFAULTS.width,
        beam_density: float = _DEFAULTS.density,
        update_width: int | None = None,
        update_batch: int = 16,
        learn_rate: float | None = DEFAULT_LEARN_RATE,
        drop: float = 0.1,
        seed: int = 0,
        normalize: str | None = _DEFAULTS.normalize,
        incorrect_spans_key: str = DEFAULT_NEG_KEY,
        **stream_options: Unpack[StreamArgs],
    ) -> None:
        self.nlp = nlp
        #: The beam the tasks are scored with and the saved pipeline serves.
        self.settings = teach_settings(
            nlp, beam_width=beam_width, beam_density=beam_density, normalize=normalize
        )
        self.pipe = prepare_pipeline(nlp, self.settings, incorrect_spans_key=incorrect_spans_key)
        self.neg_key = incorrect_spans_key
        self.update_width = update_width or self.settings.width
        if self.update_width < 2:
            raise ValueError("update_width must be >= 2 for a beam update")
        self.update_batch = update_batch
        self.drop = drop
        self.seed = seed
        self._stream_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._update_lock = threading.Lock()
        self.stream = TaskStream(
            nlp,
            source,
            labels,
            beam_width=self.settings.width,
            beam_density=self.settings.density,
            normalize=self.settings.normalize,
            seed=seed,
            score_lock=self._model_lock,
            **stream_options,
        )
        self.optimizer = nlp.create_optimizer()  # type: ignore[no-untyped-call]
        if learn_rate is not None:
            self.optimizer.learn_rate = learn_rate
        self._n_batches_trained = 0  # update batches so far: their number seeds their dropout
        self._pending: dict[int, dict[str, Any]] = {}  # task hash -> answer, in answer order
        self.n_answers = 0
        self.n_updates = 0
        self.n_trained = 0
        self._recent: list[str] = []
        # Every answer this session (pending or trained; a re-answer replaces),
        # for the precision estimate the page shows.
        self._answered: dict[int, dict[str, Any]] = {}

    # -- serving ----------------------------------------------------------------------------

    def next_task(self) -> dict[str, Any] | None:
        """The next task (each served once), or None when there are no more."""
        with self._stream_lock:
            return self.stream.next()

    def skip_hashes(self, task_hashes: Iterable[int]) -> None:
        """Never serve these task hashes (e.g. answered in an earlier session)."""
        with self._stream_lock:
            self.stream.skip(task_hashes)

    def answer(self, task: dict[str, Any], decision: str) -> dict[str, Any]:
        """Record ``decision`` for ``task``; returns the answer dict (pending until
        an update takes it). Re-answering a pending task replaces its answer."""
        answer = {**task, "answer": decision}
        parse_answer(answer)  # validate now, not at training time
        th = int(task["_task_hash"])
        with self._stream_lock:
            self._pending.pop(th, None)
            self._pending[th] = answer
            self._answered[th] = answer
            self.n_answers += 1
            self._recent = [*self._recent[-49:], decision]
        return answer

    def retract(self, task_hash: int) -> dict[str, Any] | None:
        """Undo a pending answer: remove it and serve its task again next. None if
        it was already taken by an update (or never given)."""
        with self._stream_lock:
            answer = self._pending.pop(int(task_hash), None)
            if answer is None:
                return None
            self._answered.pop(int(task_hash), None)
            self.n_answers -= 1
            if self._recent:
                self._recent.pop()
            task = {k: v for k, v in answer.items() if k != "answer"}
            self.stream.give_back(task)
            return answer

    @property
    def n_pending(self) -> int:
        with self._stream_lock:
            return len(self._pending)

    # -- learning ---------------------------------------------------------------------------

    def update(self, answers: Iterable[dict[str, Any] | Answer] | None = None) -> UpdateResult:
        """Train on ``answers`` (None: take every pending answer). See the module docstring."""
        with self._update_lock:
            t0 = time.perf_counter()
            if answers is None:
                with self._stream_lock:
                    items: list[dict[str, Any] | Answer] = list(self._pending.values())
                    self._pending.clear()
            else:
                items = list(answers)
            parsed = [a if isinstance(a, Answer) else parse_answer(a) for a in items]
            merged, report = merge_answers(parsed, self.pipe.labels)
            examples = build_examples(self.nlp, merged, self.neg_key, report=report)
            result = UpdateResult(**report.as_dict())
            if examples:
                first = self._n_batches_trained
                n_batches = -(-len(examples) // self.update_batch)
                result.loss, result.n_batches = train_answers(
                    self.nlp,
                    self.pipe,
                    examples,
                    self.optimizer,
                    update_width=self.update_width,
                    update_batch=self.update_batch,
                    drop=self.drop,
                    model_lock=self._model_lock,
                    seeds=[step_seed(self.seed, first + b) for b in range(n_batches)],
                )
                self._n_batches_trained += result.n_batches
                with self._stream_lock:
                    self.stream.invalidate()
                    self.n_updates += 1
                    self.n_trained += report.n_answers
            result.model_version = self.stream.model_version
            result.seconds = time.perf_counter() - t0
            return result

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the pipeline (weights not mid-step, serving :attr:`settings`) to
        the folder ``path`` by beamner's output policy (:mod:`beamner.io.atomic`):
        built beside it and swapped in, marked as beamner's; a non-empty folder
        beamner did not write is refused (:class:`~beamner.io.atomic.OutputError`)
        unless ``overwrite``. Returns the path."""
        target = check_output(path, overwrite=overwrite, folder=True)
        assert target is not None  # a folder path, never stdout
        return swap_directory(target, self.to_disk, info={"written_by": "beamner teach"})

    def to_disk(self, folder: str | os.PathLike[str]) -> None:
        """Write the pipeline into ``folder`` (weights not mid-step), as
        ``nlp.to_disk`` does: no output policy (a build step of
        :func:`~beamner.io.atomic.swap_directory`; use :meth:`save` otherwise)."""
        with self._model_lock:
            mark_derived(self.nlp, "teach")
            self.nlp.to_disk(Path(folder))

    def stats(self) -> dict[str, Any]:
        """Answers so far, pending, trained, model updates, recent accept rate (last 50)."""
        with self._stream_lock:
            recent = [d for d in self._recent if d != "ignore"]
            return {
                "n_answers": self.n_answers,
                "n_pending": len(self._pending),
                "n_trained": self.n_trained,
                "n_updates": self.n_updates,
                "model_version": self.stream.model_version,
                "recent_accept_rate": (
                    sum(d == "accept" for d in recent) / len(recent) if recent else None
                ),
                "n_served": self.stream.n_served,
                "n_read": self.stream.n_read,
                "n_buffered": self.stream.n_buffered,
                "precision": self._precision_estimate(),
            }

    def precision_estimate(
        self, threshold: float | None = None, confidence: float = 0.9
    ) -> dict[str, Any]:
        """The precision of the entities shown with p >= ``threshold`` (default:
        the pipeline's certified ``precision_threshold``, else 0.9), estimated
        from this session's answers, each weighted by 1 / the probability its
        task was drawn with (``order="sample"`` records it; other orders count
        as a uniform sample, ``n_unweighted``), with its ``confidence``
        interval (:func:`beamner.teach.sampling.answered_precision`)."""
        with self._stream_lock:
            return self._precision_estimate(threshold, confidence)

    def _precision_estimate(
        self, threshold: float | None = None, confidence: float = 0.9
    ) -> dict[str, Any]:
        if threshold is None:
            threshold = self.settings.precision_threshold or 0.9
        return answered_precision(list(self._answered.values()), threshold, confidence)
