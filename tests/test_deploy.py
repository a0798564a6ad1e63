"""Checks of the deployment material under ``cluster/``.

Docker, Kubernetes and SLURM do not run here, so their files are checked for what would break a
deployment: that they parse, that the fields which matter are there and agree with each other
(ports, service names, TLS files, memory limits, the scripts the image installs), and that the
pieces which can run here do: the shell scripts, ``make-certs.sh``'s certificates, the Dask TLS
configuration, and the scheduler and worker containers of the DaskCluster manifest and of the
Helm values, started as local processes with the same arguments and environment.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import operator
import os
import py_compile
import re
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import dask.config
import pytest
import yaml
from dask.utils import parse_bytes
from distributed.security import Security

from dsoftmax.cli import build_parser
from dsoftmax.cluster import get_client, make_security

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
HOSTS = CLUSTER / "hosts"
MAKE_CERTS = CLUSTER / "tls" / "make-certs.sh"
DOCKERFILE = CLUSTER / "docker" / "Dockerfile"
COMPOSE = CLUSTER / "docker" / "compose.yaml"
DASKCLUSTER = CLUSTER / "kubernetes" / "daskcluster.yaml"
TRAIN_JOB = CLUSTER / "kubernetes" / "train-job.yaml"
HELM_VALUES = CLUSTER / "kubernetes" / "helm-values.yaml"
DASK_TLS = CLUSTER / "tls" / "dask-tls.yaml"
SLURM_EXAMPLE = CLUSTER / "slurm" / "slurm_cluster.py"
SHELL_SCRIPTS = sorted(CLUSTER.rglob("*.sh"))
ROLES = ("scheduler", "worker", "client")
#: Where the containers find their TLS files (compose, Kubernetes, dask-tls.yaml).
TLS_MOUNT = "/etc/dsoftmax/tls"
STARTUP_TIMEOUT = 60.0
MISSING = object()


# ------------------------------------------------------------------------------- helpers
def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def env_list(container: Mapping) -> dict[str, Any]:
    """A Kubernetes container's ``env`` as ``{name: value or valueFrom}``."""
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def bytes_of_quantity(quantity: str) -> int:
    """A Kubernetes or Docker memory quantity (``7Gi``, ``4G``, ``512Mi``) in bytes.

    ``G`` counts as 10**9 (Kubernetes) although Docker reads 2**30: the smaller value makes the
    "Dask's limit is below the container's" checks strict for both.
    """
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?)?", str(quantity))
    assert match, f"not a memory quantity: {quantity!r}"
    number, unit = float(match.group(1)), match.group(2) or ""
    if not unit:
        return int(number)
    base = 1024 if unit.endswith("i") else 1000
    return int(number * base ** "KMGT".index(unit[0]) * base)


def unknown_dask_keys(config: Mapping, prefix: str = "") -> list[str]:
    """Leaf keys of ``config`` that Dask's defaults do not have (typos, wrong nesting)."""
    unknown = []
    for key, value in config.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            unknown += unknown_dask_keys(value, path)
        elif dask.config.get(path, default=MISSING) is MISSING:
            unknown.append(path)
    return unknown


def dask_env_keys(names: list[str]) -> list[str]:
    """The Dask configuration keys that DASK_* variables with these names would set."""
    config = dask.config.collect_env({name: "x" for name in names if name.startswith("DASK_")})
    return unknown_dask_keys(config)


def script_variables(script: Path) -> set[str]:
    """The DSOFTMAX_* variables a launch script reads."""
    return set(re.findall(r"\bDSOFTMAX_[A-Z_]+\b", script.read_text()))


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return instructions


def _pattern_regex(pattern: str) -> re.Pattern:
    parts = []
    for piece in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/")):
        parts.append(
            {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(piece, re.escape(piece))
        )
    return re.compile("".join(parts) + r"\Z")


def docker_context_excludes(path: str, ignore_file: Path) -> bool:
    """Whether a .dockerignore file keeps ``path`` (relative to the context) out of the build.

    Docker's rules: patterns in order, the last one that matches the path or one of its parent
    directories decides, and ``!`` re-includes.
    """
    candidates = [str(Path(*Path(path).parts[:end])) for end in range(1, len(Path(path).parts) + 1)]
    excluded = False
    for line in ignore_file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        regex = _pattern_regex(line.removeprefix("!"))
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """make-certs.sh's files for two more host names."""
    if shutil.which("openssl") is None:
        pytest.skip("make-certs.sh needs openssl")
    directory = tmp_path_factory.mktemp("certs") / "certs"
    result = run_script(MAKE_CERTS, str(directory), "10.0.0.5", "scheduler.example.org")
    assert result.returncode == 0, result.stderr
    return directory


def run_script(
    script: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess:
    if shutil.which("bash") is None:
        pytest.skip("the launch scripts need bash")
    return subprocess.run(
        ["bash", str(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


# --------------------------------------------------------------------------- shell scripts
def run_script_syntax(script: Path) -> subprocess.CompletedProcess:
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    return subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda path: path.name)
def test_shell_script_parses_and_is_executable(script: Path) -> None:
    result = run_script_syntax(script)
    assert result.returncode == 0, result.stderr
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable: chmod +x it"


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda path: path.name)
def test_shell_script_passes_shellcheck(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run(
        ["shellcheck", "--shell=bash", str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout


# ---------------------------------------------------------------------------- make-certs.sh
def test_make_certs_signs_a_certificate_per_role_with_a_private_ca(certs: Path) -> None:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.x509.oid import ExtendedKeyUsageOID

    assert sorted(path.name for path in certs.iterdir()) == sorted(
        ["ca.pem", "ca.key", *(f"{role}.{ext}" for role in ROLES for ext in ("pem", "key"))]
    )
    ca = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for role in ROLES:
        cert = x509.load_pem_x509_certificate((certs / f"{role}.pem").read_bytes())
        assert cert.issuer == ca.subject
        cert.verify_directly_issued_by(ca)  # raises unless the CA's key signed it
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(names.get_values_for_type(x509.DNSName)) == {
            "localhost",
            "scheduler.example.org",
        }
        assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {
            "127.0.0.1",
            "10.0.0.5",
        }
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        # Every node both listens and connects.
        assert usages == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        ssl.create_default_context().load_cert_chain(certs / f"{role}.pem", certs / f"{role}.key")
    for key in certs.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert make_security(certs / "ca.pem", certs / "client.pem", certs / "client.key")


def test_make_certs_reuses_an_existing_ca_and_reissues_the_role_certificates(
    certs: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "certs"
    shutil.copytree(certs, directory)
    result = run_script(MAKE_CERTS, str(directory), "worker-7.example.org")
    assert result.returncode == 0, result.stderr
    assert "reusing the CA" in result.stdout
    assert (directory / "ca.pem").read_bytes() == (certs / "ca.pem").read_bytes()
    assert (directory / "worker.pem").read_bytes() != (certs / "worker.pem").read_bytes()
    assert "DNS:worker-7.example.org" in result.stdout


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        ((), 2, r"usage: make-certs\.sh \[-d DAYS\] OUT_DIR"),
        (("-d", "0", "{dir}"), 1, r"-d must be a positive number of days, got '0'"),
        (("{dir}", "bad;name"), 1, r"'bad;name' is neither an IP address nor a DNS name"),
    ],
)
def test_make_certs_refuses_bad_arguments_and_writes_nothing(
    args: tuple[str, ...], exit_code: int, message: str, tmp_path: Path
) -> None:
    target = tmp_path / "certs"
    result = run_script(MAKE_CERTS, *(arg.format(dir=target) for arg in args))
    assert result.returncode == exit_code
    assert re.search(message, result.stderr), result.stderr
    assert not target.exists()


# ------------------------------------------------------------------- launch scripts, dry run
@pytest.fixture
def fake_dask(tmp_path: Path) -> Path:
    """A stand-in for the dask command: prints whether encryption is required, then its args."""
    path = tmp_path / "dask"
    path.write_text(
        '#!/bin/sh\necho "require-encryption=${DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION:-}"\n'
        'printf "%s\\n" "$@"\n'
    )
    path.chmod(0o755)
    return path


TLS_SCHEDULER = ["--protocol", "tls", "--tls-ca-file", "{tls}/ca.pem"]
LAUNCH_CASES = {
    "scheduler-default-is-loopback-tcp": (
        "start-scheduler.sh", {}, [], 0,
        ["scheduler", "--host", "127.0.0.1", "--port", "8786", "--dashboard-address",
         "127.0.0.1:8787"],
        r"--scheduler tcp://127\.0\.0\.1:8786$",
    ),
    "scheduler-tls-from-directory": (
        "start-scheduler.sh",
        {"DSOFTMAX_TLS_DIR": "{tls}", "DSOFTMAX_SCHEDULER_HOST": "10.0.0.5"},
        ["--idle-timeout", "1h"], 0,
        ["--host", "10.0.0.5", *TLS_SCHEDULER, "--tls-cert", "{tls}/scheduler.pem",
         "--tls-key", "{tls}/scheduler.key", "--idle-timeout", "1h"],
        r"--scheduler tls://10\.0\.0\.5:8786 --tls-ca-file {tls}/ca\.pem "
        r"--tls-cert {tls}/client\.pem --tls-key {tls}/client\.key",
    ),
    "scheduler-refuses-plain-tcp-on-the-network": (
        "start-scheduler.sh", {"DSOFTMAX_SCHEDULER_HOST": "0.0.0.0"}, [], 1, None,
        r"refusing to listen on plain tcp://0\.0\.0\.0:8786: anyone who reaches it can run code",
    ),
    "scheduler-plain-tcp-when-allowed": (
        "start-scheduler.sh",
        {"DSOFTMAX_SCHEDULER_HOST": "10.0.0.5", "DSOFTMAX_ALLOW_PLAIN_TCP": "1"}, [], 0,
        ["--host", "10.0.0.5"],
        r"warning: plain tcp:// on 10\.0\.0\.5: unencrypted and unauthenticated",
    ),
    "scheduler-missing-key": (
        "start-scheduler.sh", {"DSOFTMAX_TLS_DIR": "{tls}", "DSOFTMAX_TLS_KEY": "{tls}/none.key"},
        [], 1, None, r"TLS key '{tls}/none\.key' is not a readable file",
    ),
    "worker-tls-completes-the-address": (
        "start-worker.sh", {"DSOFTMAX_TLS_DIR": "{tls}", "DSOFTMAX_WORKER_HOST": "10.0.1.7"},
        ["10.0.0.5:8786", "--name", "w1"], 0,
        ["worker", "tls://10.0.0.5:8786", "--nworkers", "-1", "--nthreads", "1",
         "--memory-limit", "auto", "--host", "10.0.1.7", "--tls-ca-file", "{tls}/ca.pem",
         "--tls-cert", "{tls}/worker.pem", "--tls-key", "{tls}/worker.key", "--name", "w1"],
        None,
    ),
    "worker-settings-from-environment": (
        "start-worker.sh",
        {"DSOFTMAX_SCHEDULER_ADDRESS": "tcp://127.0.0.1:8786", "DSOFTMAX_NWORKERS": "2",
         "DSOFTMAX_MEMORY_LIMIT": "3GiB", "DSOFTMAX_LOCAL_DIRECTORY": "/scratch"},
        [], 0,
        ["worker", "tcp://127.0.0.1:8786", "--nworkers", "2", "--nthreads", "1",
         "--memory-limit", "3GiB", "--local-directory", "/scratch"],
        None,
    ),
    "worker-tls-files-with-a-tcp-address": (
        "start-worker.sh", {"DSOFTMAX_TLS_DIR": "{tls}"}, ["tcp://10.0.0.5:8786"], 1, None,
        r"TLS files are set but the scheduler address is tcp://10\.0\.0\.5:8786; "
        r"use tls://10\.0\.0\.5:8786",
    ),
    "worker-tls-address-without-files": (
        "start-worker.sh", {}, ["tls://10.0.0.5:8786"], 1, None,
        r"tls://10\.0\.0\.5:8786 needs TLS files: set DSOFTMAX_TLS_DIR",
    ),
    "worker-refuses-a-remote-plain-tcp-scheduler": (
        "start-worker.sh", {}, ["10.0.0.5:8786"], 1, None,
        r"refusing to join plain tcp://10\.0\.0\.5:8786",
    ),
    "worker-needs-an-address": (
        "start-worker.sh", {}, [], 1, None, r"no scheduler address: pass it first",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", LAUNCH_CASES)
def test_launch_script_builds_the_dask_command_or_refuses(
    case: str, certs: Path, fake_dask: Path
) -> None:
    script, env, args, exit_code, expected_args, message = LAUNCH_CASES[case]
    tls = str(certs)
    env = {name: value.format(tls=tls) for name, value in env.items()}
    result = run_script(HOSTS / script, *args, env={"DASK": str(fake_dask), **env})
    assert result.returncode == exit_code, result.stderr
    if message is not None:
        assert re.search(message.format(tls=re.escape(tls)), result.stderr, re.M), result.stderr
    if expected_args is None:
        return
    lines = result.stdout.splitlines()
    with_tls = "DSOFTMAX_TLS_DIR" in env
    assert lines[0] == f"require-encryption={'True' if with_tls else ''}"
    expected = [arg.format(tls=tls) for arg in expected_args]
    command = lines[1:]
    # The expected arguments appear in this order (a contiguous run where they start the line).
    position = 0
    for arg in expected:
        assert arg in command[position:], (arg, command)
        position = command.index(arg, position) + 1
    if expected[0] in ("scheduler", "worker"):
        assert command[: len(expected)] == expected


@pytest.mark.parametrize(("given", "expected"), [(None, "0"), ("1", "1")])
def test_worker_script_starts_workers_without_numpys_huge_pages_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str | None, expected: str
) -> None:
    dask_command = tmp_path / "dask"
    dask_command.write_text('#!/bin/sh\necho "huge-pages=${NUMPY_MADVISE_HUGEPAGE-unset}"\n')
    dask_command.chmod(0o755)
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    env = {"DASK": str(dask_command)}
    if given is not None:
        env["NUMPY_MADVISE_HUGEPAGE"] = given
    result = run_script(HOSTS / "start-worker.sh", "tcp://127.0.0.1:8786", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"huge-pages={expected}"]


# ------------------------------------------------------------------------------ Dockerfile
def test_dockerfile_installs_dsoftmax_with_s3_on_python_311_slim_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions(DOCKERFILE)
    assert instructions[0] == ("FROM", "python:3.11-slim")
    arguments = dict(
        arg.split("=", 1) for kind, arg in instructions if kind == "ARG" and "=" in arg
    )
    assert arguments["EXTRAS"] == "s3"
    runs = " ".join(arg for kind, arg in instructions if kind == "RUN")
    (source_dir,) = [dest for sources, dest in dockerfile_copies() if "pyproject.toml" in sources]
    assert f'python -m pip install "{source_dir.rstrip("/")}[${{EXTRAS}}]"' in runs
    # Helm charts call dask-scheduler / dask-worker, which recent distributed does not install.
    for command in ("dask-scheduler", "dask-worker"):
        assert f">/usr/local/bin/{command}" in runs
    users = [arg for kind, arg in instructions if kind == "USER"]
    assert users and users[-1] not in {"root", "0"}, users
    assert f'--uid "${{DSOFTMAX_UID}}" --gid {users[-1]}' in runs
    assert ("EXPOSE", "8786 8787") in instructions
    assert instructions[-1][0] in {"CMD", "ENTRYPOINT"}


def dockerfile_copies() -> list[tuple[list[str], str]]:
    copies = []
    for kind, arguments in dockerfile_instructions(DOCKERFILE):
        if kind == "COPY":
            parts = [part for part in arguments.split() if not part.startswith("--")]
            copies.append((parts[:-1], parts[-1]))
    return copies


def test_dockerfile_copies_files_that_exist_and_that_the_build_context_sends() -> None:
    ignore = DOCKERFILE.with_name("Dockerfile.dockerignore")
    copied = [source for sources, _ in dockerfile_copies() for source in sources]
    assert {"pyproject.toml", "README.md", "dsoftmax"} <= set(copied)
    for source in copied:
        assert (REPO / source).exists(), source
        assert not docker_context_excludes(source, ignore), source
    assert not docker_context_excludes("dsoftmax/cli.py", ignore)
    for secret in ("cluster/docker/certs/ca.key", ".venv/bin/python", "train.zarr/zarr.json"):
        assert docker_context_excludes(secret, ignore), secret
    assert docker_context_excludes("dsoftmax/__pycache__/cli.cpython-311.pyc", ignore)


def image_commands() -> set[str]:
    """Commands the image puts on its PATH besides Python's: the launch scripts."""
    installed = set()
    for sources, destination in dockerfile_copies():
        if destination.rstrip("/") == "/usr/local/bin":
            installed |= {Path(source).name for source in sources}
    return installed


def test_image_installs_both_launch_scripts() -> None:
    assert image_commands() == {"start-scheduler.sh", "start-worker.sh"}


# ------------------------------------------------------------------------------ compose.yaml
@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE)


def compose_environment(service: Mapping) -> dict[str, Any]:
    environment = service.get("environment", {})
    assert isinstance(environment, dict)
    return environment


def test_compose_builds_one_image_for_a_scheduler_workers_and_a_client(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"scheduler", "worker", "client"}
    build = services["scheduler"]["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == REPO
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    images = {service["image"] for service in services.values()}
    assert len(images) == 1, images
    for name in ("worker", "client"):
        # They run the image the scheduler service builds; never a registry's namesake.
        assert services[name]["pull_policy"] == "never"
        assert services[name]["depends_on"]["scheduler"]["condition"] == "service_healthy"
    replicas = services["worker"]["deploy"]["replicas"]
    assert isinstance(replicas, int) and replicas >= 2
    assert services["client"]["profiles"] == ["client"]


def test_compose_services_run_the_launch_scripts_with_matching_addresses(compose: dict) -> None:
    services = compose["services"]
    scheduler_env = compose_environment(services["scheduler"])
    port = scheduler_env["DSOFTMAX_SCHEDULER_PORT"]
    assert services["scheduler"]["command"] == ["start-scheduler.sh"]
    assert services["worker"]["command"] == ["start-worker.sh", f"tls://scheduler:{port}"]
    assert {services[name]["command"][0] for name in ("scheduler", "worker")} <= image_commands()
    assert script_variables(HOSTS / "start-scheduler.sh") >= {
        name for name in scheduler_env if name.startswith("DSOFTMAX_")
    }
    worker_env = compose_environment(services["worker"])
    assert script_variables(HOSTS / "start-worker.sh") >= {
        name for name in worker_env if name.startswith("DSOFTMAX_")
    }
    # Published on the host's loopback only; the dashboard port is the one the health check asks.
    dashboard_port = scheduler_env["DSOFTMAX_DASHBOARD_ADDRESS"].rsplit(":", 1)[1]
    assert services["scheduler"]["ports"] == [
        f"127.0.0.1:{port}:{port}",
        f"127.0.0.1:{dashboard_port}:{dashboard_port}",
    ]
    health = " ".join(services["scheduler"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{dashboard_port}/health" in health


def test_compose_mounts_the_ca_and_each_services_own_key_only(compose: dict, certs: Path) -> None:
    services = compose["services"]
    made_by_make_certs = {path.name for path in certs.iterdir()}
    for name, role in (("scheduler", "scheduler"), ("worker", "worker"), ("client", "client")):
        mounts = [volume.split(":") for volume in services[name]["volumes"]]
        tls_mounts = {target: (source, mode) for source, target, *mode in mounts if "tls" in target}
        assert set(tls_mounts) == {
            f"{TLS_MOUNT}/{file}" for file in ("ca.pem", f"{role}.pem", f"{role}.key")
        }
        for target, (source, mode) in tls_mounts.items():
            assert mode == ["ro"], (name, target)
            assert source == f"./certs/{Path(target).name}"
            assert Path(source).name in made_by_make_certs
    assert not any("ca.key" in volume for s in services.values() for volume in s["volumes"])
    for name in ("scheduler", "worker"):
        assert compose_environment(services[name])["DSOFTMAX_TLS_DIR"] == TLS_MOUNT
    client_env = compose_environment(services["client"])
    assert dask_env_keys(list(client_env)) == []
    assert client_env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
    assert client_env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"] == f"{TLS_MOUNT}/client.key"
    assert (COMPOSE.parent / ".gitignore").read_text().splitlines()[-1] == "certs/"


def test_compose_workers_share_the_data_volume_and_fit_their_memory(compose: dict) -> None:
    services = compose["services"]
    assert "data" in compose["volumes"]
    for name in ("worker", "client"):
        assert "data:/data" in services[name]["volumes"]
    worker = services["worker"]
    dask_limit = parse_bytes(compose_environment(worker)["DSOFTMAX_MEMORY_LIMIT"])
    container_limit = bytes_of_quantity(worker["deploy"]["resources"]["limits"]["memory"])
    assert dask_limit < container_limit
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        # Passed through from the shell (a null value), never written into the file.
        assert compose_environment(worker)[variable] is None


def test_docker_compose_accepts_the_file_when_it_is_installed() -> None:
    docker = shutil.which("docker")
    probe = (
        subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if docker
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("docker compose is not installed")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------ Kubernetes
@pytest.fixture(scope="module")
def daskcluster() -> dict:
    return load_yaml(DASKCLUSTER)


def only_container(pod_spec: Mapping) -> dict:
    (container,) = pod_spec["containers"]
    return container


def secret_mounts(pod_spec: Mapping, container: Mapping) -> dict[str, str]:
    """``{mount path: secret name}`` of a pod's secret volumes mounted in the container."""
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod_spec["volumes"] if "secret" in v}
    return {
        mount["mountPath"]: secrets[mount["name"]]
        for mount in container["volumeMounts"]
        if mount["name"] in secrets and mount.get("readOnly")
    }


def scheduler_service_address(daskcluster: Mapping) -> str:
    """The address the operator gives the scheduler: service ``<name>-scheduler``."""
    (port,) = [
        p["port"] for p in daskcluster["spec"]["scheduler"]["service"]["ports"]
        if p["name"] == "tcp-comm"
    ]  # fmt: skip
    return f"tls://{daskcluster['metadata']['name']}-scheduler:{port}"


def test_daskcluster_is_an_operator_resource_with_images_and_resources(daskcluster: dict) -> None:
    assert daskcluster["apiVersion"] == "kubernetes.dask.org/v1"
    assert daskcluster["kind"] == "DaskCluster"
    spec = daskcluster["spec"]
    assert isinstance(spec["worker"]["replicas"], int) and spec["worker"]["replicas"] >= 1
    containers = [only_container(spec[role]["spec"]) for role in ("scheduler", "worker")]
    images = {container["image"] for container in containers}
    assert len(images) == 1 and not images.pop().endswith(":latest")
    for container in containers:
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[kind]), (container["name"], kind)
        assert container["args"][0] in image_commands()
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    for role in ("scheduler", "worker"):
        pod = spec[role]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's default user


def test_daskcluster_workers_reach_the_scheduler_service_over_tls(daskcluster: dict) -> None:
    spec = daskcluster["spec"]
    scheduler, worker = (only_container(spec[role]["spec"]) for role in ("scheduler", "worker"))
    worker_args = worker["args"]
    assert worker_args[:2] == ["start-worker.sh", scheduler_service_address(daskcluster)]
    assert worker_args[worker_args.index("--name") + 1] == "$(DASK_WORKER_NAME)"
    service = spec["scheduler"]["service"]
    assert service["type"] == "ClusterIP"
    assert service["selector"] == {
        "dask.org/cluster-name": daskcluster["metadata"]["name"],
        "dask.org/component": "scheduler",
    }
    container_ports = {port["name"]: port["containerPort"] for port in scheduler["ports"]}
    # The operator finds the dashboard (and its HTTP API) by the port name http-dashboard.
    assert {port["targetPort"] for port in service["ports"]} == set(container_ports)
    assert set(container_ports) == {"tcp-comm", "http-dashboard"}
    env = env_list(scheduler)
    assert int(env["DSOFTMAX_SCHEDULER_PORT"]) == container_ports["tcp-comm"]
    assert (
        int(env["DSOFTMAX_DASHBOARD_ADDRESS"].rsplit(":")[1]) == container_ports["http-dashboard"]
    )
    for probe in ("readinessProbe", "livenessProbe"):
        assert scheduler[probe]["httpGet"] == {"port": "http-dashboard", "path": "/health"}
    for role, container in (("scheduler", scheduler), ("worker", worker)):
        env = env_list(container)
        assert secret_mounts(spec[role]["spec"], container) == {
            env["DSOFTMAX_TLS_DIR"]: f"dsoftmax-tls-{role}"
        }
        assert script_variables(HOSTS / container["args"][0]) >= {
            name for name in env if name.startswith("DSOFTMAX_")
        }
    worker_env = env_list(worker)
    assert parse_bytes(worker_env["DSOFTMAX_MEMORY_LIMIT"]) < bytes_of_quantity(
        worker["resources"]["limits"]["memory"]
    )
    assert worker_env["DSOFTMAX_NTHREADS"] == "1"


def test_train_job_runs_a_valid_dsoftmax_train_against_the_daskcluster(
    daskcluster: dict,
) -> None:
    job = load_yaml(TRAIN_JOB)
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    pod = job["spec"]["template"]["spec"]
    container = only_container(pod)
    worker_image = only_container(daskcluster["spec"]["worker"]["spec"])["image"]
    assert container["image"] == worker_image
    assert container["args"][0] == "dsoftmax"
    args = build_parser().parse_args(container["args"][1:])  # the real command line parser
    assert args.command == "train"
    assert args.scheduler == scheduler_service_address(daskcluster)
    (mount_path,) = secret_mounts(pod, container)
    assert secret_mounts(pod, container)[mount_path] == "dsoftmax-tls-client"
    assert (args.tls_ca_file, args.tls_cert, args.tls_key) == tuple(
        f"{mount_path}/{name}" for name in ("ca.pem", "client.pem", "client.key")
    )
    assert args.data.startswith("s3://") and args.model.startswith("s3://")


@pytest.fixture(scope="module")
def helm_values() -> dict:
    return load_yaml(HELM_VALUES)


def test_helm_values_run_the_dsoftmax_image_with_tls_and_without_jupyter(
    helm_values: dict, certs: Path
) -> None:
    scheduler, worker = helm_values["scheduler"], helm_values["worker"]
    assert scheduler["image"] == {key: worker["image"][key] for key in scheduler["image"]}
    assert scheduler["image"]["tag"] != "latest"
    assert worker["image"]["dask_worker"] == "dask-worker"  # the image provides it
    assert helm_values["jupyter"]["enabled"] is False
    assert scheduler["serviceType"] == "ClusterIP"
    assert worker["custom_scheduler_url"] == (
        f"tls://{helm_values['fullnameOverride']}-scheduler:{scheduler['servicePort']}"
    )
    assert isinstance(worker["replicas"], int) and worker["replicas"] >= 1
    # The chart passes --nthreads and --memory-limit only when limits are set.
    assert {"cpu", "memory"} <= set(worker["resources"]["limits"])
    assert worker["threads_per_worker"] == 1
    for role in ("scheduler", "worker"):
        env = {item["name"]: item for item in helm_values[role]["env"]}
        assert dask_env_keys(list(env)) == []
        assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"]["value"] == "True"
        for item in env.values():
            reference = item.get("valueFrom", {}).get("secretKeyRef")
            if reference and reference["name"].startswith("dsoftmax-tls-"):
                assert reference["name"] == f"dsoftmax-tls-{role}"
                assert reference["key"] in {path.name for path in certs.iterdir()} - {"ca.key"}


# ----------------------------------------------------------------------------- dask-tls.yaml
def dask_tls_config(certs: Path) -> dict[str, Any]:
    """dask-tls.yaml's settings with its paths moved to ``certs``, as dotted keys for
    ``dask.config.set`` (a nested dict there would replace all of ``distributed``)."""
    text = DASK_TLS.read_text().replace(f"{TLS_MOUNT}/", f"{certs}/")
    return flatten(yaml.safe_load(text))


def flatten(config: Mapping, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def test_dask_tls_config_is_valid_and_requires_mutual_tls_for_every_role(certs: Path) -> None:
    config = load_yaml(DASK_TLS)
    jsonschema = pytest.importorskip("jsonschema")
    schema_path = Path(sys.modules["distributed"].__file__).with_name("distributed-schema.yaml")
    jsonschema.validate(config, yaml.safe_load(schema_path.read_text()))
    assert unknown_dask_keys(config) == []
    tls = config["distributed"]["comm"]["tls"]
    assert config["distributed"]["comm"]["require-encryption"] is True
    assert tls["ca-file"] == f"{TLS_MOUNT}/ca.pem"
    for role in ROLES:
        assert tls[role] == {"cert": f"{TLS_MOUNT}/{role}.pem", "key": f"{TLS_MOUNT}/{role}.key"}
    with dask.config.set(dask_tls_config(certs)):
        security = Security()
    assert security.require_encryption
    for role in ROLES:
        context = security.get_connection_args(role)["ssl_context"]
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.minimum_version == ssl.TLSVersion.TLSv1_3


# ----------------------------------------------------- manifests run as local processes
def secret_directory(certs: Path, role: str, directory: Path) -> Path:
    """What a pod sees of ``kubectl create secret generic dsoftmax-tls-<role> --from-file ...``."""
    directory.mkdir(parents=True)
    for name in ("ca.pem", f"{role}.pem", f"{role}.key"):
        shutil.copy2(certs / name, directory / name)
    return directory


@contextlib.contextmanager
def local_processes(log_dir: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start processes in sessions of their own; kill every one of them at the end."""
    started: list[subprocess.Popen] = []

    def start(name: str, command: list[str], env: Mapping[str, str]) -> subprocess.Popen:
        scratch = {"DASK_TEMPORARY_DIRECTORY": str(log_dir / "scratch")}
        with (log_dir / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **scratch, **env},
                start_new_session=True,
            )
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def logs(log_dir: Path) -> str:
    return "\n".join(
        f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
        for path in sorted(log_dir.glob("*.log"))
    )


def wait_for_scheduler_file(path: Path, scheduler: subprocess.Popen, log_dir: Path) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        assert scheduler.poll() is None, logs(log_dir)
        with contextlib.suppress(OSError, ValueError):
            address = json.loads(path.read_text()).get("address")
            if address:
                return address
        time.sleep(0.1)
    raise TimeoutError(f"no scheduler address in {path}\n{logs(log_dir)}")


def dask_executable() -> str:
    executable = Path(sys.executable).with_name("dask")
    if not executable.exists():
        pytest.skip("the dask command is not installed next to this Python")
    return str(executable)


def wait_for_one_worker(client: Any, log_dir: Path) -> tuple[str, dict]:
    """The address and scheduler's record of the one worker, once it has registered."""
    try:
        client.wait_for_workers(1, timeout=STARTUP_TIMEOUT)
    except TimeoutError:
        pytest.fail(f"no worker registered\n{logs(log_dir)}")
    ((address, worker),) = client.scheduler_info(n_workers=-1)["workers"].items()
    return address, worker


@pytest.mark.cluster
def test_daskcluster_containers_form_a_tls_cluster_as_local_processes(
    daskcluster: dict, certs: Path, tmp_path: Path
) -> None:
    """The pods' arguments and environment, with the TLS secrets as directories and the
    addresses moved to 127.0.0.1; a client configured by dask-tls.yaml alone connects."""
    spec = daskcluster["spec"]
    scheduler, worker = (only_container(spec[role]["spec"]) for role in ("scheduler", "worker"))
    dask_command = dask_executable()
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_env = {
        **env_list(scheduler),
        # Loopback and free ports instead of the pod's own network.
        "DSOFTMAX_SCHEDULER_HOST": "127.0.0.1",
        "DSOFTMAX_SCHEDULER_PORT": "0",
        "DSOFTMAX_DASHBOARD_ADDRESS": "127.0.0.1:0",
        "DSOFTMAX_TLS_DIR": str(secret_directory(certs, "scheduler", tmp_path / "scheduler-tls")),
        "DASK": dask_command,
    }
    worker_name = f"{daskcluster['metadata']['name']}-default-worker-0123456789"
    worker_env = {
        **env_list(worker),
        "DSOFTMAX_TLS_DIR": str(secret_directory(certs, "worker", tmp_path / "worker-tls")),
        "DASK_WORKER_NAME": worker_name,  # set by the operator
        "DASK": dask_command,
    }
    with local_processes(tmp_path) as start:
        scheduler_process = start(
            "scheduler",
            ["bash", str(HOSTS / scheduler["args"][0]), *scheduler["args"][1:],
             "--scheduler-file", str(scheduler_file)],
            scheduler_env,
        )  # fmt: skip
        address = wait_for_scheduler_file(scheduler_file, scheduler_process, tmp_path)
        assert address.startswith("tls://127.0.0.1:")
        worker_args = [
            {
                scheduler_service_address(daskcluster): address,
                "$(DASK_WORKER_NAME)": worker_name,
                ":8788": "127.0.0.1:0",
            }.get(arg, arg)
            for arg in worker["args"]
        ]
        start("worker", ["bash", str(HOSTS / worker_args[0]), *worker_args[1:]], worker_env)

        with dask.config.set(dask_tls_config(certs)):
            # No scheme: the configuration's require-encryption makes it tls://.
            client = get_client(address.removeprefix("tls://"), timeout=STARTUP_TIMEOUT)
        try:
            assert client.scheduler.address == address
            worker_address, info = wait_for_one_worker(client, tmp_path)
            assert worker_address.startswith("tls://127.0.0.1:")
            assert info["name"] == worker_name
            assert info["nthreads"] == 1
            assert info["memory_limit"] == parse_bytes(worker_env["DSOFTMAX_MEMORY_LIMIT"])
            assert client.submit(operator.add, 1, 2).result() == 3
        finally:
            client.close()


def helm_env(items: list[dict], secrets: Mapping[str, Path]) -> dict[str, str]:
    """A container's environment as Kubernetes fills it from the values' ``env`` list."""
    env = {}
    for item in items:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        reference = item["valueFrom"]["secretKeyRef"]
        secret = secrets.get(reference["name"])
        if secret is None:
            assert reference.get("optional"), f"secret {reference['name']} is required"
            continue
        env[item["name"]] = (secret / reference["key"]).read_text()
    return env


@pytest.mark.cluster
def test_helm_values_tls_through_the_environment_forms_a_tls_cluster(
    helm_values: dict, certs: Path, tmp_path: Path
) -> None:
    """The chart's scheduler and worker command lines with the values' environment: PEM text
    from the secrets in Dask's variables, no file mounted."""
    secrets = {
        f"dsoftmax-tls-{role}": secret_directory(certs, role, tmp_path / role)
        for role in ("scheduler", "worker")
    }
    scheduler, worker = helm_values["scheduler"], helm_values["worker"]
    dask_command = dask_executable()
    scheduler_file = tmp_path / "scheduler.json"
    with local_processes(tmp_path) as start:
        # The chart runs `dask-scheduler --port=8786 --dashboard-address=:8787 <extraArgs>`.
        scheduler_process = start(
            "scheduler",
            [dask_command, "scheduler", "--port=0", "--dashboard-address=127.0.0.1:0",
             "--host", "127.0.0.1", "--scheduler-file", str(scheduler_file),
             *scheduler["extraArgs"]],
            helm_env(scheduler["env"], secrets),
        )  # fmt: skip
        address = wait_for_scheduler_file(scheduler_file, scheduler_process, tmp_path)
        assert address.startswith("tls://127.0.0.1:")
        # ... and `<dask_worker> <custom_scheduler_url> --nthreads T --memory-limit M
        # --no-dashboard --dashboard-address P <extraArgs>`.
        limits = worker["resources"]["limits"]
        scheme, _ = worker["custom_scheduler_url"].split("://")
        assert scheme == "tls"
        start(
            "worker",
            [dask_command, "worker", f"{scheme}://{address.split('://')[1]}",
             "--nthreads", str(worker["threads_per_worker"]),
             "--memory-limit", str(limits["memory"]), "--no-dashboard", *worker["extraArgs"]],
            helm_env(worker["env"], secrets),
        )  # fmt: skip
        security = make_security(*(certs / name for name in ("ca.pem", "client.pem", "client.key")))
        client = get_client(address, security=security, timeout=STARTUP_TIMEOUT)
        try:
            worker_address, info = wait_for_one_worker(client, tmp_path)
            assert worker_address.startswith("tls://127.0.0.1:")
            assert info["nthreads"] == 1
            # The values' --memory-limit comes after the chart's and wins.
            extra = worker["extraArgs"]
            assert info["memory_limit"] == parse_bytes(extra[extra.index("--memory-limit") + 1])
            assert info["memory_limit"] < parse_bytes(limits["memory"])
            assert client.submit(operator.add, 1, 2).result() == 3
        finally:
            client.close()


# ------------------------------------------------------------------------------ SLURM
@pytest.fixture(scope="module")
def slurm_example(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The example, byte-compiled (py_compile) and imported without writing into the tree."""
    compiled = tmp_path_factory.mktemp("pyc") / "slurm_cluster.pyc"
    py_compile.compile(str(SLURM_EXAMPLE), cfile=str(compiled), doraise=True)
    spec = importlib.util.spec_from_file_location("dsoftmax_slurm_example", SLURM_EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    writes_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writes_bytecode
    return module


def test_slurm_example_asks_for_one_single_threaded_worker_per_core_with_tls(
    slurm_example: ModuleType, certs: Path
) -> None:
    args = slurm_example.parse_args(
        ["/shared/train.zarr", "--model", "/shared/m1", "--cores", "16", "--memory", "64GiB",
         "--queue", "compute", "--tls-dir", str(certs)]
    )  # fmt: skip
    options = slurm_example.cluster_options(args)
    assert options["cores"] == options["processes"] == 16
    assert (options["memory"], options["queue"]) == ("64GiB", "compute")
    assert "account" not in options and "interface" not in options  # not given: SLURM's defaults
    assert options["scheduler_options"]["dashboard_address"].startswith("127.0.0.1:")
    security = options["security"]
    assert security.require_encryption
    assert security.get_tls_config_for_role("worker") == {
        "ca_file": str(certs / "ca.pem"),
        "cert": str(certs / "worker.pem"),
        "key": str(certs / "worker.key"),
        "ciphers": None,
    }
    assert security.get_connection_args("client")["ssl_context"] is not None


def test_slurm_example_makes_per_run_credentials_in_a_private_directory_by_default(
    slurm_example: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "jobqueue-tls"
    monkeypatch.setattr(slurm_example, "RUN_CREDENTIALS_DIR", directory)
    options = slurm_example.cluster_options(slurm_example.parse_args(["d.zarr", "--model", "m"]))
    assert options["security"] is True
    assert options["shared_temp_directory"] == str(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_slurm_example_names_missing_certificates(
    slurm_example: ModuleType, tmp_path: Path
) -> None:
    args = slurm_example.parse_args(["d.zarr", "--model", "m", "--tls-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"missing .*ca\.pem.*make them with cluster/tls/make"):
        slurm_example.cluster_options(args)


def test_slurm_example_without_dask_jobqueue_says_how_to_install_it(
    slurm_example: ModuleType, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a machine without it: a None entry makes `import dask_jobqueue` fail.
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    assert slurm_example.main(["d.zarr", "--model", "m"]) == 1
    assert "pip install dask-jobqueue" in capsys.readouterr().err


def test_slurm_example_job_script_starts_tls_workers(
    slurm_example: ModuleType, certs: Path
) -> None:
    import dask_jobqueue as jobqueue  # in the test extra
    args = slurm_example.parse_args(
        ["d.zarr", "--model", "m", "--cores", "4", "--memory", "16GiB", "--tls-dir", str(certs)]
    )
    options = slurm_example.cluster_options(args)
    options["scheduler_options"] = {"dashboard_address": "127.0.0.1:0", "host": "127.0.0.1"}
    with jobqueue.SLURMCluster(**options) as cluster:
        script = cluster.job_script()
    assert "--nthreads 1" in script and "--nworkers 4" in script
    prologue = script.index("export NUMPY_MADVISE_HUGEPAGE=0")
    assert prologue < script.index("distributed.cli.dask_worker")
    assert f"--tls-cert {certs / 'worker.pem'}" in script
