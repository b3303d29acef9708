"""docker-compose.yml, checked without a docker engine: valid against the Compose
Specification's JSON schema (``tests/data/compose_spec.json``, Apache-2.0, as shipped in the
PyPI wheel docker-compose 1.29.2), every ``flywheel`` command and option it runs and every
FLYWHEEL_* setting it sets exist in the code, the files it mounts exist, internal services
are not published, and Prometheus scrapes the services that serve /metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_the_file_is_valid_against_the_compose_specification():
    from jsonschema import Draft201909Validator

    schema = json.loads((ROOT / "tests" / "data" / "compose_spec.json").read_text())
    errors = sorted(Draft201909Validator(schema).iter_errors(COMPOSE), key=lambda e: list(e.path))
    assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]


def flywheel_commands() -> list[tuple[str, list[str]]]:
    return [
        (name, service["command"])
        for name, service in SERVICES.items()
        if isinstance(service.get("command"), list) and service["command"][:1] == ["flywheel"]
    ]


@pytest.mark.parametrize(("service", "argv"), flywheel_commands())
def test_every_flywheel_command_and_option_exists(service, argv):
    import typer

    from flywheel.cli import build_app

    command = typer.main.get_command(build_app())
    words = argv[1:]
    while hasattr(command, "list_commands") and words and not words[0].startswith("-"):
        sub = command.get_command(
            command.make_context("flywheel", ["--help"], resilient_parsing=True), words[0]
        )
        assert sub is not None, f"{service}: `flywheel ... {words[0]}` is not a command"
        command, words = sub, words[1:]
    assert not hasattr(command, "list_commands"), f"{service}: {argv} names a group, not a command"
    options = {opt for p in command.params for opt in p.opts}
    for word in words:
        if word.startswith("--"):
            assert word in options, (
                f"{service}: {word} is not an option of {' '.join(argv[: -len(words)] or argv)}"
            )
    command.make_context("flywheel", list(words))  # the arguments parse as given


def setting_exists(name: str) -> bool:
    from flywheel.settings import Settings

    model, parts = Settings, name.removeprefix("FLYWHEEL_").lower().split("__")
    for part in parts:
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        annotation = fields[part].annotation
        model = next(
            (a for a in getattr(annotation, "__args__", (annotation,)) if hasattr(a, "model_fields")), None
        )
    return True


def test_every_flywheel_setting_it_sets_exists():
    names = {
        key
        for service in SERVICES.values()
        for key in (service.get("environment") or {})
        if key.startswith("FLYWHEEL_")
    }
    names |= set(re.findall(r"FLYWHEEL_[A-Z_]+", (ROOT / "deploy" / "with-secrets.sh").read_text()))
    assert names and not [n for n in sorted(names) if not setting_exists(n)]
    assert not setting_exists("FLYWHEEL_KAFKA__NO_SUCH_SETTING")  # the check can fail


def test_mounted_files_exist_and_internal_services_are_not_published():
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repo"
        for word in [*service.get("entrypoint", []), *(service.get("command") or [])]:
            if isinstance(word, str) and word.startswith("deploy/"):
                assert (ROOT / word).is_file(), f"{name} runs {word}, which is not in the repo"
    for name in ("kafka", "redis", "postgres", "ingestor", "flink-taskmanager"):
        assert "ports" not in SERVICES[name], f"{name} must not be published"
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert name == "api" or str(port).startswith("127.0.0.1:"), (
                f"{name} publishes {port} beyond loopback"
            )


def test_secrets_are_files_and_the_api_is_behind_a_token():
    assert all("file" in s for s in COMPOSE["secrets"].values())
    assert "api_token" in SERVICES["api"]["secrets"]
    assert "FLYWHEEL_HTTP__AUTH_TOKEN" in (ROOT / "deploy" / "with-secrets.sh").read_text()


def test_prometheus_scrapes_the_api_and_the_loop():
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert targets == {"api:8088", "loop:9464"}
    assert (
        "8088" in SERVICES["api"]["command"]
        and SERVICES["loop"]["environment"]["FLYWHEEL_RUN__METRICS_HOST"] == "0.0.0.0"
    )


ONE_SHOT = {"flink-submit", "trainer"}


def test_services_run_unprivileged_are_health_checked_and_wait_for_health():
    """Issue 27, item 10."""
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the Flywheel image must not run as root"
    for name, service in SERVICES.items():
        if name in ONE_SHOT:
            continue
        assert "healthcheck" in service and service["healthcheck"].get("test"), f"{name} has no healthcheck"
    submit = SERVICES["flink-submit"]["depends_on"]
    assert all(dep["condition"] == "service_healthy" for dep in submit.values()), submit
    for name, service in SERVICES.items():
        deps = service.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on only orders start-up; wait for health"
        assert all(d.get("condition") == "service_healthy" for d in deps.values()), name


def command_lines() -> list[tuple[str, str]]:
    out = []
    for name, service in SERVICES.items():
        for key in ("command", "entrypoint"):
            value = service.get(key) or []
            out.append((f"{name}.{key}", " ".join(value) if isinstance(value, list) else value))
        test = (service.get("healthcheck") or {}).get("test") or []
        out.append((f"{name}.healthcheck", " ".join(test) if isinstance(test, list) else test))
    for script in (ROOT / "deploy").glob("*.sh"):
        out.append((str(script.relative_to(ROOT)), script.read_text()))
    return out


def test_no_secret_reaches_a_command_line():
    """A secret read from its file may go into an environment variable or a file (written by
    the shell's printf, a builtin), never into a program's arguments, where `ps` shows it."""
    assignment = re.compile(r"^\s*(export\s+)?[A-Za-z_][A-Za-z0-9_]*=")
    for where, text in command_lines():
        for line in text.splitlines() or [text]:
            if "/run/secrets/" not in line or ("$(cat" not in line and "$$(cat" not in line):
                continue
            shell = line.split("-c", 1)[-1].strip(" '\"") if "CMD-SHELL" not in line else line
            shell = shell.replace("CMD-SHELL", "").strip()
            builtin = re.search(r"(^|[;\s])(export|printf)\s", shell)  # no process: no command line
            ok = assignment.match(shell) or builtin
            assert ok, f"{where}: a secret on a command line: {line.strip()[:120]}"
        assert "--requirepass" not in text and "--backend-store-uri" not in text, where
        assert not re.search(r"--password[ =]", text), where
    assert any("REDISCLI_AUTH" in t for _, t in command_lines())  # the check looked at the healthcheck
