"""``beamner teach``: a local annotation page for the yes/no loop.

:class:`TeachServer` holds the state (a :class:`~beamner.teach.TeachSession`,
the dataset file, the tasks each page is showing, background updates and
saves); :func:`make_app` wraps it in a Starlette app serving the page
(``static/``: plain HTML, CSS and JavaScript) and a small JSON API behind a
:class:`RequestGuard` (other web pages, foreign Host names and oversized
bodies are refused); :func:`serve` runs it with uvicorn. Needs the ``teach`` extra
(``pip install beamner[teach]``: starlette, uvicorn).
"""

# The package's API is the app module's __all__, listed there once.
from beamner.teach.server.app import *  # noqa: F403
from beamner.teach.server.app import __all__ as __all__
