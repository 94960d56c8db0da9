"""Deployments in the tier map, the shipped price table with cached-token rates, and the context
windows the first policy carries: parsing, validation (errors name the key) and the defaults."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tierflow.providers.deployments import Deployment, deployment_provider
from tierflow.providers.pricing import Price, price_table, shipped_context_windows, shipped_prices
from tierflow.routing.errors import ConfigError
from tierflow.routing.states import Tier
from tierflow.tasks.runtime import build_providers, default_policy
from tierflow.worker.settings import load_settings

CONFIG = """
[tiers]
small = ["local-small"]
large = ["hosted-large", "openai:gpt-4o"]

[deployments.local-small]
provider = "openai"
model = "llama-3.1-8b"
base_url = "http://127.0.0.1:9001/v1"
context_window = 8192
capabilities = ["json"]
price = { input = 0.05, output = 0.10 }
rate_limit = { requests_per_minute = 600 }

[deployments.hosted-large]
provider = "anthropic"
model = "claude-sonnet-4-5"
base_url = "http://127.0.0.1:9002"
api_key_env = "TF_TEST_LARGE_KEY"
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TIERFLOW_"):
            monkeypatch.delenv(name)


def _config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> None:
    path = tmp_path / "tierflow.toml"
    path.write_text(text)
    monkeypatch.setenv("TIERFLOW_CONFIG", str(path))


def test_a_config_file_names_deployments_beside_the_short_form(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _config(monkeypatch, tmp_path, CONFIG)
    monkeypatch.setenv("TF_TEST_LARGE_KEY", "sk-ant-from-the-environment")
    settings = load_settings()
    assert settings.tier_refs() == {
        "small": ["local-small:llama-3.1-8b"],
        "large": ["hosted-large:claude-sonnet-4-5", "openai:gpt-4o"],
    }
    prices = price_table(settings.price_overrides())
    assert prices["local-small:llama-3.1-8b"] == Price(0.05, 0.10)
    # a deployment without a price of its own takes the table's entry for the model it serves
    assert prices["hosted-large:claude-sonnet-4-5"] == shipped_prices()["anthropic:claude-sonnet-4-5"]
    assert settings.context_windows() == {
        "local-small:llama-3.1-8b": 8192,
        "hosted-large:claude-sonnet-4-5": 200_000,
        "openai:gpt-4o": 128_000,
    }
    assert settings.model_rate_limits()["local-small:llama-3.1-8b"].requests_per_minute == 600
    policy = default_policy(settings)
    assert policy.tier_models[Tier.SMALL] == ("local-small:llama-3.1-8b",)
    assert policy.context_windows["local-small:llama-3.1-8b"] == 8192
    assert policy.model_capabilities == {"local-small:llama-3.1-8b": ("json",)}
    assert settings.deployment_key("hosted-large") is not None
    assert "sk-ant-from-the-environment" not in repr(settings)


def test_each_deployment_is_a_provider_of_its_own_with_its_base_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _config(monkeypatch, tmp_path, CONFIG)
    monkeypatch.setenv("TF_TEST_LARGE_KEY", "sk-ant-from-the-environment")
    monkeypatch.setenv("TIERFLOW_OPENAI_API_KEY", "sk-short-form")
    providers = build_providers(load_settings())
    assert (
        repr(providers["local-small"])
        == "OpenAIProvider(name='local-small', base_url='http://127.0.0.1:9001/v1')"
    )
    assert (
        repr(providers["hosted-large"])
        == "AnthropicProvider(name='hosted-large', base_url='http://127.0.0.1:9002')"
    )
    assert "openai" in providers  # the short form's provider, beside them


def test_a_key_variable_that_is_not_set_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _config(monkeypatch, tmp_path, CONFIG)
    monkeypatch.delenv("TF_TEST_LARGE_KEY", raising=False)
    with pytest.raises(ConfigError) as caught:
        build_providers(load_settings())
    assert caught.value.field == "deployments.hosted-large.api_key_env"
    assert "TF_TEST_LARGE_KEY is not set" in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value", "field", "reason"),
    [
        ("api_key", '"sk-live-123"', "deployments.local-small", "a key is never written in the config file"),
        ("provider", '"cohere"', "deployments.local-small.provider", "'openai' or 'anthropic'"),
        ("base_url", '"127.0.0.1:9001"', "deployments.local-small", "not an http:// or https:// URL"),
        ("context_window", "0", "deployments.local-small.context_window", "greater than 0"),
        ("price", "{ input = 1.0 }", "deployments.local-small.price.output", "Field required"),
        ("api_key_env", '"not a name"', "deployments.local-small.api_key_env", "should match pattern"),
        ("colour", '"blue"', "deployments.local-small.colour", "Extra inputs are not permitted"),
    ],
)
def test_a_bad_deployment_is_refused_naming_its_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, key: str, value: str, field: str, reason: str
) -> None:
    kept = [line for line in CONFIG.split("\n") if not line.startswith(f"{key} =")]
    section = kept.index("[deployments.local-small]")
    kept.insert(section + 1, f"{key} = {value}")
    _config(monkeypatch, tmp_path, "\n".join(kept))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.field.startswith(field), caught.value
    assert reason in str(caught.value) and "sk-live-123" not in str(caught.value)


def test_a_tier_naming_no_deployment_and_no_provider_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERFLOW_TIERS", '{"small": ["nowhere"], "large": ["fake:fake-large"]}')
    with pytest.raises(ConfigError, match=r"'nowhere' is not provider:model, nor a deployment") as caught:
        load_settings()
    assert caught.value.field == "tiers.small"


def test_deployments_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    local = {"provider": "openai", "model": "qwen", "base_url": "http://127.0.0.1:9/v1"}
    monkeypatch.setenv("TIERFLOW_DEPLOYMENTS", json.dumps({"local": local}))
    monkeypatch.setenv("TIERFLOW_TIERS", '{"small": ["local"], "large": ["fake:fake-large"]}')
    monkeypatch.setenv("TIERFLOW_PRICES", '{"openai:qwen": [0.1, 0.2]}')
    settings = load_settings()
    assert settings.tier_refs()["small"] == ["local:qwen"]
    assert price_table(settings.price_overrides())["local:qwen"] == Price(
        0.1, 0.2
    )  # from the model it serves


def test_a_deployment_may_not_take_a_providers_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _config(
        monkeypatch,
        tmp_path,
        CONFIG.replace("deployments.local-small", "deployments.openai").replace('"local-small"', '"openai"'),
    )
    with pytest.raises(ConfigError, match="deployment name 'openai'"):
        load_settings()


def test_the_shipped_table_prices_every_default_model_and_knows_their_windows() -> None:
    settings = load_settings()
    prices, windows = shipped_prices(), shipped_context_windows()
    for refs in settings.tier_refs().values():
        for ref in refs:
            assert ref in prices and ref in windows
    policy = default_policy(settings)
    assert policy.context_windows and set(policy.context_windows) == {
        ref for refs in settings.tier_refs().values() for ref in refs
    }


def test_cached_tokens_are_priced_at_their_own_rates() -> None:
    price = shipped_prices()["anthropic:claude-sonnet-4-5"]  # 3.00 in, 0.30 read, 3.75 write, 15.00 out
    assert price.cost(1_000_000, 0) == pytest.approx(3.00)
    assert price.cost(1_000_000, 0, cached_tokens=1_000_000) == pytest.approx(0.30)
    assert price.cost(1_000_000, 0, cache_write_tokens=1_000_000) == pytest.approx(3.75)
    assert price.cost(1_000, 100, cached_tokens=600, cache_write_tokens=300) == pytest.approx(
        (100 * 3.00 + 600 * 0.30 + 300 * 3.75 + 100 * 15.00) / 1e6
    )
    plain = Price(1.0, 2.0)  # no cached rate: cached tokens are priced as input
    assert plain.cost(1000, 0, cached_tokens=500) == plain.cost(1000, 0)


def test_settings_prices_take_pairs_or_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "TIERFLOW_PRICES",
        '{"openai:a": [1.0, 2.0], "openai:b": {"input": 1.0, "output": 2.0, "cached_input": 0.1}}',
    )
    table = price_table(load_settings().price_overrides())
    assert table["openai:a"] == Price(1.0, 2.0) and table["openai:b"].cached_input_per_million == 0.1


def test_a_deployment_without_a_key_variable_sends_a_placeholder_key() -> None:
    local = Deployment(provider="openai", model="m", base_url="http://127.0.0.1:1/v1")
    provider = deployment_provider("local", local, None, {})
    assert provider.name == "local"
    with pytest.raises(ValueError, match="needs a key variable"):
        Deployment(provider="anthropic", model="m")
