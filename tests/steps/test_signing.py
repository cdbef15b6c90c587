"""Signing and verifying versions with model-signing, offline: key pairs for real; the
keyless path up to the point where Sigstore needs the network."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ci_mlops.atomic import sha256_file
from ci_mlops.errors import CheckFailed, PlatformError, UsageError
from ci_mlops.spec.check import load_spec
from ci_mlops.spec.model import Spec
from ci_mlops.steps import signing
from tests.helpers import copy_example, make_key_pair


def version_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "model.joblib": b"the model",
        "model.onnx": b"the onnx model",
        "metrics.json": b'{"metrics": {"accuracy": 0.9}}',
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def signed_version(tmp_path: Path, key: Path) -> Path:
    """Sign three files with ``key``; return the folder holding them and model.sig."""
    signed = signing.sign(
        version_files(tmp_path / "work"),
        tmp_path / "scratch",
        required=True,
        env={"MLOPS_SIGNING_KEY": str(key)},
    )
    assert set(signed) == {"model.joblib", "model.onnx", "metrics.json", "model.sig"}
    return signed["model.sig"].parent


def key_policy(public: Path) -> signing.Policy:
    return signing.Policy("the test", public_key=public.read_text())


def test_a_signed_version_verifies_and_its_bundle_lists_every_file(tmp_path: Path) -> None:
    private, public = make_key_pair(tmp_path / "keys")
    folder = signed_version(tmp_path, private)

    signing.verify(folder, key_policy(public), "m 1.0.0", tmp_path / "v")

    bundle = json.loads((folder / "model.sig").read_text())
    assert bundle["mediaType"].startswith("application/vnd.dev.sigstore.bundle")
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    assert signing.signed_digests(folder / "model.sig") == {
        name: sha256_file(folder / name) for name in ("model.joblib", "model.onnx", "metrics.json")
    }


def test_a_changed_file_is_named_with_both_hashes(tmp_path: Path) -> None:
    private, public = make_key_pair(tmp_path / "keys")
    folder = signed_version(tmp_path, private)
    signed = sha256_file(folder / "model.joblib")
    (folder / "model.joblib").write_bytes(b"EVIL")

    with pytest.raises(CheckFailed) as caught:
        signing.verify(folder, key_policy(public), "m 1.0.0", tmp_path / "v")

    actual = sha256_file(folder / "model.joblib")
    assert str(caught.value) == (
        f"m 1.0.0: {folder / 'model.joblib'}: sha256 {actual} does not match {signed} in model.sig"
    )


def test_an_added_or_missing_file_fails(tmp_path: Path) -> None:
    private, public = make_key_pair(tmp_path / "keys")
    folder = signed_version(tmp_path, private)
    (folder / "backdoor.py").write_text("import os")
    with pytest.raises(CheckFailed, match=r"backdoor.py: not in model.sig"):
        signing.verify(folder, key_policy(public), "m", tmp_path / "v")
    (folder / "backdoor.py").unlink()
    (folder / "model.onnx").unlink()
    with pytest.raises(
        CheckFailed, match=r"model.onnx: missing \(model.sig records sha256 [0-9a-f]{64}\)"
    ):
        signing.verify(folder, key_policy(public), "m", tmp_path / "v")


def test_a_version_signed_with_another_key_is_refused(tmp_path: Path) -> None:
    _, public = make_key_pair(tmp_path / "keys")
    attacker, _ = make_key_pair(tmp_path / "attacker")
    folder = signed_version(tmp_path, attacker)

    with pytest.raises(CheckFailed) as caught:
        signing.verify(folder, key_policy(public), "m 1.0.0", tmp_path / "v")

    assert str(caught.value) == "m 1.0.0: model.sig was not signed by the public key from the test"


def test_an_unsigned_version_is_refused(tmp_path: Path) -> None:
    _, public = make_key_pair(tmp_path / "keys")
    folder = tmp_path / "v1"
    version_files(folder)
    with pytest.raises(CheckFailed, match=r"^m 1.0.0: not signed \(no model.sig\)"):
        signing.verify(folder, key_policy(public), "m 1.0.0", tmp_path / "v")


def test_the_key_may_be_pem_text_and_a_bad_key_is_bad_input(tmp_path: Path) -> None:
    private, public = make_key_pair(tmp_path / "keys")
    signed = signing.sign(
        version_files(tmp_path / "work"),
        tmp_path / "scratch",
        required=True,
        env={"MLOPS_SIGNING_KEY": private.read_text()},
    )
    signing.verify(signed["model.sig"].parent, key_policy(public), "m", tmp_path / "v")
    assert (tmp_path / "scratch" / "signing-key.pem").stat().st_mode & 0o077 == 0

    with pytest.raises(UsageError, match="MLOPS_SIGNING_KEY is not an elliptic-curve private"):
        signing.sign(
            version_files(tmp_path / "w2"),
            tmp_path / "s2",
            required=True,
            env={"MLOPS_SIGNING_KEY": "-----BEGIN PRIVATE KEY-----\nnot a key\n"},
        )
    with pytest.raises(UsageError, match=r"nowhere\.pem: file not found"):
        signing.sign(
            version_files(tmp_path / "w3"),
            tmp_path / "s3",
            required=True,
            env={"MLOPS_SIGNING_KEY": str(tmp_path / "nowhere.pem")},
        )


def test_without_a_key_signing_is_refused_when_required_else_skipped(tmp_path: Path) -> None:
    files = version_files(tmp_path / "work")
    with pytest.raises(UsageError, match="no way to sign this version: set MLOPS_SIGNING_KEY"):
        signing.sign(files, tmp_path / "s", required=True, env={})
    assert signing.sign(files, tmp_path / "s", required=False, env={}) == files


def test_an_unsigned_deploy_does_not_load_the_signing_library(tmp_path: Path) -> None:
    """model_signing brings Sigstore, pydantic and cryptography along: a deploy with
    nothing to sign with must not pay for them (checked in a fresh interpreter)."""
    version_files(tmp_path / "work")
    probe = (
        "import sys; from pathlib import Path; from ci_mlops.steps import signing; "
        "work = Path(sys.argv[1]); "
        "files = {p.name: p for p in work.iterdir()}; "
        "assert signing.sign(files, work.parent / 's', required=False, env={}) == files; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('model_signing', 'sigstore', 'cryptography', 'pydantic')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "work")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.strip() == "[]", out.stdout[:500]


def jwt(claims: dict[str, object]) -> str:
    """An unsigned JWT: sigstore checks its claims offline and its signature never."""

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def gitlab_token(**overrides: object) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "https://gitlab.com",
        "aud": "sigstore",
        "sub": "project_path:acme/churn:ref_type:branch:ref:main",
        "ci_config_ref_uri": "gitlab.com/acme/churn//.gitlab-ci.yml@refs/heads/main",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    return jwt({**claims, **overrides})


def test_keyless_signing_checks_the_token_then_needs_the_network(tmp_path: Path) -> None:
    """What runs here: the token's claims are checked and model-signing's Sigstore
    signer is set up; fetching Sigstore's trust root (TUF), then Fulcio and Rekor, is
    where it needs the network, and that step fails with one line, token-free."""
    token = gitlab_token()
    with pytest.raises(PlatformError) as caught:
        signing.sign(
            version_files(tmp_path / "w"),
            tmp_path / "s",
            required=True,
            env={"SIGSTORE_ID_TOKEN": token},
        )
    message = str(caught.value)
    assert message.startswith("signing with Sigstore failed (")
    assert "needs the network" in message and "MLOPS_SIGNING_KEY" in message
    assert token not in message and "\n" not in message


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "gitlab"}, "malformed or missing claims"),
        ({"exp": int(time.time()) - 60}, "malformed or missing claims"),
    ],
    ids=["wrong-audience", "expired"],
)
def test_an_unusable_oidc_token_is_bad_input(
    tmp_path: Path, claims: dict[str, object], reason: str
) -> None:
    token = gitlab_token(**claims)
    with pytest.raises(UsageError) as caught:
        signing.sign(
            version_files(tmp_path / "w"),
            tmp_path / "s",
            required=True,
            env={"SIGSTORE_ID_TOKEN": token},
        )
    assert str(caught.value).startswith("SIGSTORE_ID_TOKEN is not usable for Sigstore")
    assert token not in str(caught.value)


def test_keyless_verification_needs_sigstores_trust_root(tmp_path: Path) -> None:
    private, _ = make_key_pair(tmp_path / "keys")
    folder = signed_version(tmp_path, private)
    trust = signing.Policy(
        "ci",
        identity="https://gitlab.com/acme/churn//.gitlab-ci.yml@refs/heads/main",
        issuer="https://gitlab.com",
    )
    with pytest.raises(PlatformError, match="keyless verification needs the network once"):
        signing.verify(folder, trust, "m", tmp_path / "v")


@pytest.fixture
def spec(tmp_path: Path) -> Spec:
    return load_spec(copy_example("breast-cancer", tmp_path) / "mlops.yaml")


GITLAB_ENV = {
    "CI_SERVER_URL": "https://gitlab.example.com",
    "CI_PROJECT_PATH": "acme/churn",
    "CI_DEFAULT_BRANCH": "main",
}


def test_in_ci_the_signer_must_be_this_repositorys_default_branch_pipeline(spec: Spec) -> None:
    model = spec.models[0]
    on_gitlab = signing.policy(spec, model, "gitlab", GITLAB_ENV)
    assert on_gitlab == signing.Policy(
        "the gitlab pipeline on the default branch",
        identity="https://gitlab.example.com/acme/churn//.gitlab-ci.yml@refs/heads/main",
        issuer="https://gitlab.example.com",
    )
    on_github = signing.policy(
        spec,
        model,
        "github",
        {"GITHUB_WORKFLOW_REF": "acme/churn/.github/workflows/mlops.yml@refs/pull/7/merge"},
    )
    assert on_github is not None
    assert on_github.identity == (
        "https://github.com/acme/churn/.github/workflows/mlops.yml@refs/heads/main"
    )
    assert on_github.issuer == "https://token.actions.githubusercontent.com"
    assert signing.policy(spec, model, "local", {}) is None
    with pytest.raises(UsageError, match=r"^CI_PROJECT_PATH is not set"):
        signing.policy(spec, model, "gitlab", {**GITLAB_ENV, "CI_PROJECT_PATH": ""})


def test_the_spec_and_the_environment_name_the_signer(tmp_path: Path) -> None:
    folder = copy_example("breast-cancer", tmp_path)
    _, public = make_key_pair(folder / "keys")
    spec_file = folder / "mlops.yaml"
    data = yaml.safe_load(spec_file.read_text())
    data["models"][0]["deploy"] = {"signing": {"public_key": "keys/signing.pub"}}
    spec_file.write_text(yaml.safe_dump(data, sort_keys=False))
    spec = load_spec(spec_file)
    model = spec.models[0]

    by_spec = signing.policy(spec, model, "gitlab", GITLAB_ENV)
    assert by_spec == signing.Policy(
        "deploy.signing.public_key (keys/signing.pub)", public_key=public.read_text()
    )

    data["models"][0]["deploy"] = {"signing": {"identity": "https://ci.example/deployer"}}
    spec_file.write_text(yaml.safe_dump(data, sort_keys=False))
    spec = load_spec(spec_file)
    named = signing.policy(spec, spec.models[0], "gitlab", GITLAB_ENV)
    assert named == signing.Policy(
        "deploy.signing",
        identity="https://ci.example/deployer",
        issuer="https://gitlab.example.com",
    )
    del data["models"][0]["deploy"]
    spec_file.write_text(yaml.safe_dump(data, sort_keys=False))
    spec = load_spec(spec_file)
    for value in (public.read_text(), str(public)):
        by_env = signing.policy(spec, spec.models[0], "local", {"MLOPS_SIGNING_PUBLIC_KEY": value})
        assert by_env is not None and by_env.public_key == public.read_text()


def test_a_missing_public_key_file_is_a_located_spec_error(tmp_path: Path) -> None:
    folder = copy_example("breast-cancer", tmp_path)
    spec_file = folder / "mlops.yaml"
    data = yaml.safe_load(spec_file.read_text())
    data["models"][0]["deploy"] = {"signing": {"public_key": "keys/missing.pub"}}
    spec_file.write_text(yaml.safe_dump(data, sort_keys=False))
    from ci_mlops.errors import SpecError

    with pytest.raises(SpecError) as caught:
        load_spec(spec_file)
    (problem,) = caught.value.problems
    assert problem.path == "$.models[0].deploy.signing.public_key"
    assert problem.message == "file not found: keys/missing.pub"
