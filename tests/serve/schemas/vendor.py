"""Rebuild the vendored schemas in this folder from their sources (see README.md).

    python tests/serve/schemas/vendor.py K8S_SCHEMA_DIR KSERVE_CRD_YAML

K8S_SCHEMA_DIR is ``kubernetes_validate/kubernetes-json-schema/v1.34.0-local-strict``
from the kubernetes-validate 1.37.0 wheel; KSERVE_CRD_YAML is KServe's
``config/crd/full/serving.kserve.io_inferenceservices.yaml``. Descriptions are dropped
and only the definitions a kind reaches are kept, which changes no validation result
and keeps the files small. KServe's schema is made strict (see :func:`strict`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
KINDS = {"deployment-apps-v1": "Deployment (apps/v1)", "service-v1": "Service (v1)"}


def strip(node: Any) -> Any:
    """``node`` without descriptions; refs to the shared definitions point inside."""
    if isinstance(node, dict):
        out = {k: strip(v) for k, v in node.items() if k != "description"}
        ref = out.get("$ref")
        if isinstance(ref, str) and "#/$defs/" in ref:
            out["$ref"] = "#/$defs/" + ref.split("#/$defs/", 1)[1]
        return out
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def reachable(node: Any, defs: dict[str, Any], seen: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name not in seen:
                seen.add(name)
                reachable(defs[name], defs, seen)
        for value in node.values():
            reachable(value, defs, seen)
    elif isinstance(node, list):
        for value in node:
            reachable(value, defs, seen)


def kubernetes(source: Path) -> None:
    defs = strip(json.loads((source / "_definitions.json").read_text()))["$defs"]
    for kind in KINDS:
        schema = strip(json.loads((source / f"{kind}.json").read_text()))
        seen: set[str] = set()
        reachable(schema, defs, seen)
        schema["$defs"] = {name: defs[name] for name in sorted(seen)}
        write(HERE / f"kubernetes-1.34-{kind}.json", schema)


def kserve(crd: Path) -> None:
    document = yaml.safe_load(crd.read_text())
    version = next(v for v in document["spec"]["versions"] if v["name"] == "v1beta1")
    schema = strict(strip(version["schema"]["openAPIV3Schema"]))
    write(HERE / "kserve-inferenceservice-v1beta1.json", schema)


def strict(node: Any) -> Any:
    """Refuse unknown fields, as the Kubernetes schemas' strict variant does: a CRD's
    API server prunes them silently, so a misspelt field would be lost, not refused.
    Objects that keep unknown fields on purpose stay open."""
    if isinstance(node, dict):
        out = {k: strict(v) for k, v in node.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


def write(path: Path, schema: dict[str, Any]) -> None:
    text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    path.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    kubernetes(Path(sys.argv[1]))
    kserve(Path(sys.argv[2]))
