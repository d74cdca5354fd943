"""TorchServe style, module-level handle(): the X-Mode header picks what it returns (recording aid)."""

import os
import time


def _describe(value):
    if isinstance(value, (bytes, bytearray)):
        return {"type": type(value).__name__, "value": value.decode("latin-1")}
    return {"type": type(value).__name__, "value": value}


def handle(data, context):
    if data is None:  # initialize call
        return None
    mode = context.get_request_header(0, "X-Mode") or "describe"
    if mode == "sleep":
        time.sleep(float(context.get_request_header(0, "X-Seconds") or 5))
    if mode == "raise":
        raise ValueError("asked to fail")
    if mode == "predexc":
        from ts.utils.util import PredictionException
        raise PredictionException("custom failure", 418)
    if mode == "mismatch":
        return [1] * (len(data) + 1)
    if mode == "notlist":
        return {"a": 1}
    out = []
    for idx, row in enumerate(data):
        if mode == "str":
            out.append("plain text")
        elif mode == "bytes":
            out.append(b"\x00\x01raw")
        elif mode == "list":
            out.append([1, 2.5, "x"])
        elif mode == "int":
            out.append(7)
        elif mode == "none":
            out.append(None)
        elif mode == "dict":
            out.append({"a": 1, "b": [1, 2]})
        elif mode == "ctype":
            context.set_response_content_type(idx, "text/csv")
            out.append("a,b\n1,2\n")
        elif mode == "status":
            context.set_response_status(299, "Odd", idx)
            out.append({"ok": True})
        elif mode == "status4xx":
            context.set_response_status(422, "Bad thing", idx)
            out.append({"error": "bad"})
        elif mode == "header":
            context.set_response_header(idx, "X-Extra", "yes")
            out.append("with header")
        elif mode == "tensor":
            import torch
            out.append(torch.tensor([1.0, 2.0]))
        else:
            out.append({
                "keys": sorted(row.keys()),
                "row": {k: _describe(v) for k, v in row.items()},
                "headers": context.get_all_request_header(idx) if hasattr(context, "get_all_request_header") else None,
                "request_id": context.get_request_id(idx),
                "batch": len(data),
                "cwd": os.getcwd(),
                "system_properties": {k: v for k, v in context.system_properties.items()},
                "model_yaml_config": context.model_yaml_config,
                "manifest": context.manifest,
                "model_name": context.model_name,
            })
    return out
