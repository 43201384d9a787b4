#!/bin/sh
# Saves the conformance answers a lab run printed for a kernel or mode with no recorded
# file (`record <series>/edu-<mode>.expected: <line>`), as tests/conformance/<file>.
# Usage: cargo run -p vfio-lab --release -- suite --kernel newest | tee run.log
#        tools/vfio-lab/save-records.sh < run.log
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)/tests/conformance
awk -v root="$root" '
    /^record [^ ]+\.expected: / {
        f = $2; sub(/:$/, "", f)
        if (f ~ /\.\./ || f !~ /^[0-9]+\.[0-9]+\/edu-[a-z0-9-]+\.expected$/) next
        line = $0; sub(/^record [^ ]+ /, "", line)
        if (!(f in seen)) {
            seen[f] = 1
            dir = root "/" f; sub(/\/[^\/]+$/, "", dir)
            system("mkdir -p \"" dir "\"")
            printf "" > (root "/" f)
            print "saved tests/conformance/" f > "/dev/stderr"
        }
        print line >> (root "/" f)
    }'
