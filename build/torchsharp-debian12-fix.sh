#!/usr/bin/env bash
# Applies the TorchSharp-on-older-libstdc++ fix to the natives in one build output folder ($1), using a work
# folder ($2) for the compiled helpers. Does nothing where the system libstdc++ already has GLIBCXX_3.4.32.
set -euo pipefail
out="$1"; work="$2"; here="$(cd "$(dirname "$0")" && pwd)"
libstdcxx="$(ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64|libstdc\+\+\.so\.6 .*aarch64/ {print $NF; exit}')"
if [[ -z "$libstdcxx" ]]; then libstdcxx="$(ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6/ {print $NF; exit}')"; fi
if [[ -n "$libstdcxx" ]] && grep -q 'GLIBCXX_3\.4\.32' "$libstdcxx"; then exit 0; fi
mapfile -t wrappers < <(find "$out" -name 'libLibTorchSharp.so' -type f 2>/dev/null)
[[ ${#wrappers[@]} -eq 0 ]] && exit 0
cc_bin="$(command -v cc || command -v gcc || command -v clang || true)"
if [[ -z "$cc_bin" ]]; then
  echo "error FV0001: TorchSharp's libLibTorchSharp.so needs GLIBCXX_3.4.32, which this system's libstdc++ ($libstdcxx) lacks. The build fixes that with a small shim compiled by a C compiler, and none was found: install one (Debian: apt-get install gcc)." >&2
  exit 1
fi
mkdir -p "$work"
if [[ ! -f "$work/libstdcxx_compat.so" || "$here/stdcxx_compat.c" -nt "$work/libstdcxx_compat.so" ]]; then
  "$cc_bin" -shared -fPIC -O2 "-Wl,--version-script=$here/stdcxx_compat.map" -o "$work/libstdcxx_compat.so" "$here/stdcxx_compat.c"
fi
if [[ ! -x "$work/elf_weak_verneed" || "$here/elf_weak_verneed.c" -nt "$work/elf_weak_verneed" ]]; then
  "$cc_bin" -O2 -o "$work/elf_weak_verneed" "$here/elf_weak_verneed.c"
fi
for w in "${wrappers[@]}"; do
  dir="$(dirname "$w")"
  "$work/elf_weak_verneed" "$w" GLIBCXX_3.4.32 >/dev/null
  cp -f "$work/libstdcxx_compat.so" "$dir/libstdcxx_compat.so"
done
