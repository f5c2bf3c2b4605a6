#!/usr/bin/env python3
"""Checks for the Deimos Grafana dashboard, the alert rules and a live /metrics. Standard library only.

  dashboard.py lint DASHBOARD RULES CONTRACT   structure of the dashboard; every deimos_* name used by
                                              the dashboard and the rules is in the metric contract
  dashboard.py promql-rules DASHBOARD OUT      write every dashboard expression as a recording rule,
                                              so `promtool check rules OUT` parses them all
  dashboard.py exprs DASHBOARD                 print every expression with Grafana variables substituted
  dashboard.py query DASHBOARD PROM_URL        run every expression against Prometheus; each must return
                                              a non-empty result (OK/EMPTY/NAN/ERROR per expression)
  dashboard.py exposition CONTRACT FILE...     compare scraped /metrics texts (one per node) with the contract
"""
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

# Grafana's built-in and dashboard variables, replaced the way a Grafana query would see them.
SUBST = [
    ("${__rate_interval}", "1m"), ("$__rate_interval", "1m"),
    ("${__range}", "5m"), ("$__range", "5m"),
    ("${__interval}", "15s"), ("$__interval", "15s"),
    ("${instance}", ".*"), ("$instance", ".*"),
]
NAME_RE = re.compile(r"\bdeimos_[a-z0-9_]+\b")
HIST_SUFFIXES = ("_bucket", "_sum", "_count")


def load(path):
    with open(path) as f:
        return json.load(f)


def walk_panels(dash):
    for p in dash.get("panels", []):
        yield p
        for q in p.get("panels", []) or []:  # panels nested in collapsed rows
            yield q


def targets(dash):
    """[(panel title, refId, raw expr)] for every target of every panel."""
    out = []
    for p in walk_panels(dash):
        for t in p.get("targets", []) or []:
            if "expr" in t:
                out.append((p.get("title", "?"), t.get("refId", "?"), t["expr"]))
    return out


def substitute(expr):
    for k, v in SUBST:
        expr = expr.replace(k, v)
    return expr


def read_contract(path):
    contract = {}
    for line in open(path):
        line = line.split("#", 1)[0].split()
        if line:
            contract[line[0]] = (line[1], set(line[2:]))
    return contract


def names_ok(text, contract):
    """Problems with deimos_* names in text (not in contract; histogram used without a suffix)."""
    problems = []
    for name in sorted(set(NAME_RE.findall(text))):
        if name in contract:
            if contract[name][0] == "histogram":
                problems.append(f"{name} is a histogram: query {name}_bucket/_sum/_count")
            continue
        base = next((name[: -len(s)] for s in HIST_SUFFIXES if name.endswith(s)), None)
        if base and contract.get(base, ("",))[0] == "histogram":
            continue
        problems.append(f"{name} is not in the metric contract")
    return problems


def cmd_lint(dash_path, rules_path, contract_path):
    dash = load(dash_path)
    contract = read_contract(contract_path)
    errs = []
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        errs.append(f"schemaVersion {dash.get('schemaVersion')!r}: want a current Grafana schema (>= 36)")
    for key in ("title", "uid"):
        if not dash.get(key):
            errs.append(f"dashboard has no {key}")
    if dash.get("id") is not None:
        errs.append("dashboard id must be null for import")
    tvars = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = tvars.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        errs.append("no templated datasource variable 'datasource' of type prometheus")
    if not any(i.get("name") == "DS_PROMETHEUS" and i.get("pluginId") == "prometheus" for i in dash.get("__inputs", [])):
        errs.append("no DS_PROMETHEUS import input")
    inst = tvars.get("instance")
    if not inst or inst.get("type") != "query":
        errs.append("no 'instance' query variable")
    ids = set()
    occupied = {}
    nq = 0
    for p in walk_panels(dash):
        pid, title = p.get("id"), p.get("title")
        if pid in ids:
            errs.append(f"duplicate panel id {pid}")
        ids.add(pid)
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
            errs.append(f"panel {title!r}: bad gridPos {g}")
        else:
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in occupied:
                        errs.append(f"panel {title!r} overlaps {occupied[(x, y)]!r}")
                        break
                    occupied[(x, y)] = title
                else:
                    continue
                break
        if p.get("type") == "row":
            continue
        if not title:
            errs.append(f"panel {pid} has no title")
        if not (p.get("description") or "").strip():
            errs.append(f"panel {title!r} has no description")
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            errs.append(f"panel {title!r}: datasource must be the ${{datasource}} variable")
        ts = p.get("targets") or []
        if not ts:
            errs.append(f"panel {title!r} has no queries")
        for t in ts:
            nq += 1
            e = t.get("expr", "")
            if not e.strip():
                errs.append(f"panel {title!r} {t.get('refId')}: empty expr")
            if (t.get("datasource") or {}).get("uid") != "${datasource}":
                errs.append(f"panel {title!r} {t.get('refId')}: datasource must be ${{datasource}}")
            if "$instance" not in e:
                errs.append(f"panel {title!r} {t.get('refId')}: does not filter by $instance")
            if "$" in substitute(e):
                errs.append(f"panel {title!r} {t.get('refId')}: unknown variable in {e}")
            for prob in names_ok(e, contract):
                errs.append(f"panel {title!r} {t.get('refId')}: {prob}")
    for prob in names_ok(open(rules_path).read(), contract):
        errs.append(f"{rules_path}: {prob}")
    used = set(NAME_RE.findall(json.dumps(dash)))
    for name, (typ, _) in contract.items():
        forms = {name} | ({name + s for s in HIST_SUFFIXES} if typ == "histogram" else set())
        if not used & forms:
            print(f"note: {name} is not shown on the dashboard")
    for e in errs:
        print("LINT", e)
    print(f"dashboard lint: {nq} queries in {len(ids)} panels, {len(errs)} problems")
    return 1 if errs else 0


def cmd_promql_rules(dash_path, out):
    lines = ["# generated by deploy/test/dashboard.py: every dashboard query as a recording rule,",
             "# so that promtool parses them", "groups:", "  - name: dashboard-queries", "    rules:"]
    for i, (title, ref, e) in enumerate(targets(load(dash_path))):
        lines.append(f"      - record: dashboard:query_{i}")
        lines.append(f"        expr: {json.dumps(substitute(e))}")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


def cmd_exprs(dash_path):
    for title, ref, e in targets(load(dash_path)):
        print(f"{title} [{ref}]\t{substitute(e)}")
    return 0


def cmd_query(dash_path, url):
    bad = 0
    ts = targets(load(dash_path))
    for title, ref, raw in ts:
        e = substitute(raw)
        q = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": e})
        try:
            with urllib.request.urlopen(q, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as err:
            body = {"status": "error", "error": err.read().decode(errors="replace")}
        except Exception as err:  # connection refused and the like
            body = {"status": "error", "error": str(err)}
        if body.get("status") != "success":
            verdict, detail = "ERROR", body.get("error", body)
        else:
            res = body["data"]["result"]
            vals = [s["value"][1] for s in res] if body["data"]["resultType"] == "vector" else []
            if not res:
                verdict, detail = "EMPTY", "no series"
            elif vals and all(v == "NaN" for v in vals):
                verdict, detail = "NAN", f"{len(res)} series, all NaN (no observations in the window)"
            else:
                verdict, detail = "OK", f"{len(res)} series"
        if verdict != "OK":
            bad += 1
        print(f"{verdict:<5} {title} [{ref}]: {e}  -> {detail}")
    print(f"dashboard queries: {len(ts) - bad} passed, {bad} failed")
    return 1 if bad else 0


def parse_exposition(text):
    """({family: type}, {sample name: [label sets]})"""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(None, 3)
            types[name] = typ.strip()
        elif line and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
            if m:
                labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3) or ""))
                samples.setdefault(m.group(1), []).append(labels)
    return types, samples


def cmd_exposition(contract_path, files):
    contract = read_contract(contract_path)
    nodes = [(f, parse_exposition(open(f).read())) for f in files]
    problems = 0
    for name, (typ, labels) in contract.items():
        seen_in = [f for f, (types, samples) in nodes if name in types or name in samples
                   or any(name + s in samples for s in HIST_SUFFIXES)]
        if not seen_in:
            print(f"MISSING   {name} ({typ}) on no node: never registered (counters with labels only "
                  f"appear after their first event unless the server initializes them)")
            problems += 1
            continue
        for f, (types, samples) in nodes:
            if f not in seen_in:
                continue
            got = types.get(name)
            if got != typ:
                print(f"WRONGTYPE {name} in {f}: exported as {got!r}, want {typ!r}"
                      + (" (the Prometheus exporter renders a histogram as a summary unless buckets "
                         "are configured for it)" if typ == "histogram" and got == "summary" else ""))
                problems += 1
                break
            sample = name + "_bucket" if typ == "histogram" else name
            want = set(labels) | ({"le"} if typ == "histogram" else set())
            sets = samples.get(sample, [])
            if not sets or any(not want <= s for s in sets):
                print(f"LABELS    {name} in {f}: samples {sorted(map(sorted, sets))[:3]} lack {sorted(want)}")
                problems += 1
                break
        else:
            print(f"OK        {name} ({typ}) on {len(seen_in)}/{len(nodes)} nodes")
    families = set()
    for f, (types, samples) in nodes:
        families |= {n for n in types if n.startswith("deimos_")}
    for extra in sorted(families - set(contract)):
        print(f"EXTRA     {extra} is exported but not in the contract (not on the dashboard)")
    print(f"exposition: {len(contract) - problems} passed, {problems} failed")
    return 1 if problems else 0


def main(argv):
    cmds = {"lint": (cmd_lint, 3), "promql-rules": (cmd_promql_rules, 2), "exprs": (cmd_exprs, 1),
            "query": (cmd_query, 2)}
    if len(argv) >= 2 and argv[1] == "exposition" and len(argv) >= 4:
        return cmd_exposition(argv[2], argv[3:])
    if len(argv) < 2 or argv[1] not in cmds or len(argv) != 2 + cmds[argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    return cmds[argv[1]][0](*argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
