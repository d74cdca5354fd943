"""The parts of KServe's CRDs that deploy/kserve uses, as JSON Schema (the Kubernetes schemas have no CRDs).

Written from KServe's API reference (serving.kserve.io v1alpha1 ServingRuntime, v1beta1
InferenceService): fields and types only, unknown fields refused where the manifests are ours, so a
misspelt field fails. Containers are checked separately against the core Kubernetes Container schema.
"""

from __future__ import annotations

from typing import Any

__all__ = ["INFERENCE_SERVICE", "SERVING_RUNTIME"]

_METADATA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}

_MODEL_FORMAT: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "autoSelect": {"type": "boolean"},
        "priority": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": False,
}

_PROTOCOL = {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]}

SERVING_RUNTIME: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1alpha1"},
        "kind": {"const": "ServingRuntime"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["containers", "supportedModelFormats"],
            "properties": {
                "supportedModelFormats": {"type": "array", "minItems": 1, "items": _MODEL_FORMAT},
                "protocolVersions": {"type": "array", "items": _PROTOCOL},
                "multiModel": {"type": "boolean"},
                "disabled": {"type": "boolean"},
                "grpcDataEndpoint": {"type": "string"},
                "httpDataEndpoint": {"type": "string"},
                "containers": {"type": "array", "minItems": 1, "items": {"type": "object"}},
                "volumes": {"type": "array"},
                "nodeSelector": {"type": "object"},
                "tolerations": {"type": "array"},
                "affinity": {"type": "object"},
                "annotations": {"type": "object"},
                "labels": {"type": "object"},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

_RESOURCES: dict[str, Any] = {
    "type": "object",
    "properties": {"requests": {"type": "object"}, "limits": {"type": "object"}},
    "additionalProperties": False,
}

INFERENCE_SERVICE: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["predictor"],
            "properties": {
                "predictor": {
                    "type": "object",
                    "required": ["model"],
                    "properties": {
                        "minReplicas": {"type": "integer", "minimum": 0},
                        "maxReplicas": {"type": "integer", "minimum": 1},
                        "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
                        "scaleTarget": {"type": "integer", "minimum": 1},
                        "containerConcurrency": {"type": "integer", "minimum": 0},
                        "timeout": {"type": "integer"},
                        "serviceAccountName": {"type": "string"},
                        "model": {
                            "type": "object",
                            "required": ["modelFormat", "storageUri"],
                            "properties": {
                                "modelFormat": _MODEL_FORMAT,
                                "runtime": {"type": "string"},
                                "protocolVersion": _PROTOCOL,
                                "storageUri": {"type": "string", "pattern": "^(gs|s3|pvc|https?|hdfs|oci)://"},
                                "resources": _RESOURCES,
                                "env": {"type": "array"},
                                "args": {"type": "array", "items": {"type": "string"}},
                            },
                            "additionalProperties": False,
                        },
                    },
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
