"""The toolkit around the server: ``servekit convert``, ``servekit bench`` and ``servekit advise``.

- :func:`convert_model`: PyTorch (TorchScript, torch.export, an nn.Module) or scikit-learn ->
  an ONNX model version with a dynamic batch, checked for numeric parity, plus its config.yaml.
- :func:`run_bench`: a bounded load test of a running server over HTTP (OIP or the simple API)
  or gRPC, closed loop at concurrencies or open loop at rates.
- :func:`recommend`: runtime, batching and protocol from measured curves and requirements.

Heavy libraries (torch, skl2onnx, matplotlib) are imported only when a step needs them.
"""

from servekit.toolkit.advise import Recommendation, recommend
from servekit.toolkit.bench import BenchOptions, BenchResult, run_bench
from servekit.toolkit.convert import ConvertOptions, ConvertResult, convert_model
from servekit.toolkit.errors import ParityError, ToolkitError
from servekit.toolkit.matrix import PATTERNS, REQUIREMENTS, parse_requirements, rank_patterns

__all__ = [
    "PATTERNS",
    "REQUIREMENTS",
    "BenchOptions",
    "BenchResult",
    "ConvertOptions",
    "ConvertResult",
    "ParityError",
    "Recommendation",
    "ToolkitError",
    "convert_model",
    "parse_requirements",
    "rank_patterns",
    "recommend",
    "run_bench",
]
