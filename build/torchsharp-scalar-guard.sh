#!/usr/bin/env bash
# Builds libfv_scalar_guard.so (see scalar_guard.c) beside every libLibTorchSharp.so in one build output folder
# ($1), compiling it once in a work folder ($2) per wrapper folder. Without a C compiler it warns and does nothing;
# FastVideo then runs without the guard.
set -euo pipefail
out="$1"; work="$2"; here="$(cd "$(dirname "$0")" && pwd)"
mapfile -t wrappers < <(find "$out" -name 'libLibTorchSharp.so' -type f 2>/dev/null)
[[ ${#wrappers[@]} -eq 0 ]] && exit 0
cc_bin="$(command -v cc || command -v gcc || command -v clang || true)"
if [[ -z "$cc_bin" ]]; then
  echo "warning FV0002: no C compiler found, so the TorchSharp Scalar guard (build/scalar_guard.c) is not built; long runs may hit an intermittent 'toFloat' error from TorchSharp. Install one (Debian: apt-get install gcc) and rebuild." >&2
  exit 0
fi
mkdir -p "$work"
for w in "${wrappers[@]}"; do
  dir="$(dirname "$w")"
  target="$dir/libfv_scalar_guard.so"
  if [[ -f "$target" && "$target" -nt "$here/scalar_guard.c" && "$target" -nt "$w" ]]; then continue; fi
  # Linked against the wrapper in the same folder (found again there through $ORIGIN), so that a lookup of any
  # other THS* symbol through this library's handle falls through to the real wrapper.
  if ! "$cc_bin" -shared -fPIC -O2 -o "$work/libfv_scalar_guard.so.tmp" "$here/scalar_guard.c" \
    -Wl,--no-as-needed "-L$dir" -l:libLibTorchSharp.so '-Wl,-rpath,$ORIGIN' -Wl,--allow-shlib-undefined -ldl -lpthread; then
    echo "warning FV0003: building the TorchSharp Scalar guard (build/scalar_guard.c) failed; FastVideo runs without it." >&2
    continue
  fi
  mv -f "$work/libfv_scalar_guard.so.tmp" "$target"
done
