# Shared by scripts/demo and scripts/test: a project-local virtualenv with the package installed.
# Sourced, not executed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"

# Debian splits `python3 -m venv` (ensurepip) into the python3-venv package: the callers install it through
# ensure_debian_packages first. Without it, venv fails half-way and leaves a .venv with a python but no pip,
# which a later run would take for a working one; venv run again over such a .venv adds pip (nothing removed).
# A run whose install inputs (pyproject.toml, setup.py) and extras are those of the last successful install
# into this .venv installs nothing: pip asked the package index on every start (an upgrade of pip, an isolated
# build of the editable install), so every run of scripts/demo needed the network and spent seconds there. The
# code itself needs no install (editable). One stamp per extras, written only after both installs succeeded.
ensure_venv() {
    local extras="$1"
    if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
        rm -f .venv/.installed-*
        "$PY" -m venv .venv || {
            echo "cannot create .venv with $PY -m venv (on Debian: apt-get install python3-venv)" >&2
            return 1
        }
    fi
    local stamp=".venv/.installed-${extras:-base}" inputs
    inputs="$({ cat pyproject.toml setup.py 2>/dev/null || true; } | sha256sum)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ]; then
        return 0
    fi
    .venv/bin/python -m pip install --quiet --upgrade pip
    # ".[]" (no extras) is not a requirement current pip accepts: name the extras only when there are some.
    local project="."
    [ -z "$extras" ] || project=".[${extras}]"
    .venv/bin/python -m pip install --quiet -e "$project"
    printf '%s\n' "$inputs" > "$stamp"
}

# Install Debian packages that are missing (needs root or sudo); a no-op when all are present.
ensure_debian_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing Debian packages: ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
