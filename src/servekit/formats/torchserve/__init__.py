"""TorchServe archives (``.mar``) served by servekit, their handlers unchanged.

Entry points for the wiring (management API, ``serve --models``, TorchServe-style routes):

- ``looks_like_mar(path)``: whether a file or folder has a TorchServe archive's layout (cheap);
- ``read_mar(path, limits)``: check an archive (``.mar`` zip, ``.tar.gz`` or ``no-archive``
  folder) and read its manifest and model_config.yaml, writing nothing;
- ``unpack_mar(path, destination, limits)``: the same, unpacked safely into a new folder
  (MAR-INF included): the handler's ``model_dir``, e.g. a servekit model's version folder;
- ``TorchServeModel.model_config(name=, batch_size=, max_batch_delay_ms=, response_timeout_s=,
  initial_workers=)``: servekit's ModelConfig (``runtime: torchserve``), with a registration's
  values applied as TorchServe applies them;
- the ``torchserve`` runtime (``TorchServeRuntime``, in servekit's runtime table): its request
  parameters (``CONTENT_TYPE``, ``HEADERS``, ``EXPLAIN``) and outputs are listed in
  ``runtime``'s docstring; ``HandlerFailed`` carries TorchServe's status and message for a
  failed request.
"""

from servekit.formats.torchserve.archive import TorchServeModel, looks_like_mar, read_mar, unpack_mar
from servekit.formats.torchserve.manifest import MarManifest, YamlSettings, parse_manifest, parse_model_yaml
from servekit.formats.torchserve.protocol import HandlerFailed

__all__ = [
    "HandlerFailed",
    "MarManifest",
    "TorchServeModel",
    "YamlSettings",
    "looks_like_mar",
    "parse_manifest",
    "parse_model_yaml",
    "read_mar",
    "unpack_mar",
]
