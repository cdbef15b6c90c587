"""`ci-mlops image` for real: the packaged Containerfile built by buildah with no
network, pushed (to an OCI layout: no registry is reachable), its digest recorded in
staging's history and run by the manifests; the image, run, answers the protocol's
readiness probe and predicts as the registry version does.

The base is made offline from this machine's Python (see ``tests/serve/buildah.py``); the
install step gets ci-mlops and its serve extra only from ``--wheels``.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import yaml

from tests.helpers import REPO, run_cli
from tests.serve.buildah import Buildah, make_base, wheelhouse
from tests.serve.conftest import call, wait_ready
from tests.steps.trained import clone, invoke, read_json, workdir

NAME = "breast-cancer"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def buildah(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Buildah]:
    tool = Buildah(tmp_path_factory.mktemp("buildah"))
    try:
        yield tool
    finally:
        tool.clean()


def _wait(process: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
    """Until the container answers the readiness probe; its output when it exits first."""
    for _ in range(1200):
        if process.poll() is not None:
            log.seek(0)
            raise AssertionError(f"the container exited {process.returncode}: {log.read()!r}")
        try:
            wait_ready(("127.0.0.1", port), attempts=1)
            return
        except AssertionError:
            time.sleep(0.1)
    raise AssertionError("the container never became ready")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def built(
    exported: Path, buildah: Buildah, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """The example deployed to staging, its image built, pushed to an OCI layout and
    recorded by `ci-mlops image`; the example's folder and the layout."""
    folder = clone(exported, tmp_path_factory.mktemp("image"))
    spec = yaml.safe_load((folder / "mlops.yaml").read_text("utf-8"))
    spec["models"][0].setdefault("deploy", {})["image"] = {"base": make_base(buildah)}
    (folder / "mlops.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")
    assert invoke(folder, "deploy").code == 0
    wheels = wheelhouse(REPO, tmp_path_factory.mktemp("wheels"))
    layout = tmp_path_factory.mktemp("layout") / "oci"
    result = run_cli(
        "image",
        "-e",
        "staging",
        "--wheels",
        wheels,
        "--destination",
        f"oci:{layout}:1.0.0_1",
        cwd=folder,
        env=buildah.env,
        timeout=1800,
    )
    assert result.code == 0, result.output
    return folder, layout


def test_the_image_is_built_offline_recorded_by_digest_and_serves_the_model(
    built: tuple[Path, Path], buildah: Buildah, tmp_path: Path
) -> None:
    folder, layout = built
    ref = f"localhost/{NAME}:1.0.0_1"
    # What was pushed is what staging's history records and the manifests run.
    (pushed,) = json.loads((layout / "index.json").read_text())["manifests"]
    history = json.loads(
        (folder / ".mlops-registry" / NAME / "environments" / "staging.json").read_text()
    )
    recorded = f"localhost/{NAME}@{pushed['digest']}"
    assert history["annotations"]["1.0.0+1"] == {"image": recorded}
    out = tmp_path / "context"
    assert run_cli("package", "--out", out, cwd=folder).code == 0
    deployment, _ = yaml.safe_load_all((out / "manifests" / "deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == recorded

    config = buildah.image_config(ref)
    assert config["User"] == "10001:10001"
    entry = config["Entrypoint"]
    assert entry[:7] == ["python", "-I", "-m", "ci_mlops", "serve", "--folder", "/models"]
    assert "8080/tcp" in config["ExposedPorts"]
    box = buildah("from", ref)
    root = Path(buildah("mount", box))
    # The wheels were bind-mounted for the install step only: no layer holds them (the
    # empty mount point may stay).
    assert list(root.glob("tmp/**/*.whl")) == []
    assert (root / "models" / "model.onnx").read_bytes() == (out / "models/model.onnx").read_bytes()
    buildah("unmount", box)

    # The image's own entry point, with the address moved to a free loopback port: the
    # test may listen on 127.0.0.1 only.
    port = free_port()
    command = [*entry[:-4], "--host", "127.0.0.1", "--port", str(port)]
    with (tmp_path / "run.log").open("w+b") as log:
        process = buildah.popen("run", "--network", "host", box, "--", *command, log=log)
        try:
            _wait(process, port, log)
            row = read_json(workdir(folder) / "export.json")["replay"]["inputs"][0]
            body = {
                "inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": row}]
            }
            status, answer = call(("127.0.0.1", port), "POST", f"/v2/models/{NAME}/infer", body)
            assert status == 200, answer
            assert answer["model_version"] == "1.0.0+1"
            expected = read_json(workdir(folder) / "export.json")["replay"]
            assert answer["outputs"][0]["data"] == expected["labels"][:1]
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        log.seek(0)
        text = log.read().decode(errors="replace")
    assert "packaged; sha256" in text or '"logger"' in text, text
