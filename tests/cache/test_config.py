from __future__ import annotations

import pytest
from pydantic import ValidationError

from servekit.cache import MemoryBackend, RedisBackend, create_cache
from servekit.config import ServerSettings, parse_model_config
from servekit.errors import ConfigError


def test_the_cache_is_off_unless_a_model_asks() -> None:
    assert not parse_model_config("", "config.yaml").cache.enabled
    config = parse_model_config("cache: {enabled: true, ttl_s: null}\n", "config.yaml")
    assert config.cache.enabled and config.cache.ttl_s is None
    with pytest.raises(ConfigError, match=r"cache\.ttl_s"):
        parse_model_config("cache: {enabled: true, ttl_s: 0}\n", "m/config.yaml")


def test_cache_urls_choose_the_backend() -> None:
    memory = create_cache(ServerSettings(cache_max_bytes=1234))
    assert isinstance(memory.backend, MemoryBackend) and memory.backend.max_bytes == 1234
    redis = create_cache(ServerSettings(cache_url="redis://127.0.0.1:1/0", cache_namespace="fixed"))
    assert isinstance(redis.backend, RedisBackend) and redis.namespace == "fixed"
    with pytest.raises(ValidationError, match="cache URL"):
        ServerSettings(cache_url="memcached://127.0.0.1:11211")
