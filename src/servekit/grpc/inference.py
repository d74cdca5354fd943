"""``inference.GRPCInferenceService``: the Open Inference Protocol over gRPC, as Triton serves it.

Thin by contract: decode with servekit.codecs.protobuf, call the DataPlane, encode.
Errors are raised, never mapped here (servekit.grpc.rpc maps them), except on
ModelStreamInfer, where the protocol answers a failed request with a message on the
stream (``error_message``) and keeps the stream open.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from servekit.codecs import protobuf as codec
from servekit.errors import InvalidInput, ServekitError
from servekit.grpc.generated import inference_pb2 as pb
from servekit.grpc.rpc import deadline_of
from servekit.grpc.streams import answer_as_completed
from servekit.serving.dataplane import DataPlane

__all__ = ["InferenceServicer"]

log = logging.getLogger("servekit.grpc")

Context = grpc.aio.ServicerContext[Any, Any]


class InferenceServicer:
    """One method per RPC of ``inference.GRPCInferenceService``, over one DataPlane."""

    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    # -- health and metadata -----------------------------------------------------------

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._plane.live())

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._plane.ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._plane.model_ready(request.name, request.version or None))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Context) -> pb.ServerMetadataResponse:
        metadata = self._plane.server_metadata()
        return pb.ServerMetadataResponse(name=metadata["name"], version=metadata["version"],
                                         extensions=metadata["extensions"])

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Context) -> pb.ModelMetadataResponse:
        return codec.encode_model_metadata(self._plane.model_metadata(request.name, request.version or None))

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Context) -> pb.ModelConfigResponse:
        return codec.encode_model_config(self._plane.model_config(request.name, request.version or None))

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        statistics = self._plane.model_statistics(request.name or None, request.version or None)
        return codec.encode_model_statistics(statistics)

    # -- inference -----------------------------------------------------------------------

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> bytes:
        """The response goes out as the ModelInferResponse's bytes (``rpc`` sends bytes as they are)."""
        with self._plane.rejections("grpc", request.model_name):
            inference = codec.decode_infer_request(request)
        inference.deadline = deadline_of(context)
        return codec.encode_infer_response_bytes(await self._plane.infer(inference, "grpc"))

    async def ModelStreamInfer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        deadline = deadline_of(context)  # the stream's own deadline bounds every request on it

        async def answer(request: pb.ModelInferRequest) -> pb.ModelStreamInferResponse:
            try:
                with self._plane.rejections("grpc", request.model_name):
                    inference = codec.decode_infer_request(request)
                inference.deadline = deadline
                response = codec.encode_infer_response(await self._plane.infer(inference, "grpc"))
                return pb.ModelStreamInferResponse(infer_response=response)
            except Exception as error:
                if not isinstance(error, ServekitError):
                    log.error("unexpected error in a ModelStreamInfer request", exc_info=error)
                    error = ServekitError("internal server error")
                echo = pb.ModelInferResponse(model_name=request.model_name, model_version=request.model_version,
                                             id=request.id)
                return pb.ModelStreamInferResponse(error_message=error.message, infer_response=echo)

        async for response in answer_as_completed(requests, answer):
            yield response

    # -- repository ----------------------------------------------------------------------

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        return codec.encode_repository_index(self._plane.repository_index(), request.ready)

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        if request.parameters:
            raise InvalidInput("load parameters (config or file overrides) are not supported; edit the repository")
        await self._plane.load_model(request.model_name, _authorization(context))
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        # unload_dependents is the only parameter Triton defines; servekit has no ensembles to follow.
        await self._plane.unload_model(request.model_name, _authorization(context))
        return pb.RepositoryModelUnloadResponse()


def _authorization(context: Context) -> str | None:
    """The call's ``authorization`` metadata (gRPC's place for HTTP's Authorization header)."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None
