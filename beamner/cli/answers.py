"""``beamner threshold``: guaranteed precision from yes/no answers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from beamner.cli.options import (
    NORMALIZE_DEFAULT,
    BatchSize,
    ComponentBeamDensity,
    ComponentBeamWidth,
    Format,
    GpuId,
    Model,
    OptPath,
    OptStr,
    Overwrite,
    fail,
    forward,
    fraction,
    output_option,
    user_errors,
    write_json,
)
from beamner.io.atomic import check_output


def threshold_cmd(
    model: Model,
    answers: Annotated[
        str, typer.Argument(help="Yes/no answers: accept/reject JSONL, as teach-update reads.")
    ],
    output: Annotated[Path, output_option("Where to save the pipeline serving the threshold.")],
    precision: Annotated[
        float, fraction("--precision", help="Target precision (0 < P < 1).")
    ] = 0.9,
    confidence: Annotated[
        float, fraction("--confidence", help="Confidence of the guarantee (0 < C < 1).")
    ] = 0.9,
    normalize: Annotated[
        str,
        typer.Option("--normalize", help="Beam normalization (stored): local or none."),
    ] = NORMALIZE_DEFAULT,
    beam_width: ComponentBeamWidth = None,
    beam_density: ComponentBeamDensity = None,
    batch: Annotated[
        OptStr,
        typer.Option(
            "--batch",
            help="Texts about to be labelled (JSONL/text, as annotate reads): guarantee the "
            "precision realized on them, not only the stream's.",
        ),
    ] = None,
    batch_format: Format = "auto",
    batch_size: BatchSize = 128,
    gpu_id: GpuId = -1,
    report: Annotated[
        OptPath, typer.Option("--report", help="Also write the full result as JSON.")
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Certify the lowest probability threshold whose entities have precision >= --precision
    with confidence --confidence, from the answers alone, and save the pipeline serving it.

    Each answered span is scored by the pipeline as it serves probabilities (its calibration
    applied: fit one first with calibrate --format answers) and weighted by
    1 / meta.inclusion_probability. Thresholds 0.99, 0.98, ... are tested from high to low
    with a one-sided Clopper-Pearson bound (Kish's effective sample size for weighted
    answers), stopping at the first failure (Learn-then-Test fixed sequence); with --batch,
    the precision realized on those texts is what is guaranteed. The saved
    pipeline's doc.ents hold only the entities with p >= the threshold (decode precision).
    When no threshold can be certified, nothing is written and the exit status is 1.
    """
    from beamner.evaluation.threshold import NoThresholdError, threshold

    with user_errors():
        check_output(report, [model, answers, output, batch], overwrite=overwrite)
        try:
            result = forward(threshold, locals(), model, answers, output)
        except NoThresholdError as err:
            for note in err.result["notes"]:
                typer.echo(f"note: {note}", err=True)
            write_json(report, err.result)
            fail(err)
    for note in result["notes"]:
        typer.echo(f"note: {note}")
    recall = result["expected_recall"]
    typer.echo(
        f"threshold {result['threshold']:g}: precision >= {precision:g} with confidence "
        f"{confidence:g} ({result['n_answers']} answered spans above it, effective "
        f"{result['effective_n']:.1f}; their precision {result['precision']:.3f}, lower bound "
        f"{result['lower_bound']:.3f})"
    )
    typer.echo(
        "expected recall (weighted share of accepted answers above the threshold): "
        + ("-" if recall is None else f"{recall:.3f}")
    )
    if result["batch"] is not None:
        typer.echo(
            f"guaranteed on the batch {result['batch']['data']}: "
            f"{result['batch']['n_entities']} entities above the threshold"
        )
    typer.echo(f"saved {output}")
    write_json(report, result)
