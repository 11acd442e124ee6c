#!/usr/bin/env bash
# Create or update the course environment in .venv/ (idempotent: a no-op when nothing changed).
#
#   scripts/setup_env.sh            course + tests + book + reference packages
#
# torch/torchvision are installed first and alone, so that nothing else picks another torch.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
CONSTRAINTS=requirements/constraints.txt
EXTRAS="course,test,book,reference"
STAMP=$VENV/.course-setup-stamp

want=$(cat "$CONSTRAINTS" pyproject.toml "$0" | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    echo "[setup] .venv is up to date"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 is needed"'
    echo "[setup] creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q -c "$CONSTRAINTS")
# Some machines list local package folders as extra indexes; pip warns once per package that a
# folder lacks. Those lines are noise; everything else pip says is kept.
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

start=$(date +%s)
echo "[setup] installing torch and torchvision (pinned in $CONSTRAINTS)"
quiet "${PIP[@]}" torch torchvision
echo "[setup] installing course_utils[$EXTRAS]"
quiet "${PIP[@]}" -e ".[$EXTRAS]"
echo "$want" > "$STAMP"
echo "[setup] done in $(( $(date +%s) - start )) s"
