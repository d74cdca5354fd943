#!/bin/sh
# The builder stage of deploy/Dockerfile, as a script that also runs outside Docker (the tests do):
# install servekit's runtime dependencies into a fresh virtual environment VENV, then build
# servekit's wheel from SOURCE and install it there; the runtime stage copies VENV whole.
#
#   deploy/docker/install.sh [deps|app] SOURCE VENV
#
# deps: create VENV with the dependencies of SOURCE/pyproject.toml (and of EXTRAS) only; it reads
#       nothing else of SOURCE, so the Dockerfile runs it before copying the code, and a change to
#       the code leaves that layer (every dependency) cached.
# app:  build the wheel from SOURCE and install it into VENV without dependencies (deps put them there).
# Neither: both, in that order.
#
# Environment: VARIANT cpu (default) | cuda, which also picks the ONNX extra (onnx: onnxruntime,
# onnx-gpu: onnxruntime-gpu), installed with the grpc extra; EXTRAS, servekit extras besides
# those (default: none, e.g. "redis,sklearn,torch"); TORCH_VERSION (2.13.0); TORCH_INDEX_URL
# (torch's CPU or CUDA 13 index, by VARIANT); WHEEL_DIR (/tmp/servekit-wheels); PIP_ARGS, extra
# arguments of every pip install.
set -eu
case "${1:-}" in
    deps|app) step=$1; shift ;;
    *) step=all ;;
esac
source_dir=$1
venv=$2
variant=${VARIANT:-cpu}
extras=${EXTRAS:-}
torch_version=${TORCH_VERSION:-2.13.0}
wheel_dir=${WHEEL_DIR:-/tmp/servekit-wheels}
pip_args=${PIP_ARGS:-}

# CUDA 13 for torch, as for onnxruntime-gpu's [cuda,cudnn] wheels: one set of CUDA libraries.
case "$variant" in
    cpu) torch_index=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}; onnx_extra=onnx ;;
    cuda) torch_index=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu130}; onnx_extra=onnx-gpu ;;
    *) echo "install.sh: VARIANT must be cpu or cuda, not $variant" >&2; exit 2 ;;
esac
pip="$venv/bin/python -m pip --disable-pip-version-check"

if [ "$step" != app ]; then
    python -m venv "$venv"
    # shellcheck disable=SC2086  # PIP_ARGS is a list of words
    case ",$extras," in
        # torch first, pinned and from the index of the variant: plain PyPI would pull a multi-GB CUDA build.
        *,torch,*) $pip install $pip_args "torch==$torch_version" --index-url "$torch_index" ;;
    esac
    # pyproject.toml's dependencies and those of each extra asked for (an extra may name others, as
    # "all" does), as a requirements file: what installing the wheel would pull, without the wheel.
    requirements="$venv/servekit-requirements.txt"
    python - "$source_dir/pyproject.toml" "$onnx_extra,grpc${extras:+,$extras}" >"$requirements" <<'PYTHON'
import re
import sys
import tomllib

with open(sys.argv[1], "rb") as file:
    project = tomllib.load(file)["project"]
optional = project.get("optional-dependencies", {})
found = list(project["dependencies"])
seen = set()


def add(extra):
    if extra in seen:
        return
    if extra not in optional:
        sys.exit(f"install.sh: servekit has no extra {extra!r} (EXTRAS); it has {', '.join(optional)}")
    seen.add(extra)
    for requirement in optional[extra]:
        itself = re.fullmatch(re.escape(project["name"]) + r"\[(.+)\]", requirement.strip())
        if itself:
            for name in itself.group(1).split(","):
                add(name.strip())
        else:
            found.append(requirement)


for name in sys.argv[2].split(","):
    if name.strip():
        add(name.strip())
print("\n".join(found))
PYTHON
    # shellcheck disable=SC2086
    $pip install $pip_args -r "$requirements"
    rm "$requirements"
    if [ "$variant" = cuda ]; then
        # onnxruntime-gpu (the onnx-gpu extra) is the same Python package as onnxruntime, with the
        # CUDA execution provider; the CUDA and cuDNN libraries come as pip wheels ([cuda,cudnn]);
        # the host gives the driver.
        # shellcheck disable=SC2086
        $pip install $pip_args "onnxruntime-gpu[cuda,cudnn]>=1.21"
    fi
fi

if [ "$step" != deps ]; then
    # The wheel: the build hook (hatch_build.py) generates the gRPC code with grpcio-tools, a build
    # requirement that pip fetches into an isolated build environment, so it never reaches VENV.
    python -m pip wheel --disable-pip-version-check --no-deps --wheel-dir "$wheel_dir" "$source_dir"
    wheel=$(ls "$wheel_dir"/servekit-*.whl)
    # --no-deps: the deps step installed them (with onnxruntime-gpu in place of onnxruntime for cuda,
    # which a resolving install would swap back).
    # shellcheck disable=SC2086
    $pip install $pip_args --no-deps "$wheel"
    "$venv/bin/servekit" --help >/dev/null
fi
