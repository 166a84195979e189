"""mediaproxy: a Tornado gateway that streams media, files and exports as bytes arrive."""

__version__ = "0.1.0"
