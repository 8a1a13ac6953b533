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
