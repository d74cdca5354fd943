"""``modelserving.ModelService``: the simple gRPC API (DESIGN.md), over the simple API
(``servekit.serving.simple``).

A request names its model in ``model`` (empty: the server's default model, as /predict
uses). Rows are sent to the data plane one by one, all at once, so the rows of one
PredictStream call and the requests of a PredictBidi stream batch together and with
other traffic; answers still go out in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from servekit.codecs.protobuf_simple import decode_rows, encode_prediction
from servekit.grpc.generated import model_service_pb2 as pb
from servekit.grpc.streams import answer_in_order
from servekit.serving.simple import SimpleAPI

__all__ = ["ModelServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class ModelServicer:
    service = pb.DESCRIPTOR.services_by_name["ModelService"]

    def __init__(self, simple: SimpleAPI) -> None:
        self._simple = simple

    async def _predict_one(self, request: pb.PredictRequest) -> pb.PredictResponse:
        with self._simple.rejections("simple_grpc", request.model or None):
            model, width = self._simple.row_width(request.model)
            rows = decode_rows(request.features, width, single=True)
        result = await self._simple.predict(rows, request.return_probabilities, model, "simple_grpc")
        return encode_prediction(model, result)

    async def Predict(self, request: pb.PredictRequest, context: Context) -> pb.PredictResponse:
        return await self._predict_one(request)

    async def PredictStream(self, request: pb.PredictRequest, context: Context) -> AsyncIterator[pb.PredictResponse]:
        with self._simple.rejections("simple_grpc", request.model or None):
            model, width = self._simple.row_width(request.model)
            rows = decode_rows(request.features, width, single=False)
        tasks = [asyncio.ensure_future(self._simple.predict(rows[i : i + 1], request.return_probabilities, model,
                                                           "simple_grpc"))
                 for i in range(len(rows))]
        try:
            for task in tasks:
                yield encode_prediction(model, await task)
        finally:
            for task in tasks:
                task.cancel()  # the call ended early: rows still queued never run

    async def PredictBidi(
        self, requests: AsyncIterator[pb.PredictRequest], context: Context
    ) -> AsyncIterator[pb.PredictResponse]:
        async for response in answer_in_order(requests, self._predict_one):
            yield response
