#!/usr/bin/env bash
# Runs every fuzz target in turn, or replays the committed seed corpora once.
#
# Usage:
#   fuzz/run.sh SECONDS    fuzz each target for SECONDS, one target at a time
#   fuzz/run.sh --replay   run each seed input once (libFuzzer -runs=0) and stop
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Builds without a sanitizer, which works on
# a stable toolchain; CRIER_FUZZ_ASAN=1 builds with AddressSanitizer instead, through
# RUSTC_BOOTSTRAP=1. New inputs go to fuzz/work/TARGET, which is not committed, and
# crashing inputs to fuzz/artifacts/TARGET. The last libFuzzer lines of each target
# (executions, coverage) are printed and kept in fuzz/work/TARGET.log.
set -euo pipefail

targets=(frame_parse node_ops api_request api_request_signed config_file)

usage() {
    echo "usage: $0 SECONDS | $0 --replay" >&2
    exit 2
}

[[ $# -eq 1 ]] || usage
case "$1" in
    --replay) mode=replay ;;
    '' | *[!0-9]*) usage ;;
    *) mode=fuzz seconds=$1 ;;
esac

cd "$(dirname "$0")/.."
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "error: cargo-fuzz is missing; install it with: cargo install cargo-fuzz" >&2
    exit 1
fi

sanitizer=(-s none)
if [[ ${CRIER_FUZZ_ASAN:-0} == 1 ]]; then
    sanitizer=()
    export RUSTC_BOOTSTRAP=1
fi

mkdir -p fuzz/work
status=0
for target in "${targets[@]}"; do
    log=fuzz/work/$target.log
    if [[ $mode == replay ]]; then
        echo "== $target: replaying fuzz/corpus/$target"
        args=("fuzz/corpus/$target" -- -runs=0)
    else
        echo "== $target: fuzzing for $seconds s"
        mkdir -p "fuzz/work/$target"
        args=("fuzz/work/$target" "fuzz/corpus/$target" -- "-max_total_time=$seconds")
    fi
    if cargo fuzz run "${sanitizer[@]}" "$target" "${args[@]}" -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::number_of_executed_units' "$log" || true
    else
        status=1
        echo "error: $target failed; see $log and fuzz/artifacts/$target" >&2
        tail -n 30 "$log" >&2
    fi
done
exit $status
