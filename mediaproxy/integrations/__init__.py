"""One module per integration, all behind ``base.Integration``; ``build`` picks by name."""

from __future__ import annotations

from mediaproxy.config import Route
from mediaproxy.integrations.base import Integration
from mediaproxy.integrations.file import FileIntegration

_CLASSES: dict[str, type[Integration]] = {
    "file": FileIntegration,
}


def build(route: Route) -> Integration:
    return _CLASSES[route.integration](route)
