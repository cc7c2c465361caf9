"""The [billing] settings: the plan property and its prices, from TOML, environment and flags,
exact, and refused at start-up when they cannot be used."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from servers import cli

from user_metrics.settings import SettingsError, load_settings
from user_metrics.settings_input import PlanPrice


def from_toml(tmp_path: Path, text: str) -> tuple[PlanPrice, ...]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    settings = load_settings(config_file=str(path), environ={})
    return settings.prices()


class TestPlanPrices:
    def test_the_toml_table_text_and_numbers_exactly(self, tmp_path: Path) -> None:
        """[billing.plan_prices]: text with a unit, or a number (per month) kept exactly (19.99 is no float)."""
        prices = from_toml(
            tmp_path,
            '[billing]\nplan_property = "plan"\n[billing.plan_prices]\n'
            'free = 0\npro = "20/month"\nteam = "2400.50/year"\nlite = 19.99\n',
        )
        assert prices == (
            PlanPrice("free", Decimal("0"), "month"),
            PlanPrice("pro", Decimal("20"), "month"),
            PlanPrice("team", Decimal("2400.50"), "year"),
            PlanPrice("lite", Decimal("19.99"), "month"),
        )
        assert str(prices[3].amount) == "19.99"

    def test_environment_and_flags(self) -> None:
        env = {"USER_METRICS_PLAN_PROPERTY": "plan", "USER_METRICS_PLAN_PRICES": "free=0, pro=20/month"}
        assert [p.value for p in load_settings(environ=env).prices()] == ["free", "pro"]
        flags = {"plan_property": "tier", "plan_prices": ["gold=240/year"]}
        assert load_settings(flags, environ={}).prices() == (PlanPrice("gold", Decimal("240"), "year"),)

    @pytest.mark.parametrize(
        ("entry", "reason"),
        [
            ("pro=-5/month", "non-negative decimal"),
            ("pro=20/week", "per month or year"),
            ("pro=1e3", "per month or year"),
            ("pro=0.0000000001/month", "at most 9"),
            ("pro=1000000/month", "below 1000000"),
            ("pro", "VALUE=AMOUNT/month"),
            ("=5", "VALUE=AMOUNT/month"),
        ],
    )
    def test_bad_prices_are_refused_naming_them(self, entry: str, reason: str) -> None:
        with pytest.raises(SettingsError, match=f"plan_prices: .*{reason}"):
            load_settings({"plan_property": "plan", "plan_prices": [entry]}, environ={})

    def test_a_value_twice_and_a_boolean_are_refused(self, tmp_path: Path) -> None:
        with pytest.raises(SettingsError, match="'pro' is given twice"):
            load_settings({"plan_property": "plan", "plan_prices": ["pro=1", "pro=2"]}, environ={})
        with pytest.raises(SettingsError, match="the price of 'pro' must be text or a number"):
            from_toml(tmp_path, '[billing]\nplan_property = "plan"\n[billing.plan_prices]\npro = true\n')

    def test_prices_without_the_property_and_the_reverse(self) -> None:
        with pytest.raises(SettingsError, match="plan_property and plan_prices go together"):
            load_settings({"plan_prices": ["pro=20"]}, environ={})
        with pytest.raises(SettingsError, match="plan_property and plan_prices go together"):
            load_settings({"plan_property": "plan"}, environ={})

    def test_unknown_billing_keys_are_refused(self, tmp_path: Path) -> None:
        with pytest.raises(SettingsError, match=r"unknown settings in \[billing\]: \['currency'\]"):
            from_toml(tmp_path, '[billing]\ncurrency = "EUR"\n')

    def test_serve_refuses_a_bad_price_at_start(self, tmp_path: Path) -> None:
        """The command exits with the reason before it opens anything."""
        done = cli(
            "serve", "--db", str(tmp_path / "x.duckdb"), "--plan-property", "plan", "--plan-prices", "pro=-1"
        )
        assert done.returncode == 2
        assert "plan_prices: the price of 'pro' must be a non-negative decimal" in done.stderr
        assert not (tmp_path / "x.duckdb").exists()
