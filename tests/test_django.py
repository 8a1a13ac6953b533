"""Django's Jinja2 backend with ``"environment": "tiered_bccache.django.environment"``:
real Django rendering through the cache, built from settings; and django-jinja's
backend (``django_jinja.backend.Jinja2``), whose environment carries Django's filters,
its extensions and the project's own filters.

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
    return run_script(SCRIPT, [str(templates), json.dumps(settings)], env)


def run_script(
    script: str, args: list[str], env: dict[str, str] | None = None
) -> dict[str, object]:
    """Run ``script`` in a new process with ``args``; return the JSON it printed."""
    environ = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, TIERS_ENV_VAR)}
    environ["PYTHONPATH"] = str(REPO)
    environ.update(env or {})
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
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


# -- django-jinja ----------------------------------------------------------------------

#: A project on django-jinja's backend: its default extensions (i18n, csrf, cache, url,
#: static, Django's filters), gettext from Django, and a filter of the project's own that
#: reads labels from a database behind a lock, given in ``OPTIONS["filters"]``. The
#: environment is the library's (``tiered_bccache.django.environment``) or a function
#: of the project's that passes ``bytecode_cache=tiered_bccache.django.bytecode_cache()``
#: (``__main__.environment``). Arguments: the template directory, settings (JSON), the
#: environment's dotted path, and this process's label for "greeting" (each process has
#: its own database, so a label baked into cached code would show).
DJANGO_JINJA_SCRIPT = """
import json, sqlite3, sys, threading
import django
from django.conf import settings

import tiered_bccache
import tiered_bccache.django

database = sqlite3.connect(":memory:", check_same_thread=False)
database.execute("create table labels (key text primary key, value text)")
database.execute("insert into labels values ('greeting', ?)", (sys.argv[4],))
lock = threading.Lock()


def label(key):
    with lock:
        row = database.execute("select value from labels where key = ?", (key,)).fetchone()
    return row[0] if row else key


def environment(**options):
    import jinja2

    env = jinja2.Environment(bytecode_cache=tiered_bccache.django.bytecode_cache(), **options)
    tiered_bccache.cache_from_string(env)
    return env


settings.configure(
    INSTALLED_APPS=["django_jinja"],
    TEMPLATES=[
        {
            "BACKEND": "django_jinja.backend.Jinja2",
            "NAME": "jinja2",
            "DIRS": [sys.argv[1]],
            "OPTIONS": {"environment": sys.argv[3], "filters": {"label": "__main__.label"}},
        }
    ],
    **json.loads(sys.argv[2]),
)
django.setup()
from django.template import engines
from django.template.loader import render_to_string

engine = engines["jinja2"]
pages = [render_to_string("page.jinja", {"n": n, "x": "<b>"}) for n in (1, 2)]
# Twice: a string is stored once this process has compiled it twice (string_admission).
string = "{{ x }} {{ 'A b'|slugify }} {{ 'greeting'|label }}!"
pages += [engine.from_string(string).render({"x": "&"}) for _ in range(2)]
result = {"pages": pages}
cache = engine.env.bytecode_cache
if cache is not None:  # None: plain django-jinja, for comparison
    stats = cache.stats()
    result.update(
        same_cache=cache is tiered_bccache.django.bytecode_cache(),
        compiles=stats.compiles,
        string_compiles=stats.string_compiles,
        writes=[t.writes for t in stats.tiers],
        hits=[t.hits for t in stats.tiers],
    )
print(json.dumps(result))
"""

DJANGO_JINJA_PAGE = (
    "{% extends 'base.jinja' %}"
    "{% block title %}{{ n|add(1) }} {{ _('Hello') }} {{ 'greeting'|label }}{% endblock %}"
    "{% block body %}{{ x }} {{ 'one two three'|truncatewords(2) }} {{ '<i>'|upper }}"
    "{% endblock %}"
)


def django_jinja_pages(greeting: str) -> list[str]:
    """What the script renders when the database's label for "greeting" is ``greeting``."""
    return [
        f"<h1>{n + 1} Hello {greeting}</h1>&lt;b&gt; one two \u2026 &lt;I&gt;" for n in (1, 2)
    ] + [f"&amp; a-b {greeting}!"] * 2


@pytest.fixture
def django_jinja_templates(tmp_path: Path) -> Path:
    require_extra("django", "test")
    require_extra("django_jinja", "test")
    directory = tmp_path / "templates"
    directory.mkdir()
    (directory / "base.jinja").write_text(
        "<h1>{% block title %}{% endblock %}</h1>{% block body %}{% endblock %}"
    )
    (directory / "page.jinja").write_text(DJANGO_JINJA_PAGE)
    return directory


def entry_files(directory: Path) -> list[Path]:
    """The files a filesystem tier holds (not its hidden lock directory or key)."""
    return [p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")]


def render_django_jinja(
    templates: Path, settings: Mapping[str, object], environment: str, greeting: str
) -> dict[str, object]:
    """Run the django-jinja script in a new process; return what it printed."""
    args = [str(templates), json.dumps(settings), environment, greeting]
    return run_script(DJANGO_JINJA_SCRIPT, args)


@pytest.mark.parametrize(
    "environment", ["tiered_bccache.django.environment", "__main__.environment"]
)
def test_django_jinja_processes_share_the_filesystem_tier(
    django_jinja_templates: Path, tmp_path: Path, environment: str
) -> None:
    """django-jinja's environment (Django's filters, its extensions, a project filter
    over a lock and a database connection) is stored in the filesystem tier by a first
    process, and a second process renders the same pages, with its own filter's output,
    compiling nothing."""
    settings = {
        "STATIC_URL": "/static/",
        "TIERED_BCCACHE_TIERS": ["memory", f"fs:{tmp_path / 'cache'}"],
        "TIERED_BCCACHE_SECRET": SECRET.decode(),
    }
    first = render_django_jinja(django_jinja_templates, settings, environment, "Hi")
    assert first["pages"] == django_jinja_pages("Hi")
    assert first["same_cache"] is True
    assert (first["compiles"], first["string_compiles"]) == (2, 1)
    assert first["writes"] == [3, 3], "page, base and the string, in both tiers"
    assert len(entry_files(tmp_path / "cache")) == 3
    second = render_django_jinja(django_jinja_templates, settings, environment, "Hey")
    assert second["pages"] == django_jinja_pages("Hey")
    assert (second["compiles"], second["string_compiles"]) == (0, 0)
    assert second["hits"] == [1, 3]  # page, base, the string; the string again in memory


def test_django_jinja_without_static_url_renders_as_it_does_without_the_cache(
    django_jinja_templates: Path, tmp_path: Path
) -> None:
    """A project that never set STATIC_URL renders django-jinja pages that do not use
    ``static``; looking its templates up in the cache must not touch the lazy static
    files storage (which raises ImproperlyConfigured without STATIC_URL)."""
    settings = {
        "TIERED_BCCACHE_TIERS": ["memory", f"fs:{tmp_path / 'cache'}"],
        "TIERED_BCCACHE_SECRET": SECRET.decode(),
    }
    plain = render_django_jinja(django_jinja_templates, {}, "jinja2.Environment", "Hi")
    assert plain["pages"] == django_jinja_pages("Hi")
    environment = "tiered_bccache.django.environment"
    cached = render_django_jinja(django_jinja_templates, settings, environment, "Hi")
    assert cached["pages"] == plain["pages"]
