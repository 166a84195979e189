"""One module per integration, all behind ``base.Integration``; ``build`` picks the one that
``config.KINDS`` names for a route.

A module is imported when a route first needs it: a server that only serves files does not
carry the proxy's, the exports' or the functions' code (and sqlite3) in every worker's memory.
"""

from __future__ import annotations

from mediaproxy.config import KINDS, Route, resolve
from mediaproxy.integrations.base import Integration


def build(route: Route) -> Integration:
    integration_class: type[Integration] = resolve(KINDS[route.integration].integration)
    return integration_class(route)
