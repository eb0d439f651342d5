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
    Normalize,
    OptPath,
    Overwrite,
    count,
    forward,
    fraction,
    output_option,
    user_errors,
)
from beamner.engine.settings import CLI_NORMALIZE, DEFAULT_LEARN_RATE, BeamSettings

#: beamner's default width and density (engine/settings.py says why).
_BEAM = BeamSettings()

SEED_HELP = (
    "Seed of everything random (task order, epoch order, dropout): the same inputs and seed "
    "give the same model."
)
TEACH_LR_HELP = (
    "Step of the updates. 5e-5, not the pipeline's usual 1e-3: larger steps made en_core_web_sm "
    "forget its home domain (experiments/teach_simulation.py)."
)
#: teach-update's --overwrite: its OUT may be its own checkpoint, resumed unless this is given.
UPDATE_OVERWRITE_HELP = (
    "Start afresh over an existing OUT: a folder beamner did not write is "
    "otherwise refused, a teach-update checkpoint otherwise resumed."
)
LearnRate = Annotated[float, typer.Option("--learn-rate", min=0.0, help=TEACH_LR_HELP)]
Seed = Annotated[int, typer.Option("--seed", help=SEED_HELP)]


def _echo_err(message: str) -> None:
    typer.echo(message, err=True)


def teach_update_cmd(
    model: Model,
    answers: Annotated[
        str, typer.Argument(help="JSONL answers (this package's page, Prodigy db-out, ...).")
    ],
    output: Annotated[Path, output_option("Where to save the updated pipeline.")],
    n_epochs: Annotated[int, count("--n-epochs", "-n", help="Epochs.")] = 5,
    holdout: Annotated[
        float,
        typer.Option("--holdout", min=0.0, max=0.99, help="Share of the texts held out."),
    ] = 0.2,
    update_batch: Annotated[int, count("--update-batch", help="Texts per beam update.")] = 16,
    beam_width: BeamWidth = _BEAM.width,
    beam_density: BeamDensity = _BEAM.density,
    normalize: Normalize = CLI_NORMALIZE,
    learn_rate: LearnRate = DEFAULT_LEARN_RATE,
    drop: Annotated[float, fraction("--dropout")] = 0.1,
    seed: Seed = 0,
    checkpoint_every: Annotated[
        int, count("--checkpoint-every", help="Save every N update batches.")
    ] = 20,
    overwrite: Annotated[bool, typer.Option("--overwrite", help=UPDATE_OVERWRITE_HELP)] = False,
) -> None:
    """Update a pipeline's NER from binary (accept/reject/ignore) answers with beam updates.

    Accepted spans are gold entities (other tokens unknown), rejected spans negative examples.
    Reports how often the model's prediction (p >= 0.5) matches the held-out answers, before
    and after each epoch. Re-running with the same OUT resumes an interrupted run. The saved
    pipeline serves the beam it was measured with (--beam-width, --beam-density, --normalize).
    """
    from beamner.io.records import plural
    from beamner.teach.batch import teach_update

    with user_errors():
        result = forward(teach_update, locals(), model, answers, output, log=_echo_err)
    merge = result["merge"]
    typer.echo(
        f"{plural(merge['n_answers'], 'answer')} ({merge['n_accept']} accept, "
        f"{merge['n_reject']} reject, {merge['n_ignore']} ignore; "
        f"{merge['n_overridden']} overridden by a later answer, "
        f"{plural(merge['n_conflicts'], 'conflicting accept')} dropped, "
        f"{plural(merge['n_preset'], 'span')} on preset entities and "
        f"{merge['n_unreachable']} no parse can follow not trained on): "
        f"{plural(result['n_train_texts'], 'text')} trained, {result['n_heldout_texts']} held out"
    )
    for name, key in (("before", "before"), ("after", "after")):
        held = result.get(key)
        if held and held["accuracy"] is not None:
            typer.echo(
                f"held-out agreement {name}: {held['accuracy']:.3f} ({plural(held['n'], 'span')})"
            )
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
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Another Host name the page may be reached by (repeatable), e.g. this machine's "
            "network name with --host 0.0.0.0; requests naming any other host are refused.",
        ),
    ] = None,
    output: Annotated[
        OptPath, output_option("Where the updated model is saved (default DATASET-model).")
    ] = None,
    update_every: Annotated[
        int, count("--update-every", help="Update the model every N answers.")
    ] = 10,
    save_every: Annotated[int, count("--save-every", help="Save the model every M answers.")] = 100,
    order: Annotated[
        str,
        typer.Option(
            "--order",
            help="uncertainty (most uncertain first), sample (uncertainty sampling that records "
            "each task's inclusion probability: unbiased precision estimates and calibration "
            "from the answers) or random.",
        ),
    ] = "uncertainty",
    buffer: Annotated[int, count("--buffer", help="Look-ahead tasks.")] = 64,
    batch_size: Annotated[
        int, count("--batch-size", "-b", help="Texts read per task served (more: more selective).")
    ] = 16,
    beam_width: BeamWidth = _BEAM.width,
    beam_density: BeamDensity = _BEAM.density,
    normalize: Normalize = CLI_NORMALIZE,
    threshold: Annotated[
        float, fraction("--threshold", "-t", help="Suggest spans with p >= this.")
    ] = 0.05,
    learn_rate: LearnRate = DEFAULT_LEARN_RATE,
    seed: Seed = 0,
    fmt: Format = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Annotate on a local web page: accept or reject one suggested entity at a time.

    Keys: a accept, x reject, space ignore, backspace undo. Every answer is appended to DATASET
    at once; the model learns from the answers in the background (beam updates) and is saved
    every M answers and on exit (Ctrl-C). Restart with the same DATASET to carry on.
    """
    with user_errors():
        from beamner.engine.pipes import load_model
        from beamner.io.atomic import OutputError, check_output, on_disk, same_file
        from beamner.io.records import plural
        from beamner.teach.server import TeachServer, bind_socket, serve
        from beamner.teach.session import TeachSession

        labels = [x.strip() for x in label.split(",") if x.strip()]
        out = output if output is not None else dataset.with_name(f"{dataset.stem}-model")
        # Before the server starts: the saves must not replace the dataset, the source,
        # the model or a folder beamner did not write.
        if dataset.exists() and dataset.is_dir():
            raise ValueError(f"--dataset {dataset} is a folder; give a JSONL file")
        if Path(model).exists() and same_file(out, model):
            raise OutputError(
                f"the model would be saved to {out}, the model being taught; to carry on from "
                "it, give --output a new folder"
            )
        check_output(out, [dataset, *on_disk(source, model)], overwrite=overwrite, folder=True)
        sock = bind_socket(host, port)  # before the model loads: a taken port fails fast
        nlp = load_model(model)
        # The task stream's options: TeachSession takes them as **stream_options.
        stream = dict(
            order=order, buffer=buffer, batch_size=batch_size, threshold=threshold, fmt=fmt
        )
        session = forward(TeachSession, locals(), nlp, source, labels, **stream)
        server = TeachServer(
            session,
            dataset,
            update_every=update_every,
            save_every=save_every,
            output=out,
            model_name=model,
            labels=labels,
        )
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    typer.echo(
        f"beamner teach: http://{shown}:{bound_port}/  "
        f"({plural(server.dataset.n_previous, 'answer')} already in {dataset}; "
        f"model saved to {out}; Ctrl-C to stop)",
        err=True,
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"note: listening on {host}: others on the network can reach the page", err=True)
    serve(server, sock, allow_hosts=[host, *(allow_host or [])])
    n_answers = plural(server.stats()["n_answers"], "answer")
    saved = f"model saved to {out}" if server.n_saves else "the model was not saved"
    typer.echo(f"stopped; {n_answers} this run; {saved}", err=True)
