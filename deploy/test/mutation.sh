#!/usr/bin/env bash
# Shows that the alert unit tests catch broken alert expressions: every mutant of
# deploy/prometheus/deimos-rules.yml must make `promtool test rules` fail. Needs promtool on PATH.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec python3 "$here/mutate.py" "$here/../prometheus"
