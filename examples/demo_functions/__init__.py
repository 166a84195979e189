"""Example handlers for mediaproxy's function integration (see examples/README.md)."""
