#!/usr/bin/env bash
# Wheels for every pin in docker/requirements.lock, and for the build backend, into
# docker/wheels: what `docker build --build-arg PIP_NO_INDEX=1` installs from, for hosts
# whose containers reach no package index. Run it with the Python the image has (3.11):
# packages with compiled code are fetched or built for that version.
#
#   docker/wheelhouse.sh               (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")"
python="${PYTHON:-python3}"

read -ra backend <<<"$("$python" -c 'import tomllib
print(*tomllib.load(open("../pyproject.toml", "rb"))["build-system"]["requires"])')"
# The lock is complete, so no resolving (--no-deps); markers are dropped so that the wheels
# an older 3.11 needs (see the lock) are there too.
sed -e '/^#/d' -e 's/[[:space:]]*;.*//' requirements.lock \
    | "$python" -m pip wheel --quiet --no-deps --wheel-dir wheels -r /dev/stdin "${backend[@]}"
