"""pytest plugin that serves spaCy's ``beam_ner`` factory with beamner.

Loaded with ``-p spacy_suite_plugin`` into a pytest run of spaCy's own tests
from the installed wheel (``--pyargs spacy.tests.parser.test_ner ...``); see
tests/test_spacy_suite.py. It

- re-registers the factory ``beam_ner`` in ``spacy.registry.factories`` to
  build :class:`beamner.BeamnerEntityRecognizer` with spaCy's ``beam_ner``
  settings (the factory's default config stays spaCy's, so saved pipelines
  still say ``beam_ner``), with ``fused`` from ``BEAMNER_SPACY_SUITE_FUSED``;
- counts, per test, the components built and the calls into beamner's
  engine (native searches, fused or step-scored, native beam updates, Beams
  and states built from native results), and writes them with each test's
  outcome to the JSON file named by ``BEAMNER_SPACY_SUITE_REPORT``;
- with ``BEAMNER_SPACY_SUITE_ONLY_BEAM_NER=1`` keeps only the tests whose
  source mentions ``beam_ner``;
- registers spaCy's markers (``slow``, ``issue``), as spaCy's setup.cfg does.

spaCy's test files are not changed.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

FUSED_ENV = "BEAMNER_SPACY_SUITE_FUSED"
REPORT_ENV = "BEAMNER_SPACY_SUITE_REPORT"
ONLY_BEAM_NER_ENV = "BEAMNER_SPACY_SUITE_ONLY_BEAM_NER"

_counts: dict[str, Counter[str]] = {}
_outcomes: dict[str, str] = {}
_mentions: dict[str, bool] = {}
_current: list[Counter[str]] = [Counter()]  # the running test's counters


def _count(name: str, n: int = 1) -> None:
    _current[0][name] += n


def _fused() -> bool:
    value = os.environ.get(FUSED_ENV, "1")
    if value not in ("0", "1"):
        raise pytest.UsageError(f"{FUSED_ENV} must be 0 or 1, got {value!r}")
    return value == "1"


def _make_beam_ner(
    nlp: Any,
    name: str,
    model: Any,
    moves: Any,
    update_with_oracle_cut_size: int,
    beam_width: int,
    beam_density: float,
    beam_update_prob: float,
    incorrect_spans_key: str | None,
    scorer: Callable[..., Any] | None,
) -> Any:
    """spaCy's ``make_beam_ner`` signature, building beamner's component."""
    from beamner.pipeline import BeamnerEntityRecognizer

    _count("beamner components built")
    return BeamnerEntityRecognizer(
        nlp.vocab,
        model,
        name=name,
        moves=moves,
        update_with_oracle_cut_size=update_with_oracle_cut_size,
        beam_width=beam_width,
        beam_density=beam_density,
        beam_update_prob=beam_update_prob,
        incorrect_spans_key=incorrect_spans_key,
        scorer=scorer,
        fused=_fused(),
    )


def _counted(owner: Any, attr: str, name: Callable[..., str] | str) -> None:
    """Replace ``owner.attr`` by a wrapper that counts its calls under ``name``
    (or ``name(*args, **kwargs)``)."""
    original = getattr(owner, attr)

    @functools.wraps(original, updated=())
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _count(name(*args, **kwargs) if callable(name) else name)
        return original(*args, **kwargs)

    setattr(owner, attr, wrapper)


def _predict_kind(pipe: Any, docs: Any) -> str:
    from spacy.tokens import Doc

    docs = [docs] if isinstance(docs, Doc) else list(docs)
    if not any(len(doc) for doc in docs):
        return "predict calls (empty docs)"
    if pipe.cfg["beam_width"] == 1 and not pipe.cfg.get("spans_key"):
        return "predict calls (width 1, spaCy's greedy_parse)"
    return "predict calls (beam)"


def install() -> None:
    """Serve ``beam_ner`` with beamner and count the engine's calls."""
    from spacy.errors import Errors
    from spacy.language import Language
    from spacy.pipeline.factories import register_factories
    from spacy.util import SimpleFrozenDict, registry

    import beamner.engine.search as search
    import beamner.pipeline as pipeline
    import beamner.training.beam_update as beam_update

    register_factories()  # spaCy's own first, so ours is not overwritten later
    registry.factories.register("beam_ner", func=_make_beam_ner)
    Language.factories = SimpleFrozenDict(registry.factories.get_all(), error=Errors.E957)

    cls = pipeline.BeamnerEntityRecognizer
    _counted(cls, "predict", _predict_kind)
    _counted(cls, "beam_parse", "beam_parse calls")
    _counted(cls, "update_beam", "update_beam calls")
    # Every search of the component starts in engine.search.prepare_search
    # (run_search and the pipelined nlp.pipe both call it through the module).
    _counted(
        search,
        "prepare_search",
        lambda pipe, docs, settings: (
            f"native searches ({'fused' if settings.fused else 'step-scored'})"
        ),
    )
    _counted(search, "BeamBatch", "native BeamBatch built")
    _counted(search, "lower_layers", "fused lower layer precomputed")
    _counted(search, "StepScorer", "step scorers built")
    _counted(beam_update, "BeamUpdate", "native BeamUpdate built")
    _counted(pipeline, "build_beam", "thinc Beams built from native results")
    _counted(pipeline, "build_state", "states built from native results")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: mark a test as slow")
    config.addinivalue_line("markers", "issue: reference specific issue")
    _fused()
    install()


def _mentions_beam_ner(item: pytest.Item) -> bool:
    function = getattr(item, "function", None)
    return function is not None and "beam_ner" in inspect.getsource(function)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        _mentions[item.nodeid] = _mentions_beam_ner(item)
    if os.environ.get(ONLY_BEAM_NER_ENV) == "1":
        kept = [item for item in items if _mentions[item.nodeid]]
        dropped = [item for item in items if not _mentions[item.nodeid]]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _current[0] = _counts.setdefault(item.nodeid, Counter())


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        if _outcomes.get(report.nodeid) in (None, "passed"):
            _outcomes[report.nodeid] = report.outcome


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    tests = {
        nodeid: {
            "outcome": outcome,
            "mentions_beam_ner": _mentions.get(nodeid, False),
            "counts": dict(_counts.get(nodeid, Counter())),
        }
        for nodeid, outcome in _outcomes.items()
    }
    with open(path, "w", encoding="utf-8") as file:
        json.dump({"fused": _fused(), "tests": tests}, file, indent=1, sort_keys=True)
