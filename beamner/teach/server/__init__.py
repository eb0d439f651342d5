"""``beamner teach``: a local annotation page for the yes/no loop.

:class:`TeachServer` holds the state (a :class:`~beamner.teach.TeachSession`,
the dataset file, the tasks each page is showing, background updates and
saves); :func:`make_app` wraps it in a Starlette app serving the page
(``static/``: plain HTML, CSS and JavaScript) and a small JSON API behind a
:class:`RequestGuard` (other web pages, foreign Host names and oversized
bodies are refused); :func:`serve` runs it with uvicorn. Needs the ``teach`` extra
(``pip install beamner[teach]``: starlette, uvicorn).
"""

from beamner.teach.server.app import (
    MAX_BODY,
    DatasetFile,
    RequestError,
    RequestGuard,
    TeachServer,
    allowed_hosts,
    bind_socket,
    make_app,
    serve,
    uvicorn_server,
)

__all__ = [
    "MAX_BODY",
    "DatasetFile",
    "RequestError",
    "RequestGuard",
    "TeachServer",
    "allowed_hosts",
    "bind_socket",
    "make_app",
    "serve",
    "uvicorn_server",
]
