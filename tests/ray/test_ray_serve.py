"""``servekit ray deploy`` on a local Ray cluster (127.0.0.1 only), driven by tritonclient.http."""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.builders import WEIGHTS, write_repository
from tests.e2e.harness import HOST, free_port, servekit_command
from tests.ray.ray_cluster import RayCluster, ray_environment, require_ray

pytestmark = pytest.mark.ray

DEPLOY_TIMEOUT_S = 180.0
DEPLOYMENT = (Path(__file__).parents[2] / "docs" / "deployment.md").read_text(encoding="utf-8")


def readme_deploy_command(repository: Path, address: str, http_port: int) -> list[str]:
    """The one-machine ``servekit ray deploy`` line of docs/deployment.md, on this test's repository and ports."""
    section = DEPLOYMENT.split("## Ray Serve: one machine or many", 1)[1]
    block = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)[0]
    [line] = [line for line in block.splitlines() if line.startswith("servekit ray deploy")]
    words = shlex.split(line)
    assert words[3] == "models"
    replaced = {"--address": address, "--http-port": str(http_port)}
    arguments = [str(repository) if index == 3 else replaced.get(words[index - 1], word)
                 for index, word in enumerate(words)]
    assert arguments[arguments.index("--http-host") + 1] == HOST
    return servekit_command(*arguments[1:])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    require_ray()
    ray_cluster = RayCluster(tmp_path_factory.mktemp("ray") / "ray.log")
    try:
        yield ray_cluster.start()
    finally:
        ray_cluster.stop()


def test_deploy_serves_the_open_inference_protocol(cluster: RayCluster, tmp_path: Path) -> None:
    import tritonclient.http as triton

    repository = write_repository(tmp_path / "models", {
        "linear": "max_batch_size: 8\nray:\n  num_replicas: 1\n  num_cpus: 0.5\n",
    })
    http_port = free_port()
    deployed = subprocess.run(
        readme_deploy_command(repository, cluster.address, http_port),
        env=ray_environment(), capture_output=True, text=True, timeout=DEPLOY_TIMEOUT_S, check=False,
    )
    assert deployed.returncode == 0, f"{deployed.stdout}\n{deployed.stderr}\n{cluster.log()}"
    assert f"http://{HOST}:{http_port}/v2" in deployed.stdout

    client = triton.InferenceServerClient(url=f"{HOST}:{http_port}")
    try:
        assert client.is_server_live()
        assert client.is_model_ready("linear")
        metadata = client.get_model_metadata("linear")
        assert [tensor["name"] for tensor in metadata["inputs"]] == ["x"]

        rows = np.arange(8, dtype=np.float32).reshape(2, 4)
        for binary in (True, False):
            tensor = triton.InferInput("x", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows, binary_data=binary)
            outputs = [triton.InferRequestedOutput("y", binary_data=binary)]
            result = client.infer("linear", [tensor], outputs=outputs)
            np.testing.assert_allclose(result.as_numpy("y"), rows @ WEIGHTS, rtol=1e-6)

        with pytest.raises(triton.InferenceServerException, match="unknown model"):
            client.get_model_metadata("absent")
    finally:
        client.close()
