"""The peer servers servekit is measured against, one module each, all behind ``base.Peer``.

Used by ``benchmarks/peers_compare.py``. Every peer gets its own virtual environment, built
from PyPI by ``base.ensure_venv``; the model code every peer runs is ``model_fn.py``, so
the peers differ only in the server around the same computation.
"""
