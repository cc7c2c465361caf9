"""Settings: flags > environment > TOML file > defaults, validated; every setting documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from user_metrics.settings import SPECS, Settings, SettingsError, load_settings

README = Path(__file__).parent.parent / "README.md"


def test_defaults() -> None:
    """With nothing given, the service uses ./user_metrics.duckdb and 127.0.0.1:4317."""
    s = load_settings({}, environ={})
    assert (s.db, s.grpc_listen, s.max_message_mib) == ("./user_metrics.duckdb", "127.0.0.1:4317", 64)


def test_precedence(tmp_path: Path) -> None:
    """A flag beats the environment, which beats the file, which beats the default."""
    config = tmp_path / "um.toml"
    config.write_text(
        'db = "file.duckdb"\ngrpc_listen = "127.0.0.1:1111"\nlog_level = "debug"\nproperty_keys = ["plan"]\n'
    )
    env = {
        "USER_METRICS_GRPC_LISTEN": "127.0.0.1:2222",
        "USER_METRICS_DB": "env.duckdb",
        "USER_METRICS_CONFIG": str(config),
    }
    s = load_settings({"db": "flag.duckdb"}, environ=env)
    assert (s.db, s.grpc_listen, s.log_level, s.property_keys) == (
        "flag.duckdb",
        "127.0.0.1:2222",
        "debug",
        ("plan",),
    )


def test_list_from_environment_is_comma_separated() -> None:
    """USER_METRICS_PROPERTY_KEYS=plan,feature gives two keys."""
    assert load_settings({}, environ={"USER_METRICS_PROPERTY_KEYS": "plan, feature"}).property_keys == (
        "plan",
        "feature",
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"USER_METRICS_GRPC_LISTEN": "nope"}, "HOST:PORT"),
        ({"USER_METRICS_GRPC_LISTEN": "127.0.0.1:70000"}, "HOST:PORT"),
        ({"USER_METRICS_MAX_MESSAGE_MIB": "lots"}, "whole number"),
        ({"USER_METRICS_MAX_MESSAGE_MIB": "0"}, "at least 1"),
        ({"USER_METRICS_MAX_DIMENSION_VALUES": "0"}, "max_dimension_values must be at least 1"),
        ({"USER_METRICS_METRICS_MAX_VALUES": "-5"}, "metrics_max_values must be at least 1"),
        ({"USER_METRICS_METRICS_MAX_VALUES": "many"}, "whole number"),
        ({"USER_METRICS_LOG_LEVEL": "loud"}, "log_level"),
    ],
)
def test_bad_values_are_refused(environ: dict[str, str], message: str) -> None:
    """A value that cannot be used is an error naming the setting."""
    with pytest.raises(SettingsError, match=message):
        load_settings({}, environ=environ)


def test_unknown_key_in_config_file(tmp_path: Path) -> None:
    """A misspelt key in the TOML file is an error, not silently ignored."""
    config = tmp_path / "um.toml"
    config.write_text('grpc_lisen = "127.0.0.1:1"\n')
    with pytest.raises(SettingsError, match="unknown settings"):
        load_settings({}, environ={}, config_file=str(config))


def test_every_setting_is_documented_in_readme() -> None:
    """README names each setting's flag, environment variable and TOML key."""
    text = README.read_text()
    for spec in SPECS:
        assert spec.flag in text and spec.env in text and f"`{spec.name}`" in text, spec.name


def test_settings_object_is_frozen() -> None:
    """Settings cannot be changed once built."""
    with pytest.raises(AttributeError):
        Settings().db = "x"  # type: ignore[misc]


def test_the_memory_limit_reaches_duckdb(tmp_path: Path) -> None:
    """memory_limit_mib becomes the store's DuckDB memory_limit; 0 keeps DuckDB's default."""
    from user_metrics.stats import Stats
    from user_metrics.store.writer import Store

    store = Store(tmp_path / "a.duckdb", Stats(), memory_limit_mib=256)
    try:
        with store.reader() as con:
            assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "256.0 MiB"
    finally:
        store.close()
    with pytest.raises(SettingsError, match="memory_limit_mib"):
        Settings(memory_limit_mib=64)


CONVENTIONS = """
[conventions]
user_id_keys = ["customer.id", "*", "app.account"]
session_id_keys = ["conversation"]
property_prefixes = ["acme.meta."]
property_keys = ["plan"]
"""


def test_the_conventions_table_reaches_the_settings(tmp_path: Path) -> None:
    """[conventions] in the TOML file fills user_id_keys, session_id_keys, property_prefixes and
    property_keys, in order, "*" included; a flag and the environment still beat the file."""
    config = tmp_path / "um.toml"
    config.write_text(CONVENTIONS)
    s = load_settings({}, environ={}, config_file=str(config))
    assert (s.user_id_keys, s.session_id_keys, s.property_prefixes, s.property_keys) == (
        ("customer.id", "*", "app.account"),
        ("conversation",),
        ("acme.meta.",),
        ("plan",),
    )
    s = load_settings(
        {"user_id_keys": ["flag.id"]},
        environ={"USER_METRICS_SESSION_ID_KEYS": "env.session", "USER_METRICS_CONFIG": str(config)},
    )
    assert (s.user_id_keys, s.session_id_keys, s.property_prefixes) == (
        ("flag.id",),
        ("env.session",),
        ("acme.meta.",),
    )


def test_property_keys_is_still_read_at_the_top_level(tmp_path: Path) -> None:
    """property_keys moved into [conventions]; an older file with it at the top level still works."""
    config = tmp_path / "um.toml"
    config.write_text('property_keys = "plan, feature"\n')
    assert load_settings({}, environ={}, config_file=str(config)).property_keys == ("plan", "feature")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[conventions]\nuser_id = ['customer.id']\n", r"unknown settings in \[conventions\]: \['user_id'\]"),
        (
            "[conventions]\nuser_id_keys = 'customer.id'\n",
            r"user_id_keys \(in \[conventions\] of .*\) must be a "
            r"list of strings, got 'customer.id'",
        ),
        ("[conventions]\nsession_id_keys = ['a', 3]\n", "session_id_keys .* must be a list of strings"),
        ("conventions = ['customer.id']\n", r"\[conventions\] must be a table"),
        ("user_id_keys = ['customer.id']\n", r"user_id_keys belongs in the \[conventions\] table"),
        ("property_keys = ['a']\n[conventions]\nproperty_keys = ['b']\n", "property_keys is given twice"),
        ("[conventoins]\nuser_id_keys = ['customer.id']\n", r"unknown settings \['conventoins'\]"),
    ],
)
def test_a_conventions_table_that_cannot_be_read_is_refused(tmp_path: Path, text: str, message: str) -> None:
    """Misspelt keys, a string for a list, a misplaced or doubled setting: each named, not ignored."""
    config = tmp_path / "um.toml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=message):
        load_settings({}, environ={}, config_file=str(config))


def test_serve_help_says_where_the_conventions_go(capsys: pytest.CaptureFixture[str]) -> None:
    """`user-metrics serve --help` names the [conventions] table and explains "*"."""
    from user_metrics.cli.main import _parser

    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--user-id-keys KEY" in text and "in [conventions] of the config file" in text
    assert 'listed before a "*", which marks where the built-in ones go' in text


LAKE = "host=/tmp port=5432 dbname=lake user=um password=secret"


def test_the_lake_table_and_ingest_reach_the_settings(tmp_path: Path) -> None:
    """[lake] in the TOML file holds the catalog, data path and shipping; ingest is top level; a
    flag (--no-ingest spells ingest off) and the environment beat the file."""
    from user_metrics.cli.main import _parser

    config = tmp_path / "um.toml"
    config.write_text(
        f'ingest = true\n[lake]\nlake = "{LAKE}"\nlake_data = "/srv/lake"\nlake_ship_interval = 0.5\n'
        'lake_max_lag = 30\nlake_store_metrics = "on"\n'
    )
    s = load_settings({}, environ={}, config_file=str(config))
    assert (s.ingest, s.lake, s.lake_data, s.lake_ship_interval, s.lake_max_lag) == (
        True,
        LAKE,
        "/srv/lake",
        0.5,
        30.0,
    )
    assert s.store_metrics and "secret" not in repr(s)
    args = _parser().parse_args(["serve", "--no-ingest"])
    flags = {spec.name: getattr(args, spec.name) for spec in SPECS}
    env = {"USER_METRICS_LAKE_STORE_METRICS": "auto"}
    reader = load_settings(flags, environ=env, config_file=str(config))
    assert (reader.ingest, reader.store_metrics) == (False, True)
    receiver = load_settings({}, environ={**env, "USER_METRICS_INGEST": "true"}, config_file=str(config))
    assert (receiver.ingest, receiver.store_metrics) == (True, False)
    assert load_settings({}, environ={}).store_metrics  # the single file renders them always


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"USER_METRICS_INGEST": "false"}, "reader-only node, which reads a lake: set lake"),
        ({"USER_METRICS_LAKE_DATA": "/srv/lake"}, "lake_data is a setting of lake mode"),
        ({"USER_METRICS_LAKE_STORE_METRICS": "on"}, "lake_store_metrics is a setting of lake mode"),
        ({"USER_METRICS_LAKE": LAKE, "USER_METRICS_LAKE_STORE_METRICS": "yes"}, "on, off or auto"),
        ({"USER_METRICS_LAKE": LAKE, "USER_METRICS_LAKE_SHIP_INTERVAL": "0"}, "lake_ship_interval must"),
        ({"USER_METRICS_LAKE": LAKE, "USER_METRICS_LAKE_MAX_LAG": "-1"}, "lake_max_lag must be above 0"),
        (
            {
                "USER_METRICS_LAKE": LAKE,
                "USER_METRICS_LAKE_SHIP_INTERVAL": "5",
                "USER_METRICS_LAKE_MAX_LAG": "5",
            },
            "must be longer than lake_ship_interval",
        ),
        ({"USER_METRICS_LAKE": LAKE, "USER_METRICS_INGEST": "perhaps"}, "ingest .* must be true or false"),
    ],
)
def test_lake_settings_that_cannot_work_are_refused(environ: dict[str, str], message: str) -> None:
    """The lake settings go together, and the error says what to set; it never shows the catalog."""
    with pytest.raises(SettingsError, match=message) as caught:
        load_settings({}, environ=environ)
    assert "secret" not in str(caught.value)
