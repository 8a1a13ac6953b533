"""Keys: the key format's parts and their round trips, and the keyring's per-environment
state (computed once, noticed stale, forgotten with its environment) and its memo of
template keys."""

from __future__ import annotations

import gc
import itertools
import threading
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from jinja2 import DictLoader, Environment, select_autoescape
from jinja2.bccache import BytecodeCache
from jinja2.ext import Extension

import tiered_bccache.keys
from tiered_bccache import MemoryTier, TieredBytecodeCache
from tiered_bccache.entry import source_digest
from tiered_bccache.keys import FINGERPRINT_LENGTH, EnvState, Key, Keyring, name_key
from tiered_bccache.stats import RateLimitedLog

#: The layers a keyring hands out; opaque to it, so any marker tuples do.
LAYERS = ("memory", "filesystem")
PRIVATE_LAYERS = ("memory",)

#: A digest, digests ending in a flag's letter, a private environment's token.
FINGERPRINTS = ["0" * 32, "e" * 32, "0123456789abcdef" * 2, "p" + "1f" * 15 + "a"]
FLAGS = ["", "e", "r", "?"]
CONTEXTS = ["", ".a", ".ab1", ".0123456789abcdef", ".ZZZZzzzz99990000"]
TAILS = [
    name_key("page.html", None),
    "s" + source_digest("{{ x }}"),
    "t" + source_digest("Template(body=[])"),
]


def keyring(
    key_context: Callable[[Environment], Any] | None = None,
) -> Keyring:
    return Keyring(LAYERS, PRIVATE_LAYERS, key_context, RateLimitedLog())


class LockingExtension(Extension):
    """A third-party extension whose options hold a lock: not plain data."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.lock = threading.Lock()


class UnlistablePolicies(dict[str, Any]):
    """Policies that answer lookups but refuse to be listed: unreadable settings."""

    def items(self) -> Any:
        raise NotImplementedError("no listing")


class Patchable(Environment):
    """An application's Environment subclass, whose code a test patches in place."""

    marker = 1


# -- the key format -----------------------------------------------------------------------


@pytest.mark.parametrize("fingerprint", FINGERPRINTS)
def test_a_key_reads_back_the_parts_it_was_made_of(fingerprint: str) -> None:
    """For every flag, context (none, short, digest-long) and kind of tail, a key's
    string form is the documented one and parses back into the same parts, also with
    a variant."""
    for flag, context, tail in itertools.product(FLAGS, CONTEXTS, TAILS):
        key = Key(fingerprint, flag, context, tail)
        assert str(key) == f"{fingerprint}{flag}{context}-{tail}"
        assert Key.parse(str(key)) == key
        varied = key.with_variant("0123abcd" * 2)
        assert str(varied) == f"{key}~{'0123abcd' * 2}"
        assert Key.parse(str(varied)) == varied and varied.context == context


@pytest.mark.parametrize("variant_part", ["0", "0123abcd" * 2, "f" * 64])
@pytest.mark.parametrize("fingerprint", FINGERPRINTS)
def test_base_undoes_with_variant(fingerprint: str, variant_part: str) -> None:
    """A variant key's base is the key it was made from, and a base key is its own."""
    for flag, context, tail in itertools.product(FLAGS, CONTEXTS, TAILS):
        base = Key(fingerprint, flag, context, tail)
        assert base.base() == base and base.variant == ""
        variant_key = base.with_variant(variant_part)
        assert str(variant_key) != str(base)
        assert Key.parse(str(variant_key)).base() == base
        assert Key.parse(str(variant_key)).variant == variant_part


@pytest.mark.parametrize(
    "text",
    ["", "no dash at all", "short-tail", "0" * 32 + "x-tail", "0" * 31 + "-tail", "0" * 32],
)
def test_parse_refuses_what_is_not_a_key(text: str) -> None:
    """A string no key was written as is a ValueError naming it, never wrong parts."""
    with pytest.raises(ValueError, match="not a template key"):
        Key.parse(text)


def test_every_fingerprint_has_the_length_keys_are_parsed_by() -> None:
    """A real fingerprint and a private environment's token are both as long as
    ``Key.parse`` expects: a key of either reads back its flag and context."""
    keys = keyring()
    plain = keys.state(Environment(autoescape=select_autoescape()))
    private = keys.state(Environment(extensions=[LockingExtension]))
    assert private.private and not plain.private
    for state in (plain, private):
        assert len(state.fingerprint) == FINGERPRINT_LENGTH
        key = Key(state.fingerprint, "e", ".ctx", name_key("a.html", None))
        assert Key.parse(str(key)) == key


PAIRS: list[tuple[str, str | None]] = [
    ("a", None),
    ("a", ""),
    ("a|", None),
    ("a", "b"),
    ("a|b", None),
    ("a", "|b"),
    ("a|", "b"),
    ("b", "a"),
    ("dir/page.html", None),
    ("dir/page.html", "/srv/templates/dir/page.html"),
    ("page.html", "/srv/other/dir/page.html"),
    ("héllo", None),
    ("日本", "日本.html"),
]


def test_name_key_tells_pairs_apart_exactly_as_jinja_does() -> None:
    """Two (name, file name) pairs get one key exactly when Jinja's own get_cache_key
    gives them one: a name with no file name differs from the same name with an empty
    one, and ("a|b", None) shares ("a", "b")'s key as it does in Jinja (the source check
    keeps such templates apart)."""
    jinja = BytecodeCache()
    for first, second in itertools.combinations(PAIRS, 2):
        ours = name_key(*first) == name_key(*second)
        theirs = jinja.get_cache_key(*first) == jinja.get_cache_key(*second)
        assert ours == theirs, (first, second)
    assert name_key("a", None) != name_key("a", "")
    assert name_key("a|b", None) == name_key("a", "b")


def test_name_key_is_a_digest_for_names_jinja_cannot_encode() -> None:
    """Names with lone surrogates (a loader reading undecodable file names) get distinct
    hex digests, where Jinja's own key raises."""
    surrogates = ["\udcff", "\udcfe", "\ud800x"]
    keys = {name_key(name, None) for name in surrogates}
    keys.add(name_key("\udcff", "\udcfe"))
    assert len(keys) == 4
    assert all(len(k) == 64 and int(k, 16) >= 0 for k in keys)
    with pytest.raises(UnicodeEncodeError):
        BytecodeCache().get_cache_key("\udcff")


# -- EnvState -----------------------------------------------------------------------------


def test_env_state_matches_its_environment_until_a_checked_setting_is_replaced() -> None:
    """A state matches its own environment, not another configured alike, and stops
    matching when autoescape is replaced."""
    env = Environment()
    state = EnvState(env, weakref.ref(env))
    assert state.matches(env)
    assert not state.matches(Environment())
    env.autoescape = True
    assert not state.matches(env)


def test_env_state_flag_is_the_autoescape_function_s_answer_for_the_name() -> None:
    """Empty for a bool autoescape, e or r for select_autoescape's answer (for a string,
    no name: its default_for_string), None when the function raises."""
    plain = Environment(autoescape=True)
    assert EnvState(plain, weakref.ref(plain)).flag("a.html") == ""
    selecting = Environment(autoescape=select_autoescape(["html"], default_for_string=False))
    state = EnvState(selecting, weakref.ref(selecting))
    assert (state.flag("a.html"), state.flag("a.txt"), state.flag(None)) == ("e", "r", "r")
    strings = Environment(autoescape=select_autoescape(["html"], default_for_string=True))
    assert EnvState(strings, weakref.ref(strings)).flag(None) == "e"

    def raising(name: str | None) -> bool:
        raise RuntimeError("no answer")

    broken = Environment(autoescape=raising)
    assert EnvState(broken, weakref.ref(broken)).flag("a.html") is None


# -- Keyring.state ------------------------------------------------------------------------


def test_state_is_computed_once_per_environment() -> None:
    """Looking an environment up again gives the very same state; another environment
    configured alike gets its own state with the same fingerprint."""
    keys = keyring()
    env, twin = Environment(), Environment()
    state = keys.state(env)
    assert keys.state(env) is state
    assert not state.private and not state.uncached
    assert len(state.fingerprint) == 32 and state.layers == LAYERS
    other = keys.state(twin)
    assert other is not state and other.fingerprint == state.fingerprint
    assert keys.states == {id(env): state, id(twin): other}


def _replace_autoescape(env: Environment) -> None:
    env.autoescape = select_autoescape(["html"])


def _replace_finalize(env: Environment) -> None:
    env.finalize = str


def _add_extension(env: Environment) -> None:
    env.add_extension("jinja2.ext.loopcontrols")


def _go_async(env: Environment) -> None:
    env.is_async = True


@pytest.mark.parametrize(
    "change", [_replace_autoescape, _replace_finalize, _add_extension, _go_async]
)
def test_a_checked_setting_changed_after_first_use_gives_a_new_state(
    change: Callable[[Environment], None],
) -> None:
    """Replacing autoescape or finalize, adding an extension, or going async after the
    first lookup is noticed at the next one: a new state, with a new fingerprint."""
    keys = keyring()
    env = Environment()
    before = keys.state(env)
    change(env)
    after = keys.state(env)
    assert after is not before
    assert after.fingerprint != before.fingerprint
    assert keys.states[id(env)] is after
    assert keys.state(env) is after


def test_state_is_forgotten_with_its_environment() -> None:
    """The keyring holds no strong reference to an environment, and its state leaves
    when the environment is collected."""
    keys = keyring()
    env = Environment()
    keys.state(env)
    ref = weakref.ref(env)
    del env
    gc.collect()
    assert ref() is None
    assert keys.states == {}


def test_a_replaced_state_does_not_forget_the_environment_s_new_one() -> None:
    """After a state is replaced, only the environment's going away removes the new one
    (the old state's reference never fires for it)."""
    keys = keyring()
    env = Environment()
    old = keys.state(env)
    env.add_extension("jinja2.ext.loopcontrols")
    new = keys.state(env)
    del old
    gc.collect()
    assert keys.states == {id(env): new}
    del env, new
    gc.collect()
    assert keys.states == {}


def test_an_environment_that_cannot_be_described_is_private(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An extension option that is not plain data makes the state private: its tiers are
    the private slots and its fingerprint a token as long as a real one, of this
    environment and this keyring alone; a warning says why."""
    keys = keyring()
    env = Environment(extensions=[LockingExtension])
    state = keys.state(env)
    assert state.private and not state.uncached
    assert state.layers == PRIVATE_LAYERS
    assert state.fingerprint.startswith("p") and len(state.fingerprint) == 32
    assert keys.state(env) is state
    twin = keys.state(Environment(extensions=[LockingExtension]))
    assert twin.private and twin.fingerprint != state.fingerprint
    elsewhere = keyring().state(env)
    assert elsewhere.fingerprint != state.fingerprint
    assert "not plain data" in caplog.text


def test_an_environment_that_cannot_be_read_is_uncached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Policies that raise when listed make the state uncached, with no fingerprint and
    no tiers, and state() itself never raises; a warning says so."""
    keys = keyring()
    env = Environment()
    env.policies = UnlistablePolicies(env.policies)
    state = keys.state(env)
    assert state.uncached and not state.private
    assert state.fingerprint == "" and state.layers == ()
    assert "compiled uncached" in caplog.text


# -- refresh and recheck ------------------------------------------------------------------


def test_refresh_makes_the_next_lookup_compute_a_new_state() -> None:
    """After refresh the environment gets a new state, with the same fingerprint when
    nothing changed."""
    keys = keyring()
    env = Environment()
    before = keys.state(env)
    keys.refresh(env)
    after = keys.state(env)
    assert after is not before
    assert after.fingerprint == before.fingerprint
    assert keys.state(env) is after


def test_refresh_describes_the_environment_s_class_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A class patched in place keeps its remembered key until refresh; then the
    fingerprint follows the patch."""
    keys = keyring()
    env = Patchable()
    before = keys.state(env).fingerprint
    monkeypatch.setattr(Patchable, "marker", 2)
    assert keys.state(env).fingerprint == before
    keys.refresh(env)
    assert keys.state(env).fingerprint != before


def test_recheck_keeps_a_state_whose_fingerprint_holds() -> None:
    """Before a compile, an environment whose settings are as fingerprinted keeps its
    state."""
    keys = keyring()
    env = Environment()
    state = keys.state(env)
    assert keys.recheck(env, state) is state
    assert keys.state(env) is state


def test_recheck_notices_a_setting_changed_in_place() -> None:
    """A lexer setting changed after first use is not seen by the per-lookup check, but
    recheck gives a new state with the new fingerprint, and the old one no longer
    matches."""
    keys = keyring()
    env = Environment()
    state = keys.state(env)
    env.trim_blocks = True
    assert keys.state(env) is state  # the per-lookup check does not read lexer settings
    fresh = keys.recheck(env, state)
    assert fresh is not state
    assert fresh.fingerprint != state.fingerprint
    assert fresh.fingerprint == keyring().state(env).fingerprint
    assert not state.matches(env)
    assert keys.state(env) is fresh


def test_recheck_leaves_private_and_uncached_states_alone() -> None:
    """A private or uncached state is returned as it is: there is no fingerprint to
    check."""
    keys = keyring()
    private_env = Environment(extensions=[LockingExtension])
    private = keys.state(private_env)
    assert keys.recheck(private_env, private) is private
    unread = Environment()
    unread.policies = UnlistablePolicies(unread.policies)
    uncached = keys.state(unread)
    assert keys.recheck(unread, uncached) is uncached


# -- template_key, context and remember ---------------------------------------------------


def test_template_key_is_composed_from_the_state_and_the_name() -> None:
    """Without a key context the key is the fingerprint, the autoescape flag and the
    name's digest; names and file names give different keys."""
    keys = keyring()
    env = Environment(autoescape=select_autoescape(["html"]))
    state = keys.state(env)
    html = keys.template_key(state, env, "a.html", None)
    assert html == str(Key(state.fingerprint, "e", "", name_key("a.html", None)))
    text = keys.template_key(state, env, "a.txt", None)
    assert text == str(Key(state.fingerprint, "r", "", name_key("a.txt", None)))
    with_file = keys.template_key(state, env, "a.html", "/srv/a.html")
    assert len({html, text, with_file}) == 3


def test_template_key_is_remembered_per_environment_state() -> None:
    """The key is kept in the state's memo under (name, file name, context), and a later
    lookup answers from it."""
    keys = keyring()
    env = Environment()
    state = keys.state(env)
    key = keys.template_key(state, env, "a.html", "/srv/a.html")
    assert key is not None
    assert state.keys == {("a.html", "/srv/a.html", ""): key}
    state.keys["a.html", "/srv/a.html", ""] = "planted"
    assert keys.template_key(state, env, "a.html", "/srv/a.html") == "planted"
    assert keys.template_key(state, env, "a.html", None) == str(
        Key(state.fingerprint, "", "", name_key("a.html", None))
    )


def test_the_memo_starts_over_past_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """However many names are looked up, the memo never holds more than its bound, and
    keys computed after it started over are the same as before."""
    monkeypatch.setattr(tiered_bccache.keys, "_MAX_MEMO", 8)
    keys = keyring()
    env = Environment()
    state = keys.state(env)
    first = {f"t{i}": keys.template_key(state, env, f"t{i}", None) for i in range(50)}
    assert 0 < len(state.keys) <= 8
    for name, key in first.items():
        assert keys.template_key(state, env, name, None) == key
        assert len(state.keys) <= 8


def test_template_key_is_none_when_the_autoescape_function_raises() -> None:
    """An autoescape function that raises for the name leaves the template uncached (Jinja
    raises it from its own compile), and nothing is remembered."""

    def raising(name: str | None) -> bool:
        raise RuntimeError("no answer")

    keys = keyring()
    env = Environment(autoescape=raising)
    state = keys.state(env)
    assert keys.template_key(state, env, "a.html", None) is None
    assert state.keys == {}


def test_template_key_is_none_when_key_context_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A key_context function that raises means no key (compiled uncached), a warning,
    and nothing remembered."""

    def raising(env: Environment) -> str:
        raise LookupError("no context here")

    keys = keyring(raising)
    env = Environment()
    state = keys.state(env)
    assert keys.context(env) is None
    assert keys.template_key(state, env, "a.html", None) is None
    assert state.keys == {}
    assert "key_context raised" in caplog.text and "no context here" in caplog.text


@pytest.mark.parametrize("answer", ["a", "ab1", "ABCdef0123456789"])
def test_a_short_alphanumeric_context_is_embedded_as_it_is(answer: str) -> None:
    """Up to 16 ASCII letters and digits join the key as ``.answer``."""
    keys = keyring(lambda env: answer)
    env = Environment()
    state = keys.state(env)
    key = keys.template_key(state, env, "a.html", None)
    assert key == str(Key(state.fingerprint, "", "." + answer, name_key("a.html", None)))
    assert key is not None and Key.parse(key).context == "." + answer


@pytest.mark.parametrize(
    "answer",
    ["ABCdef01234567890", "two words", "a-b", "ü", "٣", "x" * 200],
)
def test_any_other_context_is_digested_to_sixteen_hex_digits(answer: str) -> None:
    """A longer answer, or one with other characters (non-ASCII letters and digits too),
    joins the key as "_" and a 16-digit digest, the same in every keyring."""
    keys = keyring(lambda env: answer)
    env = Environment()
    state = keys.state(env)
    key = keys.template_key(state, env, "a.html", None)
    assert key is not None
    context = Key.parse(key).context
    assert context == "._" + source_digest(answer)[:16]
    assert "-" not in context and "~" not in context
    other = keyring(lambda env: answer)
    assert other.template_key(other.state(env), env, "a.html", None) == key


def test_an_empty_context_gives_the_key_without_one() -> None:
    """An empty answer adds nothing: the key is the one a keyring without key_context
    gives."""
    env = Environment()
    with_context = keyring(lambda env: "")
    without = keyring()
    assert with_context.template_key(
        with_context.state(env), env, "a.html", None
    ) == without.template_key(without.state(env), env, "a.html", None)


def test_each_context_answer_gets_its_own_key() -> None:
    """The context is asked at every lookup: as the answer changes, so does the key, and
    each answer's key is remembered apart."""
    answer = ["one"]
    keys = keyring(lambda env: answer[0])
    env = Environment()
    state = keys.state(env)
    one = keys.template_key(state, env, "a.html", None)
    answer[0] = "two"
    two = keys.template_key(state, env, "a.html", None)
    answer[0] = "one"
    assert keys.template_key(state, env, "a.html", None) == one
    assert one != two
    assert set(state.keys) == {("a.html", None, ".one"), ("a.html", None, ".two")}


def test_remember_sends_later_lookups_to_the_variant_key() -> None:
    """After remember, template_key answers the variant key for that name, and only for
    that name and file name."""
    keys = keyring()
    env = Environment()
    state = keys.state(env)
    base = keys.template_key(state, env, "a.html", None)
    assert base is not None
    variant_key = str(Key.parse(base).with_variant("0123abcd" * 2))
    keys.remember(state, "a.html", None, variant_key)
    assert keys.template_key(state, env, "a.html", None) == variant_key
    assert keys.template_key(state, env, "a.html", "/srv/a.html") != variant_key
    assert keys.template_key(state, env, "b.html", None) != variant_key


def test_remember_is_bound_to_the_key_context_of_the_variant() -> None:
    """A variant remembered under one key context is not answered for another."""
    answer = ["one"]
    keys = keyring(lambda env: answer[0])
    env = Environment()
    state = keys.state(env)
    base = keys.template_key(state, env, "a.html", None)
    assert base is not None
    variant_key = str(Key.parse(base).with_variant("feed" * 4))
    keys.remember(state, "a.html", None, variant_key)
    assert keys.template_key(state, env, "a.html", None) == variant_key
    answer[0] = "two"
    other = keys.template_key(state, env, "a.html", None)
    assert other is not None and Key.parse(other).variant == ""
    assert Key.parse(other).context == ".two"


@pytest.mark.parametrize("answer", [3, ("a", "b"), 2.5])
def test_an_answer_that_is_not_a_string_joins_the_key_as_its_str(answer: object) -> None:
    """key_context should answer a string; anything else is read as its str, never
    raised into a render."""
    keys = keyring(lambda env: answer)
    env = Environment()
    state = keys.state(env)
    as_text = keyring(lambda env: str(answer))
    assert keys.template_key(state, env, "t", None) == as_text.template_key(
        as_text.state(env), env, "t", None
    )


def test_an_answer_whose_str_raises_compiles_uncached() -> None:
    class Opaque:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    keys = keyring(lambda env: Opaque())
    env = Environment()
    assert keys.template_key(keys.state(env), env, "t", None) is None


def test_a_kept_answer_and_a_digested_one_never_share_a_context() -> None:
    """A 16-character answer kept as it is cannot equal the digest form of another
    answer, even when it is that digest's text."""
    digest = source_digest("two words")[:16]
    env = Environment()
    a, b = keyring(lambda env: "two words"), keyring(lambda env: digest)
    assert a.template_key(a.state(env), env, "t", None) != b.template_key(
        b.state(env), env, "t", None
    )


def test_a_non_string_answer_renders_through_the_cache() -> None:
    cache = TieredBytecodeCache([MemoryTier()], key_context=lambda env: 3)  # type: ignore[arg-type,return-value]
    env = Environment(loader=DictLoader({"t": "x"}), bytecode_cache=cache)
    assert env.get_template("t").render() == "x"
    assert cache.stats().uncached == 0
