"""tiered_bccache.flask.init_app in a real Flask app: the cache comes from app.config or
the environment, file templates and render_template_string go through it, a second app
(another worker) loads what the first compiled, and a wrong configuration is refused."""

from __future__ import annotations

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
