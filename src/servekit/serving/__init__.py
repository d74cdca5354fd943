"""What answers a request, and who owns it.

- ``core``: builds, starts and stops the registry, data plane, simple API, cache and poller;
- ``dataplane``: the Open Inference Protocol and repository extension, the only thing transports call;
- ``simple``: the simple API (/predict, /health, ModelService) over the data plane;
- ``registry``: every model by name; loads, zero-downtime swaps, resolution and routing;
- ``entry``: one model (folder, config, versions, state) and the model folder rules;
- ``version``: loading one version (runtimes, signature, batcher) and what it was loaded from;
- ``traffic``: traffic splits and sticky routing keys (pure);
- ``polling``: loading and unloading what changed on disk;
- ``triton``: Triton's model configuration and statistics documents of a loaded version.
"""
