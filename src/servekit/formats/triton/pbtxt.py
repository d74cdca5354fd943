"""Triton's config.pbtxt as a message, and the message as Triton's JSON document (pure: no I/O).

``parse_pbtxt`` reads the protobuf text format with protobuf's own parser. A field this
servekit does not declare is skipped, not fatal, and named: protobuf's parser skips unknown
fields silently when told to allow them, so a parser subclass records each one it skips
(only the outermost: the fields inside a skipped block are not reported again).

``completed`` fills what Triton fills at load (name, version policy, instance groups, default
model file), and ``config_json`` renders a message the way Triton's ``/config`` does: every
field, defaults included, with proto field names and 64-bit integers as JSON numbers.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import FieldDescriptor

from servekit.errors import ConfigError
from servekit.grpc.generated import model_config_pb2 as pb

__all__ = ["DEFAULT_MODEL_FILES", "completed", "config_json", "parse_pbtxt"]

# Triton's default model file per backend (platforms name their backend's files).
DEFAULT_MODEL_FILES = {"python": "model.py", "onnxruntime": "model.onnx", "pytorch": "model.pt"}
_PLATFORM_BACKENDS = {"onnxruntime_onnx": "onnxruntime", "pytorch_libtorch": "pytorch"}

_INT64_TYPES = frozenset({FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
                          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64})


class _NamingParser(text_format._Parser):
    """protobuf's text parser, recording each unknown field it skips as ``Message.field``."""

    def __init__(self) -> None:
        super().__init__(allow_unknown_field=True)
        self.unknown: list[str] = []
        self._skipping = 0

    def _SkipFieldContents(self, tokenizer: Any, field_name: str, immediate_message_type: str) -> None:
        if not self._skipping:
            self.unknown.append(f"{immediate_message_type.removeprefix('inference.')}.{field_name}")
        self._skipping += 1
        try:
            super()._SkipFieldContents(tokenizer, field_name, immediate_message_type)  # type: ignore[misc]
        finally:
            self._skipping -= 1


def parse_pbtxt(text: str, source: str) -> tuple[pb.ModelConfig, list[str]]:
    """The message of a config.pbtxt and the unknown fields that were skipped (``Message.field``).
    A text that is not valid protobuf text format is a ConfigError naming ``source`` and the line."""
    parser = _NamingParser()
    message = pb.ModelConfig()
    try:
        parser.ParseLines(text.split("\n"), message)
    except text_format.ParseError as exc:
        raise ConfigError(f"{source}: not valid protobuf text format: {exc}") from None
    return message, parser.unknown


def backend_of(message: pb.ModelConfig) -> str:
    """The backend a config names, directly or through its platform ('' when neither says)."""
    return message.backend or _PLATFORM_BACKENDS.get(message.platform, "")


def completed(message: pb.ModelConfig, folder_name: str, gpu_available: bool = False) -> pb.ModelConfig:
    """A copy with what Triton fills at load: the name, the default version policy (latest 1),
    instance groups named ``<model>_<i>`` with a count and a concrete kind, and the default
    model file of the backend."""
    done = pb.ModelConfig()
    done.CopyFrom(message)
    done.name = done.name or folder_name
    if not done.HasField("version_policy"):
        done.version_policy.latest.num_versions = 1
    if not done.instance_group:
        done.instance_group.add(name=done.name)
    for index, group in enumerate(done.instance_group):
        group.name = group.name or f"{done.name}_{index}"
        group.count = group.count or 1
        if group.kind == pb.ModelInstanceGroup.KIND_AUTO:
            group.kind = pb.ModelInstanceGroup.KIND_GPU if gpu_available else pb.ModelInstanceGroup.KIND_CPU
    done.default_model_filename = done.default_model_filename or DEFAULT_MODEL_FILES.get(backend_of(done), "")
    for buffer in ("input_pinned_memory", "output_pinned_memory"):
        if not done.optimization.HasField(buffer):  # Triton's default: on, unless the config says
            getattr(done.optimization, buffer).enable = True
    return done


def config_json(message: pb.ModelConfig) -> dict[str, Any]:
    """The message as Triton's JSON: proto field names, every field (defaults too), and int64
    values as numbers rather than protobuf's JSON strings."""
    document = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)
    return _numbers(document, message.DESCRIPTOR)


def _numbers(document: dict[str, Any], descriptor: Any) -> dict[str, Any]:
    for name, value in document.items():
        field = descriptor.fields_by_name.get(name)
        if field is None:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if value_field.message_type is not None:
                document[name] = {key: _numbers(item, value_field.message_type) for key, item in value.items()}
        elif field.message_type is not None:
            items = value if isinstance(value, list) else [value]
            for item in items:
                _numbers(item, field.message_type)
        elif field.type in _INT64_TYPES:
            document[name] = [int(item) for item in value] if isinstance(value, list) else int(value)
    return document
