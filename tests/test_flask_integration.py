"""tiered_bccache.flask.init_app in a real Flask app: the cache comes from app.config or
the environment, file templates and render_template_string go through it, a second app
(another worker, or another process) loads what the first compiled, and a wrong
configuration is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SECRET, RedisServer, require_extra
from tiered_bccache import ConfigurationError, FileSystemTier, MemoryTier, RedisTier
from tiered_bccache.secret import ENV_VAR
from tiered_bccache.spec import TIERS_ENV_VAR

PAGE = "{% extends 'base.html' %}{% block body %}{{ n }} {{ g.user }} {{ '<b>' }}{% endblock %}"
BASE = "<title>{{ config['GREETING'] }}</title>{% block body %}{% endblock %}"
STRING = "{{ request.path }} {{ url_for('string_page') }} {{ x }}"


def make_app(templates: Path, config: dict[str, Any]) -> Any:
    """A Flask app with a file template, a template string, and ``config``."""
    require_extra("flask", "test")
    from flask import Flask, g, render_template, render_template_string

    app = Flask(__name__, template_folder=str(templates))
    app.config.update(GREETING="hello", **config)

    @app.before_request
    def load_user() -> None:
        g.user = "ada"

    @app.route("/page/<int:n>")
    def page(n: int) -> str:
        return render_template("page.html", n=n)

    @app.route("/string")
    def string_page() -> str:
        return render_template_string(STRING, x="&")

    return app


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    directory = tmp_path / "templates"
    directory.mkdir()
    (directory / "page.html").write_text(PAGE)
    (directory / "base.html").write_text(BASE)
    return directory


def get_all(app: Any) -> list[bytes]:
    client = app.test_client()
    return [client.get(path).data for path in ("/page/1", "/page/2", "/string", "/string")]


EXPECTED = [
    b"<title>hello</title>1 ada &lt;b&gt;",
    b"<title>hello</title>2 ada &lt;b&gt;",
    b"/string /string &amp;",
    b"/string /string &amp;",
]


def test_init_app_builds_the_cache_from_app_config_and_pages_go_through_it(
    templates: Path, tmp_path: Path
) -> None:
    """init_app reads TIERED_BCCACHE_TIERS and _SECRET from app.config; file templates
    and render_template_string compile once, and a second app loads them from the
    shared tier without compiling."""
    config = {
        "TIERED_BCCACHE_TIERS": ["memory", f"fs:{tmp_path / 'cache'}"],
        "TIERED_BCCACHE_SECRET": SECRET,
    }
    import tiered_bccache.flask

    first = make_app(templates, config)
    cache = tiered_bccache.flask.init_app(first)
    assert [type(t) for t in cache.tiers] == [MemoryTier, FileSystemTier]
    assert first.jinja_env.bytecode_cache is cache
    assert first.extensions["tiered_bccache"] is cache
    assert get_all(first) == EXPECTED
    stats = cache.stats()
    assert (stats.compiles, stats.string_compiles) == (2, 1)  # page and base; the string

    second = make_app(templates, config)
    other = tiered_bccache.flask.init_app(second)
    assert get_all(second) == EXPECTED
    stats = other.stats()
    assert (stats.compiles, stats.string_compiles, stats.tiers[1].hits) == (0, 0, 3)


def test_init_app_falls_back_to_the_environment(
    templates: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing in app.config, the tiers and secret come from the environment
    variables of the same names (one whitespace-separated string of specs)."""
    monkeypatch.setenv(TIERS_ENV_VAR, f"memory:64 fs:{tmp_path / 'cache'}")
    monkeypatch.setenv(ENV_VAR, SECRET.decode())
    import tiered_bccache.flask

    app = make_app(templates, {})
    cache = tiered_bccache.flask.init_app(app)
    assert [type(t) for t in cache.tiers] == [MemoryTier, FileSystemTier]
    assert get_all(app) == EXPECTED


def test_init_app_after_the_environment_exists_still_sets_the_cache(
    templates: Path, tmp_path: Path
) -> None:
    """An app whose jinja_env was already built (by an extension) gets the cache on it."""
    import tiered_bccache.flask

    app = make_app(templates, {"TIERED_BCCACHE_TIERS": f"fs:{tmp_path}"})
    env = app.jinja_env
    cache = tiered_bccache.flask.init_app(app, secret=SECRET)
    assert app.jinja_env is env and env.bytecode_cache is cache
    assert get_all(app) == EXPECTED
    assert cache.stats().tiers[0].writes == 3


def test_init_app_with_a_redis_tier(templates: Path, redis_server: RedisServer) -> None:
    """A Redis tier from a redis:// spec serves a second app (another host)."""
    import tiered_bccache.flask

    spec = f"memory {redis_server.url};prefix=f{uuid.uuid4().hex[:10]}"
    config = {"TIERED_BCCACHE_TIERS": spec, "TIERED_BCCACHE_SECRET": SECRET}
    assert isinstance(
        tiered_bccache.flask.init_app(make_app(templates, config)).tiers[1], RedisTier
    )
    app = make_app(templates, config)
    second = tiered_bccache.flask.init_app(app)
    assert get_all(app) == EXPECTED
    assert (second.stats().compiles, second.stats().string_compiles) == (2, 1)
    third_app = make_app(templates, config)
    third = tiered_bccache.flask.init_app(third_app)
    assert get_all(third_app) == EXPECTED
    stats = third.stats()
    assert (stats.compiles, stats.string_compiles, stats.tiers[1].hits) == (0, 0, 3)


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({}, "TIERED_BCCACHE_TIERS"),
        ({"TIERED_BCCACHE_TIERS": "memory nonsense:1"}, "tier 'nonsense:1'"),
    ],
)
def test_init_app_refuses_a_missing_or_wrong_configuration(
    templates: Path,
    config: dict[str, Any],
    fragment: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No tiers anywhere, or a wrong spec, is a ConfigurationError naming it."""
    monkeypatch.delenv(TIERS_ENV_VAR, raising=False)
    import tiered_bccache.flask

    with pytest.raises(ConfigurationError, match=fragment):
        tiered_bccache.flask.init_app(make_app(templates, config), secret=SECRET)


#: A Flask app in a process of its own, with a filter of the application's that reads
#: labels from a database behind a lock (as a settings or translation filter does),
#: applied to a constant and to a variable. Arguments: the template directory, the
#: app's config (JSON) and this process's label for "greeting" (each process has its own
#: database, so a label baked into cached code would show).
FLASK_SCRIPT = """
import json, sqlite3, sys, threading
from flask import Flask, g, render_template, render_template_string
import tiered_bccache.flask

app = Flask(__name__, template_folder=sys.argv[1])
app.config.update(GREETING="hello", **json.loads(sys.argv[2]))
database = sqlite3.connect(":memory:", check_same_thread=False)
database.execute("create table labels (key text primary key, value text)")
database.execute("insert into labels values ('greeting', ?)", (sys.argv[3],))
lock = threading.Lock()


@app.template_filter("label")
def label(key):
    with lock:
        row = database.execute("select value from labels where key = ?", (key,)).fetchone()
    return row[0] if row else key


@app.before_request
def load_user():
    g.user = "ada"


@app.route("/page/<int:n>")
def page(n):
    return render_template("page.html", n=n)


@app.route("/string")
def string_page():
    return render_template_string(
        "{{ request.path }} {{ 'greeting'|label }} {{ x|label }}", x="greeting"
    )


cache = tiered_bccache.flask.init_app(app)
client = app.test_client()
paths = ("/page/1", "/page/2", "/string", "/string")
pages = [client.get(path).get_data(as_text=True) for path in paths]
stats = cache.stats()
print(json.dumps({
    "pages": pages,
    "compiles": stats.compiles,
    "string_compiles": stats.string_compiles,
    "writes": [t.writes for t in stats.tiers],
    "hits": [t.hits for t in stats.tiers],
}))
"""

LABELLED_PAGE = (
    "{% extends 'base.html' %}{% block body %}{{ n }} {{ g.user }} {{ {'a': 1}|tojson }} "
    "{{ 'greeting'|label }}{% endblock %}"
)


def labelled_pages(greeting: str) -> list[str]:
    """What the script renders when the database's label for "greeting" is ``greeting``."""
    return [f'<title>hello</title>{n} ada {{"a": 1}} {greeting}' for n in (1, 2)] + [
        f"/string {greeting} {greeting}"
    ] * 2


def render_in_process(templates: Path, config: dict[str, Any], greeting: str) -> dict[str, Any]:
    """Run the Flask script in a new process; return what it printed."""
    environ = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, TIERS_ENV_VAR)}
    environ["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-c", FLASK_SCRIPT, str(templates), json.dumps(config), greeting],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_processes_share_the_filesystem_tier_with_an_application_filter(
    templates: Path, tmp_path: Path
) -> None:
    """A first process stores page, base and the template string in the filesystem tier;
    a second process, whose application filter (over a lock and a database connection)
    gives other labels, renders its own labels and compiles nothing."""
    require_extra("flask", "test")
    (templates / "page.html").write_text(LABELLED_PAGE)
    config = {
        "TIERED_BCCACHE_TIERS": ["memory", f"fs:{tmp_path / 'cache'}"],
        "TIERED_BCCACHE_SECRET": SECRET.decode(),
    }
    first = render_in_process(templates, config, "Hi")
    assert first["pages"] == labelled_pages("Hi")
    assert (first["compiles"], first["string_compiles"]) == (2, 1)
    assert first["writes"] == [3, 3], "page, base and the string, in both tiers"
    files = [p for p in (tmp_path / "cache").iterdir() if p.is_file()]
    assert len([p for p in files if not p.name.startswith(".")]) == 3  # not .secret
    second = render_in_process(templates, config, "Hey")
    assert second["pages"] == labelled_pages("Hey")
    assert (second["compiles"], second["string_compiles"]) == (0, 0)
    assert second["hits"] == [1, 3]  # page, base, the string; the string again in memory
