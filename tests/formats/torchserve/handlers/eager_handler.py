"""TorchServe style: an eager model (--model-file model.py + a state_dict), softmax scores."""

import torch
from ts.torch_handler.base_handler import BaseHandler


class EagerRows(BaseHandler):
    def preprocess(self, data):
        return torch.tensor([[float(x) for x in (r.get("body") or r.get("data")).decode().split(",")] for r in data])

    def postprocess(self, data):
        return [{"scores": row} for row in torch.softmax(data, dim=1).tolist()]
