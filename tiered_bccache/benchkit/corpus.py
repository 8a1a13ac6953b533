"""A deterministic corpus of Jinja2 templates shaped like an application's, for benchmarks.

The corpus has the structure that makes compile times realistic: a base layout and layouts
that extend it, macro libraries (arguments, defaults, ``caller()``) that pages ``import`` and
``from ... import``, partials pulled in with ``include``, and pages that extend a layout and
fill its blocks with loops, conditionals, filters, tests and a good share of literal HTML.

Example::

    names = generate_corpus("/tmp/corpus", count=36, seed=1)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader("/tmp/corpus"))
    html = env.get_template(names[-1]).render(render_context())
"""

from __future__ import annotations

import itertools
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigurationError

__all__ = ["TEMPLATE_SUFFIXES", "corpus_names", "generate_corpus", "render_context"]

#: File suffixes :func:`corpus_names` treats as templates.
TEMPLATE_SUFFIXES = (".html", ".j2", ".jinja", ".txt", ".xml")

_MIN_SIZE_FLOOR = 256

_PartMaker = Callable[[random.Random], str]

# The shared templates, in the order a growing corpus adds them. Each one only depends on
# templates earlier in the list, so any prefix of it is a consistent set.
_SHARED_ORDER = (
    "layouts/base.html",
    "macros/ui.html",
    "partials/flash.html",
    "layouts/app.html",
    "macros/forms.html",
    "partials/nav.html",
    "partials/footer.html",
    "macros/format.html",
    "layouts/admin.html",
    "partials/user_card.html",
    "macros/tables.html",
    "partials/pagination.html",
)

# The block each layout leaves for a page's content.
_CONTENT_BLOCK = {
    "layouts/base.html": "content",
    "layouts/app.html": "main",
    "layouts/admin.html": "admin_main",
}

_SECTIONS = ("account", "admin", "blog", "docs", "help", "reports", "shop", "team")
_KINDS = ("detail", "edit", "index", "list", "overview", "settings", "summary")

_WORDS = (
    "account action active address archive billing board budget calendar campaign card "
    "catalog change channel checkout client comment content contract customer dashboard "
    "delivery detail document draft export feature feedback filter folder invoice issue "
    "item label ledger license member message metric milestone module network notice "
    "order owner package partner payment period pipeline plan policy portal preview "
    "price product profile project quota record refund release report request review "
    "revenue role schedule search segment service session setting shipment snapshot "
    "status storage subscription summary supplier support task team template ticket "
    "timeline total transfer update upload usage vendor version warehouse widget workflow"
).split()

_UNICODE_WORDS = ("café", "naïve", "façade", "Zürich", "São Paulo", "résumé", "Ærø", "Kraków")


def generate_corpus(
    directory: str | os.PathLike[str],
    *,
    count: int = 36,
    seed: int = 0,
    min_size: int = 1024,
    max_size: int = 50 * 1024,
) -> list[str]:
    """Write ``count`` templates under ``directory`` and return their loader names, pages last.

    Source sizes (UTF-8 bytes) spread log-uniformly between ``min_size`` and ``max_size`` and
    hit their targets within a few percent, except that a template is never smaller than its
    fixed structure (a few hundred bytes; about 1 kB for a macro library). A small corpus has
    fewer shared templates (``count=1`` is one self-contained page); a large one keeps a
    dozen layouts, macro libraries and partials, and the rest are pages. The same arguments
    always write the same bytes. Existing files with the same names are overwritten; other
    files in ``directory`` are left alone.

    Raises :class:`~tiered_bccache.errors.ConfigurationError` (a ``ValueError``) naming the
    argument when ``count < 1``, ``min_size < 256`` or ``min_size > max_size``.
    """
    if count < 1:
        raise ConfigurationError(f"count must be at least 1, got {count}")
    if min_size < _MIN_SIZE_FLOOR:
        raise ConfigurationError(f"min_size must be at least {_MIN_SIZE_FLOOR}, got {min_size}")
    if min_size > max_size:
        raise ConfigurationError(
            f"min_size must not exceed max_size, got min_size={min_size} > max_size={max_size}"
        )
    rng = random.Random(seed)
    shared = _SHARED_ORDER[: _shared_count(count)]
    available = frozenset(shared)
    targets = _size_targets(rng, count, min_size, max_size)
    skeletons = [_shared_skeleton(rng, name, available) for name in shared]
    _fit_targets(targets, [s.core_size for s in skeletons])
    # Pages are shaped after their target is known, so that a small page drops optional
    # imports and blocks instead of overshooting.
    page_names = _page_names(rng, count - len(shared))
    for name, target in zip(page_names, targets[len(shared) :], strict=True):
        skeletons.append(_page_skeleton(rng, name, available, seed=seed, target=target))

    root = Path(directory)
    names: list[str] = []
    for skeleton, target in zip(skeletons, targets, strict=True):
        source = skeleton.fill(rng, target)
        path = root.joinpath(*skeleton.name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(source.encode("utf-8"))
        names.append(skeleton.name)
    return names


def render_context() -> dict[str, object]:
    """Return a fresh context with every variable the generated templates use.

    Every generated page renders with it under a default ``Environment``, with
    ``undefined=StrictUndefined``, with ``autoescape=True`` and with ``enable_async=True``.
    A few names the templates test with ``is defined`` (``promo``, ``debug``) are absent on
    purpose, and ``notifications`` is empty so that ``{% for %}...{% else %}`` takes its
    ``else`` branch.
    """
    names = [
        *("ada lovelace", "grace hopper", "alan turing", "edsger dijkstra", "barbara liskov"),
        *("donald knuth", "margaret hamilton", "ken thompson", "frances allen", "john backus"),
    ]
    users = [
        {
            "id": i + 1,
            "name": name,
            "email": name.replace(" ", ".") + "@example.com",
            "active": i % 4 != 3,
            "joined": f"20{10 + i:02d}-0{1 + i % 9}-1{i % 10}",
            "score": 17 * i + 3,
            "roles": ["member", "editor", "owner"][: 1 + i % 3],
            "avatar_url": f"/static/avatars/{i + 1}.png",
        }
        for i, name in enumerate(names)
    ]
    statuses = ("paid", "pending", "refunded", "paid", "shipped")
    orders = [
        {
            "id": 1000 + i,
            "customer": names[i % len(names)],
            "status": statuses[i % len(statuses)],
            "total": round(12.5 + 7.25 * i * (i % 3 + 1), 2),
            "items": [f"item {j}" for j in range(1 + i % 4)],
        }
        for i in range(14)
    ]
    products = [
        {
            "sku": f"SKU-{i:03d}",
            "name": f"{_WORDS[i * 7 % len(_WORDS)]} {_WORDS[i * 11 % len(_WORDS)]}",
            "price": round(4.99 + 3.5 * i, 2),
            "stock": (i * 7) % 23,
            "tags": [_WORDS[(i + k) * 5 % len(_WORDS)] for k in range(1 + i % 3)],
            "description": "A <b>sturdy</b> product & a fair price. " * (1 + i % 3),
        }
        for i in range(10)
    ]
    articles = [
        {
            "title": f"notes on {_WORDS[i * 13 % len(_WORDS)]} and {_WORDS[i * 17 % len(_WORDS)]}",
            "author": names[(i * 3) % len(names)],
            "summary": "What we learned this quarter about shipping reliable software. " * 2,
            "body_html": f"<p>Part {i + 1} of the series.</p><p>Written in Zürich.</p>",
            "comments": [
                {"author": names[(i + k) % len(names)], "text": f"Nice <point> #{k} & more"}
                for k in range(i % 3)
            ],
        }
        for i in range(6)
    ]
    return {
        "site": {
            "name": "Acme Portal",
            "lang": "en",
            "currency": "EUR",
            "year": 2024,
            "nav": [
                {"title": "Home", "url": "/", "active": False},
                {"title": "Orders", "url": "/orders", "active": True},
                {"title": "Products", "url": "/products", "active": False},
                {"title": "Reports", "url": "/reports", "active": False},
                {"title": "Help", "url": "/help", "active": False},
            ],
        },
        "current_user": {
            "name": "ada lovelace",
            "email": "ada@example.com",
            "role": "editor",
            "is_admin": False,
            "is_staff": True,
            "roles": ["member", "editor"],
            "avatar_url": "/static/avatars/1.png",
        },
        "roles": ["member", "editor", "owner", "admin"],
        "users": users,
        "orders": orders,
        "products": products,
        "articles": articles,
        "messages": [
            {"level": "info", "text": "Your changes were saved."},
            {"level": "warning", "text": "Your trial ends in 3 days <soon>."},
        ],
        "notifications": [],
        "page": {
            "title": "quarterly overview",
            "description": "Orders, products and people at a glance, updated every hour.",
            "number": 2,
            "pages": 7,
        },
        "request": {"path": "/orders", "args": {"q": "café & co"}},
        "csrf_token": "4f2a9c1e8b7d6a5f",
    }


def corpus_names(directory: str | os.PathLike[str]) -> list[str]:
    """Return the sorted loader names (relative, ``/``-separated) of the templates in a directory.

    A template is any file ending in one of :data:`TEMPLATE_SUFFIXES`. Like Jinja's
    ``FileSystemLoader``, the walk does not follow symlinked directories.
    """
    root = Path(directory)
    names: list[str] = []
    for dirpath, _dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root)
        for filename in filenames:
            if filename.endswith(TEMPLATE_SUFFIXES):
                names.append((base / filename).as_posix())
    return sorted(names)


# --- sizes -------------------------------------------------------------------------------------


def _shared_count(count: int) -> int:
    """How many shared templates a corpus of ``count`` has: about a quarter, at most a dozen."""
    return min(len(_SHARED_ORDER), count - 1, max(1, count // 4))


def _size_targets(rng: random.Random, count: int, min_size: int, max_size: int) -> list[int]:
    """Log-uniform sizes, stratified so that even a small corpus spans the whole range."""
    if count == 1:
        fractions = [rng.random()]
    else:
        # One sample per stratum of equal width in log space; the end strata are pinned to
        # the bounds so min and max are hit whatever the seed.
        fractions = [(i + rng.random()) / count for i in range(count)]
        fractions[0], fractions[-1] = 0.0, 1.0
    span = math.log(max_size / min_size)
    targets = [round(min_size * math.exp(f * span)) for f in fractions]
    rng.shuffle(targets)
    return targets


def _fit_targets(targets: list[int], cores: list[int]) -> None:
    """Swap targets so that no shared template (the first ``len(cores)``) gets one below its
    fixed structure; pages adapt to any target, so they take the small ones instead."""
    shared = len(cores)
    for i in range(shared):
        if targets[i] >= cores[i]:
            continue
        for j in range(shared, len(targets)):
            if targets[j] >= cores[i]:
                targets[i], targets[j] = targets[j], targets[i]
                break


# --- assembly ----------------------------------------------------------------------------------


@dataclass
class _Skeleton:
    """A template's fixed head and tail, and a maker of parts that grow it between them."""

    name: str
    head: str
    tail: str
    make_part: Callable[[random.Random], str]
    core_size: int = field(init=False)

    def __post_init__(self) -> None:
        self.core_size = _size(self.head) + _size(self.tail)

    def fill(self, rng: random.Random, target: int) -> str:
        """Add parts while they fit under ``target``, then pad the rest with literal HTML."""
        parts: list[str] = []
        size = self.core_size
        misses = 0
        while misses < 6:
            part = self.make_part(rng)
            part_size = _size(part)
            if size + part_size > target:
                misses += 1
                continue
            parts.append(part)
            size += part_size
        if target - size >= 24:
            parts.append(_filler(rng, target - size))
        return self.head + "".join(parts) + self.tail


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _sentence(rng: random.Random, n: int, *, ascii_only: bool = False) -> str:
    text = _words(rng, n)
    if not ascii_only and rng.random() < 0.15:
        text += " in " + rng.choice(_UNICODE_WORDS)
    return text[0].upper() + text[1:] + "."


def _filler(rng: random.Random, nbytes: int) -> str:
    """A literal ``<p>`` of exactly ``nbytes`` bytes (ASCII), ending in a newline."""
    wrapper = len('<p class="note"></p>\n')
    room = nbytes - wrapper
    text = ""
    while len(text) < room:
        text += _sentence(rng, rng.randint(6, 16), ascii_only=True) + " "
    return '<p class="note">' + text[:room] + "</p>\n"


def _literal_html(rng: random.Random) -> str:
    """A chunk of static markup of the kinds real pages carry a lot of."""
    kind = rng.randrange(5)
    if kind == 0:
        items = "".join(
            f'    <li class="feature"><strong>{_words(rng, 2).title()}</strong> '
            f"{_sentence(rng, rng.randint(5, 12))}</li>\n"
            for _ in range(rng.randint(3, 8))
        )
        return f'<ul class="features">\n{items}</ul>\n'
    if kind == 1:
        rows = "".join(
            f"  <details>\n    <summary>{_sentence(rng, rng.randint(4, 8))}</summary>\n"
            f"    <p>{_sentence(rng, rng.randint(12, 30))}</p>\n  </details>\n"
            for _ in range(rng.randint(2, 5))
        )
        return f'<section class="faq">\n  <h2>{_words(rng, 3).title()}</h2>\n{rows}</section>\n'
    if kind == 2:
        cells = "".join(
            f'  <div class="tile tile-{i}">\n    <h3>{_words(rng, 2).title()}</h3>\n'
            f"    <p>{_sentence(rng, rng.randint(8, 20))}</p>\n"
            f'    <a class="more" href="/{rng.choice(_WORDS)}/{i}">Read more &rarr;</a>\n'
            "  </div>\n"
            for i in range(rng.randint(2, 6))
        )
        return f'<div class="grid">\n{cells}</div>\n'
    if kind == 3:
        symbols = "".join(
            f'  <symbol id="icon-{rng.choice(_WORDS)}-{i}" viewBox="0 0 24 24">'
            f'<path d="M{rng.randint(1, 9)} {rng.randint(1, 9)}h{rng.randint(4, 14)}'
            f'v{rng.randint(4, 14)}H{rng.randint(1, 9)}z"/></symbol>\n'
            for i in range(rng.randint(3, 10))
        )
        return f'<svg xmlns="http://www.w3.org/2000/svg" hidden>\n{symbols}</svg>\n'
    paragraphs = "".join(
        f"  <p>{_sentence(rng, rng.randint(15, 40))}</p>\n" for _ in range(rng.randint(2, 5))
    )
    return f'<div class="prose">\n  <h2>{_words(rng, 4).title()}</h2>\n{paragraphs}</div>\n'


# --- shared templates --------------------------------------------------------------------------


def _shared_skeleton(rng: random.Random, name: str, available: frozenset[str]) -> _Skeleton:
    builders: dict[str, Callable[[random.Random, frozenset[str]], tuple[str, str, _PartMaker]]]
    builders = {
        "layouts/base.html": _base_layout,
        "layouts/app.html": _app_layout,
        "layouts/admin.html": _admin_layout,
        "macros/ui.html": _ui_macros,
        "macros/forms.html": _forms_macros,
        "macros/format.html": _format_macros,
        "macros/tables.html": _tables_macros,
        "partials/flash.html": _flash_partial,
        "partials/nav.html": _nav_partial,
        "partials/footer.html": _footer_partial,
        "partials/user_card.html": _user_card_partial,
        "partials/pagination.html": _pagination_partial,
    }
    head, tail, make_part = builders[name](rng, available)
    return _Skeleton(name, head, tail, make_part)


def _markup_maker() -> _PartMaker:
    """Parts for layouts and partials: mostly markup, some logic over the context. They never
    import or include, so shared templates cannot form include cycles."""
    return _section_maker(_PageKit(None, False, None, False, frozenset()), literal=0.6)


def _base_layout(rng: random.Random, available: frozenset[str]) -> tuple[str, str, _PartMaker]:
    if "partials/footer.html" in available:
        footer = '{% include "partials/footer.html" %}'
    else:
        footer = "<footer>&copy; {{ site.year }} {{ site.name }}</footer>"
    head = f"""<!DOCTYPE html>
<html lang="{{{{ site.lang|default('en') }}}}">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{{% block title %}}{{{{ site.name }}}}{{% endblock %}}</title>
  {{%- block head %}}
  <link rel="stylesheet" href="/static/app.css">
  {{%- endblock %}}
</head>
<body class="{{% block body_class %}}page{{% endblock %}}">
  {{% block header %}}
  <header><a class="brand" href="/">{{{{ site.name }}}}</a></header>
  {{% endblock %}}
  <main id="content">{{% block content %}}{{% endblock %}}</main>
  {{% block footer %}}{footer}{{% endblock %}}
  {{% block scripts %}}<script src="/static/app.js" defer></script>{{% endblock %}}
  {{# Below: markup and widgets every page shares, whatever its blocks. #}}
"""
    tail = "</body>\n</html>\n"
    return head, tail, _markup_maker()


def _app_layout(rng: random.Random, available: frozenset[str]) -> tuple[str, str, _PartMaker]:
    if "partials/nav.html" in available:
        nav = '{% include "partials/nav.html" %}'
    else:
        nav = (
            '<nav class="top">{%- for item in site.nav %}<a href="{{ item.url }}"'
            '{% if item.active %} class="active"{% endif %}>{{ item.title }}</a>'
            "{%- endfor %}</nav>"
        )
    flash = '{% include "partials/flash.html" %}' if "partials/flash.html" in available else ""
    head = f"""{{% extends "layouts/base.html" %}}
{{% block body_class %}}{{{{ super() }}}} app{{% endblock %}}
{{% block header %}}
  {nav}
{{% endblock %}}
{{% block content %}}
  {flash}
  <div class="layout">
    <nav class="breadcrumbs">{{% block breadcrumbs %}}<a href="/">Home</a>{{% endblock %}}</nav>
    <div class="main">{{% block main %}}{{% endblock %}}</div>
    <aside class="aside">{{% block aside %}}
      <p>Signed in as {{{{ current_user.name|title }}}}</p>
    {{% endblock %}}</aside>
  </div>
"""
    tail = "{% endblock %}\n"
    return head, tail, _markup_maker()


def _admin_layout(rng: random.Random, available: frozenset[str]) -> tuple[str, str, _PartMaker]:
    head = """{% extends "layouts/app.html" %}
{% block title %}Admin &middot; {{ super() }}{% endblock %}
{% block breadcrumbs %}{{ super() }} / <a href="/admin">Admin</a>{% endblock %}
{% block main %}
  <div class="admin-toolbar">{% block toolbar %}
    {%- for item in site.nav if item.active %}<b>{{ item.title|upper }}</b>{% endfor -%}
  {% endblock %}</div>
  {% if current_user.is_admin %}<p class="role">Administrator</p>
  {% elif current_user.is_staff %}<p class="role">Staff, read-only</p>
  {% endif %}
  {% block admin_main %}{% endblock %}
"""
    tail = "{% endblock %}\n"
    return head, tail, _markup_maker()


def _macro_maker() -> _PartMaker:
    counter = itertools.count(1)

    def make(rng: random.Random) -> str:
        n = next(counter)
        word = rng.choice(_WORDS)
        name = f"{word}_widget_{n}"
        defaults = rng.sample(("size='md'", "muted=false", "limit=5", "href=none"), 2)
        args = ", ".join(["title", "items=()", *defaults])
        body_text = _sentence(rng, rng.randint(4, 12))
        return f"""
{{% macro {name}({args}) -%}}
<div class="widget widget-{word}">
  <h4>{{{{ title|title }}}}</h4>
  {{%- for item in items|list %}}
  <span class="{{{{ loop.cycle('a', 'b') }}}}">{{{{ loop.index }}}}. {{{{ item }}}}</span>
  {{%- else %}}
  <em>{body_text}</em>
  {{%- endfor %}}
  {{% if caller is defined %}}{{{{ caller() }}}}{{% endif %}}
</div>
{{%- endmacro %}}
"""

    return make


def _ui_macros(rng: random.Random, available: frozenset[str]) -> tuple[str, str, _PartMaker]:
    head = """{# UI components. Imported without context: use arguments only. #}
{% macro card(title, subtitle=none, css_class="card") -%}
<div class="{{ css_class }}">
  <h3 class="card-title">{{ title }}</h3>
  {%- if subtitle %}<p class="card-subtitle">{{ subtitle|e }}</p>{% endif %}
  <div class="card-body">{{ caller() }}</div>
</div>
{%- endmacro %}

{% macro badge(text, kind="info") -%}
<span class="badge badge-{{ kind }}">{{ text|upper }}</span>
{%- endmacro %}

{% macro button(label, href=none, kind="primary") -%}
{% if href %}<a class="btn btn-{{ kind }}" href="{{ href }}">{{ label }}</a>
{%- else %}<button class="btn btn-{{ kind }}" type="button">{{ label }}</button>{% endif %}
{%- endmacro %}

{% macro alert(kind="info", dismissible=true) -%}
<div class="alert alert-{{ kind }}" role="alert">{{ caller() }}
  {%- if dismissible %}<button class="close" aria-label="Close">&times;</button>{% endif %}
</div>
{%- endmacro %}
"""
    return head, "", _macro_maker()


def _forms_macros(rng: random.Random, available: frozenset[str]) -> tuple[str, str, _PartMaker]:
    head = """{% from "macros/ui.html" import badge %}
{% macro input(name, value="", type="text", label=none, required=false) -%}
{% if label %}<label for="f-{{ name }}">{{ label }}</label>{% endif %}
<input id="f-{{ name }}" name="{{ name }}" type="{{ type }}" value="{{ value|e }}"
  {%- if required %} required{% endif %}{{ kwargs|xmlattr }}>
{%- endmacro %}

{% macro select(name, options, selected=none) -%}
<select name="{{ name }}">
  {%- for option in options %}
  <option{% if option == selected %} selected{% endif %}>{{ option|title }}</option>
  {%- endfor %}
</select>
{%- endmacro %}

{% macro checkbox(name, checked=false, label="") -%}
<label>
  <input type="checkbox" name="{{ name }}"{% if checked %} checked{% endif %}> {{ label }}
</label>
{%- endmacro %}

{% macro field(label, help=none, error=none) -%}
<div class="field{% if error %} has-error{% endif %}">
  <span class="field-label">{{ label }}</span>
  {{ caller() }}
  {%- if help %}<small>{{ help }}</small>{% endif %}
  {%- if error %}{{ badge(error, kind="danger") }}{% endif %}
</div>
{%- endmacro %}
"""
    return head, "", _macro_maker()


def _format_macros(rng: random.Random, available: frozenset[str]) -> tuple[str, str, _PartMaker]:
    head = """{# Formatting helpers. Import "with context": money() reads site.currency. #}
{% macro money(amount, currency=none) -%}
{{ "%.2f"|format(amount) }}&nbsp;{{ currency or site.currency }}
{%- endmacro %}

{% macro plural(n, singular, plural=none) -%}
{{ n }} {{ singular if n == 1 else plural|default(singular ~ "s", true) }}
{%- endmacro %}

{% macro status(value) -%}
{%- if value == "paid" %}<span class="ok">Paid</span>
{%- elif value == "pending" %}<span class="warn">Pending</span>
{%- elif value == "refunded" %}<span class="muted">Refunded</span>
{%- else %}<span>{{ value|title }}</span>{% endif -%}
{%- endmacro %}
"""
    return head, "", _macro_maker()


def _tables_macros(rng: random.Random, available: frozenset[str]) -> tuple[str, str, _PartMaker]:
    head = """{% macro data_table(rows, headers, empty="Nothing to show.") -%}
<table class="data">
  <thead><tr>{% for header in headers %}<th>{{ header }}</th>{% endfor %}</tr></thead>
  <tbody>
  {%- for row in rows %}
    <tr class="{{ loop.cycle('odd', 'even') }}">{{ caller(row) }}</tr>
  {%- else %}
    <tr><td colspan="{{ headers|length }}">{{ empty }}</td></tr>
  {%- endfor %}
  </tbody>
</table>
{%- endmacro %}
"""
    return head, "", _macro_maker()


def _flash_partial(rng: random.Random, available: frozenset[str]) -> tuple[str, str, _PartMaker]:
    head = """<div class="flashes">
{%- for message in messages %}
  <div class="flash flash-{{ message.level }}">{{ message.text }}</div>
{%- else %}
  <div class="flash-empty"></div>
{%- endfor %}
{%- for note in notifications %}
  <div class="note">{{ note }}</div>
{%- else %}
  <!-- no notifications -->
{%- endfor %}
"""
    return head, "</div>\n", _markup_maker()


def _nav_partial(rng: random.Random, available: frozenset[str]) -> tuple[str, str, _PartMaker]:
    head = """<nav class="top">
  <a class="brand" href="/">{{ site.name }}</a>
  <ul>
  {%- for item in site.nav %}
    <li{% if item.active %} class="active"{% endif %}>
      <a href="{{ item.url }}">{{ item.title }}</a>
    </li>
  {%- endfor %}
  </ul>
  <span class="user">{{ current_user.nickname|default(current_user.name)|title }}</span>
"""
    return head, "</nav>\n", _markup_maker()


def _footer_partial(rng: random.Random, available: frozenset[str]) -> tuple[str, str, _PartMaker]:
    head = """<footer class="site-footer">
  <p>&copy; {{ site.year }} {{ site.name }} &mdash; made with care in Zürich.</p>
"""
    return head, "</footer>\n", _markup_maker()


def _user_card_partial(
    rng: random.Random, available: frozenset[str]
) -> tuple[str, str, _PartMaker]:
    head = """{# Included inside a loop over users as "member", or alone for the current user. #}
{% set person = member if member is defined else current_user %}
<div class="user-card">
  <img src="{{ person.avatar_url }}" alt="" width="32" height="32">
  <strong>{{ person.name|title }}</strong>
  <span>{{ person.roles|join(", ") }}</span>
"""
    return head, "</div>\n", _markup_maker()


def _pagination_partial(
    rng: random.Random, available: frozenset[str]
) -> tuple[str, str, _PartMaker]:
    head = """<nav class="pagination">
{%- for n in range(1, page.pages + 1) %}
  {%- if n == page.number %}<span class="current">{{ n }}</span>
  {%- elif n == 1 or n == page.pages or (n - page.number)|abs < 2 %}
  <a href="?page={{ n }}">{{ n }}</a>
  {%- elif n == page.number + 2 %}<span>&hellip;</span>
  {%- endif %}
{%- endfor %}
"""
    return head, "</nav>\n", _markup_maker()


# --- pages -------------------------------------------------------------------------------------


def _page_names(rng: random.Random, n: int) -> list[str]:
    width = max(4, len(str(n)))
    return [
        f"pages/{rng.choice(_SECTIONS)}/{rng.choice(_KINDS)}_{i:0{width}d}.html" for i in range(n)
    ]


@dataclass
class _PageKit:
    """What a page has imported, so its sections only call what exists."""

    ui: str | None
    forms: bool
    fmt: str | None
    tables: bool
    partials: frozenset[str]
    counter: int = 0

    def unique(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}_{self.counter}"


def _page_skeleton(
    rng: random.Random, name: str, available: frozenset[str], *, seed: int, target: int
) -> _Skeleton:
    comment = f"{{# {name}: generated by tiered_bccache.corpus (seed {seed}). #}}\n"
    layouts = [layout for layout in _CONTENT_BLOCK if layout in available]
    partials = frozenset(n for n in available if n.startswith("partials/"))
    if not layouts:
        # A corpus too small for shared templates: one self-contained document.
        head = (
            comment
            + _inline_panel_macro("panel")
            + "<!DOCTYPE html>\n<html>\n<head><title>{{ page.title|title }}</title></head>\n"
            + "<body>\n"
        )
        kit = _PageKit(None, False, None, False, partials)
        return _Skeleton(name, head, "</body>\n</html>\n", _section_maker(kit))

    layout = layouts[-1] if rng.random() < 0.7 else rng.choice(layouts)
    block = _CONTENT_BLOCK[layout]
    head = comment + f'{{% extends "{layout}" %}}\n'
    head += "{% block title %}{{ page.title|title }} &middot; {{ super() }}{% endblock %}\n"
    budget = 0.7 * target

    def fits(text: str) -> bool:
        return _size(head) + _size(text) <= budget

    kit = _PageKit(None, False, None, False, partials)
    ui_alias = rng.choice(("ui", "components"))
    imports = {
        "ui": f'{{% import "macros/ui.html" as {ui_alias} %}}\n',
        "forms": '{% from "macros/forms.html" import input, select, checkbox, field as form_field'
        " %}\n",
        "fmt": '{% import "macros/format.html" as fmt with context %}\n',
        "tables": '{% from "macros/tables.html" import data_table %}\n',
    }
    wanted = {"ui": 1.0, "forms": 0.7, "fmt": 0.8, "tables": 0.7}
    for lib, statement in imports.items():
        if f"macros/{lib}.html" in available and rng.random() < wanted[lib] and fits(statement):
            head += statement
            if lib == "ui":
                kit.ui = ui_alias
            elif lib == "forms":
                kit.forms = True
            elif lib == "fmt":
                kit.fmt = "fmt"
            else:
                kit.tables = True
    aside = (
        '{% block aside %}\n  {{ super() }}\n  <ul class="related">\n'
        "  {%- for article in articles[:3] %}\n"
        '    <li><a href="#a-{{ loop.index }}">{{ article.title|truncate(30) }}</a></li>\n'
        "  {%- endfor %}\n  </ul>\n{% endblock %}\n"
    )
    if layout != "layouts/base.html" and rng.random() < 0.6 and fits(aside):
        head += aside
    scripts = (
        "{% block scripts %}\n{{ super() }}\n"
        f'<script src="/static/{rng.choice(_WORDS)}.js" defer></script>\n{{% endblock %}}\n'
    )
    if rng.random() < 0.5 and fits(scripts):
        head += scripts
    head += f"{{% block {block} %}}\n"
    user_card = '{% include "partials/user_card.html" %}\n'
    if "partials/user_card.html" in partials and rng.random() < 0.3 and fits(user_card):
        head += user_card
    return _Skeleton(name, head, "{% endblock %}\n", _section_maker(kit))


def _inline_panel_macro(name: str) -> str:
    return f"""{{% macro {name}(heading, level=3) -%}}
<div class="panel"><h{{{{ level }}}}>{{{{ heading }}}}</h{{{{ level }}}}>{{{{ caller() }}}}</div>
{{%- endmacro %}}
"""


def _section_maker(kit: _PageKit, *, literal: float = 0.35) -> _PartMaker:
    sections: list[Callable[[random.Random, _PageKit], str]] = [
        _sec_intro,
        _sec_orders,
        _sec_banner,
        _sec_stats,
        _sec_articles,
        _sec_products,
        _sec_nav_list,
        _sec_inline_macro,
        _sec_guarded,
    ]
    if kit.ui:
        sections.append(_sec_user_cards)
    if kit.forms:
        sections.append(_sec_form)
    if kit.tables:
        sections.append(_sec_table_macro)
    if kit.partials:
        sections.append(_sec_includes)

    def make(rng: random.Random) -> str:
        if rng.random() < literal:
            return _literal_html(rng)
        return rng.choice(sections)(rng, kit)

    return make


def _sec_intro(rng: random.Random, kit: _PageKit) -> str:
    return f"""<section class="intro">
  {{# Lead paragraph: editors override page.description per page. #}}
  <h1>{{{{ page.title|title }}}}</h1>
  <p class="lead">
    {{{{ page.description|default("No description.")|truncate({rng.randint(30, 90)}) }}}}
  </p>
  <p>{_sentence(rng, rng.randint(10, 30))}</p>
</section>
"""


def _sec_orders(rng: random.Random, kit: _PageKit) -> str:
    key = rng.choice(("total", "id", "customer", "status"))
    reverse = rng.choice(("true", "false"))
    limit = rng.randint(3, 14)
    every = rng.randint(2, 5)
    total = (
        f"{{{{ {kit.fmt}.money(order.total) }}}}"
        if kit.fmt
        else '{{ "%.2f"|format(order.total) }} {{ site.currency }}'
    )
    return f"""<table class="orders orders-{rng.choice(_WORDS)}">
  <thead><tr><th>#</th><th>Customer</th><th>Status</th><th>Items</th><th>Total</th></tr></thead>
  <tbody>
  {{%- for order in (orders|sort(attribute="{key}", reverse={reverse}))[:{limit}] %}}
    <tr class="{{{{ loop.cycle('odd', 'even') }}}}
      {{%- if loop.index is divisibleby {every} %}} sep{{% endif %}}">
      <td>{{{{ loop.index }}}}</td>
      <td>{{{{ order.customer|title }}}}</td>
      <td>{{%- if order.status == "paid" %}}<span class="ok">Paid</span>
        {{%- elif order.status == "pending" %}}<span class="warn">Pending</span>
        {{%- else %}}{{{{ order.status|upper }}}}{{% endif -%}}</td>
      <td>{{{{ order["items"]|join(", ") }}}} ({{{{ order["items"]|length }}}})</td>
      <td>{total}</td>
    </tr>
  {{%- else %}}
    <tr><td colspan="5">No orders yet.</td></tr>
  {{%- endfor %}}
  </tbody>
</table>
"""


def _sec_banner(rng: random.Random, kit: _PageKit) -> str:
    return f"""{{%- if current_user.is_admin %}}
<div class="banner banner-admin">{_sentence(rng, rng.randint(5, 12))}</div>
{{%- elif current_user.is_staff and orders|length > {rng.randint(1, 20)} %}}
<div class="banner banner-staff">
  {{{{ current_user.name|title }}}}: {{{{ orders|length }}}} orders to review.
</div>
{{%- elif current_user.is_staff %}}
<div class="banner banner-quiet">{_sentence(rng, rng.randint(4, 9))}</div>
{{%- else %}}
<div class="banner">{{{{ "Welcome back, %s!"|format(current_user.name|title) }}}}</div>
{{%- endif %}}
"""


def _sec_stats(rng: random.Random, kit: _PageKit) -> str:
    paid = kit.unique("paid")
    revenue = kit.unique("revenue")
    status = rng.choice(("paid", "pending", "shipped"))
    money = (
        f"{{{{ {kit.fmt}.money({revenue}) }}}} from "
        f"{{{{ {kit.fmt}.plural({paid}|length, 'order') }}}}"
        if kit.fmt
        else f'{{{{ "%.2f %s"|format({revenue}, site.currency) }}}}'
    )
    return f"""{{% set {paid} = orders|selectattr("status", "equalto", "{status}")|list %}}
{{% set {revenue} = {paid}|sum(attribute="total") %}}
<div class="stats">
  <div class="stat">
    {{{{ "%d of %d orders are {status}"|format({paid}|length, orders|length) }}}}
  </div>
  <div class="stat">{money}</div>
  <div class="stat">{{{{ users|selectattr("active")|list|length }}}} active users</div>
</div>
"""


def _sec_articles(rng: random.Random, kit: _PageKit) -> str:
    return f"""{{% for article in articles[:{rng.randint(2, 6)}] %}}
<article id="a-{{{{ loop.index }}}}">
  <h2>{{{{ article.title|title }}}}</h2>
  <p class="meta">By {{{{ article.author|default("Staff")|title }}}}
    &middot; {{{{ article.comments|length }}}} comments</p>
  <div class="summary">{{{{ article.summary|truncate({rng.randint(40, 120)}) }}}}</div>
  <div class="body">{{{{ article.body_html|safe }}}}</div>
  {{%- for comment in article.comments %}}
  <blockquote>{{{{ comment.text|e }}}} &mdash; {{{{ comment.author|title }}}}</blockquote>
  {{%- else %}}
  <p class="no-comments">{_sentence(rng, rng.randint(3, 7))}</p>
  {{%- endfor %}}
</article>
{{% endfor %}}
"""


def _sec_products(rng: random.Random, kit: _PageKit) -> str:
    key = rng.choice(("price", "name", "stock"))
    return f"""<ul class="products">
{{%- for product in products|sort(attribute="{key}") if product.stock > {rng.randint(0, 5)} %}}
  <li class="product{{% if loop.first %}} first{{% endif %}}">
    <h3>{{{{ product.name|title }}}} <small>{{{{ product.sku }}}}</small></h3>
    <p>{{{{ product.description|safe|truncate({rng.randint(30, 80)}) }}}}</p>
    <p class="price">{{{{ "%.2f"|format(product.price) }}}}
      &middot; {{{{ product.tags|sort|join(" / ")|upper }}}}</p>
  </li>
{{%- endfor %}}
</ul>
"""


def _sec_nav_list(rng: random.Random, kit: _PageKit) -> str:
    return f"""<ul class="subnav subnav-{rng.choice(_WORDS)}">
{{%- for item in site.nav -%}}
  <li{{% if item.active %}} class="active"{{% endif %}}>
    <a href="{{{{ item.url }}}}">{{{{ item.title|e }}}}</a></li>
{{%- endfor -%}}
</ul>
"""


def _sec_inline_macro(rng: random.Random, kit: _PageKit) -> str:
    name = kit.unique("panel")
    return (
        _inline_panel_macro(name)
        + f"""{{% call {name}("{_words(rng, 3).title()}", level={rng.randint(2, 4)}) %}}
  <p>{_sentence(rng, rng.randint(6, 20))}</p>
  <p>{{{{ users|length }}}} people, {{{{ products|length }}}} products.</p>
{{% endcall %}}
"""
    )


def _sec_guarded(rng: random.Random, kit: _PageKit) -> str:
    return f"""{{# Optional context: these variables may be absent. #}}
{{% if promo is defined and promo %}}
<div class="promo">{{{{ promo.text|e }}}}</div>
{{% endif %}}
{{% if debug is defined and debug %}}<pre>{{{{ request|e }}}}</pre>{{% endif %}}
<p class="search">Results for &ldquo;{{{{ request.args.q|default("") }}}}&rdquo;
  sorted by {{{{ request.args.sort|default("{rng.choice(_WORDS)}") }}}}.</p>
"""


def _sec_user_cards(rng: random.Random, kit: _PageKit) -> str:
    ui = kit.ui
    include = (
        '\n    {% include "partials/user_card.html" %}'
        if "partials/user_card.html" in kit.partials and rng.random() < 0.5
        else ""
    )
    kind = rng.choice(("info", "warning", "success"))
    return f"""<div class="people">
{{%- for member in users[:{rng.randint(3, 10)}] if member.active %}}
  {{% call {ui}.card(member.name|title, subtitle=member.email) %}}
    <p>Joined {{{{ member.joined }}}} &middot; {{{{ member.roles|join(", ") }}}}</p>
    {{%- if member.score is divisibleby {rng.randint(2, 4)} %}}
    {{{{ {ui}.badge("top") }}}}
    {{%- endif %}}{include}
  {{% endcall %}}
{{%- endfor %}}
</div>
{{% call {ui}.alert("{kind}") %}}{_sentence(rng, rng.randint(4, 10))}{{% endcall %}}
{{{{ {ui}.button("{_words(rng, 2).title()}", href="/{rng.choice(_WORDS)}") }}}}
"""


def _sec_form(rng: random.Random, kit: _PageKit) -> str:
    word = rng.choice(_WORDS)
    return f"""<form method="post" action="{{{{ request.path }}}}/{word}">
  <input type="hidden" name="csrf_token" value="{{{{ csrf_token }}}}">
  {{{{ input("email", value=current_user.email, type="email", label="Email", required=true) }}}}
  {{% call form_field("Display name", help="{_sentence(rng, rng.randint(3, 8))}") %}}
    {{{{ input("display_name", value=current_user.nickname|default(current_user.name),
               autocomplete="nickname") }}}}
  {{% endcall %}}
  {{% call form_field("Role") %}}
    {{{{ select("role", roles, selected=current_user.role) }}}}
  {{% endcall %}}
  {{{{ checkbox("{word}_notify", checked={rng.choice(("true", "false"))}, label="Notify me") }}}}
  <button type="submit">Save</button>
</form>
"""


def _sec_table_macro(rng: random.Random, kit: _PageKit) -> str:
    if rng.random() < 0.5:
        return """{% call(row) data_table(products, ["Name", "Price", "Stock"]) %}
<td>{{ row.name|title }}</td><td>{{ "%.2f"|format(row.price) }}</td><td>{{ row.stock }}</td>
{%- endcall %}
"""
    empty = _words(rng, 3)
    return f"""{{% call(row) data_table(users|sort(attribute="name"), ["User", "Score"],
                            empty="{empty}") %}}
<td>{{{{ row.name|title }}}}</td>
<td>{{{{ row.score }}}}{{% if row.score is divisibleby 2 %}} (even){{% endif %}}</td>
{{%- endcall %}}
"""


def _sec_includes(rng: random.Random, kit: _PageKit) -> str:
    options = sorted(kit.partials)
    chosen = rng.choice(options)
    if rng.random() < 0.3:
        return f'{{% include ["partials/{rng.choice(_WORDS)}_override.html", "{chosen}"] %}}\n'
    if rng.random() < 0.3:
        return (
            f'{{% include "partials/{rng.choice(_WORDS)}_extra.html" ignore missing %}}\n'
            f'{{% include "{chosen}" %}}\n'
        )
    return f'<div class="included">{{% include "{chosen}" %}}</div>\n'
