"""TorchServe style: text ("1,2,3") or JSON ([1, 2, 3]) rows, a TorchScript model, softmax scores."""

import torch
import torch.nn.functional as F
from ts.torch_handler.base_handler import BaseHandler


class TextRows(BaseHandler):
    """Rows of three numbers as text ("1,2,3") or JSON ([1,2,3]); softmax scores back."""

    def preprocess(self, data):
        rows = []
        for row in data:
            value = row.get("data") or row.get("body")
            if isinstance(value, (bytes, bytearray)):
                value = value.decode("utf-8")
            if isinstance(value, str):
                value = [float(x) for x in value.split(",")]
            rows.append(value)
        return torch.tensor(rows, dtype=torch.float32)

    def postprocess(self, data):
        return F.softmax(data, dim=1).tolist()
