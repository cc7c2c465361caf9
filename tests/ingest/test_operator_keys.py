"""The operator's own attribute keys ([conventions]): read ahead of or after the built-in ones,
inherited from ancestors like them, and refused at start-up when they cannot be used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Service
from otlp import chat, request, span
from senders import raw_export

from user_metrics.ingest.attributes import Conventions, compile_conventions
from user_metrics.ingest.mapping import map_request
from user_metrics.settings import SettingsError, load_settings
from user_metrics.store.records import RequestRecord

NOW = 2_000_000_000_000_000_000


def map_one(
    attrs: dict[str, Any], conv: Conventions, resource: dict[str, Any] | None = None
) -> RequestRecord:
    (record,) = map_request(request([span(attrs)], resource), conv, now_unix_nano=NOW).records
    return record


class TestOrder:
    def test_a_user_key_before_the_mark_beats_the_built_in_keys(self) -> None:
        """user_id_keys = ["customer.id", "*"]: customer.id wins over user.id on the same span."""
        conv = compile_conventions(user_id_keys=["customer.id", "*"])
        assert map_one(chat(user="builtin", **{"customer.id": "mine"}), conv).user_id == "mine"

    def test_a_user_key_without_the_mark_comes_after_the_built_in_keys(self) -> None:
        """Without "*" the operator's key fills in only what the built-in keys do not find."""
        conv = compile_conventions(user_id_keys=["app.account"])
        assert map_one(chat(user="builtin", **{"app.account": "mine"}), conv).user_id == "builtin"
        assert map_one(chat(user=None, **{"app.account": "mine"}), conv).user_id == "mine"

    def test_keys_after_the_mark_are_read_after_all_built_in_sources(self) -> None:
        """["customer.id", "*", "app.account"]: customer.id, then every built-in key, then app.account."""
        conv = compile_conventions(user_id_keys=["customer.id", "*", "app.account"])
        both = {"customer.id": "first", "app.account": "last"}
        assert map_one(chat(user="builtin", **both), conv).user_id == "first"
        assert map_one(chat(user=None, **{"enduser.id": "builtin", "app.account": "last"}), conv).user_id == (
            "builtin"
        )
        assert map_one(chat(user=None, **{"app.account": "last"}), conv).user_id == "last"

    def test_a_built_in_key_listed_again_moves_to_where_it_is_listed(self) -> None:
        """user_id_keys = ["enduser.id", "*"]: the built-in enduser.id is read ahead of user.id, once.

        A key a later release reads by default never stops an operator's service from starting."""
        conv = compile_conventions(user_id_keys=["enduser.id", "*"])
        both = chat(user="user-id", **{"enduser.id": "enduser"})
        assert map_one(both, conv).user_id == "enduser"
        assert map_one(both, compile_conventions()).user_id == "user-id"
        after = compile_conventions(session_id_keys=["*", "session.id"])
        spans = chat(user="u", **{"session.id": "app", "langfuse.session.id": "lib"})
        assert map_one(spans, after).session_id == "lib"
        assert map_one(spans, compile_conventions()).session_id == "app"

    def test_session_keys_ahead_and_after(self) -> None:
        """session_id_keys: "conversation" ahead of session.id, "thread" after it."""
        conv = compile_conventions(session_id_keys=["conversation", "*", "thread"])
        attrs = chat(**{"session.id": "builtin", "conversation": "ahead", "thread": "after"})
        assert map_one(attrs, conv).session_id == "ahead"
        assert map_one(chat(**{"session.id": "builtin", "thread": "after"}), conv).session_id == "builtin"
        assert map_one(chat(**{"thread": "after"}), conv).session_id == "after"

    def test_property_prefixes_ahead_and_after(self) -> None:
        """A prefix before "*" wins a property name over the built-in prefixes; one after it loses."""
        attrs = chat(**{"acme.meta.plan": "acme", "property.plan": "builtin", "acme.meta.Feature": "x"})
        ahead = compile_conventions(property_prefixes=["acme.meta.", "*"])
        after = compile_conventions(property_prefixes=["acme.meta."])
        assert map_one(attrs, ahead).properties == {"plan": "acme", "feature": "x"}
        assert map_one(attrs, after).properties == {"plan": "builtin", "feature": "x"}

    def test_identity_names_under_an_operator_prefix_are_not_properties(self) -> None:
        """acme.meta.user_id is identity, not a property, as under the built-in prefixes."""
        conv = compile_conventions(property_prefixes=["acme.meta."])
        assert map_one(chat(**{"acme.meta.user_id": "u", "acme.meta.plan": "p"}), conv).properties == {
            "plan": "p"
        }

    def test_a_user_key_under_a_property_prefix_is_the_user_not_a_property(self) -> None:
        """A key under a built-in property prefix named as a user id key is read as the user only."""
        conv = compile_conventions(user_id_keys=["traceloop.association.properties.customer_ref"])
        attrs = {
            "traceloop.association.properties.customer_ref": "c-1",
            "traceloop.association.properties.plan": "p",
        }
        record = map_one(chat(user=None, **attrs), conv)
        assert (record.user_id, record.properties) == ("c-1", {"plan": "p"})

    def test_bare_property_keys_ahead_and_after(self) -> None:
        """property_keys: a bare key before "*" beats property.<name> and metadata; after it, it loses."""
        attrs = chat(
            **{"plan": "bare", "property.plan": "prefixed", "tier": "t", "metadata": '{"tier": "j"}'}
        )
        ahead = compile_conventions(["plan", "tier", "*"])
        after = compile_conventions(["plan", "tier"])
        assert map_one(attrs, ahead).properties == {"plan": "bare", "tier": "t"}
        assert map_one(attrs, after).properties == {"plan": "prefixed", "tier": "j"}


class TestInheritance:
    def test_an_operator_user_key_on_a_parent_span_is_inherited(self) -> None:
        """A user id under customer.id on the parent (a web request span) reaches the LLM span."""
        parent = span(
            {"customer.id": "from-parent", "conversation": "c1", "acme.meta.plan": "gold"}, name="POST /chat"
        )
        child = span(chat(user=None), trace_id=parent.trace_id, parent=parent.span_id)
        conv = compile_conventions(
            user_id_keys=["customer.id"], session_id_keys=["conversation"], property_prefixes=["acme.meta."]
        )
        mapped = map_request(request([parent, child]), conv, now_unix_nano=NOW)
        (record,) = mapped.records
        assert (record.user_id, record.session_id, record.properties) == (
            "from-parent",
            "c1",
            {"plan": "gold"},
        )

    def test_an_operator_key_on_the_resource_is_read_last(self) -> None:
        """A user id under an operator key on the resource, as with the built-in keys."""
        conv = compile_conventions(user_id_keys=["tenant.id"])
        record = map_one(chat(user=None), conv, resource={"service.name": "s", "tenant.id": "acme"})
        assert record.user_id == "acme"

    def test_the_spans_own_id_still_beats_an_ancestors_key_read_ahead(self) -> None:
        """Ahead means ahead on one span: the LLM span's own user.id beats customer.id on its parent."""
        conv = compile_conventions(user_id_keys=["customer.id", "*"])
        parent = span({"customer.id": "parent"}, name="POST /chat")
        child = span(chat(user="own"), trace_id=parent.trace_id, parent=parent.span_id)
        (record,) = map_request(request([parent, child]), conv, now_unix_nano=NOW).records
        assert record.user_id == "own"


BAD: list[tuple[dict[str, Any], str]] = [
    ({"user_id_keys": "customer.id"}, "user_id_keys: must be a list of keys, got the string 'customer.id'"),
    ({"user_id_keys": ["customer.id", 7]}, "user_id_keys: 7 is not a string"),
    ({"user_id_keys": [""]}, "user_id_keys: '' is empty"),
    ({"session_id_keys": ["   "]}, "session_id_keys: '   ' is empty"),
    ({"user_id_keys": [" customer.id"]}, "user_id_keys: ' customer.id' has spaces around it"),
    ({"user_id_keys": ["customer.id", "customer.id"]}, "user_id_keys: 'customer.id' is listed twice"),
    (
        {"user_id_keys": ["*", "a", "*"]},
        'user_id_keys: "\\*" \\(where the built-in keys go\\) is listed twice',
    ),
    (
        {"user_id_keys": ["acme.*"]},
        "user_id_keys: 'acme.\\*' is not an attribute key: patterns are not supported",
    ),
    (
        {"session_id_keys": ["user.id"]},
        "session_id_keys: 'user.id' is already read as the user id by the built-in",
    ),
    ({"user_id_keys": ["gen_ai.usage.input_tokens"]}, "already read as the input tokens by the built-in"),
    ({"user_id_keys": ["service.name"]}, "already read as the service name"),
    ({"session_id_keys": ["metadata"]}, "already read as a JSON object of properties"),
    (
        {"user_id_keys": ["acct"], "session_id_keys": ["acct"]},
        "session_id_keys: 'acct' is already read as the user id \\(user_id_keys\\)",
    ),
    ({"property_prefixes": ["acme"]}, "property_prefixes: 'acme' must end in one of . - _ : /"),
    (
        {"property_prefixes": ["property."]},
        "property_prefixes: 'property.' is already a built-in property prefix",
    ),
    (
        {"property_prefixes": ["traceloop."]},
        "property_prefixes: 'traceloop.' overlaps the built-in prefix 'traceloop.association.properties.'",
    ),
    ({"property_prefixes": ["property.acme."]}, "'property.acme.' overlaps the built-in prefix 'property.'"),
    ({"property_prefixes": ["acme.", "acme.meta."]}, "'acme.' overlaps the prefix 'acme.meta.'"),
    (
        {"bare_property_keys": ["user.id"]},
        "property_keys: 'user.id' already has a meaning: it is read as the user",
    ),
    (
        {"bare_property_keys": ["acct"], "user_id_keys": ["acct"]},
        "property_keys: 'acct' already has a meaning: it is read as the user id \\(user_id_keys\\)",
    ),
    (
        {"bare_property_keys": ["acme.meta.plan"], "property_prefixes": ["acme.meta."]},
        "property_keys: 'acme.meta.plan' already has a meaning: it is read under the property prefix 'acme.meta.'",
    ),
    ({"bare_property_keys": ["plan", "plan"]}, "property_keys: 'plan' is listed twice"),
]


@pytest.mark.parametrize(("given", "message"), BAD)
def test_a_list_that_cannot_be_used_is_refused_naming_the_entry(given: dict[str, Any], message: str) -> None:
    """Each bad entry is a SettingsError that names the setting, the entry and why."""
    with pytest.raises(SettingsError, match=message):
        compile_conventions(**given)


def test_a_bad_entry_stops_the_service_before_it_opens_the_database(tmp_path: Path) -> None:
    """The Settings object carries the lists; App refuses a bad one, and no database file is made."""
    svc = Service(tmp_path / "um.duckdb", user_id_keys=("session.id",))
    with pytest.raises(SettingsError, match="user_id_keys: 'session.id' is already read as the session id"):
        svc.start()
    assert not (tmp_path / "um.duckdb").exists()


CONFIG = """
[conventions]
user_id_keys = ["customer.id", "*", "app.account"]
session_id_keys = ["conversation"]
property_prefixes = ["*", "acme.meta."]
property_keys = ["plan", "*"]
"""


def test_a_service_configured_with_its_own_keys_stores_what_they_say(tmp_path: Path) -> None:
    """A TOML [conventions] table, through a running service: keys ahead and after the built-in ones,
    and inherited from a parent span."""
    config = tmp_path / "um.toml"
    config.write_text(CONFIG)
    settings = load_settings({}, environ={}, config_file=str(config))
    lists = ("user_id_keys", "session_id_keys", "property_prefixes", "property_keys")
    svc = Service(tmp_path / "um.duckdb", **{name: getattr(settings, name) for name in lists})
    svc.start()
    parent = span({"customer.id": "inherited", "conversation": "conv-p"}, name="POST /chat")
    spans = [
        # customer.id is read ahead of user.id; session.id beats "conversation" (read after).
        span(chat(user="builtin", **{"customer.id": "ahead", "session.id": "s1", "conversation": "c1"})),
        # only the key read after the built-in ones: it is used.
        span(chat(user=None, **{"app.account": "after", "conversation": "c2"})),
        # a built-in key and the one read after: the built-in one wins.
        span(chat(user=None, **{"enduser.id": "builtin2", "app.account": "after"})),
        # the bare key "plan" (ahead) beats property.plan; property.tier (built-in) beats acme.meta.tier (after).
        span(
            chat(
                user="props",
                **{"plan": "bare", "property.plan": "p", "property.tier": "builtin", "acme.meta.tier": "a"},
            )
        ),
        span(chat(user="props2", **{"acme.meta.region": "eu"})),
        parent,
        span(chat(user=None), trace_id=parent.trace_id, parent=parent.span_id),
    ]
    raw_export(svc.target, request(spans).SerializeToString())
    rows = {(r["user_id"], r["session_id"]): r["properties"] for r in svc.rows()}
    assert rows == {
        ("ahead", "s1"): {},
        ("after", "c2"): {},
        ("builtin2", None): {},
        ("props", None): {"plan": "bare", "tier": "builtin"},
        ("props2", None): {"region": "eu"},
        ("inherited", "conv-p"): {},
    }


def test_flags_and_environment_give_the_lists_too() -> None:
    """USER_METRICS_USER_ID_KEYS is comma-separated; "*" in it is the mark like in the file."""
    settings = load_settings(
        {"session_id_keys": ["conversation"]}, environ={"USER_METRICS_USER_ID_KEYS": "customer.id, *"}
    )
    assert (settings.user_id_keys, settings.session_id_keys) == (("customer.id", "*"), ("conversation",))
    conv = compile_conventions(user_id_keys=settings.user_id_keys, session_id_keys=settings.session_id_keys)
    assert map_one(chat(user="b", **{"customer.id": "c", "conversation": "x"}), conv).user_id == "c"


def test_an_operator_key_on_a_parent_in_a_later_export_reaches_the_waiting_child(tmp_path: Path) -> None:
    """The child is exported first without a user and waits; the parent's customer.id, in the next
    Export, attributes it (the operator's keys are in the facts spans leave behind)."""
    svc = Service(
        tmp_path / "um.duckdb",
        attribution_window_seconds=5.0,
        user_id_keys=("customer.id",),
        property_prefixes=("acme.meta.",),
    )
    svc.start()
    parent = span({"customer.id": "later", "acme.meta.plan": "gold"}, name="POST /chat")
    child = span(chat(user=None), trace_id=parent.trace_id, parent=parent.span_id)
    raw_export(svc.target, request([child]).SerializeToString())
    assert svc.app is not None and svc.app.stats.spans_stored == 0  # waiting for its ancestor
    raw_export(svc.target, request([parent]).SerializeToString())
    [row] = svc.rows()
    assert (row["user_id"], row["properties"], row["span_id"]) == (
        "later",
        {"plan": "gold"},
        child.span_id.hex(),
    )
