"""The deployment's own files, checked as a reviewer would: the lock files pin what
pyproject.toml asks for (with hashes, the image's a subset of the tests'), the image
installs from the lock, and docker-compose is fit for a small NGO — a one-shot init, health
checks and restart policies, host ports on the reverse proxy only, no default password,
the key-encryption key on a volume of its own."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
LONG_RUNNING = ("db", "api", "worker", "console", "proxy", "witness1", "witness2")


def pins(lock: Path) -> dict[str, str]:
    text = lock.read_text()
    found = dict(re.findall(r"^([a-z0-9][a-z0-9._-]*)==([^ \\\n]+)", text, re.M))
    blocks = re.split(r"\n(?=[a-z0-9])", text)
    for block in blocks:
        if "==" in block.split("\n", 1)[0]:
            assert "--hash=sha256:" in block, block.split("\n", 1)[0]  # every pin hashed
    return {re.sub(r"[-_.]+", "-", k.lower()): v for k, v in found.items()}


def wanted(requirement: str) -> str:
    name = re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name.lower())


def test_the_locks_pin_every_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, test = pins(ROOT / "requirements.lock"), pins(ROOT / "requirements-test.lock")
    for dep in project["dependencies"]:
        assert wanted(dep) in runtime, dep
    for dep in project["optional-dependencies"]["test"]:
        assert wanted(dep) in test, dep
    for name, version in runtime.items():  # the image runs what the tests ran
        assert test.get(name) == version, (name, version, test.get(name))
    assert not re.search(r"file://|/opt/", (ROOT / "requirements-test.lock").read_text())


def test_the_image_installs_from_the_lock_alone() -> None:
    steps = [line for line in (ROOT / "Dockerfile").read_text().splitlines()
             if line.startswith("RUN pip install")]  # fmt: skip
    assert steps[0].endswith("--require-hashes -r requirements.lock")
    assert "--no-deps ." in steps[1]
    # The first step as the image runs it, without installing: every pin resolves, with its hash.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--no-deps", "--require-hashes", "-r", str(ROOT / "requirements.lock")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def compose() -> dict:  # type: ignore[type-arg]
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_compose_has_a_one_shot_init_and_health_checked_services(compose: dict) -> None:  # type: ignore[type-arg]
    services = compose["services"]
    init = services["init"]
    assert init["restart"] == "no" and "ledger init" in " ".join(init["command"])
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"
        assert "ledger init" not in " ".join(services[name]["command"])  # never per replica
    for name in ("api", "worker", "console"):
        assert services[name]["healthcheck"]["test"], name
    assert "/v1/health" in " ".join(services["api"]["healthcheck"]["test"])
    for name in LONG_RUNNING:
        assert services[name].get("restart") == "unless-stopped", name


def test_compose_publishes_only_the_reverse_proxy(compose: dict) -> None:  # type: ignore[type-arg]
    published = [n for n, s in compose["services"].items() if s.get("ports")]
    assert published == ["proxy"]
    caddy = (ROOT / "deploy" / "Caddyfile").read_text()
    assert "reverse_proxy" in caddy and "api 8000" in caddy and "console:8100" in caddy


def test_compose_needs_a_password_and_keeps_the_kek_apart(compose: dict) -> None:  # type: ignore[type-arg]
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text
    assert "${POSTGRES_PASSWORD:?" in text and ":-" not in text.split("POSTGRES_PASSWORD", 1)[1][:3]
    services = compose["services"]
    for name in ("init", "api", "worker"):
        volumes = services[name]["volumes"]
        assert "kek:/kek" in volumes and "keys:/keys" in volumes, name
        assert services[name]["environment"]["LEDGER_KEK_FILE"] == "/kek/kek.key"
    for name in ("db", "console", "proxy", "witness1", "witness2"):
        assert not any(v.startswith("kek:") for v in services[name].get("volumes", [])), name
    assert "kek" in compose["volumes"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\.env:", makefile, re.M) and "secrets.token_urlsafe" in makefile
    assert ".env" in (ROOT / ".gitignore").read_text().split()
