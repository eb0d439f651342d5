"""MkDocs hook: the command-line reference is the commands' own ``--help``.

A page holding the line ``<!-- beamner-cli-help -->`` gets, in its place, the help
of ``beamner`` and of every subcommand, rendered by click's plain formatter (typer's
boxes do not survive a code block), so the reference cannot drift from the code.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

MARKER = "<!-- beamner-cli-help -->"
WIDTH = 80


def _click_core(command: Any) -> Any:
    """The click ``core`` module the command is built on (typer >= 0.2x vendors its own click)."""
    for cls in type(command).__mro__:
        if (
            cls.__name__ == "Command"
            and cls.__module__.endswith("core")
            and "typer.core" != cls.__module__
        ):
            return sys.modules[cls.__module__]
    raise TypeError(f"{type(command)} is not a click command")


def _help(core: Any, command: Any, ctx: Any) -> str:
    formatter = ctx.make_formatter()
    # click's own format_help, not typer's rich override (boxes and colours).
    core.Command.format_help(command, ctx, formatter)
    return formatter.getvalue().rstrip()


def cli_reference() -> str:
    """Markdown: one section per command, its --help in a text block."""
    from beamner.cli.app import app

    group: Any = typer.main.get_command(app)
    core = _click_core(group)
    root = core.Context(group, info_name="beamner", terminal_width=WIDTH, max_content_width=WIDTH)
    parts = ["## `beamner`", "", "```text", _help(core, group, root), "```", ""]
    for name in group.list_commands(root):
        command = group.commands[name]
        ctx = core.Context(
            command, info_name=name, parent=root, terminal_width=WIDTH, max_content_width=WIDTH
        )
        parts += [f"## `beamner {name}`", "", "```text", _help(core, command, ctx), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown
