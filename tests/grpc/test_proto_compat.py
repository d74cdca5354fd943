"""servekit's inference.proto and model_config.proto against the messages tritonclient.grpc was generated from.

Every field servekit declares must have Triton's number, type and cardinality: that is
what wire compatibility means. servekit may leave fields out; it may not differ.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from tritonclient.grpc import model_config_pb2, service_pb2

from servekit.grpc.generated import inference_pb2
from servekit.grpc.generated import model_config_pb2 as servekit_model_config_pb2


def _triton_message(name: str) -> Descriptor:
    for module in (service_pb2, model_config_pb2):
        if name in module.DESCRIPTOR.message_types_by_name:
            return module.DESCRIPTOR.message_types_by_name[name]
    raise AssertionError(f"tritonclient has no message {name}")


def _signature(field: FieldDescriptor) -> tuple[int, int, bool, str]:
    target = field.message_type or field.enum_type
    return field.number, field.type, field.is_repeated, target.full_name if target else ""


def _compare(ours: Descriptor, theirs: Descriptor, path: str) -> list[str]:
    problems = []
    for field in ours.fields:
        other = theirs.fields_by_name.get(field.name)
        if other is None:
            problems.append(f"{path}.{field.name}: not in Triton's message")
        elif _signature(field) != _signature(other):
            problems.append(f"{path}.{field.name}: ours {_signature(field)}, Triton's {_signature(other)}")
    for nested in ours.nested_types:
        problems += _compare(nested, theirs.nested_types_by_name[nested.name], f"{path}.{nested.name}")
    for enum in ours.enum_types:
        theirs_values = {v.name: v.number for v in theirs.enum_types_by_name[enum.name].values}
        problems += [f"{path}.{enum.name}.{v.name}" for v in enum.values if theirs_values.get(v.name) != v.number]
    return problems


def test_every_message_and_field_matches_triton() -> None:
    problems = []
    for module in (inference_pb2, servekit_model_config_pb2):
        for name, message in module.DESCRIPTOR.message_types_by_name.items():
            problems += _compare(message, _triton_message(name), name)
    data_types = {v.name: v.number for v in model_config_pb2.DESCRIPTOR.enum_types_by_name["DataType"].values}
    problems += [v.name for v in servekit_model_config_pb2.DESCRIPTOR.enum_types_by_name["DataType"].values
                 if data_types.get(v.name) != v.number]
    assert problems == []


def test_the_model_config_declares_every_top_level_field_of_triton() -> None:
    """Every field of Triton's ModelConfig parses from a config.pbtxt (none is skipped as unknown),
    except the metrics block, which servekit leaves to its own metrics."""
    ours = set(servekit_model_config_pb2.ModelConfig.DESCRIPTOR.fields_by_name)
    theirs = set(model_config_pb2.ModelConfig.DESCRIPTOR.fields_by_name)
    assert theirs - ours == {"batch_input", "batch_output", "model_metrics"}


def test_every_rpc_matches_triton() -> None:
    ours = inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in ours.methods:
        other = theirs.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name, method.client_streaming,
                method.server_streaming) == (other.input_type.full_name, other.output_type.full_name,
                                             other.client_streaming, other.server_streaming), method.name
