"""A python backend model's ``auto_complete_config``: the object it edits and the step that runs it.

Triton calls the static ``TritonPythonModel.auto_complete_config(config)`` once before the
model loads, so model code can declare its own tensors, batch size, dynamic batching and
transaction policy. ``ModelConfig`` is that object (``pb_utils.ModelConfig`` to model code):
a JSON view of the config with the methods models call, each refusing what Triton refuses
(a tensor redeclared with another type or shape, a batch size below the config's, a second
scheduler). ``complete_with`` runs a model class's hook on a config message.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

from servekit.errors import ConfigError
from servekit.formats.triton.pbtxt import config_json
from servekit.grpc.generated import model_config_pb2 as pb

__all__ = ["ModelConfig", "complete_with"]


class ModelConfig:
    """The configuration ``auto_complete_config`` receives and returns (JSON field names)."""

    def __init__(self, model_config: str | dict[str, Any]) -> None:
        self._config: dict[str, Any] = json.loads(model_config) if isinstance(model_config, str) else model_config
        self._config.setdefault("input", [])
        self._config.setdefault("output", [])
        self._config.setdefault("max_batch_size", 0)

    def as_dict(self) -> dict[str, Any]:
        return self._config

    @property
    def _name(self) -> str:
        return str(self._config.get("name", ""))

    def set_max_batch_size(self, max_batch_size: int) -> None:
        configured = int(self._config["max_batch_size"])
        if configured > max_batch_size:
            raise ValueError(f"model {self._name!r}: the configuration's max_batch_size {configured} is above "
                             f"the {max_batch_size} auto_complete_config sets")
        self._config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self) -> None:
        for other in ("sequence_batching", "ensemble_scheduling"):
            if other in self._config:
                raise ValueError(f"model {self._name!r}: the configuration schedules with {other}; "
                                 "auto_complete_config cannot set dynamic_batching")
        self._config.setdefault("dynamic_batching", {})

    def add_input(self, input: dict[str, Any]) -> None:
        self._add_tensor("input", input, ("name", "data_type", "dims", "optional"))

    def add_output(self, output: dict[str, Any]) -> None:
        self._add_tensor("output", output, ("name", "data_type", "dims"))

    def set_model_transaction_policy(self, transaction_policy_dict: dict[str, Any]) -> None:
        extra = set(transaction_policy_dict) - {"decoupled"}
        if extra:
            raise ValueError(f"model {self._name!r}: model_transaction_policy takes only 'decoupled', "
                             f"not {', '.join(sorted(extra))}")
        policy = self._config.setdefault("model_transaction_policy", {})
        if "decoupled" in transaction_policy_dict:
            wanted = bool(transaction_policy_dict["decoupled"])
            if "decoupled" in policy and bool(policy["decoupled"]) != wanted:
                raise ValueError(f"model {self._name!r}: decoupled is already {policy['decoupled']} in the "
                                 "configuration; auto_complete_config cannot change it")
            policy["decoupled"] = wanted

    def _add_tensor(self, kind: str, tensor: dict[str, Any], allowed: tuple[str, ...]) -> None:
        extra = set(tensor) - set(allowed)
        if extra:
            raise ValueError(f"model {self._name!r}: {kind} {tensor.get('name')!r} has properties other than "
                             f"{', '.join(allowed)}: {', '.join(sorted(extra))}")
        for required in ("name", "data_type", "dims"):
            if required not in tensor:
                raise ValueError(f"model {self._name!r}: {kind} {tensor.get('name')!r} has no {required!r}")
        for existing in self._config[kind]:
            if existing["name"] != tensor["name"]:
                continue
            if existing.get("data_type", "TYPE_INVALID") not in ("TYPE_INVALID", tensor["data_type"]):
                raise ValueError(f"model {self._name!r}: {kind} {tensor['name']!r} is {existing['data_type']} in "
                                 f"the configuration; the model says {tensor['data_type']}")
            if existing.get("dims") and list(existing["dims"]) != list(tensor["dims"]):
                raise ValueError(f"model {self._name!r}: {kind} {tensor['name']!r} has dims {existing['dims']} in "
                                 f"the configuration; the model says {tensor['dims']}")
            existing.update(tensor)
            return
        self._config[kind].append(dict(tensor))


def complete_with(model_class: type, message: pb.ModelConfig, source: str) -> pb.ModelConfig:
    """The config after ``model_class.auto_complete_config`` (unchanged when the class has none).
    A hook that raises or returns something else is a ConfigError naming ``source``."""
    hook = getattr(model_class, "auto_complete_config", None)
    if hook is None:
        return message
    try:
        result = hook(ModelConfig(json.dumps(config_json(message))))
    except Exception as exc:
        raise ConfigError(f"{source}: auto_complete_config raised {type(exc).__name__}: {exc}") from None
    if not isinstance(result, ModelConfig):
        raise ConfigError(f"{source}: auto_complete_config returned {type(result).__name__}; expected the "
                          "ModelConfig it was given")
    done = pb.ModelConfig()
    try:
        json_format.ParseDict(result.as_dict(), done, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise ConfigError(f"{source}: auto_complete_config left an invalid configuration: {exc}") from None
    return done
