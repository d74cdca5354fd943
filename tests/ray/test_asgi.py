"""servekit.ray.asgi: a request through servekit's app in-process, as a replica runs it (no Ray)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson

from servekit.config import ServerSettings
from servekit.http.app import create_app
from servekit.ray.asgi import ForwardedRequest, call_app
from servekit.serving.core import ServingCore
from tests.builders import WEIGHTS, write_repository


def test_call_app_answers_model_metadata_and_infer(tmp_path: Path) -> None:
    repository = write_repository(tmp_path / "models", {"linear": None})

    async def scenario() -> None:
        settings = ServerSettings(repository=repository, load_models=["linear"])
        core = ServingCore(settings)
        await core.start()
        app = create_app(settings, core)
        try:
            metadata = await call_app(app, ForwardedRequest("GET", "/v2/models/linear"))
            assert metadata.status == 200
            assert orjson.loads(metadata.body)["name"] == "linear"
            body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                             "data": [1, 0, 0, 0]}], "outputs": [{"name": "y"}]})
            answer = await call_app(app, ForwardedRequest("POST", "/v2/models/linear/infer",
                                                          headers=[(b"content-type", b"application/json")],
                                                          body=body))
            assert answer.status == 200, answer.body
            np.testing.assert_allclose(orjson.loads(answer.body)["outputs"][0]["data"], WEIGHTS[0], rtol=1e-6)
            missing = await call_app(app, ForwardedRequest("GET", "/v2/models/absent"))
            assert missing.status == 404
        finally:
            await core.stop()

    asyncio.run(scenario())
