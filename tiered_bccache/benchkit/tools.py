"""The tools benchmark: real dbt, Ansible, Sphinx and MkDocs runs on generated
projects, each as it is (the baseline) and under ``tiered-bccache run``, cold (an empty
cache directory) and warm (the directory a cold run filled).

Each run is a new process tree, timed whole (wall time; and the CPU time of every process
of the tree, from ``getrusage(RUSAGE_CHILDREN)``) by this process, in interleaved
rounds whose order rotates by one each round; ratios are taken per round and summarised
by their median and spread (min..max). Every run's outputs are compared byte for byte
with those of the first baseline run (:data:`OUTPUTS` says what is compared per tool,
and what is left out and why), so a cache that changed a single rendered byte shows up
as a failed run, not as a speed-up.

Contenders per workload:

========= ==============================================================================
baseline  the tool as it is, ``TIERED_BCCACHE_*`` removed from its environment
cold      ``tiered-bccache run --dir EMPTY -- TOOL ...``: a new, empty cache directory
warm      ``tiered-bccache run --dir DIR -- TOOL ...``: DIR filled by a cold run before
          the rounds (untimed)
env-warm  ``TIERED_BCCACHE_AUTO=1 TIERED_BCCACHE_TIERS="memory:... fs:DIR" TOOL ...``:
          the start-up hook without the wrapper, warm; the difference from ``warm`` is
          the wrapper's own start-up (a Python process importing the command line)
========= ==============================================================================

**The compile share** (the ceiling of what any bytecode cache can save) is measured in
one more baseline run, untimed, under a small launcher (:data:`COMPILE_TIMER`): it
wraps ``jinja2.Environment.compile`` (parse, code generation and Python's ``compile``:
what a cache hit skips) to record each call's thread CPU time, then runs the tool's own
console script with :func:`runpy.run_path`. Every compile of the tool goes through that
method, also in forked workers (Ansible's), which inherit the wrapper; the records are
appended to one file with ``O_APPEND``, one line per call, so a worker ending with
``os._exit`` loses nothing. The share is the summed compile CPU over the baseline's
median wall time. Neither a ``sitecustomize`` nor the start-up hook is involved, and no
cache: a run with a cache that never hits would time the cache's isolated compiles
(which do more than Jinja's) and would compile a repeated string once instead of every
time the tool does. Direct ``Environment.parse`` calls (dbt's static analysis) are not
counted: no bytecode cache sees them. In a forked worker (Ansible's), the first compile
of the process also pays the first touch of memory shared with the parent (copy-on-write
page faults: about 10 ms here, against 1 ms for the worker's later compiles); a cache
hit in its place pays the same, so the table shows that part apart.

**The start-up cost of the hook** for processes that never import Jinja: ``python -c
pass`` in two throwaway virtual environments made with ``python -m venv --without-pip``
from the same base interpreter, identical except that one holds ``tiered_bccache.pth``
and ``_tiered_bccache_hook.py`` (copied from this interpreter's site-packages). The
tools' own virtual environment cannot be used for the "without" side without removing
the hook from it; two otherwise empty environments isolate exactly the ``.pth`` line's
cost. Measured with ``TIERED_BCCACHE_AUTO`` unset (the target) and set (the hook's
finder installed), each round launching every contender ``launches`` times, plus the
wrapper's own start-up (``tiered-bccache run --quiet -- python -c pass``).
"""

from __future__ import annotations

import fnmatch
import gzip
import importlib.metadata
import importlib.util
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .timing import Spread, Target, describe_machine, ratios, rotated, verdict

__all__ = [
    "COMPILE_TIMER",
    "FULL",
    "MODES",
    "OUTPUTS",
    "QUICK",
    "TEST",
    "TOOLS",
    "CompileProfile",
    "Outcome",
    "Project",
    "ProjectReport",
    "Sizes",
    "StartupReport",
    "Summary",
    "ToolFailed",
    "ToolsConfig",
    "ToolsReport",
    "ansible_project",
    "compile_profile",
    "dbt_projects",
    "differences",
    "hook_missing",
    "missing_tools",
    "mkdocs_project",
    "projects",
    "run_project",
    "run_startup",
    "run_tools_bench",
    "sphinx_project",
]

#: The tools, each with the module that says it is installed and its console script.
TOOLS: dict[str, tuple[str, str]] = {
    "dbt": ("dbt.adapters.duckdb", "dbt"),
    "ansible": ("ansible", "ansible-playbook"),
    "sphinx": ("sphinx", "sphinx-build"),
    "mkdocs": ("mkdocs", "mkdocs"),
}
#: The distributions whose versions the report states.
_DISTRIBUTIONS = ("dbt-core", "dbt-duckdb", "ansible-core", "sphinx", "mkdocs", "jinja2")

#: What is compared per tool, and what is left out of it and why.
OUTPUTS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "dbt compile": (
        "target/compiled/: every compiled model and test, byte for byte",
        (
            (
                "target/*.json, target/*.msgpack, target/graph*.gpickle",
                "not compared: run metadata (generated_at, invocation_id, elapsed times)",
            ),
        ),
    ),
    "dbt parse": (
        "target/manifest.json: every node, macro and test as parsed, with the fields below removed",
        (
            (
                "metadata.generated_at, metadata.invocation_id, "
                "metadata.invocation_started_at, metadata.run_started_at, */created_at",
                "the time and id of the invocation, different in every run",
            ),
        ),
    ),
    "ansible-playbook": (
        "out/: every rendered file, byte for byte; results.jsonl: every task result in "
        "order (our stdout callback), with the fields below removed",
        (
            (
                "results: src",
                "the copy's temporary source under remote_tmp, named after the time and a pid",
            ),
        ),
    ),
    "sphinx-build": (
        "_build/: the HTML tree and the doctrees (-d _build/doctrees), byte for byte, but for",
        (
            (
                "_build/doctrees/environment.pickle",
                "the build environment: env.all_docs holds the time each page was read "
                "(time.time_ns(), sphinx/builders/__init__.py)",
            ),
        ),
    ),
    "mkdocs build": (
        "site/: the whole tree, byte for byte, with the parts below replaced by a placeholder",
        (
            (
                "*.html: the 'Build Date UTC : ...' comment (the home page's)",
                "the time of the build, to the microsecond",
            ),
            (
                "sitemap.xml and sitemap.xml.gz: <lastmod>...</lastmod>",
                "the date of the build (differs across midnight)",
            ),
            (
                "sitemap.xml.gz: compared uncompressed",
                "gzip's header holds the build time, to the second",
            ),
        ),
    ),
}


class ToolFailed(RuntimeError):
    """A tool's run ended with a non-zero status or did not finish in time."""


# -- sizes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big the generated projects are."""

    dbt_models: int
    ansible_tasks: int
    pages: int


#: The sizes of the issue: 300 dbt models (775 tests), a 371-task playbook, 50 pages.
FULL = Sizes(dbt_models=300, ansible_tasks=371, pages=50)
#: ``--quick`` and ``tiered-bccache bench --tools``.
QUICK = Sizes(dbt_models=100, ansible_tasks=120, pages=20)
#: tests/tools: seconds per run.
TEST = Sizes(dbt_models=6, ansible_tasks=19, pages=3)


# -- projects -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Project:
    """A generated project and how its tool runs on it.

    ``argv[0]`` is the tool's console script, looked up next to this interpreter. Before
    each run the paths in ``clean`` (relative to ``root``) are removed; after it the
    files under ``compare`` are read (minus ``exclude``, glob patterns) and passed
    through ``normalize``."""

    name: str
    tool: str
    size: str
    root: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    clean: tuple[str, ...]
    compare: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    normalize: Callable[[str, bytes], bytes] | None = None
    warm_limit: float | None = None
    cold_limit: float | None = None


def _write(root: str, relative: str, text: str) -> None:
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _fresh(root: str) -> None:
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)


# dbt ---------------------------------------------------------------------------------------

_DBT_PROJECT = """\
name: tbc_bench
version: "1.0"
config-version: 2
profile: tbc_bench
model-paths: ["models"]
macro-paths: ["macros"]
test-paths: ["tests"]
target-path: target
vars:
  currency: usd
  include_deleted: false
  regions: [emea, amer, apac]
  statuses: [new, paid, shipped, returned]
models:
  tbc_bench:
    +materialized: view
flags:
  send_anonymous_usage_stats: false
  use_colors: false
"""

_DBT_PROFILES = """\
tbc_bench:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: tbc_bench.duckdb
      threads: 1
"""

# Each macro file defines its macros under its own suffix: the project's macros are
# many distinct sources, as a real project's are.
_DBT_MACROS = """\
{{% macro cents_to_dollars_{k}(column, scale=2) -%}}
  round(cast({{{{ column }}}} as double) / 100.0, {{{{ scale }}}})
{{%- endmacro %}}

{{% macro surrogate_key_{k}(columns) -%}}
  md5({{% for c in columns %}}coalesce(cast({{{{ c }}}} as varchar), '')
  {{%- if not loop.last %}} || '-' || {{% endif %}}{{% endfor %}})
{{%- endmacro %}}

{{% macro status_rank_{k}(column) -%}}
  case
  {{%- for s in var('statuses') %}}
    when {{{{ column }}}} = '{{{{ s }}}}' then {{{{ loop.index }}}}
  {{%- endfor %}}
    else 0
  end
{{%- endmacro %}}

{{% macro region_filter_{k}(column, regions=none) -%}}
  {{%- set wanted = regions if regions is not none else var('regions') -%}}
  {{{{ column }}}} in ({{% for r in wanted %}}'{{{{ r }}}}'{{% if not loop.last %}}, {{% endif %}}
  {{%- endfor %}})
{{%- endmacro %}}
"""

_DBT_GENERIC_TEST = """\
{% test is_positive(model, column_name) %}
select * from {{ model }} where {{ column_name }} < 0
{% endtest %}
"""


def _dbt_model(i: int, parents: list[str], macros: int) -> str:
    k = i % macros
    if not parents:
        # Static enough for dbt's static parser (no Jinja rendering at parse time).
        return (
            "{{ config(materialized='view') }}\n"
            f"select id, amount_cents, status, region, deleted\n"
            f"from {{{{ source('raw', 'orders_{i % 10}') }}}}\n"
        )
    if i % 3 == 0:
        joins = "".join(
            f"join {{{{ ref('{p}') }}}} as p{n} using (id)\n" for n, p in enumerate(parents[1:], 2)
        )
        return (
            f"select p1.id, p1.amount_cents, p1.status, p1.region, p1.deleted\n"
            f"from {{{{ ref('{parents[0]}') }}}} as p1\n{joins}"
        )
    ctes = ",\n".join(
        f"p{n} as (select * from {{{{ ref('{p}') }}}})" for n, p in enumerate(parents, 1)
    )
    joins = "".join(f"join p{n} using (id)\n" for n in range(2, len(parents) + 1))
    return f"""\
{{{{ config(materialized='view', tags=['layer{i % 4}']) }}}}
{{%- set measures = ['amount_cents'{", 'p1.amount_cents * 2'" if i % 2 else ""}] %}}
with {ctes}
select
  p1.id,
  {{%- for m in measures %}}
  {{{{ cents_to_dollars_{k}(m) }}}} as measure_{{{{ loop.index }}}},
  {{%- endfor %}}
  {{{{ status_rank_{k}('p1.status') }}}} as status_rank,
  {{{{ surrogate_key_{k}(['p1.id', 'p1.region']) }}}} as row_key,
  {{% if var('include_deleted') %}}p1.deleted,{{% endif %}}
  '{{{{ var('currency') }}}}' as currency,
  p1.status,
  p1.region,
  p1.amount_cents,
  p1.deleted
from p1
{joins}where {{{{ region_filter_{k}('p1.region') }}}}
"""


def dbt_projects(root: str, *, models: int) -> tuple[Project, Project]:
    """A dbt-duckdb project of ``models`` models (a sixth of them over sources, the rest
    over one to three earlier models, most rendered with macros, loops and vars) with
    ``2 * models + ceil(models / 2) + (models + 1) // 12`` tests in schema.yml files
    (unique and not_null on every model, accepted_values on every second, relationships
    on every twelfth: 775 for 300 models); returned as its ``dbt compile`` and its
    ``dbt parse --no-partial-parse``."""
    _fresh(root)
    macros = max(1, models // 15)
    _write(root, "dbt_project.yml", _DBT_PROJECT)
    _write(root, "profiles.yml", _DBT_PROFILES)
    for k in range(macros):
        _write(root, f"macros/helpers_{k}.sql", _DBT_MACROS.format(k=k))
    _write(root, "macros/tests/is_positive.sql", _DBT_GENERIC_TEST)
    sources = "".join(f"      - name: orders_{t}\n" for t in range(10))
    _write(
        root, "models/sources.yml", f"version: 2\nsources:\n  - name: raw\n    tables:\n{sources}"
    )
    staging = max(1, models // 6)
    tests = 0
    schema: dict[int, list[str]] = {}
    for i in range(models):
        name = f"model_{i:04d}"
        parents = (
            []
            if i < staging
            else sorted({f"model_{(i * 7 + j * 13) % i:04d}" for j in range(1 + i % 3)})
        )
        group = i // 25
        _write(root, f"models/group_{group:02d}/{name}.sql", _dbt_model(i, parents, macros))
        columns = [
            "      - name: id",
            "        data_tests:",
            "          - unique",
            "          - not_null",
        ]
        tests += 2
        if i % 2 == 0:
            columns += [
                "      - name: status",
                "        data_tests:",
                "          - accepted_values:",
                "              arguments:",
                "                values: [new, paid, shipped, returned]",
            ]
            tests += 1
        if i % 12 == 11:
            columns += [
                "      - name: region",
                "        data_tests:",
                "          - relationships:",
                "              arguments:",
                f"                to: ref('{parents[0] if parents else 'model_0000'}')",
                "                field: region",
            ]
            tests += 1
        schema.setdefault(group, []).append(
            f"  - name: {name}\n    description: 'Model {i}.'\n    columns:\n" + "\n".join(columns)
        )
    for group, entries in schema.items():
        _write(
            root,
            f"models/group_{group:02d}/schema.yml",
            "version: 2\nmodels:\n" + "\n".join(entries) + "\n",
        )
    env = {
        "DBT_PROFILES_DIR": root,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
        "DBT_USE_COLORS": "false",
        "DBT_LOG_PATH": os.path.join(root, "logs"),
        "DBT_TARGET_PATH": os.path.join(root, "target"),
    }
    size = f"{models} models, {tests} tests"
    clean = ("target", "logs", "tbc_bench.duckdb", "tbc_bench.duckdb.wal")
    compile_ = Project(
        name="dbt compile",
        tool="dbt",
        size=size,
        root=root,
        argv=("dbt", "compile", "--quiet"),
        env=env,
        clean=clean,
        compare=("target/compiled",),
        warm_limit=0.90,
        cold_limit=1.03,
    )
    parse = Project(
        name="dbt parse",
        tool="dbt",
        size=size,
        root=root,
        argv=("dbt", "parse", "--no-partial-parse", "--quiet"),
        env=env,
        clean=clean,
        compare=("target/manifest.json",),
        normalize=_manifest_without_times,
        warm_limit=0.93,
        cold_limit=1.03,
    )
    return compile_, parse


_MANIFEST_VOLATILE = ("generated_at", "invocation_id", "invocation_started_at", "run_started_at")


def _manifest_without_times(relative: str, data: bytes) -> bytes:
    """dbt's manifest without the invocation's time and id and the nodes' creation
    times (see :data:`OUTPUTS`)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "created_at"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    manifest = json.loads(data)
    for key in _MANIFEST_VOLATILE:
        manifest.get("metadata", {}).pop(key, None)
    return json.dumps(strip(manifest), sort_keys=True, indent=1).encode()


# Ansible -----------------------------------------------------------------------------------

_ANSIBLE_CALLBACK = '''\
"""Every task result, in order, as one JSON line each (tbc_results.jsonl): the task
results the tools benchmark compares."""

import json
import os

from ansible.plugins.callback import CallbackBase

VOLATILE = {"src"}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "tbc_results"

    def __init__(self):
        super().__init__()
        self._out = open(os.environ["TBC_RESULTS"], "w", encoding="utf-8")

    def _record(self, status, result):
        data = json.loads(self._dump_results(result.result, sort_keys=True))
        for key in VOLATILE:
            data.pop(key, None)
        line = {"task": result.task.get_name(), "status": status, "result": data}
        self._out.write(json.dumps(line, sort_keys=True) + "\\n")
        self._out.flush()

    def v2_runner_on_ok(self, result):
        self._record("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record("failed", result)

    def v2_runner_on_skipped(self, result):
        self._record("skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._record("unreachable", result)

    def v2_runner_item_on_ok(self, result):
        self._record("item ok", result)

    def v2_runner_item_on_skipped(self, result):
        self._record("item skipped", result)

    def v2_runner_item_on_failed(self, result):
        self._record("item failed", result)

    def v2_playbook_on_stats(self, stats):
        summary = {h: stats.summarize(h) for h in sorted(stats.processed)}
        self._out.write(json.dumps({"stats": summary}, sort_keys=True) + "\\n")
        self._out.close()
'''

_ANSIBLE_VARS = """\
numbers: [3, 5, 8, 13, 21]
services:
  - {name: web, port: 8080, enabled: true, tags: [frontend, public]}
  - {name: api, port: 9000, enabled: true, tags: [backend]}
  - {name: worker, port: 0, enabled: false, tags: [backend, batch]}
  - {name: cache, port: 11211, enabled: true, tags: [infra]}
settings:
  timeout: 30
  retries: 3
  path: 'C:\\\\temp\\\\logs'
"""

# The playbook's templates: rendered by the template module, which compiles them at
# render time (no escape_backslashes), and their include and import.
_ANSIBLE_TEMPLATES = {
    "macros.j2": """\
{% macro kv(key, value) -%}{{ key }} = {{ value | to_json }}{%- endmacro %}
{% macro section(name) -%}[{{ name | upper }}]{%- endmacro %}
""",
    "header.j2": """\
# generated for {{ inventory_hostname }} (group {{ group_index }})
# tab: {{ 'a\\tb' }} | regex: {{ 'key=value' | regex_replace('(\\\\w+)=(\\\\w+)', '\\\\2=\\\\1') }}
""",
    "service.conf.j2": """\
{% import 'macros.j2' as m %}
{% include 'header.j2' %}
{{ m.section('service') }}
{% for s in services if s.enabled %}
{{ m.kv(s.name, s.port) }}
{% endfor %}
{{ m.kv('total', numbers | sum + group_index) }}
path = {{ settings.path }}
""",
    "hosts.j2": """\
{% include 'header.j2' %}
{% for s in services | sort(attribute='port') %}
{{ '%-10s' | format(s.name) }} {{ s.port }} {{ s.tags | join(',') }}
{% endfor %}
""",
    "report.txt.j2": """\
{% set enabled = services | selectattr('enabled') | map(attribute='name') | list %}
enabled: {{ enabled | join(' ') }}
disabled: {{ services | rejectattr('enabled') | map(attribute='name') | join(' ') }}
{% if group_index is even %}even group{% else %}odd group{% endif %}
{{ settings | dict2items | map(attribute='key') | join('\\t') }}
""",
    # The very source a task below writes in YAML: compiled with escape_backslashes on
    # (from the playbook) and off (from this file), the same source under the same
    # Environment must give a backslash and a t, then a tab.
    "tab.j2": "{{ 'a\\tb' }}",
}


# One group of seven tasks; @...@ are replaced per group (the text is YAML as written:
# a backslash here is a backslash in the file). Tasks that run a module (template, copy:
# a new Python process each, about a second here) are one group in ten: the rest render
# on the controller, in the forked workers, which is where Jinja's compiles are.
_ANSIBLE_GROUP = r"""
    - name: render @template@ for group @g@
      @render@

    - name: facts of group @g@
      ansible.builtin.set_fact:
        total_@g@: "{{ numbers | map('int') | sum + @g@ }}"
        label_@g@: "{{ 'svc-%03d' | format(@g@) | upper }}"
        tab_dq_@g@: "{{ 'a\\tb-@g@' }}"
        tab_sq_@g@: '{{ ''a\tb-@g@'' }}'
        tab_yaml_@g@: "{{ 'a\tb-@g@' }}"
        host_@g@: "{{ 'host-@g@.example.org' | regex_replace('^host-(\\d+)\\..*$', 'h\\1') }}"

    - name: show group @g@ when its total is large
      ansible.builtin.debug:
        msg: "{{ label_@g@ }} totals {{ total_@g@ }} on {{ host_@g@ }}"
      when: total_@g@ | int > @limit@

    - name: enabled services of group @g@
      ansible.builtin.debug:
        msg: "{{ item.name }}:{{ item.port + @g@ }} [{{ item.tags | join('/') }}]"
      loop: "{{ services }}"
      when: item.enabled and item.port > @port@

    - name: check group @g@
      ansible.builtin.assert:
        that:
          - total_@g@ | int == @total@
          - label_@g@ is match('SVC-')
          - tab_dq_@g@ | length == tab_sq_@g@ | length
        quiet: true

    - name: the strings of group @g@
      @strings@

    - name: derived fact of group @g@
      ansible.builtin.set_fact:
        derived_@g@: "{{ services | selectattr('enabled') | map(attribute='port') | max + @g@ }}"
      when: @g@ is divisibleby 2 or total_@g@ | int is odd
"""
# The template module (a file in out/), or the template lookup (the same rendering, on
# the controller, with its include and import compiled at render time).
_ANSIBLE_TEMPLATE_TASK = r"""ansible.builtin.template:
        src: templates/@template@
        dest: "{{ out }}/group_@g3@_@output@"
        mode: "0644"
      vars:
        group_index: @g@"""
_ANSIBLE_LOOKUP_TASK = r"""ansible.builtin.set_fact:
        rendered_@g@: "{{ lookup('ansible.builtin.template', 'templates/@template@') }}"
      vars:
        group_index: @g@"""
_ANSIBLE_COPY_TASK = r"""ansible.builtin.copy:
        content: >-
          {{ tab_dq_@g@ }}|{{ tab_sq_@g@ }}|{{ tab_yaml_@g@ }}|{{ host_@g@ }}|{{ 'x\\ny' }}
        dest: "{{ out }}/group_@g3@_strings.txt"
        mode: '0644'"""
_ANSIBLE_JOIN_TASK = r"""ansible.builtin.set_fact:
        strings_@g@: >-
          {{ tab_dq_@g@ }}|{{ tab_sq_@g@ }}|{{ tab_yaml_@g@ }}|{{ host_@g@ }}|{{ 'x\\ny' }}"""
_ANSIBLE_RENDERED = ("hosts.j2", "report.txt.j2", "service.conf.j2")
# ansible-core's escape_backslashes: the source {{ 'a\tb' }} from double- and
# single-quoted YAML (a backslash and a t), then from templates/tab.j2 (a tab), through
# the template lookup and the template module (out/tab.txt).
_ANSIBLE_BACKSLASHES = r"""
    - name: a backslash from double-quoted YAML
      ansible.builtin.set_fact:
        tab_yaml_dq: "{{ 'a\\tb' }}"

    - name: a backslash from single-quoted YAML
      ansible.builtin.set_fact:
        tab_yaml_sq: '{{ ''a\tb'' }}'

    - name: the same source from a template file
      ansible.builtin.set_fact:
        tab_file: "{{ lookup('ansible.builtin.template', 'templates/tab.j2') }}"

    - name: the same source through the template module
      ansible.builtin.template:
        src: templates/tab.j2
        dest: "{{ out }}/tab.txt"
        mode: "0644"
"""


def _ansible_group(g: int) -> str:
    template = _ANSIBLE_RENDERED[g % len(_ANSIBLE_RENDERED)]
    text = _ANSIBLE_GROUP.replace(
        "@render@", _ANSIBLE_TEMPLATE_TASK if g % 10 == 0 else _ANSIBLE_LOOKUP_TASK
    ).replace("@strings@", _ANSIBLE_COPY_TASK if g % 10 == 1 else _ANSIBLE_JOIN_TASK)
    values = {
        "template": template,
        "output": template.removesuffix(".j2"),
        "g3": f"{g:03d}",
        "g": str(g),
        "limit": str(50 + g % 7),
        "port": str(g % 3 * 1000),
        "total": str(50 + g),
    }
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


def ansible_project(root: str, *, tasks: int) -> Project:
    """An ansible-core playbook of about ``tasks`` tasks on localhost (local connection,
    no facts gathered, no become): four tasks compiling one source with ansible-core's
    escape_backslashes on and off (:data:`_ANSIBLE_BACKSLASHES`), then groups of seven
    tasks: a template with an ``{%
    include %}`` and an ``{% import %}`` rendered (by the template module into ``out/``
    in one group of ten, else by the template lookup), set_fact with filters and
    backslashes from double-quoted, single-quoted and folded YAML, debug under
    ``when:``, a loop, an assert, the strings joined (copied into ``out/`` in one group
    of ten), a conditional set_fact."""
    _fresh(root)
    groups = max(1, (tasks - 5) // 7)
    for name, text in _ANSIBLE_TEMPLATES.items():
        _write(root, f"templates/{name}", text)
    _write(root, "callback_plugins/tbc_results.py", _ANSIBLE_CALLBACK)
    _write(root, "vars/main.yml", _ANSIBLE_VARS)
    body = "".join(_ansible_group(g) for g in range(groups))
    _write(
        root,
        "playbook.yml",
        f"""\
- name: tools benchmark
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files: [vars/main.yml]
  vars:
    out: "{{{{ playbook_dir }}}}/out"
  tasks:
    - name: output directory
      ansible.builtin.file:
        path: "{{{{ out }}}}"
        state: directory
        mode: "0755"
{_ANSIBLE_BACKSLASHES}{body}""",
    )
    env = {
        "ANSIBLE_CONFIG": os.path.join(root, "ansible.cfg"),  # there is none: defaults
        "ANSIBLE_HOME": os.path.join(root, ".ansible"),
        "ANSIBLE_LOCAL_TEMP": os.path.join(root, ".ansible", "tmp"),
        "ANSIBLE_REMOTE_TEMP": os.path.join(root, ".ansible", "remote"),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_STDOUT_CALLBACK": "tbc_results",
        "ANSIBLE_CALLBACK_PLUGINS": os.path.join(root, "callback_plugins"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_HOST_KEY_CHECKING": "0",
        "ANSIBLE_GATHERING": "explicit",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "ANSIBLE_SYSTEM_WARNINGS": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(root, ".ansible", "collections"),
        "TBC_RESULTS": os.path.join(root, "results.jsonl"),
    }
    return Project(
        name="ansible-playbook",
        tool="ansible",
        size=f"{5 + 7 * groups} tasks",
        root=root,
        argv=("ansible-playbook", "-i", "localhost,", "-c", "local", "playbook.yml"),
        env=env,
        clean=("out", "results.jsonl", ".ansible"),
        compare=("out", "results.jsonl"),
        warm_limit=0.85,
        cold_limit=1.03,
    )


# Sphinx ------------------------------------------------------------------------------------

_SPHINX_CONF = """\
project = "Tools benchmark"
author = "tiered-bccache"
copyright = "2024, tiered-bccache"
version = release = "1.0"
extensions = ["sphinx.ext.todo"]
html_theme = "alabaster"
todo_include_todos = True
"""


def _rst_page(i: int, pages: int) -> str:
    other = (i * 7 + 3) % pages
    title = f"Page {i}"
    return f"""\
.. _page-{i}:

{title}
{"=" * len(title)}

Introduction to page {i}, which links to :ref:`page-{other}` and :doc:`page_{other:03d}`.

.. note::

   A note on page {i}: *emphasis*, **strong** and ``literal`` text.

Section A
---------

- item one of {i}
- item two with a `link <https://example.invalid/{i}>`_

.. code-block:: python

   def page_{i}(x):
       return x * {i}

Section B
---------

.. list-table::
   :header-rows: 1

   * - key
     - value
   * - page
     - {i}
   * - next
     - {(i + 1) % pages}

.. todo:: revisit page {i}

.. glossary::

   term{i}
      The term of page {i}.
"""


def sphinx_project(root: str, *, pages: int) -> Project:
    """A Sphinx project of ``pages`` reStructuredText pages (cross-references, a note, a
    code block, a list table, a todo, a glossary), built with ``-b html -E``."""
    _fresh(root)
    _write(root, "conf.py", _SPHINX_CONF)
    toctree = "".join(f"   page_{i:03d}\n" for i in range(pages))
    _write(
        root,
        "index.rst",
        f"Tools benchmark\n===============\n\n.. toctree::\n   :maxdepth: 2\n\n{toctree}\n"
        ".. todolist::\n",
    )
    for i in range(pages):
        _write(root, f"page_{i:03d}.rst", _rst_page(i, pages))
    return Project(
        name="sphinx-build",
        tool="sphinx",
        size=f"{pages} pages",
        root=root,
        argv=(
            "sphinx-build",
            "-b",
            "html",
            "-E",
            "-q",
            "-d",
            "_build/doctrees",
            ".",
            "_build/html",
        ),
        env={},
        clean=("_build",),
        compare=("_build",),
        exclude=("_build/doctrees/environment.pickle",),
        warm_limit=1.01,
        cold_limit=1.01,
    )


# MkDocs ------------------------------------------------------------------------------------


def _md_page(i: int, pages: int) -> str:
    other = (i * 7 + 3) % pages
    return f"""\
# Page {i}

Introduction to page {i}, which links to [page {other}](page_{other:03d}.md).

## Section A

- item one of {i}
- item two with *emphasis* and `code`

```python
def page_{i}(x):
    return x * {i}
```

## Section B

| key  | value |
|------|-------|
| page | {i}   |
| next | {(i + 1) % pages} |

> A quote on page {i}.
"""


def mkdocs_project(root: str, *, pages: int) -> Project:
    """A MkDocs project of ``pages`` Markdown pages (headings, links, lists, code,
    tables), the ``mkdocs`` theme, built with ``mkdocs build``."""
    _fresh(root)
    nav = "".join(f"  - Page {i}: page_{i:03d}.md\n" for i in range(pages))
    _write(
        root,
        "mkdocs.yml",
        "site_name: Tools benchmark\nsite_url: https://example.invalid/\ntheme:\n"
        f"  name: mkdocs\nnav:\n  - Home: index.md\n{nav}",
    )
    _write(root, "docs/index.md", "# Tools benchmark\n\nThe home page.\n")
    for i in range(pages):
        _write(root, f"docs/page_{i:03d}.md", _md_page(i, pages))
    return Project(
        name="mkdocs build",
        tool="mkdocs",
        size=f"{pages} pages",
        root=root,
        argv=("mkdocs", "build", "--quiet", "--site-dir", "site"),
        env={},
        clean=("site",),
        compare=("site",),
        normalize=_site_without_build_time,
        warm_limit=1.01,
        cold_limit=1.01,
    )


_BUILD_DATE = re.compile(rb"Build Date UTC : [^\n]*")
_LASTMOD = re.compile(rb"<lastmod>[^<]*</lastmod>")


def _site_without_build_time(relative: str, data: bytes) -> bytes:
    """A MkDocs site file without the build's date and time (see :data:`OUTPUTS`)."""
    if relative.endswith(".gz"):
        data = gzip.decompress(data)
    if relative.endswith(".html"):
        return _BUILD_DATE.sub(b"Build Date UTC : (removed)", data)
    if ".xml" in relative:
        return _LASTMOD.sub(b"<lastmod>(removed)</lastmod>", data)
    return data


def projects(work: str, sizes: Sizes, only: Iterable[str] = TOOLS) -> list[Project]:
    """Generate the projects of the tools in ``only`` under ``work``."""
    wanted = set(only)
    out: list[Project] = []
    if "dbt" in wanted:
        out += dbt_projects(os.path.join(work, "dbt"), models=sizes.dbt_models)
    if "ansible" in wanted:
        out.append(ansible_project(os.path.join(work, "ansible"), tasks=sizes.ansible_tasks))
    if "sphinx" in wanted:
        out.append(sphinx_project(os.path.join(work, "sphinx"), pages=sizes.pages))
    if "mkdocs" in wanted:
        out.append(mkdocs_project(os.path.join(work, "mkdocs"), pages=sizes.pages))
    return out


def missing_tools(only: Iterable[str] = TOOLS) -> list[str]:
    """The tools of ``only`` that are not installed next to this interpreter (their
    module not importable, or their console script not in its scripts directory)."""
    missing = []
    for tool in only:
        module, script = TOOLS[tool]
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package missing
            found = False
        if not found or not os.path.exists(_script(script)):
            missing.append(tool)
    return missing


def hook_missing() -> str | None:
    """Why ``tiered-bccache run`` cannot work from this interpreter (its start-up hook
    is not in its site-packages), or None."""
    purelib = sysconfig.get_paths()["purelib"]
    if os.path.exists(os.path.join(purelib, "tiered_bccache.pth")):
        return None
    return (
        f"the start-up hook tiered_bccache.pth is not in {purelib} (an editable install "
        "does not carry it: pip install . without -e)"
    )


def _script(name: str) -> str:
    return os.path.join(sysconfig.get_path("scripts"), name)


def _versions() -> dict[str, str]:
    out = {}
    for name in _DISTRIBUTIONS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


# -- running --------------------------------------------------------------------------------

#: The summary line of ``tiered-bccache run``.
_SUMMARY = re.compile(
    r"tiered-bccache: ([\d,]+) templates and ([\d,]+) strings from the cache, ([\d,]+) "
    r"compiled \(([\d.]+) s\)(?:, ([\d,]+) compiled uncached)?, in ([\d,]+) process(?:es)?$"
)


@dataclass(frozen=True, slots=True)
class Summary:
    """What ``tiered-bccache run``'s summary line says."""

    templates: int
    strings: int
    compiled: int
    compile_seconds: float
    uncached: int
    processes: int

    @classmethod
    def parse(cls, stderr: str) -> Summary | None:
        """The summary in ``stderr`` (its last matching line), or None."""
        for line in reversed(stderr.strip().splitlines()):
            match = _SUMMARY.search(line.strip())
            if match:
                t, s, c, secs, u, p = match.groups()

                def n(text: str | None) -> int:
                    return int((text or "0").replace(",", ""))

                return cls(n(t), n(s), n(c), float(secs), n(u), n(p))
        return None


@dataclass(frozen=True, slots=True)
class Outcome:
    """One run of a tool: its wall time, the CPU time of its process tree (user and
    system, every process waited for), what the wrapper said, and its outputs."""

    seconds: float
    summary: Summary | None
    outputs: dict[str, bytes]
    log: str
    cpu_seconds: float = 0.0


def _child_env(project: Project, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERED_BCCACHE")}
    env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8")
    env.update(project.env)
    if extra:
        env.update(extra)
    return env


def _tool_argv(project: Project) -> list[str]:
    return [_script(project.argv[0]), *project.argv[1:]]


def _wrapper() -> list[str]:
    script = _script("tiered-bccache")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "tiered_bccache"]


def run_project(
    project: Project,
    *,
    cache_dir: str | None = None,
    wrapper: bool = True,
    prefix: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 900,
) -> Outcome:
    """Run ``project``'s tool once from a clean state: as it is with ``cache_dir`` None,
    else with the cache in ``cache_dir``, under ``tiered-bccache run --dir`` (``wrapper``)
    or activated by the variables alone. ``prefix`` goes before the tool's command (the
    compile timer); ``env`` is added to its environment last. Raises :class:`ToolFailed`
    when the tool fails or runs out of time."""
    for relative in project.clean:
        path = os.path.join(project.root, relative)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
    argv = [*prefix, *_tool_argv(project)]
    extra: dict[str, str] = {}
    if cache_dir is not None:
        if wrapper:
            argv = [*_wrapper(), "run", "--dir", cache_dir, "--", *argv]
        else:
            from ..autoconfig import AUTO_VAR, TIERS_ENV_VAR, default_specs

            extra = {AUTO_VAR: "1", TIERS_ENV_VAR: " ".join(default_specs(cache_dir))}
    extra.update(env or {})
    child_env = _child_env(project, extra)
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        try:
            status = subprocess.run(
                argv,
                cwd=project.root,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired as exc:
            raise ToolFailed(f"{project.name}: no end after {timeout:g} s") from exc
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
        log.seek(0)
        text = log.read()
    if status != 0:
        tail = "\n".join(text.strip().splitlines()[-25:])
        raise ToolFailed(f"{project.name}: exit status {status}:\n{tail}")
    summary = Summary.parse(text) if cache_dir is not None and wrapper else None
    return Outcome(seconds, summary, collect(project), text, cpu)


def collect(project: Project) -> dict[str, bytes]:
    """The outputs of ``project``'s last run: relative path -> bytes (normalised)."""
    out: dict[str, bytes] = {}
    for top in project.compare:
        path = os.path.join(project.root, top)
        files = (
            [path]
            if os.path.isfile(path)
            else [os.path.join(d, f) for d, _, names in os.walk(path) for f in names]
        )
        for name in files:
            relative = os.path.relpath(name, project.root)
            if any(fnmatch.fnmatch(relative, pattern) for pattern in project.exclude):
                continue
            with open(name, "rb") as f:
                data = f.read()
            out[relative] = project.normalize(relative, data) if project.normalize else data
    return out


def differences(expected: Mapping[str, bytes], actual: Mapping[str, bytes]) -> list[str]:
    """The files that are missing, extra or different in ``actual``, sorted; an empty
    ``expected`` is a difference too (nothing was produced)."""
    if not expected:
        return ["(no output at all)"]
    names = set(expected) | set(actual)
    return sorted(n for n in names if expected.get(n) != actual.get(n))


# -- the compile share ----------------------------------------------------------------------

#: The launcher of the compile-share run (see the module docstring): ``python TIMER LOG
#: SCRIPT ARGS...``.
COMPILE_TIMER = r"""
import os, sys, time
log, script = sys.argv[1], sys.argv[2]
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
import jinja2
_compile = jinja2.Environment.compile
def compile(self, source, name=None, filename=None, raw=False, defer_init=False):
    cpu = time.thread_time()
    try:
        return _compile(self, source, name, filename, raw, defer_init)
    finally:
        os.write(fd, b"%d %.9f\n" % (os.getpid(), time.thread_time() - cpu))
jinja2.Environment.compile = compile
sys.argv = sys.argv[2:]
import runpy
runpy.run_path(script, run_name="__main__")
"""


@dataclass(frozen=True, slots=True)
class CompileProfile:
    """What a baseline run spent in ``Environment.compile``: thread CPU seconds summed
    over every process, the number of calls, the processes that compiled."""

    cpu_seconds: float
    compiles: int
    processes: int
    outputs: dict[str, bytes] = field(repr=False)
    #: The CPU time of each process's first compile, summed.
    first_cpu_seconds: float = 0.0


def compile_profile(project: Project, work: str) -> CompileProfile:
    """One baseline run of ``project`` under :data:`COMPILE_TIMER`."""
    timer = os.path.join(work, "compile_timer.py")
    with open(timer, "w", encoding="utf-8") as f:
        f.write(COMPILE_TIMER)
    log = os.path.join(work, f"compiles-{project.tool}-{os.getpid()}.log")
    if os.path.exists(log):
        os.unlink(log)
    outcome = run_project(project, prefix=(sys.executable, timer, log))
    cpu, first, calls, pids = 0.0, 0.0, 0, set()
    with open(log, encoding="utf-8") as f:
        for line in f:
            pid, seconds = line.split()
            cpu += float(seconds)
            calls += 1
            if pid not in pids:
                first += float(seconds)
                pids.add(pid)
    os.unlink(log)
    return CompileProfile(cpu, calls, len(pids), outcome.outputs, first)


# -- the benchmark ----------------------------------------------------------------------------

MODES = ("baseline", "cold", "warm", "env-warm")


@dataclass
class ProjectReport:
    """Every run of one workload: times and summaries per mode, the compile profile and
    every output mismatch (``"cold round 2: a, b"``)."""

    project: Project
    seconds: dict[str, list[float]] = field(default_factory=dict)
    cpu_seconds: dict[str, list[float]] = field(default_factory=dict)
    summaries: dict[str, list[Summary]] = field(default_factory=dict)
    profile: CompileProfile | None = None
    compared: int = 0
    runs_compared: int = 0
    mismatches: list[str] = field(default_factory=list)
    error: str | None = None

    def ratio(self, mode: str, *, cpu: bool = False) -> Spread | None:
        """``mode``'s wall time (``cpu``: its process tree's CPU time) over the
        baseline's, per round, summarised."""
        times = self.cpu_seconds if cpu else self.seconds
        try:
            return ratios(times[mode], times["baseline"])
        except (KeyError, ValueError):
            return None

    def targets(self) -> list[Target]:
        p = self.project
        out = []
        if p.warm_limit is not None:
            out.append(Target(f"{p.name} warm", "warm", "baseline", p.warm_limit))
            if p.warm_limit > 1:  # Sphinx, MkDocs: never slower, through the variable too
                out.append(Target(f"{p.name} env-warm", "env-warm", "baseline", p.warm_limit))
        if p.cold_limit is not None:
            out.append(Target(f"{p.name} cold", "cold", "baseline", p.cold_limit))
        return out

    def as_dict(self) -> dict[str, Any]:
        p = self.project
        ratios_ = {m: r.as_dict() for m in MODES[1:] if (r := self.ratio(m)) is not None}
        cpu = {m: r.as_dict() for m in MODES[1:] if (r := self.ratio(m, cpu=True)) is not None}
        return {
            "workload": p.name,
            "size": p.size,
            "command": " ".join(p.argv),
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "ratios": ratios_,
            "cpu_ratios": cpu,
            "summaries": {
                m: [
                    {
                        "templates": s.templates,
                        "strings": s.strings,
                        "compiled": s.compiled,
                        "compile_seconds": s.compile_seconds,
                        "uncached": s.uncached,
                        "processes": s.processes,
                    }
                    for s in v
                ]
                for m, v in self.summaries.items()
            },
            "compile_profile": None
            if self.profile is None
            else {
                "cpu_seconds": self.profile.cpu_seconds,
                "first_cpu_seconds": self.profile.first_cpu_seconds,
                "compiles": self.profile.compiles,
                "processes": self.profile.processes,
            },
            "files_compared": self.compared,
            "runs_compared": self.runs_compared,
            "mismatches": self.mismatches,
            "error": self.error,
        }


def bench_project(
    project: Project,
    work: str,
    *,
    rounds: int,
    modes: Sequence[str] = MODES,
    log: Callable[[str], None] = lambda _: None,
    progress: Callable[[str, int, int], None] = lambda *_: None,
) -> ProjectReport:
    """Measure ``project`` in ``rounds`` interleaved rounds of ``modes`` (see the module
    docstring); ``log`` gets a line per run, ``progress(stage, done, total)`` the runs
    done. A tool that fails ends its report with ``error`` set."""
    report = ProjectReport(
        project, {m: [] for m in modes}, {m: [] for m in modes}, {m: [] for m in modes}
    )
    slug = project.name.replace(" ", "-")
    caches = os.path.join(work, "caches", slug)
    shutil.rmtree(caches, ignore_errors=True)
    warm_dir = os.path.join(caches, "warm")

    total = 3 + rounds * len(modes)

    def check(label: str, outputs: Mapping[str, bytes]) -> None:
        report.runs_compared += 1
        progress(project.name, report.runs_compared, total)
        diff = differences(reference, outputs)
        if diff:
            shown = ", ".join(diff[:5]) + (f" and {len(diff) - 5} more" if len(diff) > 5 else "")
            report.mismatches.append(f"{label}: {len(diff)} differ: {shown}")

    try:
        log(f"{project.name}: reference baseline run")
        reference = run_project(project).outputs
        report.compared = len(reference)
        log(f"{project.name}: cold run filling the warm directory")
        check("priming cold run", run_project(project, cache_dir=warm_dir).outputs)
        log(f"{project.name}: compile profile")
        report.profile = compile_profile(project, work)
        check("compile-profile run", report.profile.outputs)
        for r in range(rounds):
            for mode in rotated(list(modes), r):
                log(f"{project.name}: round {r + 1}/{rounds}, {mode}")
                cold_dir = os.path.join(caches, f"cold-{r}")
                if mode == "baseline":
                    outcome = run_project(project)
                elif mode == "cold":
                    outcome = run_project(project, cache_dir=cold_dir)
                elif mode == "warm":
                    outcome = run_project(project, cache_dir=warm_dir)
                else:
                    outcome = run_project(project, cache_dir=warm_dir, wrapper=False)
                shutil.rmtree(cold_dir, ignore_errors=True)
                report.seconds[mode].append(outcome.seconds)
                report.cpu_seconds[mode].append(outcome.cpu_seconds)
                if outcome.summary is not None:
                    report.summaries[mode].append(outcome.summary)
                check(f"{mode} round {r + 1}", outcome.outputs)
    except ToolFailed as exc:
        report.error = str(exc)
    finally:
        shutil.rmtree(caches, ignore_errors=True)
    return report


# -- the hook's start-up cost -----------------------------------------------------------------


@dataclass
class StartupReport:
    """``python -c pass`` with and without the start-up hook, and the wrapper's start-up:
    seconds per launch, one value per round, per contender."""

    seconds: dict[str, list[float]]
    launches: int
    error: str | None = None

    def ratio(self, a: str, b: str = "no-hook") -> Spread | None:
        try:
            return ratios(self.seconds[a], self.seconds[b])
        except (KeyError, ValueError):
            return None

    def as_dict(self) -> dict[str, Any]:
        return {"seconds_per_launch": self.seconds, "launches": self.launches, "error": self.error}


STARTUP_TARGET = Target("python -c pass, hook installed, variable unset", "hook", "no-hook", 1.01)


def run_startup(
    work: str,
    *,
    rounds: int,
    launches: int,
    log: Callable[[str], None] = lambda _: None,
    progress: Callable[[str, int, int], None] = lambda *_: None,
) -> StartupReport:
    """Measure what the start-up hook costs a process that never imports Jinja (see the
    module docstring)."""
    contenders = ("no-hook", "hook", "hook-active", "wrapper")
    report = StartupReport({c: [] for c in contenders}, launches)
    report.error = hook_missing()
    # The hook module: in site-packages, or wherever an editable install finds it.
    spec = importlib.util.find_spec("_tiered_bccache_hook")
    origin = spec.origin if spec is not None else None
    if origin is None:
        report.error = report.error or "the start-up hook's module _tiered_bccache_hook is missing"
    if report.error is not None or origin is None:
        return report
    hook_files = [os.path.join(sysconfig.get_paths()["purelib"], "tiered_bccache.pth"), origin]
    base = getattr(sys, "_base_executable", sys.executable)
    pythons = {}
    for name in ("no-hook", "hook"):
        venv = os.path.join(work, "startup", name)
        shutil.rmtree(venv, ignore_errors=True)
        log(f"startup: python -m venv --without-pip {name}")
        subprocess.run([base, "-m", "venv", "--without-pip", venv], check=True)
        pythons[name] = os.path.join(venv, "bin", "python")
    target = subprocess.run(
        [pythons["hook"], "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    for f in hook_files:
        shutil.copy(f, target)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIERED_BCCACHE")}
    cache_dir = os.path.join(work, "startup", "cache")
    argvs = {
        "no-hook": ([pythons["no-hook"], "-c", "pass"], clean),
        "hook": ([pythons["hook"], "-c", "pass"], clean),
        "hook-active": ([pythons["hook"], "-c", "pass"], {**clean, "TIERED_BCCACHE_AUTO": "1"}),
        "wrapper": (
            [
                *_wrapper(),
                "run",
                "--quiet",
                "--dir",
                cache_dir,
                "--",
                pythons["no-hook"],
                "-c",
                "pass",
            ],
            clean,
        ),
    }
    for argv, env in argvs.values():  # warm the page cache and __pycache__
        subprocess.run(argv, env=env, check=True)
    for r in range(rounds):
        log(f"startup: round {r + 1}/{rounds}")
        progress("start-up", r, rounds)
        for name in rotated(list(contenders), r):
            argv, env = argvs[name]
            started = time.perf_counter()
            for _ in range(launches):
                subprocess.run(argv, env=env, check=True)
            report.seconds[name].append((time.perf_counter() - started) / launches)
    progress("start-up", rounds, rounds)
    shutil.rmtree(os.path.join(work, "startup"), ignore_errors=True)
    return report


# -- the whole run ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolsConfig:
    """What to run: the tools (``TOOLS`` keys), whether to measure the start-up hook,
    the project sizes, the rounds, and a work directory (a temporary one if None)."""

    only: tuple[str, ...] = tuple(TOOLS)
    startup: bool = True
    sizes: Sizes = FULL
    rounds: int = 5
    startup_rounds: int = 15
    launches: int = 20
    work: str | None = None


@dataclass
class ToolsReport:
    """The tools benchmark's results."""

    config: ToolsConfig
    missing: list[str]
    reports: list[ProjectReport]
    startup: StartupReport | None
    versions: dict[str, str]
    machine: dict[str, Any]
    #: Why nothing ran: the start-up hook is not installed.
    note: str | None = None

    def failed(self) -> bool:
        """True when a tool failed or an output differed from the baseline's."""
        return any(r.error or r.mismatches for r in self.reports) or bool(
            self.startup and self.startup.error
        )

    def format_table(self) -> str:
        lines = [
            "tools: "
            + ", ".join(f"{k} {v}" for k, v in self.versions.items())
            + f"; {self.config.rounds} round(s). Ratios of wall time (the targets), and of "
            "the process tree's CPU time (user + system; less sensitive to other jobs on "
            "the machine)",
        ]
        if self.missing:
            lines.append("not installed (left out): " + ", ".join(self.missing))
        if self.note:
            lines.append(f"nothing run: {self.note}")
            return "\n".join(lines)
        header = (
            f"{'workload':<17} {'size':<22} {'baseline':>8} {'ratio':<17} "
            f"{'median':>7} {'spread':>11}  {'target':<15} {'CPU median':>10}"
        )
        lines += ["", header]
        for r in self.reports:
            p = r.project
            base = Spread.of(r.seconds["baseline"]).median if r.seconds.get("baseline") else 0.0
            first = f"{p.name:<17} {p.size:<22} {base:>7.2f}s"
            if r.error:
                lines.append(f"{first} FAILED: {r.error.splitlines()[0]}")
                continue
            targets = {t.numerator: t for t in r.targets()}
            for i, mode in enumerate(m for m in MODES[1:] if m in r.seconds):
                spread = r.ratio(mode)
                if spread is None:
                    continue
                lead = first if i == 0 else " " * len(first)
                t = targets.get(mode)
                goal = verdict(t, spread.median) if t else ""
                cpu = r.ratio(mode, cpu=True)
                lines.append(
                    f"{lead} {mode + '/baseline':<17} {spread.median:>6.2f}x "
                    f"{spread.range():>11}  {goal:<15} "
                    + (f"{cpu.median:>9.2f}x" if cpu is not None else "")
                )
        if self.startup is not None:
            lines += ["", self._startup_lines()]
        lines += ["", "compiles and outputs:"]
        for r in self.reports:
            lines += self._detail_lines(r)
        return "\n".join(lines)

    def _startup_lines(self) -> str:
        s = self.startup
        assert s is not None
        if s.error:
            return f"start-up hook: FAILED: {s.error}"
        base = Spread.of(s.seconds["no-hook"]).median * 1000
        out = [
            f"python -c pass ({s.launches} launches a round, {self.config.startup_rounds} "
            f"rounds; no hook: {base:.1f} ms)"
        ]
        for name, what in (
            ("hook", "hook installed, TIERED_BCCACHE_AUTO unset"),
            ("hook-active", "hook installed, TIERED_BCCACHE_AUTO=1"),
            ("wrapper", "tiered-bccache run --quiet -- python -c pass"),
        ):
            spread = s.ratio(name)
            if spread is None:
                continue
            ms = (Spread.of(s.seconds[name]).median * 1000) - base
            goal = verdict(STARTUP_TARGET, spread.median) if name == "hook" else ""
            out.append(
                f"  {what:<45} {spread.median:>6.3f}x {spread.range('.3f'):>13} "
                f"{ms:+7.1f} ms  {goal}"
            )
        return "\n".join(out)

    def _detail_lines(self, r: ProjectReport) -> list[str]:
        p = r.project
        out = [f"  {p.name} ({p.size}):"]
        if r.profile is not None and r.seconds.get("baseline"):
            base = Spread.of(r.seconds["baseline"]).median
            share = r.profile.cpu_seconds / base if base else 0.0
            out.append(
                f"    baseline: {r.profile.compiles:,} compiles in {r.profile.processes} "
                f"process(es), {r.profile.cpu_seconds:.2f} s CPU = {share:.0%} of its wall "
                "time (the ceiling)"
            )
            if r.profile.processes > 1:
                rest = r.profile.cpu_seconds - r.profile.first_cpu_seconds
                out.append(
                    f"      of which each process's first compile: "
                    f"{r.profile.first_cpu_seconds:.2f} s (in a forked worker it pays the "
                    "first touch of memory shared with the parent, as a cache hit would); "
                    f"the others: {rest:.2f} s = {rest / base if base else 0.0:.0%}"
                )
        for mode in ("cold", "warm"):
            sums = r.summaries.get(mode) or []
            if sums:
                s = sums[len(sums) // 2]
                compiled = sorted(x.compiled for x in sums)
                out.append(
                    f"    {mode}: compiled {compiled[0]:,}..{compiled[-1]:,} "
                    f"({s.compile_seconds:.2f} s), from the cache {s.templates:,} templates "
                    f"and {s.strings:,} strings, {s.uncached:,} uncached, "
                    f"{s.processes} process(es)"
                )
        verdict_ = (
            "identical"
            if not r.mismatches
            else f"DIFFERENT in {len(r.mismatches)} of {r.runs_compared} runs"
        )
        out.append(
            f"    outputs: {r.compared:,} files, {verdict_} "
            f"({r.runs_compared} runs compared with the first baseline)"
        )
        out += [f"      {m}" for m in r.mismatches[:10]]
        if r.error:
            out += [f"    FAILED: {line}" for line in r.error.splitlines()]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": {
                "only": list(self.config.only),
                "sizes": {
                    "dbt_models": self.config.sizes.dbt_models,
                    "ansible_tasks": self.config.sizes.ansible_tasks,
                    "pages": self.config.sizes.pages,
                },
                "rounds": self.config.rounds,
            },
            "versions": self.versions,
            "machine": self.machine,
            "missing": self.missing,
            "workloads": [r.as_dict() for r in self.reports],
            "startup": None if self.startup is None else self.startup.as_dict(),
            "outputs": OUTPUTS,
            "note": self.note,
        }


def run_tools_bench(
    config: ToolsConfig,
    *,
    log: Callable[[str], None] = lambda _: None,
    progress: Callable[[str, int, int], None] = lambda *_: None,
) -> ToolsReport:
    """Run the tools benchmark: every installed tool of ``config.only``, then the
    start-up hook's cost. Tools that are not installed are listed in ``missing``."""
    missing = missing_tools(config.only)
    present = [t for t in config.only if t not in missing]
    note = hook_missing()
    if note is not None:
        return ToolsReport(config, missing, [], None, _versions(), describe_machine(), note)
    work = config.work or tempfile.mkdtemp(prefix="tbc-tools-")
    os.makedirs(work, exist_ok=True)
    try:
        reports = [
            bench_project(p, work, rounds=config.rounds, log=log, progress=progress)
            for p in projects(os.path.join(work, "projects"), config.sizes, present)
        ]
        startup = (
            run_startup(
                work,
                rounds=config.startup_rounds,
                launches=config.launches,
                log=log,
                progress=progress,
            )
            if config.startup
            else None
        )
    finally:
        if config.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return ToolsReport(config, missing, reports, startup, _versions(), describe_machine())
