"""kokpit.portal: the web portal (Sigma Boss) — the fleet in a browser, the controlled change process, and the
adapter that turns legacy imperative commands into declarative changes.

Server-rendered pages (starlette + jinja2, templates and a small script shipped in the package: no Node
build), live updates from watches over server-sent events, and the same data as JSON under ``/api/v1``.  The
portal acts as the logged-in user against the meta API server, so RBAC there decides what anyone may do.
"""

from kokpit.portal._app import Portal, build_app
from kokpit.portal._cache import FleetCache, Hub
from kokpit.portal._server import PortalOptions, PortalServer, check_address, run_portal

__all__ = ["FleetCache", "Hub", "Portal", "PortalOptions", "PortalServer", "build_app", "check_address",
           "run_portal"]
