#!/usr/bin/env bash
# The test suite on every CPython from 3.10 to 3.13 that this machine has, besides the
# default one (.venv, whose run in scripts/test.sh includes the stress tests): each in a
# virtualenv of its own, .venv-3.X, with the package (editable) and its test extras.
# An interpreter is pyenv's newest 3.X.* in ~/.pyenv/versions, else `python3.X` on PATH.
# Versions the machine lacks are skipped and named at the end; under CI=true a missing
# version fails the run instead, since the classifiers claim every one.
# Extra arguments go to pytest (e.g. -k filesystem).
# shellcheck source=scripts/setup.sh
source "$(dirname "$0")/setup.sh"

VERSIONS=(3.10 3.11 3.12 3.13)
DEFAULT="$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
# The same Jinja as .venv, whose test suite setup.sh unpacked into .cache/jinja-tests.
JINJA_VERSION="$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("jinja2"))')"

find_python() {  # find_python 3.X: the path of a working CPython 3.X, or nothing
    local version="$1" candidate
    local candidates=()
    # pyenv's own builds, newest patch release first; its shims are not used (a shim for
    # a version that is installed but not selected exits 127).
    while IFS= read -r candidate; do
        candidates+=("$candidate/bin/python")
    done < <(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$version".* 2>/dev/null | sort -rV)
    candidate="$(command -v "python$version" 2>/dev/null || true)"
    [ -z "$candidate" ] || candidates+=("$candidate")
    local found
    for candidate in "${candidates[@]}"; do
        [ -x "$candidate" ] || continue
        found="$("$candidate" -c 'import sys, venv; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)"
        if [ "$found" = "$version" ]; then
            echo "$candidate"
            return
        fi
    done
}

ran=() skipped=() failed=()
for version in "${VERSIONS[@]}"; do
    if [ "$version" = "$DEFAULT" ]; then
        continue  # .venv: scripts/test.sh runs it, stress tests included
    fi
    python="$(find_python "$version")"
    if [ -z "$python" ]; then
        skipped+=("$version")
        echo "matrix: no CPython $version on this machine (pyenv or python$version); skipped" >&2
        continue
    fi
    venv=".venv-$version"
    start=$SECONDS
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        -e ".[${EXTRAS:-test,prometheus,plot,redis}]" "jinja2==$JINJA_VERSION"
    # As setup.sh does for .venv: an editable install does not carry the start-up hook.
    cp tiered_bccache.pth "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/"
    echo "matrix: $("$venv/bin/python" -V) in $venv"
    # No cache provider: the interpreters would share .pytest_cache's last-failed state.
    if "$venv/bin/python" -m pytest -q -p no:cacheprovider --ignore=tests/stress "$@"; then
        ran+=("$version ($((SECONDS - start)) s)")
    else
        failed+=("$version")
    fi
done

echo "matrix: passed on ${ran[*]:-none}; ${DEFAULT} is the default (.venv, run by scripts/test.sh)"
if [ ${#skipped[@]} -gt 0 ]; then
    echo "matrix: skipped ${skipped[*]}: not on this machine" >&2
    case "${CI:-}" in
        true | TRUE | True | 1 | yes)
            echo "matrix: under CI=true a version the classifiers claim must be tested" >&2
            exit 1
            ;;
    esac
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "matrix: failed on ${failed[*]}" >&2
    exit 1
fi
