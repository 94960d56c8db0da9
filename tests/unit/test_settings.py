"""Settings: environment with the TIERFLOW_ prefix, a TOML file, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierflow.routing.errors import ConfigError
from tierflow.worker.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("TIERFLOW_"):
            monkeypatch.delenv(name)


def test_defaults_are_embedded_with_a_sqlite_file() -> None:
    settings = load_settings()
    assert settings.embedded
    assert settings.database_url.startswith("sqlite:///")
    assert settings.tiers["small"] and settings.tiers["large"]


def test_environment_sets_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERFLOW_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv(
        "TIERFLOW_TIERS",
        '{"small": ["fake:fake-small"], "medium": ["fake:fake-medium"],'
        ' "large": ["fake:fake-large", "fake:fake-medium"]}',
    )
    settings = load_settings()
    assert not settings.embedded
    assert settings.tiers["large"] == ["fake:fake-large", "fake:fake-medium"]


def test_config_file_is_read_and_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "tierflow.toml"
    config.write_text('database_url = "postgresql+psycopg://db/tierflow"\nstage_timeout_s = 42\n')
    monkeypatch.setenv("TIERFLOW_CONFIG", str(config))
    monkeypatch.setenv("TIERFLOW_STAGE_TIMEOUT_S", "7")
    settings = load_settings()
    assert settings.database_url == "postgresql+psycopg://db/tierflow"
    assert settings.stage_timeout_s == 7


def test_invalid_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERFLOW_STAGE_TIMEOUT_S", "-3")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.field.startswith("stage_timeout_s")


def test_unknown_key_in_the_config_file_names_file_and_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "tierflow.toml"
    config.write_text("databse_url = 'typo'\n")
    monkeypatch.setenv("TIERFLOW_CONFIG", str(config))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "databse_url" in caught.value.field and str(config) in caught.value.field


def test_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIERFLOW_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="no such file"):
        load_settings()


@pytest.mark.parametrize(
    ("tiers", "reason"),
    [
        (
            {"small": ["fake:a"], "medium": ["fake:b"], "large": ["fake:c"], "huge": ["fake:d"]},
            "unknown tiers",
        ),
        ({"small": ["fake:a"], "medium": [], "large": ["fake:c"]}, "tier medium has no models"),
        ({"large": ["fake:c"]}, "name at least two tiers"),
        ({"small": ["gpt"], "medium": ["fake:b"], "large": ["fake:c"]}, "not provider:model"),
    ],
)
def test_tier_map_is_checked(tiers: dict[str, list[str]], reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        load_settings(tiers=tiers)


def test_api_keys_do_not_show_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERFLOW_OPENAI_API_KEY", "sk-very-secret-value")
    settings = load_settings()
    assert "sk-very-secret-value" not in repr(settings)
    assert settings.openai_api_key is not None


def test_learning_settings_come_from_a_config_table_and_are_checked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "tierflow.toml"
    config.write_text(
        '[learning]\nmin_samples = 100\nencoder = "local"\ncoach_model = "fake:fake-large"\n'
        '[learning.target]\nkind = "cost"\nvalue = 0.3\n'
    )
    monkeypatch.setenv("TIERFLOW_CONFIG", str(config))
    learning = load_settings().learning
    assert (learning.min_samples, learning.encoder, learning.coach_model) == (100, "local", "fake:fake-large")
    assert (learning.target.kind.value, learning.target.value) == ("cost", 0.3)
    config.write_text('[learning]\nencoder = "word2vec"\n')
    with pytest.raises(ConfigError, match="learning.encoder"):
        load_settings()


def test_the_exploration_share_comes_from_the_config_or_the_environment_and_is_bounded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load_settings().learning.explore_share == 0.05
    config = tmp_path / "tierflow.toml"
    config.write_text("[learning]\nexplore_share = 0.1\n")
    monkeypatch.setenv("TIERFLOW_CONFIG", str(config))
    assert load_settings().learning.explore_share == 0.1
    config.write_text("[learning]\nexplore_share = 0.9\n")
    with pytest.raises(ConfigError, match=r"learning\.explore_share.*less than or equal to 0\.5"):
        load_settings()
    monkeypatch.delenv("TIERFLOW_CONFIG")
    monkeypatch.setenv("TIERFLOW_LEARNING", '{"explore_share": 0}')
    assert load_settings().learning.explore_share == 0.0
    monkeypatch.setenv("TIERFLOW_LEARNING", '{"explore_share": -1}')
    with pytest.raises(ConfigError, match=r"learning\.explore_share.*greater than or equal to 0"):
        load_settings()


def test_with_reflect_off_the_first_policy_does_not_explore(monkeypatch: pytest.MonkeyPatch) -> None:
    from tierflow.tasks.runtime import default_policy

    assert default_policy(load_settings()).learning.explore_share == 0.05
    monkeypatch.setenv("TIERFLOW_REFLECT_INTERVAL_S", "0")
    off = default_policy(load_settings())
    assert off.learning.explore_share == 0.0 and off.learning.min_samples == 50  # the rest as set


def test_the_tiers_named_form_the_first_policy_s_ladder() -> None:
    from tierflow.routing.states import Tier
    from tierflow.tasks.runtime import default_policy

    assert default_policy(load_settings()).ladder == (Tier.SMALL, Tier.MEDIUM, Tier.LARGE)
    two = default_policy(load_settings(tiers={"large": ["fake:c"], "small": ["fake:a"]}))
    assert two.ladder == (Tier.SMALL, Tier.LARGE) and set(two.tier_models) == {Tier.SMALL, Tier.LARGE}
