"""Guaranteed precision (beamner.probabilities.guarantee), uncertainty sampling with
inclusion probabilities (beamner.teach.sampling), weighted calibration and calibrated
bounds, on synthetic data with known calibration."""

from __future__ import annotations

import math

import numpy
import pytest

from beamner.probabilities.answered import (
    LabelledCandidates,
    effective_sample_size,
    fit_from_answers,
    weighted_ece,
)
from beamner.probabilities.calibration import expected_calibration_error
from beamner.probabilities.calibrators import (
    IsotonicCalibrator,
    PiecewiseLinear,
    apply_calibration_with_bounds,
    calibrate_bound_rows,
    fit_isotonic,
)
from beamner.probabilities.guarantee import (
    THRESHOLD_GRID,
    certify_threshold,
    clopper_pearson_lower,
    precision_interval,
)
from beamner.teach.sampling import (
    INCLUSION_KEY,
    UncertaintySampler,
    answer_weight,
    answered_precision,
    inclusion_probabilities,
    rate_for,
)


def _population(rng: numpy.random.Generator, n: int) -> numpy.ndarray:
    """Probabilities of a stream's candidates: many near 0 and 1, some in between."""
    return numpy.clip(rng.beta(0.6, 0.6, size=n), 0.0, 1.0)


def _true_precision(t: float) -> float:
    """E[p | p >= t] under Beta(0.6, 0.6): the precision of {p >= t} when p is calibrated."""
    from scipy.stats import beta

    a = b = 0.6
    tail = beta.sf(t, a, b)
    # E[p; p >= t] = a / (a + b) * P(Beta(a + 1, b) >= t)
    return float(a / (a + b) * beta.sf(t, a + 1, b) / tail)


def _coverage(
    method: str, weighted: bool, target: float = 0.8, draws: int = 300, n: int = 300
) -> tuple[float, float]:
    """Share of draws where a threshold was certified, and among those the share whose
    true precision (known: the probabilities are calibrated) is >= target."""
    rng = numpy.random.default_rng(12345)
    certified = valid = 0
    for _ in range(draws):
        if weighted:
            # A stream of candidates, Poisson-sampled by uncertainty, weighted back.
            stream = _population(rng, 4 * n)
            pi = inclusion_probabilities(stream, rate_for(stream, n))
            keep = rng.random(stream.size) < pi
            p, w = stream[keep], 1.0 / pi[keep]
        else:
            p, w = _population(rng, n), numpy.ones(n)
        y = rng.random(p.size) < p
        if method == "ltt":
            t = certify_threshold(p, y, w, precision=target, confidence=0.9).threshold
        else:  # naive: the lowest threshold whose point estimate reaches the target
            ok = [
                g
                for g in THRESHOLD_GRID
                if (p >= g).any() and (w[p >= g] * y[p >= g]).sum() / w[p >= g].sum() >= target
            ]
            t = min(ok) if ok else None
        if t is None:
            continue
        certified += 1
        valid += _true_precision(t) >= target
    return certified / draws, valid / max(certified, 1)


@pytest.mark.parametrize("target", [0.8, 0.9])
@pytest.mark.parametrize("weighted", [False, True])
def test_threshold_coverage_on_calibrated_synthetic_data(weighted: bool, target: float) -> None:
    """Over many simulated sets of 1,000 answers (uniform, or drawn by uncertainty and
    weighted back), the certified threshold's true precision is >= the target in >= 90%
    of the draws that certified one (confidence 0.9)."""
    share, coverage = _coverage("ltt", weighted, target=target, n=1000)
    print(f"weighted={weighted}: certified in {share:.2f} of draws, coverage {coverage:.3f}")
    assert share > 0.8  # the method is not vacuous here
    assert coverage >= 0.9


def test_coverage_harness_catches_an_invalid_method() -> None:
    """The same harness fails a method without a bound (the point estimate alone)."""
    share, coverage = _coverage("naive", weighted=False)
    assert share > 0.9
    assert coverage < 0.9


def test_clopper_pearson_known_values() -> None:
    # n successes of n: the lower bound solves p^n = alpha.
    assert clopper_pearson_lower(10, 10, 0.05) == pytest.approx(0.05 ** (1 / 10))
    assert clopper_pearson_lower(0, 10, 0.05) == 0.0
    assert clopper_pearson_lower(5, 0, 0.05) == 0.0
    # monotone in the successes, below the point estimate
    bounds = [clopper_pearson_lower(k, 50, 0.1) for k in range(1, 51)]
    assert (numpy.diff(bounds) > 0).all()
    assert all(b < k / 50 for k, b in zip(range(1, 51), bounds))
    with pytest.raises(ValueError, match="alpha"):
        clopper_pearson_lower(1, 2, 1.5)


def test_certify_threshold_fixed_sequence_stops_at_first_failure() -> None:
    # High scores right, a band of wrong ones at 0.6, many right ones again at 0.3.
    p = numpy.array([0.95] * 40 + [0.6] * 10 + [0.3] * 1000)
    y = numpy.array([True] * 40 + [False] * 10 + [True] * 1000)
    res = certify_threshold(p, y, precision=0.9, confidence=0.9)
    # 0.99-0.96 hold no answer (passed over); 0.95-0.61 hold the 40 right ones and pass;
    # 0.6 holds 40 of 50 right and fails, so testing stops although p >= 0.3 would pass
    # (1040 of 1050 right).
    assert res.threshold == pytest.approx(0.61)
    assert res.tested[0]["threshold"] == pytest.approx(0.95)
    assert res.tested[-1] == {
        "threshold": 0.6,
        "n_answers": 50,
        "effective_n": pytest.approx(50.0),
        "precision": pytest.approx(0.8),
        "lower_bound": pytest.approx(clopper_pearson_lower(40, 50, 0.1)),
        "passed": False,
    }
    assert res.expected_recall == pytest.approx(40 / 1040)
    assert res.precision == 1.0 and res.lower_bound == pytest.approx(0.1 ** (1 / 40))


def test_no_threshold_is_said_plainly() -> None:
    p = numpy.linspace(0.0, 1.0, 100)
    y = numpy.arange(100) % 2 == 0
    res = certify_threshold(p, y, precision=0.9, confidence=0.9)
    assert res.threshold is None
    assert "no threshold can be certified" in res.reason
    assert certify_threshold([], [], precision=0.9).reason == "no answers to test"
    with pytest.raises(ValueError, match="target precision"):
        certify_threshold(p, y, precision=1.0)


def test_weights_enter_the_bound_through_the_effective_size() -> None:
    p = numpy.full(100, 0.95)
    y = numpy.array([True] * 95 + [False] * 5)
    equal = certify_threshold(p, y, numpy.full(100, 3.0), precision=0.8)
    plain = certify_threshold(p, y, precision=0.8)
    assert equal.tested[0]["lower_bound"] == pytest.approx(plain.tested[0]["lower_bound"])
    # unequal weights: fewer effective answers, a lower bound
    w = numpy.where(numpy.arange(100) < 10, 20.0, 1.0)
    assert effective_sample_size(w) < 50
    uneven = certify_threshold(p, y, w, precision=0.8)
    assert uneven.tested[0]["effective_n"] == pytest.approx(effective_sample_size(w))
    assert uneven.tested[0]["lower_bound"] < plain.tested[0]["lower_bound"]


def test_inclusion_probabilities_and_rate() -> None:
    p = numpy.array([0.0, 0.25, 0.5, 0.75, 1.0])
    pi = inclusion_probabilities(p, rate=1.0, floor=0.5)
    assert pi == pytest.approx([0.5, 0.75, 1.0, 0.75, 0.5])
    rng = numpy.random.default_rng(0)
    stream = _population(rng, 2000)
    rate = rate_for(stream, 500)
    assert inclusion_probabilities(stream, rate).sum() == pytest.approx(500, rel=1e-6)
    assert (inclusion_probabilities(stream, rate_for(stream, 5000)) == 1.0).all()
    for bad in ({"rate": 0.0}, {"rate": math.inf}, {"floor": 0.0}, {"floor": 1.5}):
        with pytest.raises(ValueError):
            inclusion_probabilities(p, **bad)  # type: ignore[arg-type]


def test_sampler_records_and_weights_read_back() -> None:
    sampler = UncertaintySampler(rate=1.0, floor=0.5, seed=3)
    drawn = [sampler.draw(0.5) for _ in range(20)]
    assert drawn == [1.0] * 20  # p = 0.5 is always drawn at rate 1
    got = [sampler.draw(0.99) for _ in range(2000)]
    share = sum(g is not None for g in got) / 2000
    assert share == pytest.approx(0.51, abs=0.04)
    task = UncertaintySampler.record({"text": "x", "meta": {"score": 0.99}}, 0.51)
    assert task["meta"] == {"score": 0.99, INCLUSION_KEY: 0.51}
    assert answer_weight(task["meta"]) == pytest.approx(1 / 0.51)
    assert answer_weight({"score": 1}) is None and answer_weight(None) is None
    for bad in (0, 1.5, "0.5", True, None):
        with pytest.raises(ValueError, match=INCLUSION_KEY):
            answer_weight({INCLUSION_KEY: bad})


def test_inverse_inclusion_weights_remove_the_sampling_bias() -> None:
    """Uncertainty sampling over-asks about p ~ 0.5; the weighted precision over p >= 0.3
    estimates the stream's, the unweighted one does not."""
    rng = numpy.random.default_rng(7)
    stream = _population(rng, 3000)
    truth = rng.random(stream.size) < stream
    sel = stream >= 0.3
    population = truth[sel].mean()
    weighted, unweighted = [], []
    for _ in range(300):
        pi = inclusion_probabilities(stream, rate_for(stream, 300), floor=0.2)
        keep = (rng.random(stream.size) < pi) & sel
        w = 1.0 / pi[keep]
        weighted.append((w * truth[keep]).sum() / w.sum())
        unweighted.append(truth[keep].mean())
    assert abs(numpy.mean(weighted) - population) < 0.005
    assert abs(numpy.mean(unweighted) - population) > 0.03


def test_weighted_ece_and_isotonic_weights() -> None:
    rng = numpy.random.default_rng(1)
    p = rng.random(500)
    y = rng.random(500) < p**2
    assert weighted_ece(p, y) == pytest.approx(expected_calibration_error(p, y))
    assert weighted_ece(p, y, numpy.full(500, 2.0)) == pytest.approx(weighted_ece(p, y))
    # weight 2 == the candidate twice
    w = numpy.where(numpy.arange(500) < 100, 2.0, 1.0)
    doubled = fit_isotonic(numpy.concatenate([p, p[:100]]), numpy.concatenate([y, y[:100]]))
    weighted = fit_isotonic(p, y, weights=w)
    grid = numpy.linspace(0, 1, 101)
    assert weighted(grid) == pytest.approx(doubled(grid), abs=1e-6)
    with pytest.raises(ValueError, match="weights"):
        fit_isotonic(p, y, weights=numpy.zeros(500))


def test_isotonic_min_block_levels() -> None:
    rng = numpy.random.default_rng(2)
    p = rng.random(300)
    y = rng.random(300) < p
    cal = fit_isotonic(p, y, min_block=40)
    levels = numpy.asarray(cal.shared.y)
    assert (numpy.diff(levels) >= 0).all()
    # every level holds >= 40 candidates: at most 300 / 40 distinct levels
    assert len(set(levels.round(12))) <= 300 // 40
    values = cal(p)
    for level in set(levels.round(12)):
        assert (values.round(12) == level).sum() >= 40
    # the levels are weighted means of y over their candidates: the overall mean is kept
    assert values.mean() == pytest.approx(y.mean(), abs=0.05)


def test_fit_from_answers_method_choice() -> None:
    rng = numpy.random.default_rng(4)

    def cands(n: int) -> LabelledCandidates:
        out = LabelledCandidates()
        for _ in range(n):
            scores = rng.normal(0, 3, size=3)
            member = numpy.array([True, False, rng.random() < 0.5])
            out.add(scores, member, bool(rng.random() < 0.4), 1.0, "PERSON")
        return out

    few = fit_from_answers(cands(30))
    assert few.method == "temperature" and few.calibrator is None and "30 answers" in few.reason
    many = fit_from_answers(cands(200), normalize="local")
    assert many.method == "isotonic" and many.calibrator is not None
    assert many.calibrator.normalize == "local"
    none_right = LabelledCandidates()
    none_right.add(numpy.zeros(2), numpy.array([True, False]), False)
    with pytest.raises(ValueError, match="both accepted and rejected"):
        fit_from_answers(none_right)


def test_calibration_moves_the_bounds_with_the_score() -> None:
    """The case rank printed: a calibrated score 0.162 beside raw bounds [0.212, 0.466]."""
    cal = IsotonicCalibrator(PiecewiseLinear((0.0, 0.3, 1.0), (0.0, 0.162, 0.5)))
    key = (0, 2, "PERSON")
    raw_p, raw_bounds = 0.3, (0.212, 0.466)
    probs, bounds = apply_calibration_with_bounds({key: raw_p}, {key: raw_bounds}, cal)
    lo, hi = bounds[key]
    assert probs[key] == pytest.approx(0.162)
    assert lo <= probs[key] <= hi
    assert lo == pytest.approx(float(cal([0.212])[0])) and hi == pytest.approx(
        float(cal([0.466])[0])
    )
    # any monotone map, any raw score inside its raw bounds
    rng = numpy.random.default_rng(5)
    for _ in range(200):
        x = numpy.unique(numpy.concatenate([[0.0, 1.0], rng.random(5)]))
        y = numpy.sort(rng.random(x.size))
        cal = IsotonicCalibrator(PiecewiseLinear(tuple(x), tuple(y)))
        lo, hi = numpy.sort(rng.random(2))
        p = float(rng.uniform(lo, hi))
        probs, bounds = apply_calibration_with_bounds({key: p}, {key: (lo, hi)}, cal)
        assert bounds[key][0] <= probs[key] <= bounds[key][1]
    # no calibrator: unchanged; a score outside its bounds (a temperature): widened to hold it
    probs, bounds = apply_calibration_with_bounds({key: 0.9}, {key: (0.2, 0.4)}, None)
    assert probs[key] == 0.9 and bounds[key] == (0.2, 0.9)

    # the span group's arrays: the same
    rows = numpy.array([[0.212, 0.466], [0.1, 0.2]])
    cal = IsotonicCalibrator(PiecewiseLinear((0.0, 0.3, 1.0), (0.0, 0.162, 0.5)))
    scores = cal(numpy.array([0.3, 0.15]))
    got = calibrate_bound_rows(rows, ["PERSON", "ORG"], scores, cal)
    assert got == pytest.approx(numpy.stack([cal(rows[:, 0]), cal(rows[:, 1])], axis=1))
    assert ((got[:, 0] <= scores) & (scores <= got[:, 1])).all()
    with pytest.raises(ValueError, match="2 bounds, 1 scores"):
        calibrate_bound_rows(rows, ["PERSON"], scores[:1], cal)


def test_precision_interval() -> None:
    p = numpy.array([0.9] * 50 + [0.2] * 50)
    y = numpy.array([True] * 45 + [False] * 5 + [False] * 50)
    got = precision_interval(p, y, threshold=0.5, confidence=0.9)
    assert got["estimate"] == pytest.approx(0.9) and got["n_answers"] == 50
    assert got["lower"] == pytest.approx(clopper_pearson_lower(45, 50, 0.05))
    assert got["lower"] < 0.9 < got["upper"] < 1.0
    # the 90% interval covers the truth about 90% of the time (or more: Clopper-Pearson)
    rng = numpy.random.default_rng(9)
    hits = 0
    for _ in range(400):
        yy = rng.random(60) < 0.7
        r = precision_interval(numpy.ones(60), yy, threshold=0.5, confidence=0.9)
        hits += r["lower"] <= 0.7 <= r["upper"]
    assert hits / 400 >= 0.88
    assert precision_interval(p, y, threshold=0.95)["estimate"] is None


def test_batch_guarantee_covers_the_realized_precision_of_a_batch() -> None:
    """With the batch's counts above each threshold, the precision realized on that batch
    (not only the population's) is >= the target in >= 90% of the certified draws; the
    population guarantee alone misses it more often (a batch scatters around its
    population precision)."""
    rng = numpy.random.default_rng(2024)
    target = 0.8
    realized: dict[str, list[bool]] = {"batch": [], "population": []}
    for _ in range(300):
        p = _population(rng, 1000)
        y = rng.random(p.size) < p
        batch_p = _population(rng, 600)
        batch_y = rng.random(batch_p.size) < batch_p
        order = numpy.sort(batch_p)

        def count(t: float, s: numpy.ndarray = order) -> int:
            return int(s.size - numpy.searchsorted(s, t, side="left"))

        for kind, counts in (("batch", count), ("population", None)):
            t = certify_threshold(p, y, precision=target, batch_counts=counts).threshold
            if t is not None and (batch_p >= t).any():
                realized[kind].append(bool(batch_y[batch_p >= t].mean() >= target))
    share = {k: sum(v) / len(v) for k, v in realized.items()}
    print(share, {k: len(v) for k, v in realized.items()})
    assert len(realized["batch"]) > 200
    assert share["batch"] >= 0.9
    assert share["population"] < share["batch"]


def test_answered_precision_for_the_teach_page() -> None:
    tasks = [
        {"answer": "accept", "meta": {"score": 0.95, INCLUSION_KEY: 0.5}},
        {"answer": "reject", "meta": {"score": 0.92, INCLUSION_KEY: 1.0}},
        {"answer": "accept", "meta": {"score": 0.91}},
        {"answer": "ignore", "meta": {"score": 0.99}},
        {"answer": "accept", "meta": {"score": 0.2, INCLUSION_KEY: 1.0}},
        {"answer": "reject"},
    ]
    got = answered_precision(tasks, threshold=0.9)
    # weights 2, 1, 1 above 0.9: precision (2 + 1) / 4
    assert got["n_answers"] == 3 and got["n_unweighted"] == 1
    assert got["estimate"] == pytest.approx(0.75)
    assert got["effective_n"] == pytest.approx(16 / 6)
    assert got["lower"] < 0.75 < got["upper"]
    assert answered_precision([], threshold=0.5)["estimate"] is None
