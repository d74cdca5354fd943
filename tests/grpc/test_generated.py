"""The generated code: built from proto/ by the install step, fresh, in servekit's own pool."""

from __future__ import annotations

from pathlib import Path

import pytest

import servekit.grpc
from servekit.grpc import generated
from servekit.grpc.generated import inference_pb2, model_service_pb2
from servekit.grpc.pool import POOL

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_the_protos() -> None:
    assert servekit.grpc._proto_digest(ROOT / "proto") == generated.PROTO_SHA256


def test_a_checkout_without_generated_code_says_how_to_build_it(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servekit.grpc, "_HERE", tmp_path / "src" / "servekit" / "grpc")
    with pytest.raises(ImportError, match=r"generated gRPC code is missing .*pip install -e \."):
        servekit.grpc._check_generated()


def test_stale_generated_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = tmp_path / "src" / "servekit" / "grpc"
    (here / "generated").mkdir(parents=True)
    (here / "generated" / "__init__.py").write_text('PROTO_SHA256 = "0000"\n')
    (tmp_path / "proto").mkdir()
    (tmp_path / "proto" / "x.proto").write_text('syntax = "proto3";\n')
    (tmp_path / "hatch_build.py").write_text("")
    monkeypatch.setattr(servekit.grpc, "_HERE", here)
    with pytest.raises(ImportError, match="older than"):
        servekit.grpc._check_generated()


def test_messages_live_in_servekits_own_pool_beside_tritonclients() -> None:
    import tritonclient.grpc.service_pb2 as triton  # registers the same names in the default pool

    assert inference_pb2.ModelInferRequest.DESCRIPTOR.file.pool is POOL
    assert model_service_pb2.PredictRequest.DESCRIPTOR.full_name == "modelserving.PredictRequest"
    assert triton.ModelInferRequest.DESCRIPTOR.full_name == inference_pb2.ModelInferRequest.DESCRIPTOR.full_name
