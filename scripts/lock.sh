#!/usr/bin/env bash
# requirements.lock (what the image installs) and requirements-test.lock (what make test and CI
# install) from pyproject.toml, with every file's hash. pip-compile keeps the versions already
# locked unless UPGRADE=1. Run by `make lock`; commit both files with pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools"
"$tools/bin/pip" install --quiet pip-tools
args=(--quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links)
if [ "${UPGRADE:-}" = "1" ]; then args+=(--upgrade); fi
"$tools/bin/pip-compile" "${args[@]}" -o requirements.lock pyproject.toml
"$tools/bin/pip-compile" "${args[@]}" --extra test -o requirements-test.lock pyproject.toml
echo "requirements.lock and requirements-test.lock written"
