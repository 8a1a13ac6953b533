"""Flask's ``render_template_string`` through the tiers, in a real app and test client.

Flask calls ``app.jinja_env.from_string`` itself; after ``cache_from_string`` that is the
cache's. What a page shows must not change: the responses of an app with the cache are
those of the same app without it, with Flask's context (request, config, url_for, g,
context processors) in the string.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SECRET, require_extra
from tiered_bccache import (
    CacheStats,
    FileSystemTier,
    MemoryTier,
    TieredBytecodeCache,
    cache_from_string,
)

PAGE = (
    "{{ request.path }} {{ request.args.get('q', '-') }} "
    "{{ url_for('page', n=n + 1) }} {{ config['GREETING'] }} {{ g.user }} {{ brand }} "
    "{% for i in range(n) %}<{{ i }}>{% endfor %}{{ '<b>' }}"
)
PATHS = ["/page/1", "/page/2?q=x", "/page/3?q=<y>", "/other"]


def make_app(cache: TieredBytecodeCache | None) -> Any:
    """A Flask app rendering strings only, with the cache set as the README says."""
    require_extra("flask", "test")
    from flask import Flask, g, render_template_string

    app = Flask(__name__)
    app.config["GREETING"] = "hello"
    if cache is not None:
        app.jinja_options = {**app.jinja_options, "bytecode_cache": cache}
        cache_from_string(app.jinja_env)

    @app.before_request
    def load_user() -> None:
        g.user = "ada"

    @app.context_processor
    def brand() -> dict[str, str]:
        return {"brand": "ACME"}

    @app.route("/page/<int:n>")
    def page(n: int) -> str:
        return render_template_string(PAGE, n=n)

    @app.route("/other")
    def other() -> str:
        return render_template_string("{{ url_for('other', _external=True) }}|{{ x|e }}", x="&")

    return app


def responses(app: Any, rounds: int = 3) -> list[tuple[int, str, bytes]]:
    client = app.test_client()
    out = []
    for _ in range(rounds):
        for path in PATHS:
            response = client.get(path)
            out.append((response.status_code, response.mimetype, response.data))
    return out


def new_cache(tmp_path: Path, **options: Any) -> TieredBytecodeCache:
    return TieredBytecodeCache(
        [MemoryTier(), FileSystemTier(tmp_path / "cache")], secret=SECRET, **options
    )


def test_responses_with_the_cache_are_the_uncached_app_s(tmp_path: Path) -> None:
    """Every response (status, type, body) equals the uncached app's, request after request,
    with request, config, url_for, g and context processors used in the strings."""
    expected = responses(make_app(None))
    assert expected[0][2] == b"/page/1 - /page/2 hello ada ACME <0>&lt;b&gt;"
    assert expected[3][2] == b"http://localhost/other|&amp;"
    cache = new_cache(tmp_path)
    app = make_app(cache)
    assert app.jinja_env.bytecode_cache is cache
    assert responses(app) == expected
    stats = cache.stats()
    assert stats.string_lookups == len(expected)
    assert stats.string_hits == len(expected) - 2 * 2  # two strings, each missing twice


def string_counters(stats: CacheStats) -> tuple[int, int, int]:
    return stats.string_lookups, stats.string_hits, stats.string_misses


@pytest.mark.parametrize("admission", [1, 2])
def test_string_hits_start_once_the_string_is_admitted(tmp_path: Path, admission: int) -> None:
    """Request k renders one string for the k-th time: with string_admission=1 the second
    request is a hit, with the default (2) the third, and every request after."""
    cache = new_cache(tmp_path, string_admission=admission)
    client = make_app(cache).test_client()
    seen = []
    for _ in range(4):
        assert client.get("/page/2").status_code == 200
        seen.append(string_counters(cache.stats()))
    assert seen == [(k, max(0, k - admission), min(k, admission)) for k in range(1, 5)], (
        f"admission {admission}"
    )


def test_a_string_renders_outside_a_request_context_as_without_the_cache(
    tmp_path: Path,
) -> None:
    """A CLI command or start-up code may render with app.jinja_env outside any request:
    the cache must not make that fail where Flask's own environment works."""
    expected = make_app(None).jinja_env.from_string("{{ 1 + 1 }}").render()
    assert expected == "2"
    app = make_app(new_cache(tmp_path))
    assert app.jinja_env.from_string("{{ 1 + 1 }}").render() == expected


def test_a_second_app_process_finds_the_first_one_s_strings_on_disk(tmp_path: Path) -> None:
    """Flask's environment is described without its application (its autoescape method
    reads nothing of the app, its JSON provider holds the app by weak reference), so it
    is not private: strings an app wrote are hits for the same app in a new process."""
    first = new_cache(tmp_path, string_admission=1)
    responses(make_app(first), rounds=1)
    assert first.stats().string_compiles > 0
    app = make_app(None)
    assert not TieredBytecodeCache([MemoryTier()]).fingerprint(app.jinja_env).startswith("p")
    script = (
        "import sys; sys.path.insert(0, sys.argv[2])\n"
        "from tests.test_flask import make_app, new_cache, responses\n"
        "from pathlib import Path\n"
        "cache = new_cache(Path(sys.argv[1]), string_admission=1)\n"
        "responses(make_app(cache), rounds=1)\n"
        "s = cache.stats(); print(s.string_hits, s.string_misses)\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), root],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert out == [str(len(PATHS)), "0"]
