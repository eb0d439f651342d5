"""``beamner teach-update`` and ``beamner teach`` (the annotation page)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from beamner.cli.options import (
    BeamDensity,
    BeamWidth,
    Format,
    Model,
    OptPath,
    fail,
)

#: beamner.teach.session.DEFAULT_LEARN_RATE (not imported here: the CLI loads lazily).
TEACH_LR_HELP = (
    "Step of the updates. 2e-4, not the pipeline's usual 1e-3, which made a small WNUT-17 "
    "model collapse in experiments/teach_simulation.py (README, 'Learning from yes/no answers')."
)


def teach_update_cmd(
    model: Model,
    answers: Annotated[
        str, typer.Argument(help="JSONL answers (this package's page, Prodigy db-out, ...).")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to save the updated pipeline.")
    ],
    n_epochs: Annotated[int, typer.Option("--n-epochs", "-n", min=1, help="Epochs.")] = 5,
    holdout: Annotated[
        float,
        typer.Option("--holdout", min=0.0, max=0.99, help="Share of the texts held out."),
    ] = 0.2,
    update_batch: Annotated[
        int, typer.Option("--update-batch", min=1, help="Texts per beam update.")
    ] = 16,
    beam_width: BeamWidth = 16,
    beam_density: BeamDensity = 0.0001,
    learn_rate: Annotated[float, typer.Option("--learn-rate", min=0.0, help=TEACH_LR_HELP)] = 2e-4,
    drop: Annotated[float, typer.Option("--dropout", min=0.0, max=1.0)] = 0.1,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", min=1, help="Save every N update batches.")
    ] = 20,
) -> None:
    """Update a pipeline's NER from binary (accept/reject/ignore) answers with beam updates.

    Accepted spans are gold entities (other tokens unknown), rejected spans negative examples.
    Reports how often the model's prediction (p >= 0.5) matches the held-out answers, before
    and after each epoch. Re-running with the same OUT resumes an interrupted run.
    """
    from beamner.teach.batch import teach_update

    try:
        result = teach_update(
            model,
            answers,
            output,
            n_epochs=n_epochs,
            holdout=holdout,
            update_batch=update_batch,
            beam_width=beam_width,
            beam_density=beam_density,
            learn_rate=learn_rate,
            drop=drop,
            seed=seed,
            checkpoint_every=checkpoint_every,
            log=lambda msg: typer.echo(msg, err=True),
        )
    except (ValueError, OSError) as err:
        fail(err)
        return
    merge = result["merge"]
    typer.echo(
        f"{merge['n_answers']} answers ({merge['n_accept']} accept, {merge['n_reject']} reject, "
        f"{merge['n_ignore']} ignore; {merge['n_overridden']} overridden by a later answer, "
        f"{merge['n_conflicts']} conflicting accepts dropped, {merge['n_preset']} spans on "
        f"preset entities and {merge['n_unreachable']} no parse can follow not trained on): "
        f"{result['n_train_texts']} texts "
        f"trained, {result['n_heldout_texts']} held out"
    )
    for name, key in (("before", "before"), ("after", "after")):
        held = result.get(key)
        if held and held["accuracy"] is not None:
            typer.echo(f"held-out agreement {name}: {held['accuracy']:.3f} ({held['n']} spans)")
    typer.echo(f"saved {output}")


def teach_cmd(
    model: Model,
    source: Annotated[
        str, typer.Argument(help="Unlabelled text: JSONL ({'text': ...}), plain text or .spacy.")
    ],
    label: Annotated[
        str, typer.Option("--label", "-l", help="Comma-separated NER labels to suggest.")
    ],
    dataset: Annotated[
        Path,
        typer.Option("--dataset", "-d", help="Answers JSONL: appended to; answered tasks skipped."),
    ],
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (default: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535)] = 8080,
    output: Annotated[
        OptPath,
        typer.Option(
            "--output", "-o", help="Where the updated model is saved (default DATASET-model)."
        ),
    ] = None,
    update_every: Annotated[
        int, typer.Option("--update-every", min=1, help="Update the model every N answers.")
    ] = 10,
    save_every: Annotated[
        int, typer.Option("--save-every", min=1, help="Save the model every M answers.")
    ] = 100,
    order: Annotated[str, typer.Option("--order", help="uncertainty or random.")] = "uncertainty",
    buffer: Annotated[int, typer.Option("--buffer", min=1, help="Look-ahead tasks.")] = 64,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", "-b", min=1, help="Texts read per task served (more: more selective)."
        ),
    ] = 16,
    beam_width: BeamWidth = 16,
    beam_density: BeamDensity = 0.0001,
    threshold: Annotated[
        float,
        typer.Option("--threshold", "-t", min=0.0, max=1.0, help="Suggest spans with p >= this."),
    ] = 0.05,
    learn_rate: Annotated[float, typer.Option("--learn-rate", min=0.0, help=TEACH_LR_HELP)] = 2e-4,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    fmt: Format = "auto",
) -> None:
    """Annotate on a local web page: accept or reject one suggested entity at a time.

    Keys: a accept, x reject, space ignore, backspace undo. Every answer is appended to DATASET
    at once; the model learns from the answers in the background (beam updates) and is saved
    every M answers and on exit (Ctrl-C). Restart with the same DATASET to carry on.
    """
    try:
        from beamner.engine.pipes import load_model
        from beamner.teach.server import TeachServer, bind_socket, serve
        from beamner.teach.session import TeachSession

        labels = [x.strip() for x in label.split(",") if x.strip()]
        sock = bind_socket(host, port)  # first: a taken port fails before the model loads
        nlp = load_model(model)
        session = TeachSession(
            nlp,
            source,
            labels,
            order=order,
            buffer=buffer,
            batch_size=batch_size,
            beam_width=beam_width,
            beam_density=beam_density,
            threshold=threshold,
            learn_rate=learn_rate,
            seed=seed,
            fmt=fmt,
        )
        out = output if output is not None else dataset.with_name(f"{dataset.stem}-model")
        server = TeachServer(
            session,
            dataset,
            update_every=update_every,
            save_every=save_every,
            output=out,
            model_name=model,
            labels=labels,
        )
    except (ValueError, OSError, ImportError) as err:
        fail(err)
        return
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    typer.echo(
        f"beamner teach: http://{shown}:{bound_port}/  ({server.dataset.n_previous} answers "
        f"already in {dataset}; model saved to {out}; Ctrl-C to stop)",
        err=True,
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"note: listening on {host}: others on the network can reach the page", err=True)
    serve(server, sock)
    typer.echo(
        f"stopped; {server.stats()['n_answers']} answers this run; model saved to {out}", err=True
    )
