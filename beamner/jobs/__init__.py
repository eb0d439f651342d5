"""Streaming jobs over files of records: ``annotate`` and ``rank``."""
