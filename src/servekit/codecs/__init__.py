"""Codecs: wire formats <-> servekit types. Pure: they parse and build bytes, no I/O."""
