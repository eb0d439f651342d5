"""The ``beamner`` command (``python -m beamner``). Each command is a thin wrapper
around a Python function (in :mod:`beamner.jobs`, :mod:`beamner.evaluation`,
:mod:`beamner.teach`, :mod:`beamner.cluster`); the commands live in
:mod:`beamner.cli.jobs`, :mod:`beamner.cli.evaluation` and :mod:`beamner.cli.teach`,
their shared options in :mod:`beamner.cli.options`."""

from __future__ import annotations

import sys

import typer

from beamner.cli import answers, evaluation, jobs, teach

app = typer.Typer(
    name="beamner",
    help="Native beam search for spaCy NER: annotate, evaluate, calibrate, rank, compare, teach.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Registered in the order --help lists them.
app.command("annotate")(jobs.annotate_cmd)
app.command("evaluate")(evaluation.evaluate_cmd)
app.command("calibrate")(evaluation.calibrate_cmd)
app.command("threshold")(answers.threshold_cmd)
app.command("rank")(jobs.rank_cmd)
app.command("compare")(evaluation.compare_cmd)
app.command("ab-tasks")(evaluation.ab_tasks_cmd)
app.command("ab-score")(evaluation.ab_score_cmd)
app.command("teach-update")(teach.teach_update_cmd)
app.command("teach")(teach.teach_cmd)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="beamner")


if __name__ == "__main__":  # pragma: no cover
    main()
