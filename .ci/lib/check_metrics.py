#!/usr/bin/env python3
"""Check that every PromQL query of the dashboard and the alert rules names a metric that exists.

Each query is parsed with promql-parser (a syntax error fails the check). Every metric name it
selects must appear in the Prometheus text output of a running node or of `rcluster-operator
metrics`. Label names used in matchers and in by/on clauses must exist on the metric's samples,
unless Prometheus adds them at scrape time (TARGET_LABELS).

Names the node does not export yet can be listed in an allow-list file (one per line, # comments):
they are reported but do not fail. An allow-listed name that is exported fails the check, so the
list shrinks as the node grows.

usage: check_metrics.py --dashboard D.json --rules R.yaml --metrics node.txt --metrics op.txt
                        [--allow-missing FILE]
"""
import argparse
import json
import re
import sys

import promql_parser
import yaml

# Labels that Prometheus or the PodMonitor/ServiceMonitor relabeling attaches to every series.
TARGET_LABELS = {"namespace", "pod", "container", "endpoint", "service", "job", "instance", "rcluster",
                 "shard"}
# Series that Prometheus generates itself for every scrape target.
SYNTHETIC_METRICS = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# Values Grafana substitutes before sending a query; any valid duration parses the same way.
GRAFANA_DURATIONS = ("$__rate_interval", "$__interval", "$__range", "${__rate_interval}",
                     "${__interval}", "${__range}")
LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", re.S)


def parse_exposition(text, source):
    """Return {sample or family name: {"labels": set, "source": str, "samples": bool}}."""
    names = {}

    def add(name, labels=(), sample=False):
        entry = names.setdefault(name, {"labels": set(), "source": source, "samples": False})
        entry["labels"].update(labels)
        entry["samples"] |= sample

    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) < 4:
                continue
            name, kind = parts[2], parts[3]
            add(name)
            if kind in ("histogram", "summary"):
                for suffix in ("_sum", "_count") + (("_bucket",) if kind == "histogram" else ()):
                    add(name + suffix)
        elif line and not line.startswith("#"):
            m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s", line)
            if m:
                labels = re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="', m.group(3) or "")
                add(m.group(1), labels, sample=True)
    return names


def dashboard_queries(dash):
    """Yield (where, PromQL) for every query of a Grafana dashboard."""
    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dash.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"panel {panel.get('title')!r} ref {target.get('refId')}", target["expr"]
    for ann in dash.get("annotations", {}).get("list", []):
        if ann.get("expr"):
            yield f"annotation {ann.get('name')!r}", ann["expr"]
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        m = LABEL_VALUES.match(query or "")
        if m:
            yield f"variable ${var['name']}", m.group(1)
            yield f"variable ${var['name']} label", "label:" + m.group(2) + ":" + m.group(1)
        elif query:
            yield f"variable ${var['name']}", query


def dashboard_structure(dash):
    """Errors Grafana would import silently but render wrong: duplicate ids or refIds, no gridPos,
    a data source other than the ${datasource} variable (breaks on every other Prometheus)."""
    errors, ids = [], set()
    for panel in dash.get("panels", []) + [p for row in dash.get("panels", []) for p in row.get("panels", [])]:
        title = panel.get("title")
        if panel.get("id") in ids:
            errors.append(f"panel {title!r}: duplicate id {panel.get('id')}")
        ids.add(panel.get("id"))
        if not {"h", "w", "x", "y"} <= set(panel.get("gridPos", {})):
            errors.append(f"panel {title!r}: gridPos needs h, w, x, y")
        refs = [t.get("refId") for t in panel.get("targets", [])]
        if len(refs) != len(set(refs)):
            errors.append(f"panel {title!r}: duplicate refId")
        for ds in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
            if ds is not None and ds.get("uid") != "${datasource}":
                errors.append(f"panel {title!r}: data source {ds} is not the $datasource variable")
    for key in ("title", "uid", "schemaVersion"):
        if not dash.get(key):
            errors.append(f"dashboard has no {key}")
    return errors


def rule_queries(doc):
    for group in doc.get("spec", {}).get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            yield f"rule {group.get('name')}/{name}", str(rule.get("expr", ""))


def analyse(expr):
    """Return (metric names, label names used) of one PromQL expression."""
    for placeholder in GRAFANA_DURATIONS:
        expr = expr.replace(placeholder, "5m")
    tree = promql_parser.parse(expr)
    metrics, labels = set(), set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            matchers = list(node.matchers.matchers)
            name = node.name
            for m in matchers:
                if m.name == "__name__":
                    name = m.value
                else:
                    labels.add(m.name)
            if name:
                metrics.add(name)
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            labels.update(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                labels.update(node.modifier.matching.labels)
            labels.update(node.modifier.group_labels or [])
        return True

    promql_parser.walk(tree, visit)
    return metrics, labels


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--rules", required=True)
    ap.add_argument("--metrics", action="append", required=True, help="Prometheus text file (repeatable)")
    ap.add_argument("--allow-missing", help="file of metric names not exported yet")
    args = ap.parse_args()

    exported = {}
    for path in args.metrics:
        with open(path, encoding="utf-8") as f:
            for name, entry in parse_exposition(f.read(), path).items():
                have = exported.setdefault(name, {"labels": set(), "source": path, "samples": False})
                have["labels"] |= entry["labels"]
                have["samples"] |= entry["samples"]

    allowed = set()
    if args.allow_missing:
        with open(args.allow_missing, encoding="utf-8") as f:
            allowed = {line.split("#")[0].strip() for line in f} - {""}

    with open(args.dashboard, encoding="utf-8") as f:
        dash = json.load(f)
    with open(args.rules, encoding="utf-8") as f:
        rules = yaml.safe_load(f)

    errors, missing, queried, checked = dashboard_structure(dash), {}, set(), 0
    for where, expr in list(dashboard_queries(dash)) + list(rule_queries(rules)):
        extra_label = None
        if expr.startswith("label:"):
            _, extra_label, expr = expr.split(":", 2)
        try:
            metrics, labels = analyse(expr)
        except Exception as e:  # promql_parser raises plain exceptions with the parser's message
            errors.append(f"{where}: PromQL does not parse: {e}\n    {expr.strip()}")
            continue
        checked += 1
        if extra_label:
            labels.add(extra_label)
        if not metrics:
            errors.append(f"{where}: query selects no metric: {expr.strip()}")
        known_labels, all_sampled = set(), True
        for name in sorted(metrics):
            queried.add(name)
            if name in SYNTHETIC_METRICS:
                continue
            if name not in exported:
                missing.setdefault(name, []).append(where)
                all_sampled = False
                continue
            known_labels |= exported[name]["labels"]
            all_sampled &= exported[name]["samples"]
        # Labels can only be checked when every metric of the query had samples to read them from.
        if all_sampled:
            for label in sorted(labels - TARGET_LABELS - known_labels - {"le"}):
                errors.append(f"{where}: label {label!r} is on none of {sorted(metrics)}")

    print(f"checked {checked} PromQL queries naming {len(queried)} metrics")
    not_allowed = {n: w for n, w in missing.items() if n not in allowed}
    for name, wheres in sorted(missing.items()):
        tag = "allowed (not yet exported)" if name in allowed else "MISSING"
        print(f"  {tag}: {name}  <- {wheres[0]}" + (f" (+{len(wheres) - 1} more)" if len(wheres) > 1 else ""))
    stale = sorted(n for n in allowed if n in exported)
    for name in stale:
        errors.append(f"{name} is exported now: remove it from {args.allow_missing}")
    for name in sorted(not_allowed):
        errors.append(f"metric {name} is queried but exported by neither the node nor the operator")
    for e in errors:
        print("ERROR:", e)
    if errors:
        return 1
    print("every queried metric is exported" + (" (or allow-listed)" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
