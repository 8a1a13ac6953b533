"""Django's Jinja2 backend with ``"environment": "tiered_bccache.django.environment"``:
real Django rendering through the cache, built from settings.

Each scenario runs in a subprocess: ``settings.configure`` and ``django.setup`` are
global to a process and would leak into other tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.conftest import SECRET, RedisServer, require_extra
from tiered_bccache.secret import ENV_VAR
from tiered_bccache.spec import TIERS_ENV_VAR

REPO = Path(__file__).resolve().parents[1]

#: The README's TEMPLATES entry, as a project writes it; the script prints what
#: render_to_string rendered and the cache's counters.
SCRIPT = """
import json, sys
import django
from django.conf import settings

settings.configure(
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.jinja2.Jinja2",
            "DIRS": [sys.argv[1]],
            "OPTIONS": {"environment": "tiered_bccache.django.environment"},
        }
    ],
    **json.loads(sys.argv[2]),
)
django.setup()
from django.template import engines
from django.template.loader import render_to_string

import tiered_bccache.django

pages = [render_to_string("page.html", {"n": n, "x": "<b>"}) for n in (1, 2)]
pages.append(engines["jinja2"].from_string("{{ x }}!").render({"x": "&"}))
pages.append(engines["jinja2"].from_string("{{ x }}!").render({"x": "&"}))
cache = tiered_bccache.django.bytecode_cache()
env = engines["jinja2"].env
stats = cache.stats()
print(json.dumps({
    "pages": pages,
    "same_cache": env.bytecode_cache is cache,
    "autoescape": env.autoescape,
    "tiers": [type(t).__name__ for t in cache.tiers],
    "compiles": stats.compiles,
    "string_compiles": stats.string_compiles,
    "hits": [t.hits for t in stats.tiers],
}))
"""

EXPECTED = ["<h1>1</h1>&lt;b&gt;", "<h1>2</h1>&lt;b&gt;", "&amp;!", "&amp;!"]


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    require_extra("django", "test")
    directory = tmp_path / "jinja2"
    directory.mkdir()
    (directory / "base.html").write_text(
        "<h1>{% block title %}{% endblock %}</h1>{% block body %}{% endblock %}"
    )
    (directory / "page.html").write_text(
        "{% extends 'base.html' %}{% block title %}{{ n }}{% endblock %}"
        "{% block body %}{{ x }}{% endblock %}"
    )
    return directory


def render(
    templates: Path, settings: Mapping[str, object], env: dict[str, str] | None = None
) -> dict[str, object]:
    """Run the Django script in a new process; return what it printed."""
    environ = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, TIERS_ENV_VAR)}
    environ["PYTHONPATH"] = str(REPO)
    environ.update(env or {})
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(templates), json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_django_renders_through_the_cache_built_from_settings(
    templates: Path, tmp_path: Path
) -> None:
    """TIERED_BCCACHE_TIERS and _SECRET in settings build the cache; render_to_string
    and from_string go through it; a second process compiles nothing."""
    settings = {
        "TIERED_BCCACHE_TIERS": ["memory", f"fs:{tmp_path / 'cache'}"],
        "TIERED_BCCACHE_SECRET": SECRET.decode(),
    }
    first = render(templates, settings)
    assert first["pages"] == EXPECTED
    assert first["same_cache"] is True and first["autoescape"] is True
    assert first["tiers"] == ["MemoryTier", "FileSystemTier"]
    assert (first["compiles"], first["string_compiles"]) == (2, 1)
    second = render(templates, settings)
    assert second["pages"] == EXPECTED
    assert (second["compiles"], second["string_compiles"]) == (0, 0)
    assert second["hits"] == [1, 3]  # the string again: a memory hit


def test_django_reads_the_environment_when_settings_say_nothing(
    templates: Path, tmp_path: Path
) -> None:
    """Without the settings, the tiers and the secret come from the environment."""
    env = {TIERS_ENV_VAR: f"memory fs:{tmp_path / 'cache'}", ENV_VAR: SECRET.decode()}
    assert render(templates, {}, env)["pages"] == EXPECTED
    assert render(templates, {}, env)["compiles"] == 0


def test_django_with_a_redis_tier(templates: Path, redis_server: RedisServer) -> None:
    """A redis:// spec in settings: a second process (another host) loads from Redis."""
    settings = {
        "TIERED_BCCACHE_TIERS": ["memory", f"{redis_server.url};prefix=d{uuid.uuid4().hex[:10]}"],
        "TIERED_BCCACHE_SECRET": SECRET.decode(),
    }
    first = render(templates, settings)
    assert first["tiers"] == ["MemoryTier", "RedisTier"] and first["pages"] == EXPECTED
    second = render(templates, settings)
    assert second["pages"] == EXPECTED
    assert second["compiles"] == 0 and second["hits"] == [1, 3]


def test_django_without_tiers_fails_naming_the_setting(templates: Path) -> None:
    """No TIERED_BCCACHE_TIERS anywhere: the first render raises a ConfigurationError
    naming the setting."""
    script = SCRIPT.replace("pages = [", "pages = [] and [")
    done = subprocess.run(
        [sys.executable, "-c", script, str(templates), "{}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **{k: v for k, v in os.environ.items() if k not in (ENV_VAR, TIERS_ENV_VAR)},
            "PYTHONPATH": str(REPO),
        },
    )
    assert done.returncode != 0
    assert "ConfigurationError: TIERED_BCCACHE_TIERS" in textwrap.dedent(done.stderr)
