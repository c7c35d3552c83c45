#!/usr/bin/env bash
# Applies FastVideo's two native fixes beside every libLibTorchSharp.so in one build output folder ($1), compiling
# the helpers in a work folder ($2):
#  1. TorchSharp on an older libstdc++ (Debian 12): mark the wrapper's GLIBCXX_3.4.32 requirement weak and drop a
#     one-symbol shim beside it. Skipped where the system libstdc++ has that version. Needs a C compiler.
#  2. The Scalar guard (scalar_guard.c): a library loaded in front of the wrapper that defers freeing Scalars.
#     Without a C compiler, or if it fails to build, the build warns and FastVideo runs without it.
set -euo pipefail
out="$1"; work="$2"; here="$(cd "$(dirname "$0")" && pwd)"
mapfile -t wrappers < <(find "$out" -name 'libLibTorchSharp.so' -type f 2>/dev/null)
[[ ${#wrappers[@]} -eq 0 ]] && exit 0
cc_bin="$(command -v cc || command -v gcc || command -v clang || true)"
mkdir -p "$work"

libstdcxx="$(ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64|libstdc\+\+\.so\.6 .*aarch64/ {print $NF; exit}')"
if [[ -z "$libstdcxx" ]]; then libstdcxx="$(ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6/ {print $NF; exit}')"; fi
if ! { [[ -n "$libstdcxx" ]] && grep -q 'GLIBCXX_3\.4\.32' "$libstdcxx"; }; then
  if [[ -z "$cc_bin" ]]; then
    echo "error FV0001: TorchSharp's libLibTorchSharp.so needs GLIBCXX_3.4.32, which this system's libstdc++ ($libstdcxx) lacks. The build fixes that with a small shim compiled by a C compiler, and none was found: install one (Debian: apt-get install gcc)." >&2
    exit 1
  fi
  if [[ ! -f "$work/libstdcxx_compat.so" || "$here/stdcxx_compat.c" -nt "$work/libstdcxx_compat.so" ]]; then
    "$cc_bin" -shared -fPIC -O2 "-Wl,--version-script=$here/stdcxx_compat.map" -o "$work/libstdcxx_compat.so" "$here/stdcxx_compat.c"
  fi
  if [[ ! -x "$work/elf_weak_verneed" || "$here/elf_weak_verneed.c" -nt "$work/elf_weak_verneed" ]]; then
    "$cc_bin" -O2 -o "$work/elf_weak_verneed" "$here/elf_weak_verneed.c"
  fi
  for w in "${wrappers[@]}"; do
    "$work/elf_weak_verneed" "$w" GLIBCXX_3.4.32 >/dev/null
    cp -f "$work/libstdcxx_compat.so" "$(dirname "$w")/libstdcxx_compat.so"
  done
fi

if [[ -z "$cc_bin" ]]; then
  echo "warning FV0002: no C compiler found, so the TorchSharp Scalar guard (build/scalar_guard.c) is not built; long runs may hit an intermittent 'toFloat' error from TorchSharp. Install one (Debian: apt-get install gcc) and rebuild." >&2
  exit 0
fi
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
