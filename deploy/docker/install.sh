#!/bin/sh
# The builder stage of deploy/Dockerfile, as a script that also runs outside Docker (the tests do):
# build servekit's wheel from SOURCE, then install it with its runtime dependencies into a fresh
# virtual environment VENV, which the runtime stage copies whole.
#
#   deploy/docker/install.sh SOURCE VENV
#
# Environment: VARIANT cpu (default) | cuda, which also picks the ONNX extra (onnx: onnxruntime,
# onnx-gpu: onnxruntime-gpu), installed with the grpc extra; EXTRAS, servekit extras besides
# those (default: none, e.g. "redis,sklearn,torch"); TORCH_VERSION (2.13.0); TORCH_INDEX_URL
# (torch's CPU or CUDA 13 index, by VARIANT); WHEEL_DIR (/tmp/servekit-wheels); PIP_ARGS, extra
# arguments of every pip install.
set -eu
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

# The wheel: the build hook (hatch_build.py) generates the gRPC code with grpcio-tools, a build
# requirement that pip fetches into an isolated build environment, so it never reaches VENV.
python -m pip wheel --disable-pip-version-check --no-deps --wheel-dir "$wheel_dir" "$source_dir"
wheel=$(ls "$wheel_dir"/servekit-*.whl)

python -m venv "$venv"
pip="$venv/bin/python -m pip --disable-pip-version-check"
# shellcheck disable=SC2086  # PIP_ARGS is a list of words
case ",$extras," in
    # torch first, pinned and from the index of the variant: plain PyPI would pull a multi-GB CUDA build.
    *,torch,*) $pip install $pip_args "torch==$torch_version" --index-url "$torch_index" ;;
esac
# shellcheck disable=SC2086
$pip install $pip_args "$wheel[$onnx_extra,grpc${extras:+,$extras}]"
if [ "$variant" = cuda ]; then
    # onnxruntime-gpu (the onnx-gpu extra) is the same Python package as onnxruntime, with the
    # CUDA execution provider; the CUDA and cuDNN libraries come as pip wheels ([cuda,cudnn]);
    # the host gives the driver.
    # shellcheck disable=SC2086
    $pip install $pip_args "onnxruntime-gpu[cuda,cudnn]>=1.21"
fi
"$venv/bin/servekit" --help >/dev/null
