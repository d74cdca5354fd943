"""Foreign model layouts, read at the edge and turned into servekit's own ModelConfig and runtime.

One sub-package per layout: ``torchserve`` (.mar archives and their handlers), ``triton``
(config.pbtxt repositories and the python backend), ``mlserver`` (model-settings.json). A
compatibility module a foreign model imports is given to that model only, never installed
globally and never shadowing a real installed package; nothing past this edge knows which
layout a model came from.
"""
