"""The Tornado wiring: the application, the one request handler, admission and access
control, the worker processes and the event loop. Feeds ``ops``; nothing below imports it."""
