#!/usr/bin/env python3
"""Extract the PromQL of Istio's published Grafana dashboards.

Usage: extract-dashboard-queries.py ISTIO_CHECKOUT > istio-dashboard-queries.json

Reads manifests/addons/dashboards/{istio-mesh-dashboard.gen.json,
istio-service-dashboard.json, istio-workload-dashboard.json} from a git
checkout (or bare repository) of github.com/istio/istio at HEAD and writes
every panel `expr` and templating `query` with the commit it came from.
pkg/proxy's TestIstioDashboardQueries checks each against a scrape of the
edge proxy.
"""
import json
import subprocess
import sys

DASHBOARDS = [
    "istio-mesh-dashboard.gen.json",
    "istio-service-dashboard.json",
    "istio-workload-dashboard.json",
]


def git(repo, *args):
    return subprocess.check_output(["git", "-C", repo, *args], text=True)


def panels(node, title=""):
    """Yields (panel title, expr) for every target in every panel."""
    if isinstance(node, dict):
        title = node.get("title", title) if "targets" in node or "panels" in node else title
        for t in node.get("targets", []) or []:
            if isinstance(t.get("expr"), str) and t["expr"]:
                yield title, t["expr"]
        for k, v in node.items():
            if k != "targets":
                yield from panels(v, title)
    elif isinstance(node, list):
        for v in node:
            yield from panels(v, title)


def main():
    repo = sys.argv[1]
    commit = git(repo, "rev-parse", "HEAD").strip()
    version = git(repo, "show", "HEAD:VERSION").strip()
    out = {"source": "https://github.com/istio/istio/tree/%s/manifests/addons/dashboards" % commit,
           "commit": commit, "istioVersion": version, "dashboards": []}
    for name in DASHBOARDS:
        d = json.loads(git(repo, "show", "HEAD:manifests/addons/dashboards/" + name))
        seen, queries = set(), []
        for title, expr in panels(d.get("panels", [])):
            if (title, expr) not in seen:
                seen.add((title, expr))
                queries.append({"panel": title, "expr": expr})
        variables = []
        for v in d.get("templating", {}).get("list", []):
            if v.get("type") in ("query", "custom"):
                q = v.get("query")
                if isinstance(q, dict):
                    q = q.get("query", "")
                variables.append({"name": v["name"], "type": v["type"], "query": q})
        out["dashboards"].append({"file": name, "title": d.get("title"), "variables": variables, "queries": queries})
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
