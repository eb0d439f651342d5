"""The ``beamner`` command."""

from beamner.cli.app import app, main

__all__ = ["app", "main"]
