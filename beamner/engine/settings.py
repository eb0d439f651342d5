"""One settings value for a beam: made and checked once, then passed down.

Every default of beamner lives here, with the reason for it. The component
(``beamner_ner``), :func:`beamner.accelerate`, the Python functions, the jobs,
the cluster, teach, evaluation and the CLI all take a :class:`BeamSettings`
(or build one with :meth:`BeamSettings.from_pipe`), so a setting is read from
a component's cfg in one place and a default is written in one place.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = [
    "CLI_NORMALIZE",
    "DECODE_MODES",
    "DEFAULT_LEARN_RATE",
    "DEFAULT_SPANS_KEY",
    "MAX_BEAM_WIDTH",
    "NORMALIZE_CHOICES",
    "SPANS_LAYOUTS",
    "BeamSettings",
    "Decode",
    "Normalize",
    "SpansLayout",
    "check_normalize",
]

Normalize = Literal["none", "local"]
Decode = Literal["best", "marginal", "precision"]
SpansLayout = Literal["entities", "singlelabel"]

#: ``"none"`` adds the model's raw scores (spaCy's beam, bit for bit);
#: ``"local"`` adds each state's log-softmax over its valid actions, so a
#: parse's score is its log-probability under the model.
NORMALIZE_CHOICES: tuple[str, ...] = get_args(Normalize)
#: ``"best"``: ``doc.ents`` from the best parse (spaCy's); ``"marginal"``: every
#: entity whose beam marginal exceeds 0.5 (:mod:`beamner.probabilities.decoding`);
#: ``"precision"``: every entity whose calibrated probability is at least
#: ``precision_threshold`` (certified by ``beamner threshold``), most probable
#: first where two overlap.
DECODE_MODES: tuple[str, ...] = get_args(Decode)
#: ``doc.spans`` layouts: every candidate entity, or spancat_singlelabel's.
SPANS_LAYOUTS: tuple[str, ...] = get_args(SpansLayout)

#: The widest beam accepted. The native beam keeps width x (moves) candidates a
#: step in memory; 4096 is far past where entity probabilities stop changing
#: (width 64 and 512 agree within 0.002, README), and refusing more turns a typo
#: (``-w 1000000000``) into a clear error instead of an allocation failure.
MAX_BEAM_WIDTH = 4096

#: The span group a pipeline fitted by ``calibrate`` or ``teach`` writes its
#: probabilities to when its component names none (``doc.spans["ner_probs"]``).
DEFAULT_SPANS_KEY = "ner_probs"

#: Default step of the updates from yes/no answers (``TeachSession``,
#: ``teach-update``, ``beamner teach``). On en_core_web_sm, 2e-4 cut entity
#: agreement with the original on home-style prose to 0.62 after 1,000 WNUT-17
#: answers and 5e-5 kept 0.90, for the same or better target F1
#: (experiments/teach_simulation.py, results/teach_simulation_pilot.*,
#: teach_simulation_pretrained.*); a pipeline's usual 1e-3 collapsed a small model.
DEFAULT_LEARN_RATE = 5e-5

#: The commands' normalization. For greedily trained pipelines (every
#: en_core_web_*) the raw beam loses top-1 F1 as it widens and ``"local"`` does
#: not, and its probabilities are better; for a beam-trained model it costs
#: nothing (bench/probability_quality.py). The component keeps ``"none"`` by
#: default: a drop-in for spaCy's ``beam_ner`` must give spaCy's beam.
CLI_NORMALIZE: Normalize = "local"


#: Fields whose cfg key differs: spaCy's own names for width and density.
_CFG_NAMES = {"width": "beam_width", "density": "beam_density"}


def check_normalize(normalize: str) -> Normalize:
    """``normalize`` if it is one of :data:`NORMALIZE_CHOICES`, else ValueError."""
    if normalize not in NORMALIZE_CHOICES:
        choices = ", ".join(map(repr, NORMALIZE_CHOICES))
        raise ValueError(f"normalize must be one of {choices}, got {normalize!r}")
    return normalize  # type: ignore[return-value]


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


@dataclass(frozen=True)
class BeamSettings:
    """How a beam runs and how its results are read.

    The defaults are beamner's, one place:

    * ``width`` 16: entity probabilities and k-best lists settle by 16 on
      en_core_web_sm (top-1 F1 within 0.001 of width 64 under ``"local"``),
      at a sixth of spaCy ``beam_ner``'s 32-wide cost per token.
    * ``density`` 0.0001: drops parses below 1e-4 of the best, which no
      probability above 1e-4 can come from; at density 0 a greedy model's raw
      beam keeps junk parses that win (README's sentence gets
      ``Angela Merkel in Berlin.`` as one PERSON); spaCy's ``beam_ner`` uses
      0.01, which drops candidates the probabilities need.
    * ``normalize`` ``"none"``: spaCy's beam, bit for bit (the drop-in
      promise); the commands use :data:`CLI_NORMALIZE`.
    * ``temperature`` 1 and no ``calibration``: the model's own probabilities
      until ``beamner calibrate`` fits a map.
    * ``decode`` ``"best"``: spaCy's choice; marginal decoding lost F1 on a
      beam-trained model (README). ``precision_threshold`` None: set by
      ``beamner threshold`` with ``decode="precision"``.
    * ``fused`` True: the whole search natively from the precomputed lower
      layer; ``False`` scores each step through spaCy's step model (any ops).
    * ``span_threshold`` 0.1: the lowest probability kept in ``doc.spans``;
      the reports measure calibration over candidates with p >= 0.1.
    * ``spans_key`` None (no span group), ``spans_layout`` ``"entities"``,
      ``spans_allow_overlap`` True.
    """

    width: int = 16
    density: float = 0.0001
    normalize: Normalize = "none"
    temperature: float = 1.0
    calibration: Mapping[str, Any] | None = None
    decode: Decode = "best"
    precision_threshold: float | None = None
    fused: bool = True
    span_threshold: float = 0.1
    spans_key: str | None = None
    spans_layout: SpansLayout = "entities"
    spans_allow_overlap: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.width, (bool, float)):
            raise TypeError(f"beam width must be an integer, got {self.width!r}")
        try:
            width = operator.index(self.width)
        except TypeError:
            raise TypeError(f"beam width must be an integer, got {self.width!r}") from None
        if not 1 <= width <= MAX_BEAM_WIDTH:
            raise ValueError(
                f"beam width must be in [1, {MAX_BEAM_WIDTH}], got {width} (wider beams change "
                "no probability and would not fit in memory)"
            )
        object.__setattr__(self, "width", width)
        density = float(self.density)
        if not 0.0 <= density <= 1.0:  # NaN fails too
            raise ValueError(f"beam density must be in [0, 1], got {self.density}")
        object.__setattr__(self, "density", density)
        check_normalize(self.normalize)
        temperature = float(self.temperature)
        if not (temperature > 0.0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        object.__setattr__(self, "temperature", temperature)
        if self.calibration is not None and not isinstance(self.calibration, Mapping):
            raise ValueError(f"calibration must be a mapping, got {self.calibration!r}")
        _check_choice("decode", self.decode, DECODE_MODES)
        if self.precision_threshold is not None:
            t = float(self.precision_threshold)
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"precision_threshold must be in [0, 1], got {t}")
            object.__setattr__(self, "precision_threshold", t)
        elif self.decode == "precision":
            raise ValueError(
                'decode="precision" needs a precision_threshold (beamner threshold certifies one)'
            )
        _check_choice("spans_layout", self.spans_layout, SPANS_LAYOUTS)
        threshold = float(self.span_threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"span_threshold must be in [0, 1], got {self.span_threshold}")
        object.__setattr__(self, "span_threshold", threshold)
        object.__setattr__(self, "fused", bool(self.fused))
        object.__setattr__(self, "spans_allow_overlap", bool(self.spans_allow_overlap))

    @classmethod
    def cfg_keys(cls) -> tuple[str, ...]:
        """The keys these settings have in a component's cfg and config."""
        return tuple(_CFG_NAMES.get(f.name, f.name) for f in dataclasses.fields(cls))

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any], **overrides: Any) -> BeamSettings:
        """Settings from a component's cfg; keys it lacks take the defaults, and
        ``overrides`` (field names; ``None`` values ignored) win."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = _CFG_NAMES.get(f.name, f.name)
            if key in cfg:
                values[f.name] = cfg[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        return cls(**values)

    @classmethod
    def from_pipe(
        cls,
        pipe: Any,
        *,
        beam: bool = False,
        updates: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> BeamSettings:
        """The settings a pipe's beam runs with: its cfg, then ``updates``
        (cfg keys, as :func:`beamner.accelerate` takes them), then
        ``overrides`` (field names; ``None`` values ignored).

        spaCy's greedy ``ner`` stores ``beam_width`` 1 and ``beam_density`` 0;
        the density describes no beam and is replaced by the default, so a beam
        read from a greedy component never runs at density 0 (whose junk
        parses are the README's ``Angela Merkel in Berlin.``). Its width 1 is
        kept (the component stays greedy until a width is asked for) unless
        ``beam``: the caller wants probabilities, which a width-1 beam cannot
        give, so the default width is used."""
        cfg = dict(getattr(pipe, "cfg", {}) or {})
        if cfg.get("beam_width", 1) == 1 and "normalize" not in cfg:
            cfg.pop("beam_density", None)
        if beam and cfg.get("beam_width", 1) == 1:
            cfg.pop("beam_width", None)
        if updates:
            cls.check_cfg_keys(updates)
            cfg.update(updates)
        return cls.from_cfg(cfg, **overrides)

    @classmethod
    def check_cfg_keys(cls, cfg: Mapping[str, Any]) -> None:
        """TypeError naming any key of ``cfg`` that is not a setting's cfg key."""
        unknown = set(cfg) - set(cls.cfg_keys())
        if unknown:
            raise TypeError(
                f"unknown settings: {sorted(unknown)} (known: {sorted(cls.cfg_keys())})"
            )

    def replace(self, **changes: Any) -> BeamSettings:
        """A copy with ``changes`` (field names; ``None`` values ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_cfg(self) -> dict[str, Any]:
        """These settings under their cfg keys (what a component stores and saves)."""
        return {
            _CFG_NAMES.get(f.name, f.name): _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
        }

    def fitted_calibration(self) -> Mapping[str, Any] | None:
        """The stored calibration if it was fitted on beams of this
        normalization (a map fitted on ``"local"`` probabilities means nothing
        for ``"none"`` ones), else None."""
        obj = self.calibration
        if not obj or str(obj.get("normalize", "none")) != self.normalize:
            return None
        return obj


def _plain(value: Any) -> Any:
    """A cfg value as spaCy saves it (dicts, not mappings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
