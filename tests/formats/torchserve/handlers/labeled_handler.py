"""TorchServe style: an extra module imported by name, a lazy ts import, index_to_name.json and a
handler-specific key of model_config.yaml."""

import torch
from text_utils import parse_rows
from ts.torch_handler.base_handler import BaseHandler


class LabeledRows(BaseHandler):
    def initialize(self, context):
        super().initialize(context)
        self.digits = context.model_yaml_config.get("handler", {}).get("digits", 6)

    def preprocess(self, data):
        return torch.tensor(parse_rows(data), dtype=torch.float32)

    def postprocess(self, data):
        from ts.utils.util import map_class_to_label  # imported per request, after loading

        probabilities = [[round(p, self.digits) for p in row] for row in torch.softmax(data, dim=1).tolist()]
        return map_class_to_label(probabilities, self.mapping)
