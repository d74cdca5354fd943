"""The response cache over real ports, in Redis (a real redis-server, started and stopped by PID)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from tests.cache.redis_process import RedisProcess
from tests.gate import wait_for

from .harness import ServerProcess
from .scrape import scrape

HANDLER = """
import os

import numpy as np

from servekit import BaseHandler


class Scale(BaseHandler):
    def inference(self, inputs):
        pid = np.full((len(inputs["x"]), 1), os.getpid(), dtype=np.int64)
        return {"y": inputs["x"] * %s, "pid": pid}
"""


def write_scale_model(root: Path, scale: float) -> Path:
    """``cached``: y = x * scale, and the PID of the worker that ran it; answers cached in Redis."""
    model_dir = root / "cached"
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.yaml").write_text(yaml.safe_dump({
        "max_batch_size": 8,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]},
                    {"name": "pid", "datatype": "INT64", "shape": [-1, 1]}],
        "cache": {"enabled": True, "ttl_s": 60},
    }))
    handler = model_dir / "handler.py"
    handler.write_text(HANDLER % scale)
    stamp = time.time_ns() + int(scale * 1e9)  # a new mtime on every rewrite, however coarse the clock
    os.utime(handler, ns=(stamp, stamp))
    return model_dir


def _body(*values: float) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, len(values)], "data": list(values)}]}


def _y(client: httpx.Client, *values: float) -> list[float]:
    response = client.post("/v2/models/cached/infer", json=_body(*values))
    assert response.status_code == 200, response.text
    y: list[float] = next(o["data"] for o in response.json()["outputs"] if o["name"] == "y")
    return y


def _batches(client: httpx.Client) -> int:
    [stats] = client.get("/v2/models/cached/stats").json()["model_stats"]
    return int(stats["execution_count"])


def _hits_by_process(server: ServerProcess) -> set[str]:
    """PIDs of the processes whose access log has a cache hit (text lines: "... INFO PID servekit.access: ...")."""
    return {line.split(" servekit.access: ")[0].split()[-1] for line in server.log().splitlines()
            if " servekit.access: " in line and line.endswith("cache=hit")}


def test_hits_reloads_and_a_dead_redis(tmp_path: Path, redis_server: RedisProcess) -> None:
    repository = tmp_path / "models"
    write_scale_model(repository, 2)
    server = ServerProcess(repository, tmp_path / "server.log", "--cache-url", redis_server.url,
                           "--repository-control", "open")
    server.start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            assert _y(client, 1, 2) == [2, 4]
            assert _y(client, 1, 2) == [2, 4]
            assert _batches(client) == 1  # the second answer came from Redis, not the model
            metrics = scrape(server.metrics_url)
            assert metrics.total("servekit_cache_hits_total", model="cached", version="1") == 1
            assert metrics.total("servekit_cache_misses_total", model="cached", version="1") == 1

            write_scale_model(repository, 10)  # version 1 again, from new files
            assert client.post("/v2/repository/models/cached/load").status_code == 200
            assert _y(client, 1, 2) == [10, 20]  # never the answer of the copy it replaced
            assert _y(client, 1, 2) == [10, 20]
            assert _batches(client) == 1  # the new copy's first answer is cached in turn

            redis_server.stop()
            answers = [_y(client, 3, n) for n in range(5)]
            assert answers == [[30, 10 * n] for n in range(5)]  # misses, answered by the model
            metrics = scrape(server.metrics_url)
            assert metrics.total("servekit_cache_errors_total") >= 1
            assert metrics.total("servekit_requests_total", model="cached", outcome="success") == 9
    finally:
        assert server.stop() == 0
    assert server.log().count("response cache (redis) failed") == 1, server.log()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux to run --workers")
def test_workers_share_answers_through_redis(tmp_path: Path, redis_server: RedisProcess) -> None:
    write_scale_model(tmp_path / "models", 2)
    server = ServerProcess(tmp_path / "models", tmp_path / "server.log", "--workers", "2",
                           "--cache-url", redis_server.url)
    server.start()
    try:
        def ask(values: tuple[float, float]) -> tuple[list[float], int]:
            with httpx.Client(base_url=server.base_url, timeout=30) as client:  # a new connection each time
                response = client.post("/v2/models/cached/infer", json=_body(*values))
                assert response.status_code == 200, response.text
                outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
                return outputs["y"], outputs["pid"][0]

        first, computed_by = ask((1.0, 2.0))
        stored = redis.Redis.from_url(redis_server.url)
        try:  # the store to Redis runs after the answer: wait until it is there
            wait_for(lambda: stored.dbsize() >= 1, "the answer stored in Redis")
        finally:
            stored.close()
        answers: list[tuple[list[float], int]] = []
        deadline = time.monotonic() + 20
        with ThreadPoolExecutor(8) as pool:
            while len(_hits_by_process(server)) < 2 and time.monotonic() < deadline:
                answers.extend(pool.map(ask, [(1.0, 2.0)] * 16))
        assert len(_hits_by_process(server)) == 2, "one worker answered every request"
        assert first == [2, 4] and all(y == [2, 4] for y, _ in answers)
        assert {pid for _, pid in answers} == {computed_by}  # both workers answer with the first one's result
        metrics = scrape(server.metrics_url)
        assert metrics.total("servekit_batch_size_count", model="cached") == 1  # the model ran once
        assert metrics.total("servekit_cache_hits_total", model="cached") == len(answers)
    finally:
        assert server.stop() == 0, server.log()
