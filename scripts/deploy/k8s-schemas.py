"""Writes kubeconform-loadable offline Kubernetes schemas from the kubernetes-validate wheel.

Usage: k8s-schemas.py OUT_DIR VERSION...   (e.g. 1.37.0)
The wheel's schemas carry an $id on kubernetes.io and refer to "/api/_definitions.json";
kubeconform needs them without the $id and with relative references to resolve offline.
"""
import json
import pathlib
import sys

import kubernetes_validate

SRC = pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
PREFIX = "/api/_definitions.json"


def relative(node):
    if isinstance(node, dict):
        return {
            k: "_definitions.json" + v[len(PREFIX):] if k == "$ref" and isinstance(v, str) and v.startswith(PREFIX) else relative(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [relative(x) for x in node]
    return node


out_root = pathlib.Path(sys.argv[1])
for version in sys.argv[2:]:
    for suffix in ("", "-strict"):
        src = SRC / f"v{version}-local{suffix}"
        if not src.is_dir():
            sys.exit(f"kubernetes-validate has no schemas for {version} ({src})")
        out = out_root / f"v{version}-standalone{suffix}"
        out.mkdir(parents=True, exist_ok=True)
        for f in src.glob("*.json"):
            schema = relative(json.loads(f.read_text()))
            schema.pop("$id", None)
            (out / f.name).write_text(json.dumps(schema))
print(f"wrote {out_root}")
