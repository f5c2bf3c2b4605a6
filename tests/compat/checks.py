"""What the python-etcd compatibility scripts share: one line per check, and on the first
failure a "N passed, 1 failed" line and exit status 1; `summary()` prints the closing
"N passed, 0 failed" line the Rust tests look for."""

import sys

PASSED = []


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}", flush=True)
        print(f"{len(PASSED)} passed, 1 failed", flush=True)
        sys.exit(1)
    PASSED.append(name)
    print(f"ok   {name}", flush=True)


def raises(exc, fn):
    try:
        fn()
    except exc:
        return True
    except Exception as e:  # the wrong error is a failure, with its type shown
        print(f"     got {type(e).__name__}: {e}", flush=True)
        return False
    return False


def summary():
    print(f"{len(PASSED)} passed, 0 failed", flush=True)
