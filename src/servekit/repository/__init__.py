"""Model repository: folders of numbered versions, their loading and resolution.

- ``entry``: one model (folder, config, versions, state) and the model folder rules;
- ``version``: loading one version (runtimes, signature, batcher) and what it was loaded from;
- ``registry``: every model by name; loads, zero-downtime swaps, resolution and routing;
- ``traffic``: traffic splits and sticky routing keys (pure);
- ``archive``: packing, checking and safely unpacking model archives;
- ``sources`` and ``store``: where archives may come from, and the one folder servekit writes to;
- ``manager``: what the management API does, without HTTP;
- ``polling``: loading and unloading what changed on disk.
"""
