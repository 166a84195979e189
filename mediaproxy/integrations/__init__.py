"""One module per integration, all behind ``base.Integration``; ``build`` picks by name."""

from __future__ import annotations

from mediaproxy.config import Route
from mediaproxy.integrations.base import Integration
from mediaproxy.integrations.csv_export import CsvExportIntegration
from mediaproxy.integrations.file import FileIntegration
from mediaproxy.integrations.function import FunctionIntegration
from mediaproxy.integrations.http_proxy import HttpProxyIntegration

_CLASSES: dict[str, type[Integration]] = {
    "file": FileIntegration,
    "http_proxy": HttpProxyIntegration,
    "csv_export": CsvExportIntegration,
    "function": FunctionIntegration,
}


def build(route: Route) -> Integration:
    return _CLASSES[route.integration](route)
