"""Portability and deployment: the model from Node.js, the Dockerfile, the Kubernetes manifests."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
NODE_EXAMPLE = ROOT / "examples" / "node"
BIN = Path(sys.executable).parent


def final_stage(instructions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last_from = max(index for index, item in enumerate(instructions) if item["instruction"] == "FROM")
    return instructions[last_from:]


@pytest.mark.slow
def test_node_example_reproduces_every_golden_vector_with_onnxruntime_node(model_dir: Path) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed (Debian: apt-get install nodejs npm)"
    env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip", "TABSERVE_MODELS": str(model_dir)}
    if not (NODE_EXAMPLE / "node_modules" / "onnxruntime-node").is_dir():
        install = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_EXAMPLE,
                                 env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert install.returncode == 0, install.stderr
    run = subprocess.run([node, "--test"], cwd=NODE_EXAMPLE, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "# fail 0" in run.stdout
    versions = len(list(model_dir.glob("*/[0-9]*")))
    assert f"# pass {versions + 1}" in run.stdout  # one test per model version, plus "has models"


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([str(BIN / "hadolint"), "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multistage_slim_non_root_with_healthcheck_and_exec_cmd() -> None:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    instructions = parser.structure
    assert sum(item["instruction"] == "FROM" for item in instructions) >= 2
    final = final_stage(instructions)
    assert "slim" in final[0]["value"]
    user = [item["value"] for item in final if item["instruction"] == "USER"]
    assert user and user[-1].split(":")[0].isdigit() and int(user[-1].split(":")[0]) > 0
    healthcheck = next(item["value"] for item in final if item["instruction"] == "HEALTHCHECK")
    # The probe itself is tested against real servers in test_operations (plain, TLS, nothing listening).
    assert json.loads(healthcheck.split("CMD", 1)[1]) == ["python", "-m", "serve.healthcheck"]
    env = " ".join(item["value"] for item in final if item["instruction"] == "ENV")
    assert "SERVE_HOST=0.0.0.0" in env
    cmd = next(item["value"] for item in final if item["instruction"] == "CMD")
    assert json.loads(cmd) == ["python", "-m", "serve"]
    final_text = " ".join(item["value"] for item in final)
    assert "export" not in final_text.replace("--from=exporter", ""), "the final stage installs serving deps only"


def normalized(requirement: str) -> str:
    """A distribution name as pip compares them: lower case, runs of -_. as one -, no extras or versions."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", requirement.strip(), maxsplit=1)[0]).lower()


def pinned(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert all("==" in line for line in lines), "every requirement is pinned"
    return {normalized(line): line.split("==")[1] for line in lines}


def test_image_requirements_pin_every_declared_dependency_and_serving_excludes_training() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    serving = pinned(ROOT / "docker" / "requirements-serve.txt")
    missing = sorted({normalized(dep) for dep in project["dependencies"]} - set(serving))
    assert not missing, f"docker/requirements-serve.txt lacks {missing}: refreeze it (see the Dockerfile)"
    exporting = pinned(ROOT / "docker" / "requirements-export.txt")
    declared = project["dependencies"] + project["optional-dependencies"]["export"]
    missing = sorted({normalized(dep) for dep in declared} - set(exporting))
    assert not missing, f"docker/requirements-export.txt lacks {missing}"
    assert not set(serving) & {"scikit-learn", "skl2onnx", "pandas", "onnx", "locust"}


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "models"} <= ignored


def test_kubernetes_manifests_validate_against_bundled_schemas() -> None:
    files = sorted(str(path) for path in (ROOT / "deploy").glob("*.yaml"))
    result = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", "1.30", *files],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def load_documents() -> dict[str, dict[str, Any]]:
    documents = {}
    for path in (ROOT / "deploy").glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            documents[document["kind"]] = document
    return documents


def test_deployment_probes_resources_and_draining_match_the_server() -> None:
    documents = load_documents()
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert "preStop" in container["lifecycle"]
    env = {item["name"]: item["value"] for item in container["env"]}
    cores_needed = int(env["SERVE_WORKERS"]) * int(env["SERVE_ORT_INTRA_OP_THREADS"])
    assert (
        int(container["resources"]["requests"]["cpu"]) == cores_needed == int(container["resources"]["limits"]["cpu"])
    )
    assert pod["terminationGracePeriodSeconds"] > 10, "longer than the preStop pause"
    hpa = documents["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == documents["Deployment"]["metadata"]["name"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert documents["Service"]["spec"]["selector"] == documents["Deployment"]["spec"]["selector"]["matchLabels"]
    runtime = documents["ServingRuntime"]["spec"]
    assert runtime["protocolVersions"] == ["v2", "grpc-v2"]
    (runtime_container,) = runtime["containers"]
    assert "--grpc-port" in runtime_container["args"], "grpc-v2 is declared, so the runtime must listen for it"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    service_ports = {port["name"]: port["targetPort"] for port in documents["Service"]["spec"]["ports"]}
    assert set(service_ports.values()) == set(ports) == {"http", "grpc"}
    assert documents["InferenceService"]["spec"]["predictor"]["model"]["protocolVersion"] == "v2"


def test_manifests_run_the_image_as_built_same_tag_user_ports_and_a_writable_tmp() -> None:
    """What `make image` builds and the Dockerfile declares is what the pods ask for."""
    final = final_stage(DockerfileParser(path=str(ROOT / "Dockerfile")).structure)
    user, group = (int(part) for part in next(i["value"] for i in final if i["instruction"] == "USER").split(":"))
    exposed = {int(port) for i in final if i["instruction"] == "EXPOSE" for port in i["value"].split()}
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert '"tabserve:$version"' in (ROOT / "scripts" / "image.sh").read_text()  # the tag the manifests name
    documents = load_documents()
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"tabserve:{version}"
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (user, group)
    assert {port["containerPort"] for port in container["ports"]} == exposed
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "a read-only root needs a writable /tmp (workers' metrics)"
    (runtime_container,) = documents["ServingRuntime"]["spec"]["containers"]
    assert runtime_container["image"] == f"tabserve:{version}"


def pod_command(container: dict[str, Any], final: list[dict[str, Any]]) -> list[str]:
    """What a pod runs in `container`, by Kubernetes' rules: `command` replaces the image's ENTRYPOINT and
    drops its CMD; `args` replaces the CMD."""
    declared = {item["instruction"]: json.loads(item["value"]) for item in final
                if item["instruction"] in {"CMD", "ENTRYPOINT"}}  # fmt: skip
    entrypoint = container.get("command", declared.get("ENTRYPOINT", []))
    arguments = container.get("args", declared.get("CMD", []) if "command" not in container else [])
    return [*entrypoint, *arguments]


def test_every_manifest_runs_the_server_with_flags_it_accepts() -> None:
    """A container given only `args` by an image with only a CMD would run its first flag as a program."""
    final = final_stage(DockerfileParser(path=str(ROOT / "Dockerfile")).structure)
    documents = load_documents()
    (deployment,) = documents["Deployment"]["spec"]["template"]["spec"]["containers"]
    (runtime,) = documents["ServingRuntime"]["spec"]["containers"]
    for container in (deployment, runtime):
        command = pod_command(container, final)
        assert command[:3] == ["python", "-m", "serve"], f"{container['name']} would run {command}"
        # --help exits before any value is used, but only once every flag before it has parsed.
        check = subprocess.run([sys.executable, "-m", "serve", *command[3:], "--help"],
                               capture_output=True, text=True, timeout=60, cwd=ROOT)  # fmt: skip
        assert check.returncode == 0, f"{container['name']}: {command[3:]} -> {check.stderr}"


@pytest.mark.slow
def test_the_images_pinned_serving_set_alone_serves_the_models(model_dir: Path, tmp_path: Path) -> None:
    """The Dockerfile's install steps in a fresh virtualenv: requirements-serve.txt, then the project with --no-deps."""
    from loadtest.servers import free_port, server_process

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--requirement", str(ROOT / "docker" / "requirements-serve.txt")], check=True, timeout=600)
    source = tmp_path / "src"  # a copy, so the build leaves nothing in the work tree
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".venv", "models", "node_modules", "build", ".git", "artifacts")
    )
    subprocess.run([*pip, "--no-deps", str(source)], check=True, timeout=600)
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import sklearn"], capture_output=True, timeout=60)
    assert check.returncode != 0, "scikit-learn must not be in the serving image"
    port = free_port()
    command = [str(venv / "bin" / "python"), "-m", "serve", "--model-dir", str(model_dir), "--port", str(port),
               "--grpc-port", str(free_port())]  # fmt: skip
    with server_process(
        command,
        f"http://127.0.0.1:{port}/v2/health/ready",
        {"PATH": os.environ.get("PATH", ""), "SERVE_SHUTDOWN_DRAIN_S": "0"},
        cwd=tmp_path,
    ):
        response = httpx.post(f"http://127.0.0.1:{port}/predict", json={"age": 35})
        assert response.json() == {"predicted_weight": 75.0}
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200, "the playground's files are in the wheel"
