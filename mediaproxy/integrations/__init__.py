"""One module per integration, all behind ``base.Integration``; ``build`` picks by name.

A module is imported when a route first needs it: a server that only serves files does not
carry the proxy's, the exports' or the functions' code (and sqlite3) in every worker's memory.
"""

from __future__ import annotations

import importlib

from mediaproxy.config import Route
from mediaproxy.integrations.base import Integration

_CLASSES: dict[str, str] = {
    "file": "mediaproxy.integrations.file:FileIntegration",
    "http_proxy": "mediaproxy.integrations.http_proxy.route:HttpProxyIntegration",
    "csv_export": "mediaproxy.integrations.csv_export:CsvExportIntegration",
    "function": "mediaproxy.integrations.function:FunctionIntegration",
    "s3": "mediaproxy.integrations.s3.integration:S3Integration",
}


def build(route: Route) -> Integration:
    module_name, class_name = _CLASSES[route.integration].split(":")
    integration_class: type[Integration] = getattr(importlib.import_module(module_name),
                                                   class_name)
    return integration_class(route)
