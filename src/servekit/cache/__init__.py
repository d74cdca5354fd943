"""The response cache, opt-in per model (``cache: {enabled: true}`` in config.yaml).

``ResponseCache`` keys answers by model version and inputs and turns every cache failure
into a miss; backends: ``MemoryBackend`` (an LRU bounded in bytes, per process) and
``RedisBackend`` (``--cache-url redis://host:port/db``, shared, with a TTL).
"""

from servekit.cache.memory import MemoryBackend
from servekit.cache.redis_backend import RedisBackend
from servekit.cache.response import CacheBackend, ResponseCache, create_cache

__all__ = ["CacheBackend", "MemoryBackend", "RedisBackend", "ResponseCache", "create_cache"]
