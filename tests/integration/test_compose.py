"""docker-compose.yml, read as Compose reads it, and its stand-in provider's command run."""

import sys
from pathlib import Path

import httpx
import yaml
from processes import Process, clean_env, free_port

from kallm.settings import ENV_NAMES, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_kallm_on_redis_with_settings_kallm_reads():
    services = COMPOSE["services"]
    assert set(services) == {"kallm", "redis", "simulator"}
    kallm = services["kallm"]
    assert kallm["build"] == "." and (ROOT / "Dockerfile").is_file()
    known = {*ENV_NAMES.values(), "OPENAI_API_KEY", "KALLM_CLIENT_KEYS"}
    assert set(kallm["environment"]) <= known
    backend = kallm["environment"]["KALLM_BACKEND"]
    assert backend.startswith("redis://redis:") and kallm["depends_on"] == ["redis"]
    assert load_settings(backend=backend, host="127.0.0.1").backend == backend  # kallm takes it
    assert services["simulator"]["profiles"] == ["simulator"]
    assert services["simulator"]["image"] == kallm["image"]


def test_the_stand_in_provider_starts_with_the_compose_command(tmp_path):
    command = COMPOSE["services"]["simulator"]["command"]
    assert command[:3] == ["python", "-m", "kallm.simulator"]
    port = free_port()
    args = [sys.executable, *command[1:]]
    args[args.index("--port") + 1] = str(port)
    simulator = Process("simulator", args, clean_env(), tmp_path / "simulator.log")
    try:
        simulator.wait_until(f"http://127.0.0.1:{port}/v1/models")
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"]
    finally:
        simulator.stop()
