#!/bin/sh
# Wheels a lent GPU machine lacks for `python -m bench.gpu_train` (issue 24), into .whl/ (git-ignored).
#
# The machine (device tool, Python 3.12, no network) has JAX, NumPy, OpenCV, Matplotlib, PyYAML, h5py,
# SciPy and Rich; of what trapcam's training imports it lacks Keras and pydantic with their own needs.
# The versions are this checkout's dev environment's, so the GPU trains with the Keras that converts.
#   sh tools/gpu-wheels.sh [PYTHON]        # PYTHON: the interpreter whose versions to take (.venv-dev/bin/python)
# Then carry .whl in the device call and start its command with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
set -eu
cd "$(dirname "$0")/.."
python=${1:-.venv-dev/bin/python}
rm -rf .whl && mkdir .whl
for name in keras namex optree pydantic pydantic_core annotated-types typing-inspection; do
    version=$("$python" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
    [ -n "$version" ] || { echo "gpu-wheels: $name is not installed in $python" >&2; exit 2; }
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$name==$version"
done
du -ch .whl/*.whl | tail -n 1
