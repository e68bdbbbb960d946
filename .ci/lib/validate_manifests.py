#!/usr/bin/env python3
"""Validate a stream of Kubernetes manifests offline, every object against a schema.

- Built-in kinds: kubernetes-validate --strict against the bundled schemas of one Kubernetes version.
- ReplicatedCluster: the CRD's openAPIV3Schema (x-kubernetes-* keys dropped; objects closed with
  additionalProperties: false unless the schema preserves unknown fields, like `kubectl
  --validate=strict`), then its CEL rules (x-kubernetes-validations) on the object with the
  schema's defaults applied, as the API server does on create. Transition rules (oldSelf) only
  apply to updates and are skipped.
- monitoring.coreos.com ServiceMonitor, PodMonitor, PrometheusRule: MONITORING_SCHEMAS, a strict
  subset of prometheus-operator's v1 types covering the fields rcluster uses; every rule expr must
  parse as PromQL.
Any other kind fails: nothing passes unvalidated.

usage: validate_manifests.py --crd CRD.yaml [--crd ...] --kube-version 1.35 FILE|- [FILE ...]
"""
import argparse
import copy
import os
import subprocess
import sys
import tempfile

import cel
import jsonschema
import promql_parser
import yaml

DURATION = {"type": "string",
            "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LABEL_SELECTOR = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "matchLabels": STR_MAP,
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["key", "operator"],
            "properties": {"key": {"type": "string"}, "operator": {"type": "string"},
                           "values": {"type": "array", "items": {"type": "string"}}}}},
    },
}
NAMESPACE_SELECTOR = {"type": "object", "additionalProperties": False, "properties": {
    "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}}
RELABEL = {"type": "array", "items": {
    "type": "object", "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}},
        "separator": {"type": "string"}, "targetLabel": {"type": "string"}, "regex": {"type": "string"},
        "modulus": {"type": "integer"}, "replacement": {"type": "string"},
        "action": {"type": "string", "enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop",
                                              "hashmod", "HashMod", "labelmap", "LabelMap", "labeldrop",
                                              "LabelDrop", "labelkeep", "LabelKeep", "lowercase",
                                              "Lowercase", "uppercase", "Uppercase", "keepequal",
                                              "KeepEqual", "dropequal", "DropEqual"]},
    },
}}
ENDPOINT_COMMON = {
    "port": {"type": "string"}, "path": {"type": "string"}, "scheme": {"enum": ["http", "https"]},
    "interval": DURATION, "scrapeTimeout": DURATION, "honorLabels": {"type": "boolean"},
    "relabelings": RELABEL, "metricRelabelings": RELABEL,
}
METADATA = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
    "namespace": {"type": "string"}, "labels": STR_MAP, "annotations": STR_MAP}}


def _kind(spec):
    return {"type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
            "properties": {"apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"type": "string"},
                           "metadata": METADATA, "spec": spec}}


MONITORING_SCHEMAS = {
    "ServiceMonitor": _kind({
        "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
        "properties": {
            "selector": LABEL_SELECTOR, "namespaceSelector": NAMESPACE_SELECTOR,
            "jobLabel": {"type": "string"}, "targetLabels": {"type": "array", "items": {"type": "string"}},
            "podTargetLabels": {"type": "array", "items": {"type": "string"}},
            "endpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False,
                "properties": dict(ENDPOINT_COMMON, targetPort={"type": ["integer", "string"]})}},
        }}),
    "PodMonitor": _kind({
        "type": "object", "additionalProperties": False, "required": ["selector", "podMetricsEndpoints"],
        "properties": {
            "selector": LABEL_SELECTOR, "namespaceSelector": NAMESPACE_SELECTOR,
            "jobLabel": {"type": "string"}, "podTargetLabels": {"type": "array", "items": {"type": "string"}},
            "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False,
                "properties": dict(ENDPOINT_COMMON, portNumber={"type": "integer"})}},
        }}),
    "PrometheusRule": _kind({
        "type": "object", "additionalProperties": False, "required": ["groups"],
        "properties": {"groups": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "rules"],
            "properties": {
                "name": {"type": "string", "minLength": 1}, "interval": DURATION,
                "rules": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["expr"],
                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                    "properties": {
                        "alert": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                        "record": {"type": "string"}, "expr": {"type": "string", "minLength": 1},
                        "for": DURATION, "keep_firing_for": DURATION,
                        "labels": STR_MAP, "annotations": STR_MAP}}}}}}}}),
}


def crd_schemas(paths):
    """Return {(group/version, kind): (JSON schema, raw openAPIV3Schema)} from CRD files."""
    out = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for crd in yaml.safe_load_all(f):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    raw = version["schema"]["openAPIV3Schema"]
                    schema = closed(copy.deepcopy(raw))
                    # The API server owns metadata; check only what a manifest author writes there.
                    schema.setdefault("properties", {})["metadata"] = METADATA
                    schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
                    schema["properties"]["kind"] = {"const": kind}
                    schema["properties"].pop("status", None)
                    out[(f"{group}/{version['name']}", kind)] = (schema, raw)
    return out


def closed(node):
    """Drop x-kubernetes-* keys; close object schemas that do not preserve unknown fields."""
    if isinstance(node, list):
        return [closed(n) for n in node]
    if not isinstance(node, dict):
        return node
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    out = {k: closed(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if int_or_string:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    # Kubernetes treats nullable fields as optional-with-null; JSON Schema needs the type widened.
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def with_defaults(schema, value):
    """Apply the schema's defaults top-down, as the API server does before validation."""
    if isinstance(value, dict) and schema.get("type") == "object":
        for prop, sub in schema.get("properties", {}).items():
            if prop not in value and "default" in sub:
                value[prop] = copy.deepcopy(sub["default"])
            if prop in value:
                with_defaults(sub, value[prop])
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            with_defaults(schema["items"], item)
    return value


def cel_errors(schema, value, path="<root>"):
    """Evaluate every x-kubernetes-validations rule whose field is present."""
    errors = []
    for v in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in v["rule"]:
            continue
        try:
            ok = cel.evaluate(v["rule"], {"self": value})
        except Exception as e:  # an unsupported function must not pass silently
            errors.append(f"{path}: cannot evaluate CEL rule {v['rule']!r}: {e}")
            continue
        if ok is not True:
            errors.append(f"{path}: {v.get('message') or v['rule']}")
    if isinstance(value, dict):
        for prop, sub in schema.get("properties", {}).items():
            if prop in value:
                errors += cel_errors(sub, value[prop], f"{path}/{prop}".replace("<root>/", ""))
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                errors += cel_errors(extra, item, f"{path}/{key}".replace("<root>/", ""))
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += cel_errors(schema["items"], item, f"{path}/{i}".replace("<root>/", ""))
    return errors


def load_docs(paths):
    for path in paths:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        for i, doc in enumerate(yaml.safe_load_all(text)):
            if doc:
                yield f"{path}#{i}", doc


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crd", action="append", default=[])
    ap.add_argument("--kube-version", required=True)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    customs = crd_schemas(args.crd)
    builtin, errors, counts = [], [], {}
    for where, doc in load_docs(args.files):
        key = (doc.get("apiVersion"), doc.get("kind"))
        name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        schema, raw = customs.get(key, (None, None))
        if schema is None and key[0] == "monitoring.coreos.com/v1":
            schema = MONITORING_SCHEMAS.get(key[1])
        if schema is None and "." in (key[0] or "").split("/")[0] and not is_builtin_group(key[0]):
            errors.append(f"{where} {name}: no schema for custom kind {key}")
            continue
        if schema is None:
            builtin.append(doc)
            continue
        for e in jsonschema.Draft7Validator(schema).iter_errors(doc):
            errors.append(f"{where} {name}: {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}")
        if raw is not None:
            for e in cel_errors(raw, with_defaults(raw, copy.deepcopy(doc))):
                errors.append(f"{where} {name}: {e}")
        if key[1] == "PrometheusRule":
            for group in doc.get("spec", {}).get("groups", []):
                for rule in group.get("rules", []):
                    try:
                        promql_parser.parse(str(rule.get("expr", "")))
                    except Exception as e:  # the parser raises plain exceptions with its message
                        errors.append(f"{where} {name}: rule {rule.get('alert') or rule.get('record')}: {e}")
        counts[key[1]] = counts.get(key[1], 0) + 1

    if builtin:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as tmp:
            yaml.safe_dump_all(builtin, tmp, sort_keys=False)
        try:
            proc = subprocess.run(
                [os.path.join(os.path.dirname(sys.executable), "kubernetes-validate"), "--strict",
                 "--quiet", "-k", args.kube_version, tmp.name], capture_output=True, text=True, check=False)
        finally:
            os.unlink(tmp.name)
        report = (proc.stdout + proc.stderr).strip()
        if report:
            print(report.replace(tmp.name, "<built-in objects>"))
        if proc.returncode != 0 or "Couldn't find schema" in report:
            errors.append(f"kubernetes-validate rejected built-in objects (exit {proc.returncode})")
        for doc in builtin:
            counts[doc["kind"]] = counts.get(doc["kind"], 0) + 1

    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    for e in errors:
        print("ERROR:", e)
    print(f"{'FAILED' if errors else 'valid'}: {summary or 'no objects'}")
    return 1 if errors or not counts else 0


def is_builtin_group(api_version):
    group = api_version.split("/")[0]
    return group.endswith(".k8s.io") or group in {"apps", "batch", "policy", "autoscaling"}


if __name__ == "__main__":
    sys.exit(main())
