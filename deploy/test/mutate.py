#!/usr/bin/env python3
"""Mutation test for deploy/prometheus/deimos-rules.yml.

Breaks each alert expression in turn (flipped comparisons, moved thresholds, dropped label
filters, dropped `for:` clauses, an expression that never fires) and checks that
`promtool test rules` FAILS on every mutant while `promtool check rules` still accepts it, so each
failure comes from a unit-test assertion, not from a syntax error. Also checks that every alert in
the rules file has a firing and a not-firing unit test. Standard library only.

usage: mutate.py PROMETHEUS_DIR   (the directory holding deimos-rules.yml and deimos-rules.test.yml)
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

RULES = "deimos-rules.yml"
TESTS = "deimos-rules.test.yml"
NEVER_FIRES = " and on() vector(0) > 1"

# (alert, what the mutant does, old text inside that alert's rule block, new text)
# old must occur exactly once in the block. old=None appends NEVER_FIRES to the expression.
MUTANTS = [
    ("DeimosNoLeader", "== 0 flipped to != 0", "deimos_server_has_leader == 0", "deimos_server_has_leader != 0"),
    ("DeimosNoLeader", "== 0 changed to == 1", "deimos_server_has_leader == 0", "deimos_server_has_leader == 1"),
    ("DeimosNoLeader", "for: 1m dropped", "        for: 1m\n", ""),
    ("DeimosNoLeader", "never fires", None, None),
    ("DeimosFrequentLeaderChanges", "threshold 3 raised to 30", "[15m]) > 3", "[15m]) > 30"),
    ("DeimosFrequentLeaderChanges", "threshold 3 lowered to 1", "[15m]) > 3", "[15m]) > 1"),
    ("DeimosFrequentLeaderChanges", "window 15m shrunk to 1m", "[15m]", "[1m]"),
    ("DeimosFrequentLeaderChanges", "raw counter instead of increase()",
     "increase(deimos_server_leader_changes_seen_total[15m])", "deimos_server_leader_changes_seen_total"),
    ("DeimosFrequentLeaderChanges", "never fires", None, None),
    ("DeimosLeaderWithoutLease", "lease_valid == 0 changed to == 1", "deimos_lease_valid == 0", "deimos_lease_valid == 1"),
    ("DeimosLeaderWithoutLease", "is_leader == 1 flipped to != 1", "deimos_server_is_leader == 1", "deimos_server_is_leader != 1"),
    ("DeimosLeaderWithoutLease", "and changed to or", " and on (job, instance) ", " or on (job, instance) "),
    ("DeimosLeaderWithoutLease", "leader condition dropped",
     "deimos_server_is_leader == 1 and on (job, instance) deimos_lease_valid == 0", "deimos_lease_valid == 0"),
    ("DeimosLeaderWithoutLease", "for: 1m dropped", "        for: 1m\n", ""),
    ("DeimosLeaderWithoutLease", "never fires", None, None),
    ("DeimosHighLeaseExpirationRate", "planned-reason filter dropped",
     '{reason!~"transfer|membership_change|removed"}', ""),
    ("DeimosHighLeaseExpirationRate", "reason filter inverted (!~ to =~)", 'reason!~', 'reason=~'),
    ("DeimosHighLeaseExpirationRate", "threshold 3/600 raised to 300/600", "> 3 / 600", "> 300 / 600"),
    ("DeimosHighLeaseExpirationRate", "threshold lowered to > 0", "> 3 / 600", "> 0"),
    ("DeimosHighLeaseExpirationRate", "never fires", None, None),
    ("DeimosApplyLag", "threshold 1000 raised to 100000", "> 1000", "> 100000"),
    ("DeimosApplyLag", "threshold 1000 lowered to 100", "> 1000", "> 100"),
    ("DeimosApplyLag", "commit - applied changed to commit + applied", "deimos_raft_commit_index - ", "deimos_raft_commit_index + "),
    ("DeimosApplyLag", "for: 5m dropped", "        for: 5m\n", ""),
    ("DeimosApplyLag", "never fires", None, None),
    ("DeimosPeerUnreachable", "> 0 flipped to < 0", "[5m]) > 0", "[5m]) < 0"),
    ("DeimosPeerUnreachable", "> 0 changed to >= 0", "[5m]) > 0", "[5m]) >= 0"),
    ("DeimosPeerUnreachable", "window 5m widened to 1h", "[5m]", "[1h]"),
    ("DeimosPeerUnreachable", "for: 5m dropped", "        for: 5m\n", ""),
    ("DeimosPeerUnreachable", "never fires", None, None),
]


def split_rules(text):
    """Return (prefix, [(alert name, block text)]) where blocks start at '- alert: NAME'."""
    starts = [(m.start(), m.group(1)) for m in re.finditer(r"^\s*- alert: (\S+)\s*$", text, re.M)]
    prefix = text[: starts[0][0]] if starts else text
    blocks = []
    for i, (pos, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        blocks.append((name, text[pos:end]))
    return prefix, blocks


def append_to_expr(block):
    lines = block.split("\n")
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not m:
            continue
        indent, rest = len(m.group(1)), m.group(2)
        if rest.startswith((">", "|")):  # block scalar: content is the more-indented lines below
            j = i + 1
            while j + 1 < len(lines) and (not lines[j + 1].strip() or
                                          len(lines[j + 1]) - len(lines[j + 1].lstrip()) > indent):
                j += 1
            while not lines[j].strip():
                j -= 1
            lines[j] += NEVER_FIRES
        else:
            lines[i] += NEVER_FIRES
        return "\n".join(lines)
    raise SystemExit("no expr: in block")


def mutate(text, alert, old, new):
    prefix, blocks = split_rules(text)
    out = [prefix]
    hit = False
    for name, block in blocks:
        if name == alert:
            hit = True
            if old is None:
                block = append_to_expr(block)
            else:
                n = block.count(old)
                if n != 1:
                    raise SystemExit(f"mutant for {alert}: {old!r} occurs {n} times in its rule, want 1")
                block = block.replace(old, new)
        out.append(block)
    if not hit:
        raise SystemExit(f"mutant for unknown alert {alert}")
    return "".join(out)


def alert_test_coverage(test_text):
    """{alert: set of 'firing'/'quiet'} from the alert_rule_test entries of the test file."""
    cov = {}
    current = None
    for line in test_text.splitlines():
        m = re.match(r"^\s*alertname:\s*(\S+)\s*$", line)
        if m:
            current = m.group(1)
            continue
        m = re.match(r"^\s*exp_alerts:\s*(.*)$", line)
        if m and current:
            cov.setdefault(current, set()).add("quiet" if m.group(1).strip() == "[]" else "firing")
            current = None
    return cov


def run(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "prometheus")
    rules_text = open(os.path.join(src, RULES)).read()
    test_text = open(os.path.join(src, TESTS)).read()
    problems = 0

    alerts = [name for name, _ in split_rules(rules_text)[1]]
    cov = alert_test_coverage(test_text)
    for a in alerts:
        have = cov.get(a, set())
        for kind in ("firing", "quiet"):
            if kind not in have:
                print(f"MISSING  {a}: no {'firing' if kind == 'firing' else 'not-firing'} unit test")
                problems += 1
        if not any(m[0] == a for m in MUTANTS):
            print(f"MISSING  {a}: no mutant in mutate.py")
            problems += 1

    with tempfile.TemporaryDirectory(prefix="deimos-mutants-") as tmp:
        shutil.copy(os.path.join(src, TESTS), os.path.join(tmp, TESTS))
        with open(os.path.join(tmp, RULES), "w") as f:
            f.write(rules_text)
        base = run(["promtool", "test", "rules", TESTS], tmp)
        if base.returncode != 0:
            print(base.stdout)
            print("unmutated rules must pass their unit tests first")
            return 1
        killed = 0
        for alert, what, old, new in MUTANTS:
            with open(os.path.join(tmp, RULES), "w") as f:
                f.write(mutate(rules_text, alert, old, new))
            check = run(["promtool", "check", "rules", RULES], tmp)
            if check.returncode != 0:
                print(f"INVALID  {alert}: {what} (mutant is not a valid rule file)\n{check.stdout}")
                problems += 1
                continue
            res = run(["promtool", "test", "rules", TESTS], tmp)
            if res.returncode != 0:
                killed += 1
                print(f"KILLED   {alert}: {what}")
            else:
                problems += 1
                print(f"SURVIVED {alert}: {what}  <- the unit tests do not catch this")
    total = len(MUTANTS)
    print(f"mutation: {killed} passed, {total - killed} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
