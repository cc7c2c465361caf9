"""The operator's price file: exact prices, the same lookup as genai-prices, clear errors, and warnings."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from user_metrics.ingest.pricing import PriceFileError, Pricer, load_price_file
from user_metrics.store.records import RequestRecord

START = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1e9)
BLANK = RequestRecord(*([None] * 24))


def record(model: str, provider: str | None = "openai", **fields: object) -> RequestRecord:
    return BLANK._replace(
        provider=provider, response_model=model, start_time_unix_nano=START, properties={}, **fields
    )


def pricer(tmp_path: Path, text: str) -> Pricer:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    return Pricer(load_price_file(path))


class TestLookup:
    def test_custom_model_and_override(self, tmp_path: Path) -> None:
        """The operator's file adds a model and overrides a known one (cost_source custom)."""
        p = pricer(
            tmp_path,
            '[[model]]\nname = "acme-large"\ninput_mtok = 1.5\noutput_mtok = 6\ncache_read_mtok = 0.15\n'
            '[[model]]\nname = "gpt-4o"\nprovider = "openai"\ninput_mtok = 1\noutput_mtok = 2\n',
        )
        got = p.price(
            [
                record(
                    "acme-large",
                    provider=None,
                    input_tokens=2_000_000,
                    cache_read_tokens=1_000_000,
                    output_tokens=1_000_000,
                ),
                record("GPT-4o", input_tokens=1_000_000, output_tokens=1_000_000),
                record("gpt-4o-mini", input_tokens=1_000_000),
            ]
        )
        assert got.costs[:2] == [(1_500_000_000 + 150_000_000 + 6_000_000_000), 3_000_000_000]
        assert got.sources == ["custom", "custom", "computed"]
        assert got.providers == [None, "openai", "openai"]  # the entry's provider; none for "any"

    def test_an_alias_override_applies_to_the_dated_model_that_answered(self, tmp_path: Path) -> None:
        """An entry for gpt-4o-mini prices OpenAI spans answering gpt-4o-mini-2024-07-18."""
        p = pricer(
            tmp_path,
            '[[model]]\nname = "gpt-4o-mini"\nprovider = "openai"\ninput_mtok = 1\noutput_mtok = 2\n',
        )
        r = record("gpt-4o-mini-2024-07-18", input_tokens=1_000_000)._replace(request_model="gpt-4o-mini")
        assert p.price([r])[:3] == ([1_000_000_000], ["custom"], ["openai"])

    def test_the_response_model_entry_wins_over_the_request_models(self, tmp_path: Path) -> None:
        """Both models have entries: the one for the model that answered applies."""
        p = pricer(
            tmp_path,
            '[[model]]\nname = "gpt-4o-mini"\ninput_mtok = 1\noutput_mtok = 1\n'
            '[[model]]\nname = "gpt-4o-mini-2024-07-18"\ninput_mtok = 3\noutput_mtok = 3\n',
        )
        r = record("gpt-4o-mini-2024-07-18", input_tokens=1_000_000)._replace(request_model="gpt-4o-mini")
        assert p.price([r]).costs == [3_000_000_000]

    @pytest.mark.parametrize(
        ("entry", "span"),
        [
            ("google", "gcp.gemini"),
            ("gcp.vertex_ai", "google"),
            ("aws.bedrock", "AWS"),
            ("az.ai.openai", "azure.ai.openai"),
        ],
    )
    def test_provider_spellings_meet(self, tmp_path: Path, entry: str, span: str) -> None:
        """An entry for `google` applies to `gcp.gemini` spans, and every such pair alike."""
        p = pricer(
            tmp_path, f'[[model]]\nname = "m-1"\nprovider = "{entry}"\ninput_mtok = 1\noutput_mtok = 1\n'
        )
        got = p.price([record("m-1", span, input_tokens=1_000_000), record("m-1", "openai", input_tokens=1)])
        assert got.sources == ["custom", "unpriced"]

    def test_the_api_address_picks_the_entry_of_its_vendor(self, tmp_path: Path) -> None:
        """An OpenAI client sent to Groq gets the file's Groq entry before its OpenAI one."""
        p = pricer(
            tmp_path,
            '[[model]]\nname = "llama-x"\nprovider = "openai"\ninput_mtok = 1\noutput_mtok = 1\n'
            '[[model]]\nname = "llama-x"\nprovider = "groq"\ninput_mtok = 2\noutput_mtok = 2\n',
        )
        got = p.price(
            [
                record("llama-x", input_tokens=1_000_000, server_address="api.groq.com"),
                record("llama-x", input_tokens=1_000_000, server_address="localhost"),
            ]
        )
        assert got[:3] == ([2_000_000_000, 1_000_000_000], ["custom", "custom"], ["groq", "openai"])


class TestExactValues:
    def test_a_long_decimal_price_is_exact(self, tmp_path: Path) -> None:
        """0.3333333333333333 USD/MTok (a TOML float) and 22 decimals as a string price exactly."""
        p = pricer(
            tmp_path,
            '[[model]]\nname = "third"\ninput_mtok = 0.3333333333333333\noutput_mtok = 1\n'
            '[[model]]\nname = "long"\ninput_mtok = "0.0000005000000000000001"\noutput_mtok = 1\n',
        )
        got = p.price(
            [
                record("third", None, input_tokens=3_000_000),  # 0.9999999999999999 USD
                record("third", None, input_tokens=3),  # 999.9999999999999 nano-dollars
                record("long", None, input_tokens=1000),  # 0.5000000000000001 nano-dollars
            ]
        )
        assert got.costs == [1_000_000_000, 1000, 1]


class TestBadFiles:
    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("[[model]]\ninput_mtok = 1\noutput_mtok = 1\n", "'name'"),
            ('[[model]]\nname = "  "\ninput_mtok = 1\noutput_mtok = 1\n', "'name'"),
            ('[[model]]\nname = "m"\noutput_mtok = 1\n', "'input_mtok' is required"),
            ('[[model]]\nname = "m"\ninput_mtok = -1\noutput_mtok = 1\n', "non-negative"),
            ('[[model]]\nname = "m"\ninput_mtok = 1\noutput_mtok = 1\nprice = 3\n', "unknown keys"),
            ('[[model]]\nname = "m"\ninput_mtok = "abc"\noutput_mtok = 1\n', "must be a number"),
            ('[[model]]\nname = "m"\ninput_mtok = nan\noutput_mtok = 1\n', "non-negative number"),
            ('[[model]]\nname = "m"\ninput_mtok = inf\noutput_mtok = 1\n', "non-negative number"),
            ('[[model]]\nname = "m"\ninput_mtok = true\noutput_mtok = 1\n', "must be a number"),
            ('[[model]]\nname = "m"\ninput_mtok = 1e30\noutput_mtok = 1\n', "is over 10000 USD"),
            ('[[model]]\nname = "m"\ninput_mtok = "1e-31"\noutput_mtok = 1\n', "more than 30 decimal places"),
            ('[[model]]\nname = "m"\ninput_mtok = "1e-999999999"\noutput_mtok = 1\n', "decimal places"),
            ('[[model]]\nname = "m"\nprovider = 42\ninput_mtok = 1\noutput_mtok = 1\n', "'provider'"),
            ('[[model]]\nname = "m"\nprovider = ""\ninput_mtok = 1\noutput_mtok = 1\n', "'provider'"),
            ("model = [1, 2]\n", "expected \\[\\[model\\]\\] tables"),
            ("model = 3\n", "expected \\[\\[model\\]\\] tables"),
            ("not toml [", "price file"),
        ],
    )
    def test_bad_price_file_is_a_clear_error(self, tmp_path: Path, text: str, message: str) -> None:
        """A price file that cannot be used is a PriceFileError naming the entry and the problem."""
        path = tmp_path / "prices.toml"
        path.write_text(text)
        with pytest.raises(PriceFileError, match=message) as info:
            load_price_file(path)
        if 'name = "m"' in text:
            assert "model #1 ('m')" in str(info.value)

    def test_a_file_that_is_not_text_is_a_clear_error(self, tmp_path: Path) -> None:
        """Bytes that are not UTF-8 are a PriceFileError, not a UnicodeDecodeError."""
        path = tmp_path / "prices.toml"
        path.write_bytes(b"\xff\xfe[[model]]")
        with pytest.raises(PriceFileError, match="price file"):
            load_price_file(path)

    def test_trailing_zeros_do_not_count_as_decimal_places(self, tmp_path: Path) -> None:
        """1.5 written with 40 zeros after it is still 1.5."""
        p = pricer(tmp_path, f'[[model]]\nname = "m"\ninput_mtok = "1.5{"0" * 40}"\noutput_mtok = 1\n')
        assert p.price([record("m", None, input_tokens=1_000_000)]).costs == [1_500_000_000]


class TestWarnings:
    def test_entries_that_never_apply_are_named_at_start_up(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An entry shadowed by a later one for the same model and provider, after normalising
        spellings and case, is named in a warning; the later entry is the one that applies."""
        text = (
            '[[model]]\nname = "gemini-x"\nprovider = "google"\ninput_mtok = 1\noutput_mtok = 1\n'
            '[[model]]\nname = "Gemini-X"\nprovider = "gcp.gemini"\ninput_mtok = 2\noutput_mtok = 2\n'
            '[[model]]\nname = "acme"\ninput_mtok = 1\noutput_mtok = 1\n'
            '[[model]]\nname = "acme"\ninput_mtok = 3\noutput_mtok = 3\n'
            '[[model]]\nname = "acme"\nprovider = "openai"\ninput_mtok = 4\noutput_mtok = 4\n'
        )
        with caplog.at_level(logging.WARNING, logger="user_metrics.ingest.pricing"):
            p = pricer(tmp_path, text)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2
        assert "model #1 ('gemini-x') never applies" in warnings[0] and "model #2" in warnings[0]
        assert "model #3 ('acme') never applies" in warnings[1] and "model #4" in warnings[1]
        got = p.price(
            [
                record("gemini-x", "gcp.vertex_ai", input_tokens=1_000_000),
                record("acme", "anthropic", input_tokens=1_000_000),
                record("acme", "openai", input_tokens=1_000_000),
            ]
        )
        assert got.costs == [2_000_000_000, 3_000_000_000, 4_000_000_000]

    def test_a_clean_file_warns_of_nothing(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        """Different models, or one model for different providers, are no conflict."""
        text = (
            '[[model]]\nname = "m"\nprovider = "google"\ninput_mtok = 1\noutput_mtok = 1\n'
            '[[model]]\nname = "m"\nprovider = "openai"\ninput_mtok = 1\noutput_mtok = 1\n'
            '[[model]]\nname = "m"\ninput_mtok = 1\noutput_mtok = 1\n'
        )
        with caplog.at_level(logging.WARNING, logger="user_metrics.ingest.pricing"):
            pricer(tmp_path, text)
        assert caplog.records == []
