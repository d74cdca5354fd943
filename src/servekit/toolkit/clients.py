"""The request senders of ``servekit bench``: OIP over HTTP, the simple API, OIP over gRPC.

Each client builds its request once (a body of bytes) and sends that same request again and
again; it reads the answer's status, not its contents, so the client spends as little as it
can per request. ``send()`` returns on success and raises :class:`RequestFailed` (with a
short ``kind`` such as ``HTTP 503`` or ``gRPC UNAVAILABLE``) on anything else.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from servekit.toolkit.errors import ToolkitError
from servekit.toolkit.http1 import ConnectionPool, build_request
from servekit.toolkit.specs import Arrays
from servekit.types import TensorSpec

__all__ = ["Client", "Endpoint", "RequestFailed", "fetch_inputs", "open_client"]

Protocol = Literal["http", "simple", "grpc"]
_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
_GRPC_MESSAGE_BYTES = 65 * 1024 * 1024


class RequestFailed(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to send: ``address`` is ``http://host:port`` for http/simple and ``host:port`` for grpc."""

    protocol: Protocol
    address: str
    model: str
    version: str | None = None

    @property
    def model_path(self) -> str:
        return f"/v2/models/{self.model}" + (f"/versions/{self.version}" if self.version else "")


class Client:
    """One open connection pool (HTTP) or channel set (gRPC) sending one prebuilt request."""

    def __init__(self, sender: Any, checker: Any, closer: Any) -> None:
        self._sender = sender
        self._checker = checker
        self._closer = closer

    async def send(self) -> None:
        await self._sender()

    async def check(self) -> str | None:
        """Send once and return why it failed, with the server's own words (None: it worked)."""
        result: str | None = await self._checker()
        return result

    async def aclose(self) -> None:
        await self._closer()


async def fetch_inputs(endpoint: Endpoint, timeout_s: float) -> list[TensorSpec]:
    """The model's declared inputs, from its metadata (HTTP ``GET /v2/models/{m}`` or gRPC ModelMetadata)."""
    if endpoint.protocol == "grpc":
        return await _grpc_inputs(endpoint, timeout_s)
    pool = ConnectionPool(endpoint.address, 1, timeout_s)
    try:
        answer = await pool.send(build_request("GET", endpoint.address, endpoint.model_path))
    except (OSError, TimeoutError) as exc:
        raise ToolkitError(f"cannot reach {endpoint.address}: {exc!r}") from None
    finally:
        await pool.aclose()
    if answer.status != 200:
        raise ToolkitError(f"GET {endpoint.address}{endpoint.model_path}: HTTP {answer.status}"
                           f" {answer.body.decode(errors='replace')[:300]}")
    return [TensorSpec(t["name"], t["datatype"], tuple(t["shape"])) for t in json.loads(answer.body)["inputs"]]


async def open_client(endpoint: Endpoint, inputs: Arrays, connections: int, timeout_s: float,
                      binary: bool = False) -> Client:
    """A client whose ``send()`` sends ``inputs`` to ``endpoint`` over up to ``connections`` connections."""
    if endpoint.protocol == "grpc":
        return _grpc_client(endpoint, inputs, connections, timeout_s)
    json_type = {"Content-Type": "application/json"}
    if endpoint.protocol == "simple":
        path, body, headers = "/predict", _simple_body(inputs), json_type
    elif binary:
        path, (body, headers) = endpoint.model_path + "/infer", _binary_body(inputs)
    else:
        path, body, headers = endpoint.model_path + "/infer", _json_body(inputs), json_type
    request = build_request("POST", endpoint.address, path, body, headers)
    pool = ConnectionPool(endpoint.address, connections, timeout_s)

    async def send() -> None:
        try:
            answer = await pool.send(request)
        except TimeoutError:
            raise RequestFailed("timeout") from None
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            raise RequestFailed(type(exc).__name__) from None
        if answer.status != 200:
            raise RequestFailed(f"HTTP {answer.status}")

    async def check() -> str | None:
        try:
            answer = await pool.send(request)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            return f"POST {endpoint.address}{path}: {exc!r}"
        if answer.status == 200:
            return None
        return f"POST {endpoint.address}{path}: HTTP {answer.status} {answer.body.decode(errors='replace')[:300]}"

    return Client(send, check, pool.aclose)


def _json_body(inputs: Arrays) -> bytes:
    from servekit.types import datatype_of

    tensors = [{"name": name, "datatype": datatype_of(array), "shape": list(array.shape), "data": _json_data(array)}
               for name, array in inputs.items()]
    return json.dumps({"inputs": tensors}).encode()


def _binary_body(inputs: Arrays) -> tuple[bytes, dict[str, str]]:
    from servekit.codecs.raw import array_to_bytes
    from servekit.types import datatype_of

    raws = [array_to_bytes(array) for array in inputs.values()]
    tensors = [{"name": name, "datatype": datatype_of(array), "shape": list(array.shape),
                "parameters": {"binary_data_size": len(raw)}}
               for (name, array), raw in zip(inputs.items(), raws, strict=True)]
    header = json.dumps({"inputs": tensors}).encode()
    return header + b"".join(raws), {"Content-Type": "application/octet-stream",
                                     "Inference-Header-Content-Length": str(len(header))}


def _simple_body(inputs: Arrays) -> bytes:
    if len(inputs) != 1 or next(iter(inputs.values())).ndim != 2:
        raise ToolkitError("the simple API (/predict) takes one 2-D input (rows of features); this model's inputs"
                           f" are {', '.join(f'{name} {list(a.shape)}' for name, a in inputs.items())}")
    rows = next(iter(inputs.values()))
    return json.dumps({"inputs": rows.tolist(), "return_probabilities": False}).encode()


def _json_data(array: np.ndarray[Any, Any]) -> Any:
    if array.dtype.kind == "O":
        return [value.decode() if isinstance(value, bytes) else str(value) for value in array.reshape(-1)]
    return array.reshape(-1).tolist()


def _grpc_module() -> Any:
    """grpcio, or a ToolkitError that names the extra to install (a core install leaves it out)."""
    try:
        import grpc
    except ImportError:
        raise ToolkitError("--protocol grpc needs grpcio: pip install 'servekit[grpc]'") from None
    return grpc


async def _grpc_inputs(endpoint: Endpoint, timeout_s: float) -> list[TensorSpec]:
    grpc = _grpc_module()

    from servekit.grpc.generated import inference_pb2 as pb
    from servekit.grpc.generated import inference_pb2_grpc

    async with grpc.aio.insecure_channel(endpoint.address) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        request = pb.ModelMetadataRequest(name=endpoint.model, version=endpoint.version or "")
        try:
            answer = await stub.ModelMetadata(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise ToolkitError(f"gRPC ModelMetadata at {endpoint.address}: {exc.code().name} {exc.details()}") from None
    return [TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in answer.inputs]


def _grpc_client(endpoint: Endpoint, inputs: Arrays, channels: int, timeout_s: float) -> Client:
    grpc = _grpc_module()

    from servekit.codecs.raw import array_to_bytes
    from servekit.grpc.generated import inference_pb2 as pb
    from servekit.types import datatype_of

    request = pb.ModelInferRequest(
        model_name=endpoint.model, model_version=endpoint.version or "",
        inputs=[pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype_of(array), shape=list(array.shape))
                for name, array in inputs.items()],
        raw_input_contents=[array_to_bytes(array) for array in inputs.values()],
    )
    body = request.SerializeToString()
    options: list[tuple[str, Any]] = [("grpc.max_send_message_length", _GRPC_MESSAGE_BYTES),
               ("grpc.max_receive_message_length", _GRPC_MESSAGE_BYTES)]
    if channels > 1:  # each channel its own connection, not one shared from the global pool
        options.append(("grpc.use_local_subchannel_pool", 1))
    # By default calls share one HTTP/2 connection (concurrent streams), gRPC's own way.
    opened = [grpc.aio.insecure_channel(endpoint.address, options=options) for _ in range(max(1, channels))]
    # No serializer: the prebuilt bytes go out as they are and the answer is not parsed.
    methods: list[Any] = [channel.unary_unary(_INFER_METHOD) for channel in opened]
    turn = 0

    async def send() -> None:
        nonlocal turn
        turn += 1
        try:
            await methods[turn % len(methods)](body, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise RequestFailed(f"gRPC {exc.code().name}") from None

    async def check() -> str | None:
        try:
            await methods[0](body, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            return f"gRPC ModelInfer at {endpoint.address}: {exc.code().name} {exc.details()}"
        return None

    async def close() -> None:
        for channel in opened:
            await channel.close()

    return Client(send, check, close)
