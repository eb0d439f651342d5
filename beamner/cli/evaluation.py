"""``beamner evaluate``, ``calibrate``, ``compare``, ``ab-tasks`` and ``ab-score``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from beamner.cli.options import (
    DEFAULTS,
    NORMALIZE_DEFAULT,
    BatchSize,
    BeamDensity,
    ComponentBeamDensity,
    ComponentBeamWidth,
    Format,
    GoldFormat,
    GpuId,
    LabelMap,
    Model,
    OptPath,
    OptStr,
    Overwrite,
    Progress,
    SentencesPerDoc,
    SkipInvalid,
    count,
    forward,
    fraction,
    output_option,
    user_errors,
    write_json,
)
from beamner.io.atomic import check_output
from beamner.io.records import plural

#: compare's and ab-score's intervals.
Confidence = Annotated[
    float, typer.Option("--confidence", min=0.5, max=0.999, help="Interval confidence level.")
]


def model_label_map_option(side: str, example: str = "") -> Any:
    """``--label-map-a`` or ``--label-map-b``: the label map of one model of the two."""
    return typer.Option(
        f"--label-map-{side.lower()}", help=f"Label map for model {side} only{example}."
    )


def model_label_maps(
    label_map: str | None, label_map_a: str | None, label_map_b: str | None
) -> dict[str, str | None]:
    """Each model's label map: its own (--label-map-a, --label-map-b), else --label-map."""
    return {
        "label_map_a": label_map if label_map_a is None else label_map_a,
        "label_map_b": label_map if label_map_b is None else label_map_b,
    }


def evaluate_cmd(
    model: Model,
    data: Annotated[str, typer.Argument(help="Gold data: CoNLL/IOB, .spacy or JSONL with spans.")],
    beam_widths: Annotated[
        str, typer.Option("--beam-widths", help="Comma-separated beam widths.")
    ] = "1,2,4,8,16,32",
    beam_density: BeamDensity = DEFAULTS.density,
    output_dir: Annotated[
        OptPath,
        typer.Option(
            "--output-dir",
            "-o",
            help="Write evaluation.json, f1_vs_width.png and reliability.png here.",
        ),
    ] = None,
    normalize: Annotated[
        str,
        typer.Option(
            "--normalize",
            help="Beam normalizations to evaluate, comma-separated: local (log-probabilities), "
            "none (spaCy's raw scores).",
        ),
    ] = NORMALIZE_DEFAULT,
    label_map: LabelMap = None,
    sentences_per_doc: SentencesPerDoc = 1,
    n_bins: Annotated[int, count("--bins", help="Calibration bins.")] = 10,
    batch_size: BatchSize = 128,
    gpu_id: GpuId = -1,
    fmt: GoldFormat = "auto",
    progress: Progress = None,
) -> None:
    """Evaluate on gold data per normalization and beam width: F1, oracle F1, calibration.

    Top-1 P/R/F1, marginal-decoding F1 (entities with p > 0.5), oracle F1 (best parse in the
    beam), coverage, and the calibration of the entity probabilities: ECE over all candidates
    and over those with p >= 0.1, precision of those with p >= 0.9, Brier, reliability table.
    """
    from beamner.evaluation.evaluate import evaluate

    with user_errors():
        report = forward(evaluate, locals(), model, data)
    typer.echo(
        f"{report['n_docs']} docs, {report['n_gold_entities']} gold entities, "
        f"temperature {report['temperature']:.4g}, "
        f"calibration {report['calibration'] or 'none'}"
    )
    typer.echo(
        f"{'norm':>5} {'width':>5} {'P':>6} {'R':>6} {'F1':>6} {'margF1':>6} {'oracleF1':>8} "
        f"{'cover':>6} {'ECE':>6} {'ECE.1':>6} {'P@.9':>6} {'n@.9':>5} {'sec':>6}"
    )

    def num(x: Any, width: int = 6) -> str:
        return f"{x:{width}.3f}" if x is not None else f"{'-':>{width}}"

    for r in report["widths"]:
        typer.echo(
            f"{r['normalize']:>5} {r['width']:>5} {r['precision']:6.3f} {r['recall']:6.3f} "
            f"{r['f1']:6.3f} {r['marginal_f1']:6.3f} {r['oracle_f1']:8.3f} "
            f"{num(r['coverage'])} {r['ece']:6.3f} {r['ece_p10']:6.3f} "
            f"{num(r['precision_p90'])} {r['n_p90']:>5} {r['seconds']:6.2f}"
        )
    _echo_span_rows(report["widths"])
    if output_dir is not None:
        typer.echo(f"wrote {output_dir / 'evaluation.json'}")
        for path in report.get("plots", []):
            typer.echo(f"wrote {path}")
        if "plots_skipped" in report:
            typer.echo(f"no plots: {report['plots_skipped']}", err=True)


def _echo_span_rows(rows: list[dict[str, Any]]) -> None:
    """Span level (beamner/evaluation/spans.py): each candidate span's label
    distribution, its non-overlapping argmax spans, the winning label's ECE and
    the "no entity" column's ECE over all candidates."""
    rows = [r for r in rows if "spans" in r]
    if not rows:
        return
    typer.echo("span level (argmax of each span's distribution, no overlaps):")
    typer.echo(
        f"{'norm':>5} {'width':>5} {'P':>6} {'R':>6} {'F1':>6} {'ECE':>6} {'ECE.1':>6} "
        f"{'negECE':>6} {'cands':>6}"
    )
    for r in rows:
        sp = r["spans"]
        typer.echo(
            f"{r['normalize']:>5} {r['width']:>5} {sp['spans']['precision']:6.3f} "
            f"{sp['spans']['recall']:6.3f} {sp['spans']['f1']:6.3f} {sp['predicted']['ece']:6.3f} "
            f"{sp['predicted']['ece_p10']:6.3f} {sp['negative']['ece']:6.3f} "
            f"{sp['negative']['n']:>6}"
        )


def calibrate_cmd(
    model: Model,
    data: Annotated[str, typer.Argument(help="Gold data to fit the calibration on.")],
    output: Annotated[Path, output_option("Where to save the calibrated pipeline.")],
    eval_data: Annotated[
        OptStr, typer.Option("--eval-data", help="Held-out gold data for the before/after report.")
    ] = None,
    holdout: Annotated[
        float, fraction("--holdout", help="Without --eval-data: report on this last part.")
    ] = 0.5,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="isotonic (a monotone map of entity probabilities; needs scikit-learn; "
            "better than temperature on every measured set), temperature (one T for "
            "softmax(score / T)) or auto (isotonic; with --format answers, temperature "
            "below 80 answers).",
        ),
    ] = "auto",
    per_label: Annotated[
        bool, typer.Option("--per-label", help="Isotonic: one map per label with enough data.")
    ] = False,
    normalize: Annotated[
        str,
        typer.Option(
            "--normalize",
            help="Beam normalization to fit under (stored in the pipeline): local or none.",
        ),
    ] = NORMALIZE_DEFAULT,
    objective: Annotated[
        str, typer.Option("--objective", help="Temperature: nll or brier.")
    ] = "nll",
    beam_width: ComponentBeamWidth = None,
    beam_density: ComponentBeamDensity = None,
    label_map: LabelMap = None,
    sentences_per_doc: SentencesPerDoc = 1,
    batch_size: BatchSize = 128,
    gpu_id: GpuId = -1,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="Data format: auto, conll, spacy or jsonl (gold), or answers (accept/reject "
            "JSONL as teach-update reads, weighted by meta.inclusion_probability).",
        ),
    ] = "auto",
    progress: Progress = None,
    report: Annotated[
        OptPath,
        typer.Option("--report", help="Also write the full report (with reliability) as JSON."),
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Calibrate the beam's entity probabilities and save the calibrated pipeline.

    temperature: probabilities become softmax(score / T) over the final beam, T stored as
    'temperature'. isotonic: a monotone map fitted by isotonic regression, stored as
    'calibration' in the component's cfg. Either is saved with the pipeline and applied to
    entity_scores, doc.spans, annotate and rank. Reports before/after on held-out data.

    --format answers: DATA is yes/no answers (accept/reject JSONL, as teach-update reads);
    each answered span is a labelled candidate scored by the model's beam, weighted by
    1 / meta.inclusion_probability (answers without it count as a uniform sample).
    """
    from beamner.evaluation.calibrate import calibrate, calibrate_answers

    if fmt == "answers":
        with user_errors():
            check_output(report, [model, data, output], overwrite=overwrite)
            result = forward(calibrate_answers, locals(), model, data, output)
        ans = result["answers"]
        typer.echo(
            f"{result['method']} ({result['why']}; {ans['n_accept']} accepted, "
            f"{ans['n_reject']} rejected spans in {ans['texts']} texts, width "
            f"{result['beam_width']}, normalize {result['normalize']})"
        )
        for note in ans["notes"]:
            typer.echo(f"note: {note}")
        typer.echo(
            "on the answers (weighted by 1 / inclusion probability): before -> after, "
            "in-sample and cross-fitted (each text mapped by a fit on the others)"
        )
        cross = result["cross_fitted"] or {}
        for key in ("ece", "ece_p10", "precision_p90"):
            before, after, held = (
                "-" if d.get(key) is None else f"{d[key]:.4f}"
                for d in (result["before"], result["after"], cross)
            )
            typer.echo(f"  {key:<13} {before} -> {after} (cross-fitted {held})")
        typer.echo(f"saved {output}")
        write_json(report, result)
        return
    with user_errors():
        check_output(report, [model, data, eval_data, output], overwrite=overwrite)
        gold_method = "isotonic" if method == "auto" else method  # on gold data, auto: isotonic
        result = forward(calibrate, locals(), model, data, output, method=gold_method)
    held = result["heldout"]
    what = (
        f"temperature {result['temperature']:.4g}"
        if result["method"] == "temperature"
        else "isotonic"
        + (f" (per label: {', '.join(result['per_label'])})" if result["per_label"] else "")
    )
    typer.echo(
        f"{what} (fit on {result['fit']['n_docs']} docs, width {result['beam_width']}, "
        f"normalize {result['normalize']})"
    )
    cover = "" if held["coverage"] is None else f", coverage {held['coverage']:.3f}"
    typer.echo(f"held-out ({held['data']}, {held['n_docs']} docs{cover}):")
    for key in ("ece", "ece_p10", "precision_p90", "brier", "nll"):
        before, after = (
            "-" if held[k][key] is None else f"{held[k][key]:.4f}" for k in ("before", "after")
        )
        typer.echo(f"  {key:<13} {before} -> {after}")
    others = ", ".join(
        f"{m} {v['ece_p10']:.4f}" for m, v in held["methods"].items() if m != result["method"]
    )
    typer.echo(f"  (held-out ECE p>=0.1 with the other method: {others})")
    typer.echo(f"saved {output}")
    write_json(report, result)


def compare_cmd(
    model_a: Annotated[str, typer.Argument(help="Model A (the baseline): package or path.")],
    model_b: Annotated[str, typer.Argument(help="Model B: package or path.")],
    data: Annotated[str, typer.Argument(help="Gold data: CoNLL/IOB, .spacy or JSONL with spans.")],
    label_map: LabelMap = None,
    label_map_a: Annotated[OptStr, model_label_map_option("A", " (PRED=GOLD,...)")] = None,
    label_map_b: Annotated[OptStr, model_label_map_option("B", " (PRED=GOLD,...)")] = None,
    n_resamples: Annotated[
        int, count("--resamples", help="Bootstrap resamples of the documents.")
    ] = 1000,
    confidence: Confidence = 0.95,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
    output: Annotated[OptPath, output_option("Full report as JSON.")] = None,
    sentences_per_doc: SentencesPerDoc = 1,
    batch_size: BatchSize = 128,
    gpu_id: GpuId = -1,
    fmt: GoldFormat = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Compare two models on the same gold data: P/R/F1 per label, B - A with intervals.

    Intervals come from a paired bootstrap over documents (both models on the same resampled
    documents); 'B<=A' is the share of resamples where B's F1 is not above A's.
    """
    from beamner.evaluation.compare import compare

    with user_errors():
        check_output(output, [model_a, model_b, data], overwrite=overwrite)
        maps = model_label_maps(label_map, label_map_a, label_map_b)
        report = forward(
            compare, locals(), model_a, model_b, data, confidence_level=confidence, **maps
        )
    pct = f"{confidence:.0%}"
    typer.echo(
        f"{report['n_docs']} docs, {report['n_gold_entities']} gold entities; A = "
        f"{report['model_a']}, B = {report['model_b']}; {n_resamples} paired bootstrap "
        f"resamples, {pct} intervals"
    )
    typer.echo(
        f"{'label':<16} {'gold':>5} {'P A':>6} {'P B':>6} {'R A':>6} {'R B':>6} {'F1 A':>6} "
        f"{'F1 B':>6}  {'F1 B-A [' + pct + ' CI]':<26} {'B<=A':>5}"
    )
    rows = [("overall", report["overall"]), *sorted(report["labels"].items())]
    for label, row in rows:
        a, b, d = row["a"], row["b"], row["diff"]["f1"]
        interval = f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
        typer.echo(
            f"{label[:16]:<16} {row['n_gold']:>5} {a['precision']:6.3f} {b['precision']:6.3f} "
            f"{a['recall']:6.3f} {b['recall']:6.3f} {a['f1']:6.3f} {b['f1']:6.3f}  "
            f"{interval:<26} {d['b_not_better']:5.3f}"
        )
    write_json(output, report)
    if output is not None:
        typer.echo(f"wrote {output}")


def ab_tasks_cmd(
    model_a: Annotated[str, typer.Argument(help="Model A: package or path.")],
    model_b: Annotated[str, typer.Argument(help="Model B: package or path.")],
    source: Annotated[str, typer.Argument(help="JSONL ({'text': ...}), plain text or .spacy.")],
    output: Annotated[Path, output_option("JSONL tasks to write.")],
    key: Annotated[
        OptPath,
        typer.Option("--key", help="Where the side mapping goes (default: TASKS.key.jsonl)."),
    ] = None,
    label_map: LabelMap = None,
    label_map_a: Annotated[OptStr, model_label_map_option("A")] = None,
    label_map_b: Annotated[OptStr, model_label_map_option("B")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the side shuffle.")] = 0,
    batch_size: BatchSize = 64,
    gpu_id: GpuId = -1,
    fmt: Format = "auto",
    skip_invalid: SkipInvalid = False,
    overwrite: Overwrite = False,
) -> None:
    """Blind A/B tasks: documents where the two models disagree, outputs in shuffled order.

    Each task has two 'options' (one model's entities each); which is which is written only
    to the key file, for ab-score.
    """
    from beamner.evaluation.ab import ab_tasks

    with user_errors():
        maps = model_label_maps(label_map, label_map_a, label_map_b)
        summary = forward(
            ab_tasks, locals(), model_a, model_b, source, output, key_output=key, **maps
        )
    msg = (
        f"{plural(summary.written, 'task')} written ({plural(summary.n_docs, 'doc')}, "
        f"the models agree on {summary.n_agree}); key: {summary.key_path}"
    )
    if summary.invalid_lines:
        msg += f"; {len(summary.invalid_lines)} invalid lines skipped"
    typer.echo(msg, err=True)


def ab_score_cmd(
    tasks: Annotated[str, typer.Argument(help="The tasks written by ab-tasks.")],
    answers: Annotated[str, typer.Argument(help="Answers: JSONL with 'answer' and 'accept'.")],
    key: Annotated[
        OptPath, typer.Option("--key", help="The key file (default: TASKS.key.jsonl).")
    ] = None,
    confidence: Confidence = 0.95,
    output: Annotated[OptPath, output_option("Result as JSON.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Tally blind A/B answers: preferences per model, share for B with a Wilson interval."""
    from beamner.evaluation.ab import ab_score

    with user_errors():
        check_output(output, [tasks, answers, key], overwrite=overwrite)
        result = ab_score(tasks, answers, key=key, confidence_level=confidence)
    models = result["models"]
    wins = result["wins"]
    typer.echo(
        f"{result['n_answered_tasks']} of {result['n_tasks']} tasks answered; "
        f"A ({models.get('A', 'A')}) preferred {wins['A']}, B ({models.get('B', 'B')}) preferred "
        f"{wins['B']}, no preference {result['no_preference']}"
    )
    if result["preference_b"] is None:
        typer.echo("no preferences yet: nothing to score")
    else:
        typer.echo(
            f"preference for B {result['preference_b']:.3f} "
            f"[{result['preference_b_low']:.3f}, {result['preference_b_high']:.3f}] "
            f"({confidence:.0%} Wilson), exact binomial p = {result['p_value']:.4g}"
        )
    write_json(output, result)
