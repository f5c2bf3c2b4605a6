#!/usr/bin/env python3
"""python-etcd (an unmodified etcd v2 client from PyPI) against a running Deimos cluster.

Usage: python_etcd_test.py HOST:PORT [HOST:PORT ...]

Runs the client's basic operations -- set/get, compare-and-swap, create/update, TTL and expiry,
directories and recursive reads, in-order keys, watches (with a thread writing), deletes, and the
cluster calls it makes (machines, members, leader, stats) -- and exits non-zero on the first
failure. Prints one line per check and a final "N passed, 0 failed" line.
"""

import sys
import threading
import time

import etcd

from checks import check, raises, summary


def write_later(client, key, value, delay):
    def run():
        time.sleep(delay)
        client.write(key, value)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def main(endpoints):
    hosts = tuple((h, int(p)) for h, p in (e.rsplit(":", 1) for e in endpoints))
    # allow_reconnect lets the client use every member it is given (and the ones /v2/machines
    # lists), as an application pointed at a cluster would.
    c = etcd.Client(host=hosts, protocol="http", allow_reconnect=True, read_timeout=10)
    base = "/python-etcd"

    # Cluster calls the client makes on its own.
    machines = c.machines
    check("machines lists every member", len(machines) == len(hosts), machines)
    check("members", len(c.members) == len(hosts), c.members)
    leader = c.leader
    check("leader has a name and client URLs", leader.get("name") and leader.get("clientURLs"), leader)
    check("store stats", "setsSuccess" in c.store_stats, c.store_stats)

    # set / get
    r = c.write(f"{base}/k", "v1")
    check("write creates", r.newKey and r.value == "v1" and r.action == "set", r)
    check("read", c.read(f"{base}/k").value == "v1")
    check("get", c.get(f"{base}/k").value == "v1")
    r = c.set(f"{base}/k", "v2")
    check("set replaces with prevNode", r.value == "v2" and not r.newKey and r._prev_node.value == "v1", r)

    # compare-and-swap
    r = c.test_and_set(f"{base}/k", "v3", "v2")
    check("test_and_set succeeds on match", r.value == "v3" and r.action == "compareAndSwap", r)
    check(
        "test_and_set fails on mismatch",
        raises(etcd.EtcdCompareFailed, lambda: c.test_and_set(f"{base}/k", "x", "v2")),
    )
    r = c.write(f"{base}/k", "v4", prevIndex=c.read(f"{base}/k").modifiedIndex)
    check("write with prevIndex", r.value == "v4", r)
    o = c.read(f"{base}/k")
    o.value = "v5"
    check("update (prevIndex + prevExist)", c.update(o).value == "v5")
    check(
        "create on an existing key",
        raises(etcd.EtcdAlreadyExist, lambda: c.write(f"{base}/k", "x", prevExist=False)),
    )
    check(
        "update of a missing key",
        raises(etcd.EtcdKeyNotFound, lambda: c.write(f"{base}/missing", "x", prevExist=True)),
    )
    check("read of a missing key", raises(etcd.EtcdKeyNotFound, lambda: c.read(f"{base}/missing")))

    # TTL
    r = c.write(f"{base}/ttl", "t", ttl=1)
    check("ttl reported", r.ttl is not None and 0 < r.ttl <= 1 and r.expiration, r)
    deadline = time.time() + 5
    gone = False
    while time.time() < deadline and not gone:
        try:
            c.read(f"{base}/ttl")
            time.sleep(0.1)
        except etcd.EtcdKeyNotFound:
            gone = True
    check("ttl=1 key expires", gone)

    # directories and recursive reads
    r = c.write(f"{base}/dir", None, dir=True)
    check("mkdir", r.dir, r)
    for k in ("a", "b", "sub/c"):
        c.write(f"{base}/dir/{k}", k)
    r = c.read(f"{base}/dir", recursive=True, sorted=True)
    leaves = sorted(n.key for n in r.leaves)
    check(
        "recursive read",
        leaves == [f"{base}/dir/a", f"{base}/dir/b", f"{base}/dir/sub/c"],
        leaves,
    )
    check(
        "delete non-empty dir without recursive",
        raises(etcd.EtcdDirNotEmpty, lambda: c.delete(f"{base}/dir", dir=True)),
    )
    check("delete dir recursively", c.delete(f"{base}/dir", recursive=True).action == "delete")
    check("dir gone", raises(etcd.EtcdKeyNotFound, lambda: c.read(f"{base}/dir")))

    # in-order keys
    a = c.write(f"{base}/queue", "first", append=True)
    b = c.write(f"{base}/queue", "second", append=True)
    check("append makes 20-digit keys", len(a.key.rsplit("/", 1)[1]) == 20, a.key)
    r = c.read(f"{base}/queue", sorted=True)
    check("appended keys sort in order", [n.value for n in r.children] == ["first", "second"])
    check("appended indexes grow", int(b.key.rsplit("/", 1)[1]) > int(a.key.rsplit("/", 1)[1]))

    # watches: long poll completed by another thread's write, history, recursive
    t = write_later(c, f"{base}/w", "hello", 0.3)
    r = c.watch(f"{base}/w", timeout=10)
    t.join()
    check("watch sees a write from another thread", r.value == "hello" and r.action == "set", r)
    idx = r.modifiedIndex
    c.write(f"{base}/w", "again")
    r = c.read(f"{base}/w", wait=True, waitIndex=idx, timeout=10)
    check("watch from history (waitIndex)", r.value == "hello" and r.modifiedIndex == idx, r)
    t = write_later(c, f"{base}/tree/deep/key", "d", 0.3)
    r = c.watch(f"{base}/tree", recursive=True, timeout=10)
    t.join()
    check("recursive watch", r.key == f"{base}/tree/deep/key", r)
    r = c.write(f"{base}/exp", "x", ttl=1)
    r = c.watch(f"{base}/exp", index=r.modifiedIndex + 1, timeout=10)
    check("watch sees expire", r.action == "expire", r)

    # delete
    check("delete", c.delete(f"{base}/k").action == "delete")
    check("delete missing", raises(etcd.EtcdKeyNotFound, lambda: c.delete(f"{base}/k")))
    r = c.write(f"{base}/cad", "1")
    check(
        "compare-and-delete mismatch",
        raises(etcd.EtcdCompareFailed, lambda: c.delete(f"{base}/cad", prevValue="2")),
    )
    check("compare-and-delete", c.delete(f"{base}/cad", prevValue="1").action == "compareAndDelete")

    summary()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    main(sys.argv[1:])
