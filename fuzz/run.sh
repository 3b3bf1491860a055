#!/usr/bin/env bash
# Usage: fuzz/run.sh TARGET [SECONDS] [libFuzzer args...]
#        fuzz/run.sh TARGET cmin
#   TARGET   manifest | component
#   SECONDS  how long to fuzz (default 1800 = 30 minutes)
#   cmin     minimise fuzz/corpus/TARGET in place instead of fuzzing
#
# Runs a wpod fuzz target under libFuzzer via cargo-fuzz on the STABLE toolchain:
# RUSTC_BOOTSTRAP=1 lets stable rustc accept the one nightly-only flag cargo-fuzz passes
# (-Zsanitizer=address); everything else it uses (-Cpasses=sancov-module, -Cllvm-args=...) is
# stable. Installs cargo-fuzz from crates.io if missing. New corpus entries land in
# fuzz/corpus/TARGET, crashes/timeouts in fuzz/artifacts/TARGET.
set -euo pipefail

target=${1:?usage: fuzz/run.sh manifest|component [SECONDS|cmin] [libFuzzer args...]}
seconds=${2:-1800}
shift $(( $# >= 2 ? 2 : 1 ))

cd "$(dirname "$0")"

case "$target" in
    # Cheap per input: AddressSanitizer, debug assertions and overflow checks (cargo-fuzz's
    # defaults), plus a dictionary of Pod field names.
    manifest)
        build=()
        extra=(-dict=manifest.dict)
        ;;
    # Every input that parses is compiled by Cranelift: with ASan + debug assertions a 90 KB
    # seed took ~12 s of CPU (over the 10 s hang limit), so this target is built optimised
    # (-O: no debug assertions) without a sanitizer, in its own target dir so that the two
    # builds don't overwrite each other.
    component)
        build=(-O --sanitizer none --target-dir target/fast)
        extra=()
        ;;
    *) echo "unknown target '$target' (expected manifest or component)" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    nice -n 19 cargo install cargo-fuzz --locked
fi

# The corpora are not committed (the component one grows to ~200 MB); each run starts from the
# repository's own inputs, copied in under readable names (cp -n keeps what a run already grew).
seed_corpus() {
    case "$1" in
        manifest)
            mkdir -p corpus/manifest
            for f in ../tests/manifests/bad/*.yaml; do cp -n "$f" "corpus/manifest/bad-$(basename "$f")"; done
            for f in ../examples/*.yaml; do cp -n "$f" "corpus/manifest/example-$(basename "$f")"; done
            ;;
        component)
            mkdir -p corpus/component
            if ! ls ../target/sidecars/*.wasm >/dev/null 2>&1; then
                echo "no guest components in target/sidecars: run 'cargo test --workspace --no-run' first" >&2
                exit 2
            fi
            # Under 2 MiB: the 18 MB Python guest takes longer to compile than the hang limit.
            find ../target/sidecars -maxdepth 1 -name '*.wasm' -size -2M -exec cp -n {} corpus/component/ \;
            ;;
    esac
}

export RUSTC_BOOTSTRAP=1
mkdir -p "corpus/$target" "artifacts/$target"
seed_corpus "$target"

if [ "$seconds" = cmin ]; then
    exec nice -n 19 cargo fuzz cmin --fuzz-dir . "${build[@]}" "$target" "corpus/$target" -- \
        -timeout=10 -rss_limit_mb=4096 "$@"
fi

exec nice -n 19 cargo fuzz run --fuzz-dir . "${build[@]}" "$target" "corpus/$target" -- \
    -max_total_time="$seconds" \
    -timeout=10 \
    -rss_limit_mb=4096 \
    -print_final_stats=1 \
    "${extra[@]}" "$@"
