"""The ``http_proxy`` integration: ``route`` (the integration, one request to the origin and
back), ``relay`` (the response read as fast as the client drains it) and ``pool`` (keep-alive
connections to the origin)."""
