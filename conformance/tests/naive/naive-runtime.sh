#!/bin/sh
# A deliberately naive runtime, the way many get written first: a pid file
# and `kill -0` for liveness, `kill $(cat pid)` to stop, whatever is on disk
# trusted as is. The suite's own tests run the catalog against it to prove
# that cases fail when a runtime makes these mistakes (see ../world_outcomes.rs).
# It only ever runs inside a doppel world.
set -u
root=$1
cmd=$2
shift 2
case $cmd in
run)
    id=$1
    shift
    [ "${1:-}" = "--" ] && shift
    mkdir -p "$root/$id/log"
    "$@" </dev/null >/dev/null 2>&1 &
    pid=$!
    # Return once the payload has exec'd (its exe is no longer the shell's).
    me=$(readlink /proc/$$/exe)
    while [ "$(readlink /proc/$pid/exe 2>/dev/null)" = "$me" ]; do :; done
    echo $pid >"$root/$id/pid"
    printf '{"id":"%s"}\n' "$id" >"$root/$id/state.json"
    printf '%s\n' $pid >"$root/$id/log/.sentinel"
    ;;
state)
    id=$1
    pid=$(cat "$root/$id/pid") || exit 1
    cat "$root/$id/state.json" >/dev/null || exit 1
    if kill -0 "$pid" 2>/dev/null; then st=running; else st=stopped; fi
    printf '{"id":"%s","status":"%s","pid":%s}\n' "$id" "$st" "$pid"
    ;;
kill)
    kill -s "$2" "$(cat "$root/$1/pid")"
    ;;
delete)
    if [ "${2:-}" = force ]; then kill -s KILL "$(cat "$root/$1/pid")" 2>/dev/null; fi
    rm -rf "${root:?}/$1"
    ;;
list)
    for d in "$root"/*/; do
        id=$(basename "$d")
        cat "$d/state.json" >/dev/null && echo "$id"
    done
    ;;
recover)
    for d in "$root"/*/; do
        pid=$(cat "$d/pid")
        kill -0 "$pid" 2>/dev/null || rm -rf "$d"
    done
    ;;
cleanup)
    for s in "$root"/*/log/.sentinel; do
        pid=$(cat "$s")
        kill -0 "$pid" 2>/dev/null || { rm -rf "$(dirname "$s")"; echo "removed $s"; }
    done
    ;;
*)
    echo "naive: unknown command $cmd" >&2
    exit 2
    ;;
esac
