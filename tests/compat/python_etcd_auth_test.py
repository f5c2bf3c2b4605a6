#!/usr/bin/env python3
"""python-etcd's auth classes and its lock recipe (unmodified, from PyPI) against a cluster.

Usage: python_etcd_auth_test.py HOST:PORT [HOST:PORT ...]

Creates the root user, an application role and user through `etcd.auth`, turns auth on, narrows
the guest role, then checks what each identity may do, and runs `etcd.Lock` as the application
user: a second holder waits until the first releases. Ends by turning auth off again, so it can
run against the same etcd more than once. Prints one line per check and "N passed, 0 failed".
"""

import sys

import etcd
import etcd.auth

from checks import check, raises, summary


def names(listed, field):
    """`names` lists objects (etcd >= 2.2) or bare names (older servers)."""
    return {n[field] if isinstance(n, dict) else n for n in listed}


def main(endpoints):
    hosts = tuple((h, int(p)) for h, p in (e.rsplit(":", 1) for e in endpoints))

    def client(user=None, password=None):
        return etcd.Client(host=hosts, protocol="http", allow_reconnect=True, read_timeout=10,
                           username=user, password=password)

    anon = client()
    check("auth starts off", etcd.auth.Auth(anon).active is False)
    root = etcd.auth.EtcdUser(anon, "root")
    root.password = "rootpw"
    root.write()
    role = etcd.auth.EtcdRole(anon, "app")
    role.grant("/app/*", "RW")
    role.grant("/_locks/*", "RW")
    role.write()
    user = etcd.auth.EtcdUser(anon, "app")
    user.password = "apppw"
    user.roles = {"app"}
    user.write()
    check("users are listed", {"root", "app"} <= names(user.names, "user"), user.names)

    etcd.auth.Auth(anon).active = True
    check("auth is on", etcd.auth.Auth(anon).active is True)
    rootc = client("root", "rootpw")
    check("the guest role was created",
          "guest" in names(etcd.auth.EtcdRole(rootc, "guest").names, "role"))
    guest = etcd.auth.EtcdRole(rootc, "guest")
    guest.read()
    guest.revoke("/*", "W")
    guest.grant("/pub/*", "W")
    guest.write()
    check("user changes need root", raises(
        etcd.EtcdException, lambda: etcd.auth.EtcdRole(anon, "x").write()))

    app = client("app", "apppw")
    app.write("/app/x", "1")
    check("the app user reads its prefix", app.read("/app/x").value == "1")
    check("the app user cannot write elsewhere",
          raises(etcd.EtcdInsufficientPermissions, lambda: app.write("/other", "x")))
    check("a wrong password is refused",
          raises(etcd.EtcdInsufficientPermissions, lambda: client("app", "nope").read("/app/x")))
    check("the guest may no longer write /app",
          raises(etcd.EtcdInsufficientPermissions, lambda: anon.write("/app/y", "1")))
    anon.write("/pub/y", "1")
    check("the guest writes where it was granted", anon.read("/pub/y").value == "1")
    check("root writes anywhere", rootc.write("/other", "r").value == "r")

    # The lock recipe, as the app user: in-order keys under /_locks, a TTL, a wait.
    first = etcd.Lock(app, "job")
    first.acquire(lock_ttl=60)
    check("the first holder has the lock", first.is_acquired)
    second = etcd.Lock(client("app", "apppw"), "job")
    check("a second holder does not get it while held",
          second.acquire(blocking=False, lock_ttl=60) is False)
    first.release()
    check("the second holder gets it after the release",
          second.acquire(blocking=True, lock_ttl=60, timeout=10))
    second.release()
    check("the lock is free again", not second.is_acquired)

    etcd.auth.Auth(rootc).active = False
    check("auth is off again", etcd.auth.Auth(anon).active is False)
    for name in ("app",):
        etcd.auth.EtcdUser(anon, name).delete()
    for name in ("app", "guest"):
        etcd.auth.EtcdRole(anon, name).delete()
    etcd.auth.EtcdUser(anon, "root").delete()
    summary()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    main(sys.argv[1:])
