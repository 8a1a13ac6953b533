# Sourced by the other scripts: a virtualenv in .venv with the package and its extras,
# and memcached and redis-server from Debian's packages when they are missing. Works on
# a fresh machine (Python 3.10+, root or sudo, Debian's packages and PyPI reachable).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
apt_install() {
    [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    # Debian's own python3 ships venv separately; install it only if it is missing.
    "$PYTHON" -m venv .venv 2>/dev/null || { rm -rf .venv; apt_install python3-venv; "$PYTHON" -m venv .venv; }
fi
VENV_PY="$PWD/.venv/bin/python"
# Every extra by default: under CI=true the plot, Prometheus, Flask and Django tests fail
# rather than skip without theirs. bench.sh asks for what the benchmark needs only.
"$VENV_PY" -m pip install -q --disable-pip-version-check -e ".[${EXTRAS:-test,prometheus,plot,redis}]"
# An editable install does not carry the start-up hook of `tiered-bccache run` (setup.py
# puts it in wheels only): put it where this interpreter reads .pth files.
cp tiered_bccache.pth "$("$VENV_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/"

# Jinja's own test suite, which tests/test_jinja_suite.py runs with the cache in every
# Environment: its wheel ships no tests, its sdist does. Unpacked once per Jinja version
# into .cache/jinja-tests/VERSION/ (tests/ and the pyproject.toml holding its pytest
# settings), into a temporary directory renamed into place, so that an interrupted run
# leaves nothing half unpacked. A failed download is a warning here: the test says what
# is missing (and fails under CI=true).
case ",${EXTRAS:-test}," in *,test,*)
    JINJA_VERSION="$("$VENV_PY" -c 'import importlib.metadata as m; print(m.version("jinja2"))')"
    JINJA_TESTS=".cache/jinja-tests/$JINJA_VERSION"
    if [ ! -f "$JINJA_TESTS/tests/conftest.py" ]; then
        jinja_tmp="$(mktemp -d)"
        if "$VENV_PY" -m pip download -q --disable-pip-version-check --no-deps \
                --no-binary :all: -d "$jinja_tmp" "jinja2==$JINJA_VERSION" >/dev/null 2>&1; then
            mkdir -p .cache/jinja-tests
            rm -rf "$JINJA_TESTS"
            "$VENV_PY" - "$jinja_tmp" "$JINJA_TESTS" <<'EOF'
import glob, os, sys, tarfile, tempfile
download, target = sys.argv[1], sys.argv[2]
(archive,) = glob.glob(os.path.join(download, "*.tar.gz"))
unpacked = tempfile.mkdtemp(dir=os.path.dirname(target))
with tarfile.open(archive) as tar:
    top = tar.getnames()[0].split("/")[0]
    wanted = [
        m for m in tar.getmembers()
        if m.name.startswith(f"{top}/tests/") or m.name in (f"{top}/pyproject.toml", f"{top}/setup.cfg")
    ]
    # The data filter refuses links and paths outside the directory (Python 3.10.12+).
    extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    tar.extractall(unpacked, members=wanted, **extra)
os.rename(os.path.join(unpacked, top), target)
os.rmdir(unpacked)
EOF
        else
            echo "setup.sh: could not download Jinja $JINJA_VERSION's sdist; tests/test_jinja_suite.py will report it" >&2
        fi
        rm -rf "$jinja_tmp"
    fi
    ;;
esac

# The real tools (dbt with dbt-duckdb, ansible-core, Sphinx, MkDocs) in a virtualenv of
# their own: dbt pins a pathspec that mypy cannot use. For tests/tools and the tools
# benchmark (TOOLS=1; test.sh asks for it).
if [ "${TOOLS:-0}" = 1 ]; then
    [ -x .venv-tools/bin/python ] || "$PYTHON" -m venv .venv-tools
    # Installed as a user installs it (not editable): with its start-up hook.
    .venv-tools/bin/python -m pip install -q --disable-pip-version-check ".[test,redis,bench-tools]"
fi

if [ "${NEED_MEMCACHED:-1}" = 1 ] && ! command -v memcached >/dev/null 2>&1 && [ ! -x /usr/bin/memcached ]; then
    apt_install memcached
    # Debian starts a system-wide memcached on 11211; the tests start their own.
    as_root systemctl disable --now memcached >/dev/null 2>&1 || true
fi
if [ "${NEED_REDIS:-1}" = 1 ] && ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
    apt_install redis-server
    # Debian starts a system-wide redis on 6379; the tests and bench start their own.
    as_root systemctl disable --now redis-server >/dev/null 2>&1 || true
    as_root service redis-server stop >/dev/null 2>&1 || true
fi
export PATH="$PWD/.venv/bin:$PATH"
