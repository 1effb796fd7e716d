"""The HTTP front door: sandboxd's own ``/v1`` API, and Judge0 CE- and Piston v2-compatible
endpoints, all over the job service (hypercorn with its trio worker, starlette).

Each API is a module of this package exporting ``routes(ctx) -> list[BaseRoute]``;
``_context.HttpContext`` is what they share. docs/http.md describes the APIs.
"""

from ._app import APIS, HttpFront
from ._app import bind as bind_http
from ._route import Router

__all__ = ["APIS", "HttpFront", "Router", "bind_http"]
