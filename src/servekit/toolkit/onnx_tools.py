"""ONNX helpers shared by the converters: the opset to target, validation, tidying.

The opset is the newest one that every party supports: the installed ``onnx`` package,
the exporter in use, and the installed onnxruntime (which implements a fixed opset per
release; newer models may load and then fail on an operator it does not know).
"""

from __future__ import annotations

from typing import Any

from servekit.toolkit.errors import ToolkitError

__all__ = ["BATCH_DIM", "check_model", "name_batch_dims", "onnxruntime_max_opset", "target_opset"]

BATCH_DIM = "batch"

# onnxruntime release (major, minor) -> the ONNX opset it implements, from onnxruntime's
# compatibility table. A release newer than the last row gets the last row's opset: safe,
# since every release runs all older opsets.
_ORT_OPSETS: tuple[tuple[tuple[int, int], int], ...] = (
    ((1, 14), 18),
    ((1, 15), 19),
    ((1, 17), 20),
    ((1, 18), 21),
    ((1, 21), 22),
    ((1, 23), 23),
)


def onnxruntime_max_opset(version: str | None = None) -> int:
    """The newest ONNX opset the installed (or given) onnxruntime release implements."""
    if version is None:
        import onnxruntime

        version = onnxruntime.__version__
    parts = version.split(".")
    try:
        release = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        return _ORT_OPSETS[-1][1]
    opset = 17
    for first_release, implemented in _ORT_OPSETS:
        if release >= first_release:
            opset = implemented
    return opset


def target_opset(exporter_max: int, requested: int | None = None) -> int:
    """The opset to export at: ``requested`` when given (checked), else the newest all support."""
    import onnx

    ceiling = min(exporter_max, onnx.defs.onnx_opset_version(), onnxruntime_max_opset())
    if requested is None:
        return ceiling
    if requested > ceiling:
        raise ToolkitError(
            f"--opset {requested} is newer than this environment supports (at most {ceiling}: the exporter"
            f" {exporter_max}, onnx {onnx.defs.onnx_opset_version()}, onnxruntime {onnxruntime_max_opset()})"
        )
    return requested


def check_model(model: Any) -> None:
    """``onnx.checker`` with shape inference (full check); ToolkitError on an invalid graph."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ToolkitError(f"the exported ONNX model does not pass onnx.checker: {exc}") from None


def name_batch_dims(model: Any, input_names: list[str]) -> None:
    """Call the symbolic first dimension of the inputs "batch" everywhere it appears.

    Exporters name it after their internal symbols (``s31``, ``dynamic_axes_1``); one
    readable name tells a reader of the graph which dimensions move together.
    """
    graph = model.graph
    symbols: set[str] = set()
    for value in graph.input:
        if value.name in input_names:
            dims = value.type.tensor_type.shape.dim
            if dims and dims[0].dim_param:
                symbols.add(dims[0].dim_param)
    if not symbols:
        return
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in symbols:
                dim.dim_param = BATCH_DIM
