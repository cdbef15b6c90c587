"""Signed model versions: the OpenSSF model-signing format (Sigstore bundles).

Every published version carries ``model.sig``, a Sigstore bundle whose signed in-toto
statement lists the sha256 of each file of the version (the model, ``model.onnx``,
``metrics.json``, ``gates.json``, ``export.json``, ``report.md``). The registry's own
index (``manifest.json``, ``SHA256SUMS``) stays outside the signature: it names files and
hashes for messages, while trust comes only from the bundle.

Signing (on publish):

- ``MLOPS_SIGNING_KEY``: an elliptic-curve private key in PEM (a path, or the PEM text
  itself), ``MLOPS_SIGNING_KEY_PASSWORD`` when it is encrypted. For local runs, tests and
  air-gapped installs; keep it in a variable only default-branch deploys receive.
- else keyless with the CI job's OIDC identity: GitLab's ``SIGSTORE_ID_TOKEN``
  (``id_tokens`` with ``aud: sigstore``), GitHub's ``id-token: write`` token.

Verifying (before every promotion, rollback and ``ci-mlops verify``), first match wins:
``deploy.signing.public_key`` or ``identity``/``issuer`` in the spec;
``MLOPS_SIGNING_PUBLIC_KEY`` or ``MLOPS_SIGNING_IDENTITY``/``MLOPS_SIGNING_ISSUER``; in CI,
keyless with this repository's pipeline on its default branch. On a laptop with none of
these, versions need no signature (their files are still re-hashed).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ci_mlops import log
from ci_mlops.errors import CheckFailed, PlatformError, UsageError
from ci_mlops.records import changed_files
from ci_mlops.spec.model import Model, Spec

SIGNATURE = "model.sig"
# Files of a stored version that the signature does not cover (see the module docstring).
UNSIGNED = (SIGNATURE, "manifest.json", "SHA256SUMS")
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
_PEM = "-----BEGIN"


@dataclass(frozen=True)
class Policy:
    """Who must have signed a version: a public key, or a keyless identity."""

    source: str  # where the policy came from, for messages
    public_key: str | None = None  # PEM text
    identity: str | None = None
    issuer: str | None = None

    def describe(self) -> str:
        if self.public_key is not None:
            return f"the public key from {self.source}"
        return f"{self.identity} (issuer {self.issuer}, from {self.source})"


def policy(
    spec: Spec, model: Model, platform: str, env: Mapping[str, str] | None = None
) -> Policy | None:
    """The verification policy of ``model`` (see the module docstring), or None when a
    laptop has none and versions need no signature."""
    env = os.environ if env is None else env
    signing = model.deploy.signing
    if signing.public_key:
        where = f"deploy.signing.public_key ({signing.public_key})"
        return Policy(where, public_key=_read_pem(spec.root / signing.public_key, where))
    key = env.get("MLOPS_SIGNING_PUBLIC_KEY", "").strip()
    if key:
        return Policy(
            "MLOPS_SIGNING_PUBLIC_KEY", public_key=_pem_value(key, "MLOPS_SIGNING_PUBLIC_KEY")
        )
    identity = signing.identity or env.get("MLOPS_SIGNING_IDENTITY", "").strip()
    issuer = signing.issuer or env.get("MLOPS_SIGNING_ISSUER", "").strip()
    if identity or issuer:
        where = "deploy.signing" if (signing.identity or signing.issuer) else "MLOPS_SIGNING_*"
        derived = ci_identity(platform, spec, env)
        identity = identity or (derived[0] if derived else "")
        issuer = issuer or (derived[1] if derived else "")
        if not (identity and issuer):
            raise UsageError(f"{where}: keyless verification needs both an identity and an issuer")
        return Policy(where, identity=identity, issuer=issuer)
    derived = ci_identity(platform, spec, env)
    if derived is None:
        return None
    return Policy(
        f"the {platform} pipeline on the default branch", identity=derived[0], issuer=derived[1]
    )


def ci_identity(platform: str, spec: Spec, env: Mapping[str, str]) -> tuple[str, str] | None:
    """The certificate identity and OIDC issuer of this repository's pipeline on its
    default branch, as Sigstore's certificate authority writes them; None off CI."""
    if platform == "gitlab":
        server = _need(env, "CI_SERVER_URL").rstrip("/")
        host = urlsplit(server).netloc
        project = _need(env, "CI_PROJECT_PATH")
        branch = _need(env, "CI_DEFAULT_BRANCH")
        config = env.get("CI_CONFIG_PATH") or ".gitlab-ci.yml"
        # GitLab's ci_config_ref_uri claim: <host>/<project>//<config file>@<ref>.
        return f"https://{host}/{project}//{config}@refs/heads/{branch}", server
    if platform == "github":
        server = (env.get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/")
        workflow = _need(env, "GITHUB_WORKFLOW_REF").partition("@")[0]
        branch = spec.runtime.default_branch
        return f"{server}/{workflow}@refs/heads/{branch}", GITHUB_ISSUER
    return None


def _need(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise UsageError(
            f"{name} is not set: it names the identity that signs this model; set "
            "deploy.signing in the spec to verify with a public key or a given identity"
        )
    return value


# -- signing ----------------------------------------------------------------------------


def sign(
    files: dict[str, Path],
    folder: Path,
    required: bool,
    env: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """Copy ``files`` into ``folder``, sign them there and return them with
    ``model.sig``. Without a key or an OIDC token: UsageError when ``required``, else the
    files unsigned and a warning."""
    env = os.environ if env is None else env
    if SIGNATURE in files:
        raise UsageError(f"{SIGNATURE}: ci-mlops writes this file itself")
    config = _signer(env, folder)
    if config is None:
        if required:
            raise UsageError(
                "no way to sign this version: set MLOPS_SIGNING_KEY (a PEM private key) or "
                "run in a CI job with an OIDC token for Sigstore (GitLab id_tokens "
                "SIGSTORE_ID_TOKEN with aud: sigstore; GitHub id-token: write)"
            )
        log.warn(
            "publishing unsigned: set MLOPS_SIGNING_KEY and deploy.signing.public_key so "
            "that promotion can prove who published a version"
        )
        return files
    content = folder / "version"
    content.mkdir(parents=True)
    copies = {}
    for name, path in files.items():
        copies[name] = content / name
        shutil.copyfile(path, copies[name])
    try:
        config.sign(content, content / SIGNATURE)
    except Exception as exc:  # the signer's errors can carry tokens: keep only the kind
        raise PlatformError(_signing_failure(exc)) from None
    return {**copies, SIGNATURE: content / SIGNATURE}


def _signer(env: Mapping[str, str], folder: Path) -> Any | None:
    key = env.get("MLOPS_SIGNING_KEY", "").strip()
    token = env.get("SIGSTORE_ID_TOKEN", "").strip()
    if not (key or token or env.get("ACTIONS_ID_TOKEN_REQUEST_URL")):
        # Nothing to sign with: model_signing pulls in Sigstore, pydantic and
        # cryptography (about a second), which an unsigned deploy does not need.
        return None
    from model_signing import hashing, signing

    hashes = hashing.Config().set_ignored_paths(paths=list(UNSIGNED))
    config = signing.Config().set_hashing_config(hashes)
    if key:
        path = _key_file(key, folder)
        password = env.get("MLOPS_SIGNING_KEY_PASSWORD") or None
        try:
            return config.use_elliptic_key_signer(private_key=path, password=password)
        except (ValueError, TypeError, OSError):
            raise UsageError(
                "MLOPS_SIGNING_KEY is not an elliptic-curve private key in PEM "
                "(or MLOPS_SIGNING_KEY_PASSWORD is wrong)"
            ) from None
    if token:
        _check_token(token)
        return _keyless(config, identity_token=token)
    return _keyless(config, use_ambient_credentials=True)


def _keyless(config: Any, **how: Any) -> Any:
    try:
        return config.use_sigstore_signer(**how)
    except Exception as exc:  # TUF refresh, connection errors: say which step failed
        raise PlatformError(_signing_failure(exc)) from None


def _check_token(token: str) -> None:
    """Refuse a malformed or expired OIDC token before any network call."""
    from sigstore.oidc import IdentityError, IdentityToken

    try:
        IdentityToken(token)
    except IdentityError as exc:
        reason = str(exc).split(":")[0]
        raise UsageError(f"SIGSTORE_ID_TOKEN is not usable for Sigstore: {reason}") from None


def _signing_failure(exc: BaseException) -> str:
    return (
        f"signing with Sigstore failed ({type(exc).__name__}): keyless signing needs the "
        "network to reach Sigstore (its TUF trust root, Fulcio and Rekor); where there is "
        "none, sign with a key pair (MLOPS_SIGNING_KEY)"
    )


def _key_file(value: str, folder: Path) -> Path:
    """A path to the key: the variable's path, or its PEM text written to a private file."""
    if not value.startswith(_PEM):
        path = Path(value)
        if not path.is_file():
            raise UsageError(f"MLOPS_SIGNING_KEY: {path}: file not found")
        return path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "signing-key.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value.replace("\\n", "\n") + "\n")
    return path


# -- verifying --------------------------------------------------------------------------


def verify(folder: Path, trust: Policy, what: str, scratch: Path) -> None:
    """Verify the bundle in ``folder`` against its files and ``trust``; CheckFailed
    (one line naming ``what``) when a file, the signature or the signer is wrong."""
    bundle = folder / SIGNATURE
    if not bundle.is_file():
        raise CheckFailed(
            f"{what}: not signed (no {SIGNATURE}); only versions signed by "
            f"{trust.describe()} may be promoted"
        )
    config = _verifier(trust, scratch)
    try:
        config.verify(folder, bundle)
    except Exception as exc:  # model-signing raises ValueError and sigstore's own errors
        raise CheckFailed(_verify_failure(exc, folder, bundle, trust, what)) from None


def _verifier(trust: Policy, scratch: Path) -> Any:
    from model_signing import verifying

    config = verifying.Config()
    if trust.public_key is not None:
        scratch.mkdir(parents=True, exist_ok=True)
        key = scratch / "public-key.pem"
        key.write_text(trust.public_key)
        return config.use_elliptic_key_verifier(public_key=key)
    try:
        return config.use_sigstore_verifier(
            identity=str(trust.identity), oidc_issuer=str(trust.issuer)
        )
    except Exception as exc:
        raise PlatformError(
            f"cannot verify keyless signatures ({type(exc).__name__}): Sigstore's trust "
            "root could not be fetched; keyless verification needs the network once"
        ) from None


def _verify_failure(
    exc: BaseException, folder: Path, bundle: Path, trust: Policy, what: str
) -> str:
    text = str(exc)
    if "Signature mismatch" in text:
        changed = _changed_files(folder, bundle)
        if changed:
            return f"{what}: {changed}"
        return f"{what}: the files differ from those {SIGNATURE} lists ({text[:200]})"
    if "Key mismatch" in text or "public key" in text.lower():
        return f"{what}: {SIGNATURE} was not signed by {trust.describe()}"
    return (
        f"{what}: {SIGNATURE} does not verify against {trust.describe()} "
        f"({type(exc).__name__}: {text[:200]})"
    )


def _changed_files(folder: Path, bundle: Path) -> str:
    """``file: sha256 A, signed B`` for each file that differs from the signed list."""
    signed = signed_digests(bundle)
    problems = [str(c) for c in changed_files(folder, signed, SIGNATURE)]
    extra = sorted(
        p.name for p in folder.iterdir() if p.name not in signed and p.name not in UNSIGNED
    )
    problems += [f"{folder / name}: not in {SIGNATURE}" for name in extra]
    return "; ".join(problems)


def signed_digests(bundle: Path) -> dict[str, str]:
    """File name -> sha256 as the bundle's statement lists them (read, not verified)."""
    try:
        data = json.loads(bundle.read_text("utf-8"))
        payload = json.loads(base64.b64decode(data["dsseEnvelope"]["payload"]))
        resources = payload["predicate"]["resources"]
        return {
            str(r["name"]): str(r["digest"]) for r in resources if r.get("algorithm") == "sha256"
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _read_pem(path: Path, where: str) -> str:
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise UsageError(f"{where}: unreadable: {exc.strerror}") from None
    if _PEM not in text:
        raise UsageError(f"{where}: not a PEM public key")
    return text


def _pem_value(value: str, name: str) -> str:
    if value.startswith(_PEM):
        return value.replace("\\n", "\n") + "\n"
    return _read_pem(Path(value), name)
