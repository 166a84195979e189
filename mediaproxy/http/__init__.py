"""Pure HTTP semantics: no sockets, no event loop, no file system."""
