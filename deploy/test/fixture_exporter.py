#!/usr/bin/env python3
"""A stand-in /metrics for the fixture phase of run.sh: serves, on each given loopback port, one
"node" exporting every metric of metric-names.txt in Prometheus text format, with counters and
histograms that advance on every scrape. It lets the Prometheus + dashboard-query machinery be
exercised without a Deimos binary; it proves nothing about the server itself (that is the live
phase). Standard library only.

usage: fixture_exporter.py CONTRACT PORT [PORT...]
"""
import random
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LABEL_VALUES = {
    "reason": ["step_down", "term_change", "removed", "transfer", "membership_change", "timeout"],
    "mode": ["lease", "read-index", "quorum", "local"],
}
BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]


def read_contract(path):
    out = []
    for line in open(path):
        f = line.split("#", 1)[0].split()
        if f:
            out.append((f[0], f[1], f[2:]))
    return out


class Node:
    def __init__(self, idx, n, contract):
        self.idx, self.n, self.contract = idx, n, contract
        self.lock = threading.Lock()
        self.counters = {}
        self.hists = {}
        self.commit = 100

    def label_sets(self, labels):
        sets = [{}]
        for l in labels:
            vals = LABEL_VALUES.get(l) or ["%x" % (i + 1) for i in range(self.n) if i != self.idx]
            sets = [dict(s, **{l: v}) for s in sets for v in vals]
        return sets

    def render(self):
        with self.lock:
            self.commit += random.randint(1, 20)
            leader = self.idx == 0
            gauges = {
                "deimos_lease_valid": 1 if leader else 0,
                "deimos_lease_remaining_seconds": round(random.uniform(0.5, 2.0), 3) if leader else 0,
                "deimos_server_has_leader": 1, "deimos_server_is_leader": 1 if leader else 0,
                "deimos_raft_term": 3, "deimos_raft_commit_index": self.commit,
                "deimos_raft_applied_index": self.commit - random.randint(0, 3),
                "deimos_raft_log_first_index": max(1, self.commit - 5000),
                "deimos_server_proposals_pending": random.randint(0, 2),
            }
            out = []
            for name, typ, labels in self.contract:
                out.append(f"# HELP {name} Fixture stand-in for {name}.")
                out.append(f"# TYPE {name} {typ}")
                for ls in self.label_sets(labels):
                    lbl = ",".join(f'{k}="{v}"' for k, v in ls.items())
                    key = (name, lbl)
                    if typ == "counter":
                        self.counters[key] = self.counters.get(key, 0) + random.randint(0, 5)
                        out.append(f"{name}{{{lbl}}} {self.counters[key]}" if lbl else f"{name} {self.counters[key]}")
                    elif typ == "gauge":
                        out.append(f"{name} {gauges[name]}")
                    else:
                        counts, total, n = self.hists.get(key, ([0] * len(BUCKETS), 0.0, 0))
                        for _ in range(random.randint(1, 10)):
                            v = random.expovariate(200)
                            total += v
                            n += 1
                            for i, b in enumerate(BUCKETS):
                                if v <= b:
                                    counts[i] += 1
                        self.hists[key] = (counts, total, n)
                        sep = "," if lbl else ""
                        for b, c in zip(BUCKETS, counts):
                            out.append(f'{name}_bucket{{{lbl}{sep}le="{b}"}} {c}')
                        out.append(f'{name}_bucket{{{lbl}{sep}le="+Inf"}} {n}')
                        suffix = f"{{{lbl}}}" if lbl else ""
                        out.append(f"{name}_sum{suffix} {total}")
                        out.append(f"{name}_count{suffix} {n}")
            return "\n".join(out) + "\n"


def serve(port, node):
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/metrics":
                body, ctype = node.render().encode(), "text/plain; version=0.0.4"
            elif self.path == "/health":
                body, ctype = b'{"health":"true"}', "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()


def main():
    contract = read_contract(sys.argv[1])
    ports = [int(p) for p in sys.argv[2:]]
    threads = [threading.Thread(target=serve, args=(p, Node(i, len(ports), contract)), daemon=True)
               for i, p in enumerate(ports)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
