"""Record what a real TorchServe answers, byte for byte, into ``torchserve_answers.json``.

Not a test: the recording the TorchServe-compatible routes are checked against. It was made
with TorchServe 0.12.0, torch-model-archiver 0.12.0, torch 2.13.0 (CPU), Python 3.11 and
OpenJDK 17, like this (pyyaml and numpy are needed by TorchServe's worker but not declared by it)::

    python3 -m venv /tmp/ts-venv
    /tmp/ts-venv/bin/pip install torch==2.13.0 torchserve==0.12.0 torch-model-archiver==0.12.0 pyyaml numpy
    /tmp/ts-venv/bin/python record_answers.py build /tmp/tsrec/store
    # config.properties: inference_address, management_address and metrics_address on free
    # 127.0.0.1 ports, model_store=/tmp/tsrec/store, disable_token_authorization=true,
    # install_py_dep_per_model=false, enable_model_api=true, default_workers_per_model=1
    setsid torchserve --start --ncs --foreground --ts-config config.properties &
    python3 record_answers.py record INFERENCE_PORT MANAGEMENT_PORT METRICS_PORT torchserve_answers.json
    kill -- -PID_OF_TORCHSERVE

The archives are built from ``handlers/`` with the real archiver; the models are made in code.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HANDLERS = Path(__file__).parent / "handlers"
VARIABLE = [
    "the x-request-id header, and request_id in echo answers (a UUID per request)",
    "model_dir and cwd in echo answers (/tmp/models/<uuid>: where TorchServe unpacked the archive)",
    "createdOn in manifests, startTime and pid of workers in describe answers",
    "Host header values and the ports: written as {inference_port}, {management_port}, {metrics_port}",
    "content-length of answers holding any of the above",
]


def build(store: Path) -> None:
    """The scratch archives, made with the real torch-model-archiver (run in TorchServe's venv)."""
    import torch

    sys.path.insert(0, str(HANDLERS))
    from model import TinyNet

    store.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp())
    net = TinyNet().eval()
    with torch.no_grad():
        net.linear.weight.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5]]))
        net.linear.bias.zero_()
    torch.jit.save(torch.jit.script(net), str(work / "tiny.pt"))
    torch.save(net.state_dict(), str(work / "tiny_state.pth"))
    h = HANDLERS

    def archive(*args: str, export: Path = store) -> None:
        subprocess.run(["torch-model-archiver", *args, "--export-path", str(export), "-f"], check=True)

    archive("--model-name", "tiny", "--version", "1.0", "--serialized-file", str(work / "tiny.pt"),
            "--handler", str(h / "text_handler.py"), "--extra-files", str(h / "index_to_name.json"),
            "--config-file", str(h / "model_config.yaml"))
    archive("--model-name", "eager", "--version", "2.0", "--model-file", str(h / "model.py"),
            "--serialized-file", str(work / "tiny_state.pth"), "--handler", str(h / "eager_handler.py"))
    archive("--model-name", "echo", "--version", "1.0", "--handler", str(h / "echo_handler.py"),
            "--config-file", str(h / "model_config.yaml"))
    archive("--model-name", "echofn", "--version", "3", "--handler", f"{h / 'echo_handler'}:handle")
    archive("--model-name", "tinytgz", "--version", "1.0", "--serialized-file", str(work / "tiny.pt"),
            "--handler", str(h / "text_handler.py"), "--archive-format", "tgz")
    archive("--model-name", "tinydir", "--version", "1.0", "--serialized-file", str(work / "tiny.pt"),
            "--handler", str(h / "text_handler.py"), "--archive-format", "no-archive")
    shutil.rmtree(work)


class Recorder:
    def __init__(self, inference: int, management: int, metrics: int) -> None:
        self.ports = {"inference": inference, "management": management, "metrics": metrics}
        self.answers: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def normalize(self, text: str) -> str:
        for api, port in self.ports.items():
            text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{{{api}_port}}")
        return text

    def call(self, name: str, api: str, method: str, path: str, body: str | bytes | None = None,
             headers: dict[str, str] | None = None, note: str | None = None, keep: bool = True) -> bytes:
        connection = http.client.HTTPConnection("127.0.0.1", self.ports[api], timeout=60)
        raw = body.encode() if isinstance(body, str) else body
        connection.request(method, path, body=raw, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        connection.close()
        entry: dict[str, Any] = {
            "name": name,
            "request": {"api": api, "method": method, "path": path, "headers": headers or {}},
            "response": {"status": response.status, "reason": response.reason,
                         "headers": [[k.lower(), self.normalize(v)] for k, v in response.getheaders()]},
        }
        if raw is not None:
            try:
                entry["request"]["body"] = raw.decode("utf-8")
            except UnicodeDecodeError:
                entry["request"]["body_base64"] = base64.b64encode(raw).decode()
        try:
            entry["response"]["body"] = self.normalize(data.decode("utf-8"))
        except UnicodeDecodeError:
            entry["response"]["body_base64"] = base64.b64encode(data).decode()
        if note:
            entry["note"] = note
        if keep:
            with self._lock:
                self.answers.append(entry)
        print(name, response.status, data[:120])
        return data


def multipart(fields: dict[str, tuple[str | None, str | None, bytes]]) -> tuple[bytes, str]:
    boundary = "servekitboundary"
    out = b""
    for name, (filename, content_type, value) in fields.items():
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if content_type:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def record(r: Recorder) -> None:
    call = r.call
    text = {"Content-Type": "text/plain"}
    call("ping", "inference", "GET", "/ping")
    call("list_empty", "management", "GET", "/models")
    call("register_tiny", "management", "POST",
         "/models?url=tiny.mar&model_name=tiny&batch_size=4&max_batch_delay=50&initial_workers=1&response_timeout=2")
    call("register_duplicate", "management", "POST", "/models?url=tiny.mar&model_name=tiny&initial_workers=1")
    call("register_missing_archive", "management", "POST", "/models?url=missing.mar&initial_workers=1")
    call("register_no_url", "management", "POST", "/models")
    call("register_eager_defaults", "management", "POST", "/models?url=eager.mar&initial_workers=1")
    call("register_echo", "management", "POST", "/models?url=echo.mar&initial_workers=1")
    call("register_echofn_no_initial_workers", "management", "POST", "/models?url=echofn.mar",
         note="no initial_workers: TorchServe still starts default_workers_per_model (1 here)")
    call("list", "management", "GET", "/models")
    call("list_limit", "management", "GET", "/models?limit=2")
    call("describe_tiny", "management", "GET", "/models/tiny")
    call("describe_tiny_version", "management", "GET", "/models/tiny/1.0")
    call("describe_tiny_all", "management", "GET", "/models/tiny/all")
    call("describe_missing", "management", "GET", "/models/nope")
    call("describe_missing_version", "management", "GET", "/models/tiny/9.9")
    call("describe_echofn_defaults", "management", "GET", "/models/echofn", note="no model_config.yaml: defaults")
    call("scale_echofn_async", "management", "PUT", "/models/echofn?min_worker=1")
    time.sleep(5)
    call("scale_tiny_sync", "management", "PUT", "/models/tiny?min_worker=1&synchronous=true")
    call("scale_missing", "management", "PUT", "/models/nope?min_worker=1")
    call("tiny_text", "inference", "POST", "/predictions/tiny", "1,2,3", text)
    call("tiny_json", "inference", "POST", "/predictions/tiny", "[1, 2, 3]", {"Content-Type": "application/json"})
    call("tiny_version", "inference", "POST", "/predictions/tiny/1.0", "1,2,3", text)
    call("tiny_unknown_version", "inference", "POST", "/predictions/tiny/9.9", "1,2,3", text)
    call("tiny_handler_raises", "inference", "POST", "/predictions/tiny", "not numbers", text)
    call("predict_unknown_model", "inference", "POST", "/predictions/nope", "1,2,3", text)
    call("predict_get_no_body", "inference", "GET", "/predictions/tiny")
    call("predict_put", "inference", "PUT", "/predictions/tiny", "1,2,3", text)
    octet = {"Content-Type": "application/octet-stream"}
    call("eager_octet", "inference", "POST", "/predictions/eager", b"1,2,3", octet)
    call("echofn_module_handle", "inference", "POST", "/predictions/echofn", "hi", text)
    echo = "/predictions/echo"
    call("decode_json", "inference", "POST", echo, '{"a": [1, 2]}', {"Content-Type": "application/json"})
    call("decode_json_charset", "inference", "POST", echo, '{"a": 1}',
         {"Content-Type": "application/json; charset=utf-8"})
    call("decode_json_invalid", "inference", "POST", echo, '{"a": ', {"Content-Type": "application/json"})
    call("decode_text", "inference", "POST", echo, "héllo", text)
    call("decode_text_charset", "inference", "POST", echo, "hello", {"Content-Type": "text/plain; charset=utf-8"})
    call("decode_text_csv", "inference", "POST", echo, "a,b", {"Content-Type": "text/csv"})
    call("decode_text_invalid_utf8", "inference", "POST", echo, b"\xff\xfe", text)
    call("decode_octet", "inference", "POST", echo, b"\x00\x01\x02", octet)
    call("decode_image", "inference", "POST", echo, b"\x89PNG", {"Content-Type": "image/png"})
    call("decode_no_content_type", "inference", "POST", echo, b"abc", {})
    call("decode_empty_body", "inference", "POST", echo, b"", text)
    call("decode_query_params", "inference", "POST", echo + "?alpha=1&beta=two", "x", text)
    call("decode_get_query_only", "inference", "GET", echo + "?alpha=1")
    call("decode_urlencoded", "inference", "POST", echo, "f1=a+b&f2=%C3%A9",
         {"Content-Type": "application/x-www-form-urlencoded"})
    body, content_type = multipart({"data": ("a.txt", "text/plain", b"file text"), "meta": (None, None, b'{"k": 1}'),
                                    "img": ("x.bin", "application/octet-stream", b"\x00\x01"),
                                    "js": (None, "application/json", b'{"k": 2}')})
    call("decode_multipart", "inference", "POST", echo, body, {"Content-Type": content_type})
    call("decode_custom_headers", "inference", "POST", echo, "x",
         {**text, "X-Custom": "Value1", "Authorization": "Bearer t"})
    call("header_case_as_sent", "inference", "POST", echo, "x", {**text, "x-mode": "str"},
         note="the handler asks get_request_header(0, 'X-Mode'): TorchServe matches names as the client spelled "
              "them, so this request ran the describe mode")
    for mode in ("str", "bytes", "list", "int", "none", "dict", "ctype", "header", "status", "status4xx", "tensor",
                 "raise", "predexc", "mismatch", "notlist"):
        call(f"return_{mode}", "inference", "POST", echo, "x", {**text, "X-Mode": mode})
    call("return_dict_accept_text", "inference", "POST", echo, "x", {**text, "X-Mode": "dict", "Accept": "text/plain"})
    seen: list[bytes] = []
    threads = [threading.Thread(target=lambda i=i: seen.append(
        call(f"batch_{i}", "inference", "POST", echo, str(i), text, keep=False))) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    r.answers.append({"name": "batch_sizes_seen_8_concurrent", "sizes": sorted(json.loads(d)["batch"] for d in seen),
                      "note": "informational: the batch sizes the echo handler saw (batchSize 4, maxBatchDelay 50)"})
    call("describe_header", "inference", "POST", "/predictions/tiny", "1,2,3", {**text, "describe": "True"})
    call("explanations_without_get_insights", "inference", "POST", "/explanations/tiny", "1,2,3", text)
    call("management_route_on_inference_port", "inference", "GET", "/models")
    # responseTimeout is 2 s in echo's model_config.yaml
    call("timeout_sleeping_handler", "inference", "POST", echo, "x", {**text, "X-Mode": "sleep", "X-Seconds": "6"})
    call("after_timeout", "inference", "POST", echo, "x", {**text, "X-Mode": "str"})
    for source in ("tinytgz.tar.gz", "tinydir"):
        call(f"register_{source.partition('.')[0]}", "management", "POST", f"/models?url={source}&initial_workers=1")
        call(f"predict_{source.partition('.')[0]}", "inference", "POST", f"/predictions/{source.partition('.')[0]}",
             "1,2,3", text)
    call("register_renamed", "management", "POST", "/models?url=tiny.mar&model_name=renamed&initial_workers=1")
    call("predict_renamed", "inference", "POST", "/predictions/renamed", "1,2,3", text)
    call("unregister_tiny", "management", "DELETE", "/models/tiny")
    call("unregister_tiny_again", "management", "DELETE", "/models/tiny")
    call("unregister_eager_version", "management", "DELETE", "/models/eager/2.0")
    call("unregister_missing_version", "management", "DELETE", "/models/echo/9.9")
    call("register_params_over_yaml", "management", "POST",
         "/models?url=tiny.mar&batch_size=8&max_batch_delay=10&response_timeout=9&initial_workers=1",
         note="the archive's model_config.yaml says batchSize 4, maxBatchDelay 50, responseTimeout 2")
    call("describe_params_over_yaml", "management", "GET", "/models/tiny")
    call("register_params_no_yaml", "management", "POST",
         "/models?url=eager.mar&batch_size=8&max_batch_delay=10&response_timeout=9&initial_workers=1")
    call("describe_params_no_yaml", "management", "GET", "/models/eager")
    call("ping_end", "inference", "GET", "/ping")


def main() -> None:
    if sys.argv[1] == "build":
        build(Path(sys.argv[2]))
        return
    inference, management, metrics = (int(port) for port in sys.argv[2:5])
    recorder = Recorder(inference, management, metrics)
    record(recorder)
    document = {
        "torchserve": "0.12.0", "torch_model_archiver": "0.12.0", "torch": "2.13.0+cpu", "java": "OpenJDK 17.0.15",
        "made_by": "tests/formats/torchserve/record_answers.py (its docstring has the commands)",
        "config_properties": {"disable_token_authorization": "true", "install_py_dep_per_model": "false",
                              "enable_model_api": "true", "default_workers_per_model": "1"},
        "variable": VARIABLE,
        "answers": recorder.answers,
    }
    Path(sys.argv[5]).write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
