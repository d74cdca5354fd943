"""servekit's stand-in for TorchServe's ``ts`` package, given only to handlers loaded from a
TorchServe archive (see ``servekit.formats.torchserve.importer``: a handler's ``import ts...``
resolves here; ``import ts`` anywhere else finds whatever is installed, or nothing).

It follows the handler-facing API of TorchServe 0.12 (``__version__`` is that API level, which
handlers read as ``context.system_properties["server_version"]``). Written for servekit; no
TorchServe code is copied.
"""

__version__ = "0.12.0"
