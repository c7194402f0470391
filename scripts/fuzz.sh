#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz / libFuzzer) of the code that parses
# untrusted input: builds the targets in fuzz/ and runs each for
# FUZZ_SECONDS (default 600) on its corpus, one after another, niced and in
# one process. Fails when any target crashes, panics, hangs or runs out of
# memory; the input that did it is left in fuzz/artifacts/<target>/. Not part
# of test.sh (it takes over an hour); FUZZ_SECONDS=10 is a quick check.
#
#   scripts/fuzz.sh                     every target, 10 minutes each
#   FUZZ_SECONDS=10 scripts/fuzz.sh     every target, 10 seconds each
#   scripts/fuzz.sh envd_paths          only the targets named
#   FUZZ_CMIN=1 scripts/fuzz.sh         afterwards, merge what the run found
#                                       into fuzz/corpus/<target>, minimized
#                                       and cut to FUZZ_CORPUS_BYTES (250000)
#
# New inputs go to a scratch corpus under the target dir, so that the
# checked-in corpus only changes with FUZZ_CMIN=1. See fuzz/README.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

seconds="${FUZZ_SECONDS:-600}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/cache/sandbar-fuzz-target}"
# cargo-fuzz passes nightly-only flags (-Zsanitizer=...); this allows them on
# a stable toolchain.
export RUSTC_BOOTSTRAP=1
fuzz=(--fuzz-dir "$root/fuzz" --target-dir "$CARGO_TARGET_DIR")

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(cargo fuzz list "${fuzz[@]:0:2}")
fi

echo "==> building the fuzz targets (address sanitizer, release with debug assertions)"
nice -n 19 cargo fuzz build "${fuzz[@]}"

failed=()
for t in "${targets[@]}"; do
  corpus="$root/fuzz/corpus/$t"
  scratch="$CARGO_TARGET_DIR/fuzz-corpus/$t"
  artifacts="$root/fuzz/artifacts/$t"
  logs="$CARGO_TARGET_DIR/fuzz-logs/$t"
  mkdir -p "$corpus" "$scratch" "$artifacts" "$logs"
  rm -f "$logs"/fuzz-*.log
  args=(
    -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len=8192
    -jobs=1 -workers=1 -print_final_stats=1 -artifact_prefix="$artifacts/"
  )
  [[ -f "$root/fuzz/dicts/$t.dict" ]] && args+=(-dict="$root/fuzz/dicts/$t.dict")
  echo "==> $t: ${seconds}s"
  # libFuzzer's job mode writes the run's output to fuzz-0.log in the cwd.
  if (cd "$logs" && nice -n 19 cargo fuzz run "${fuzz[@]}" "$t" "$scratch" "$corpus" -- "${args[@]}" >"$logs/driver.log" 2>&1); then
    status=ok
  else
    status=FAILED
    failed+=("$t")
  fi
  log="$logs/fuzz-0.log"
  [[ -f "$log" ]] || log="$logs/driver.log"
  if [[ $status == ok ]]; then
    # The last status line (executions, cov, ft, corpus) and the final stats.
    grep -E '^#[0-9]+' "$log" | tail -n 1 || true
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" || true
  else
    echo "--- $t failed; the end of its log ($log):"
    tail -n 40 "$log"
    ls -t "$artifacts" | head -n 3 | sed "s|^|    artifact: $artifacts/|"
  fi
  if [[ ${FUZZ_CMIN:-0} == 1 && $status == ok ]]; then
    merged="$CARGO_TARGET_DIR/fuzz-merged/$t"
    rm -rf "$merged" && mkdir -p "$merged"
    (cd "$logs" && nice -n 19 cargo fuzz run "${fuzz[@]}" "$t" "$merged" "$corpus" "$scratch" -- \
      -merge=1 -timeout=5 -rss_limit_mb=2048 -max_len=8192 >"$logs/merge.log" 2>&1)
    # As `cargo fuzz cmin` does (-merge=1), but the hand-written seeds keep
    # their names and stay; of the rest only what adds coverage is kept.
    find "$corpus" -type f ! -name 'seed-*' -delete
    seeds="$(find "$corpus" -type f -exec sha1sum {} + | cut -d' ' -f1)"
    for f in "$merged"/*; do
      [[ -f $f ]] || continue
      grep -qx "$(basename "$f")" <<<"$seeds" || cp "$f" "$corpus/"
    done
    # A budget per target keeps the checked-in corpus small: past it the
    # largest non-seed inputs go (small ones carry most coverage per byte).
    budget="${FUZZ_CORPUS_BYTES:-250000}"
    find "$corpus" -type f ! -name 'seed-*' -printf '%s %p\n' | sort -n |
      awk -v b="$budget" '{ t += $1; if (t > b) print $2 }' | xargs -r rm -f
    echo "    corpus: $(find "$corpus" -type f | wc -l) files, $(find "$corpus" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }') bytes"
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "==> fuzzing FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "==> fuzzing: ${#targets[@]} targets, no crash"
