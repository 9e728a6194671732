import pytest

from kallm.settings import SettingsError, load_settings, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("24h", 86400),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("250ms", 0.25),
        ("45", 45),
    ],
)
def test_go_style_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["banana", "10x", "h", "1h 30m", "-5m", ""])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_defaults(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "KALLM_PORT", "KALLM_CACHE_TTL"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.openai_api_key is None
    assert settings.openai_base_url == "https://api.openai.com/v1"
    assert (settings.port, settings.host) == (8080, "0.0.0.0")
    assert settings.similarity_threshold is None  # the calibrated default
    assert settings.verifier is True and settings.verifier_threshold is None
    assert settings.cache_ttl == 86400
    assert settings.max_cache_size == 10_000
    assert settings.remote_embedding_model is None
    assert settings.log_json is False


def test_environment_and_flags(monkeypatch):
    monkeypatch.setenv("KALLM_CACHE_TTL", "1h30m")
    monkeypatch.setenv("KALLM_PORT", "9000")
    monkeypatch.setenv("KALLM_LOG_JSON", "true")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1/")
    settings = load_settings(port="9001")
    assert settings.cache_ttl == 5400
    assert settings.port == 9001  # the flag wins
    assert settings.log_json is True
    assert settings.openai_base_url == "http://127.0.0.1:1/v1"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KALLM_CACHE_TTL", "banana"),
        ("KALLM_SIMILARITY_THRESHOLD", "2"),
        ("KALLM_PORT", "http"),
        ("KALLM_MAX_CACHE_SIZE", "0"),
        ("KALLM_LOG_JSON", "perhaps"),
        ("OPENAI_BASE_URL", "api.openai.com"),
        ("KALLM_EMBEDDING_MODEL", "no-such-model"),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable) as raised:
        load_settings()
    assert "Value error" not in str(raised.value)  # pydantic's wording, not ours


def test_an_invalid_flag_is_named_as_the_flag(monkeypatch):
    monkeypatch.delenv("KALLM_CACHE_TTL", raising=False)
    with pytest.raises(SettingsError) as raised:
        load_settings(cache_ttl="banana")
    assert str(raised.value).startswith("invalid setting: --cache-ttl: ")
    assert "KALLM_CACHE_TTL" not in str(raised.value)


def test_remote_embeddings_need_a_key(monkeypatch):
    monkeypatch.setenv("KALLM_HOST", "127.0.0.1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("KALLM_EMBEDDING_MODEL", "text-embedding-3-small")
    with pytest.raises(SettingsError, match="OPENAI_API_KEY"):
        load_settings()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert load_settings().remote_embedding_model == "text-embedding-3-small"
    monkeypatch.setenv("KALLM_EMBEDDING_MODEL", "openai:my-embedder")
    assert load_settings().remote_embedding_model == "my-embedder"


def test_the_key_never_shows_in_reprs_or_errors(monkeypatch):
    monkeypatch.setenv("KALLM_HOST", "127.0.0.1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    assert "sk-very-secret" not in repr(load_settings())


def test_the_readme_states_every_numeric_default_as_it_is(monkeypatch):
    """Each row of the README's settings table whose default is a plain number or duration
    names the default kallm really has (a changed default must change the documentation)."""
    import re
    from pathlib import Path

    from kallm.settings import ENV_NAMES, parse_duration

    for name in ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)
    defaults = load_settings().model_dump()
    field_of = {env: field for field, env in ENV_NAMES.items()}
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    checked = 0
    row = r"^\| `(KALLM_[A-Z_]+)` \| `([0-9]+(?:\.[0-9]+)?[smh]?)` \|"
    for env, shown in re.findall(row, readme, re.M):
        value = defaults[field_of[env]]
        assert float(value) == parse_duration(shown), f"{env}: README says {shown}, default {value}"
        checked += 1
    assert checked >= 10
