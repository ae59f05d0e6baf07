#!/usr/bin/env bash
# gen-vmlinux.sh ARCH [PACKAGE]: write bpf/headers/ARCH/vmlinux.h from the
# BTF of a Debian kernel package, so that the headers do not depend on the
# machine they were made on.
#
#   ARCH     x86 or arm64 (the __TARGET_ARCH_ names bpf2go defines)
#   PACKAGE  a Debian linux-image package, default the newest 6.12 one of
#            ARCH from apt-cache (arm64 needs `dpkg --add-architecture arm64`
#            and `apt-get update` first)
#
# The kernel image carries its BTF as a raw .BTF blob (arm64's Image is
# stored uncompressed; x86's bzImage, zstd on Debian, is decompressed
# first); the blob is found by its header, carved out, and bpftool dumps
# it as C.
# Needs apt-get, dpkg-deb, python3, zstd and bpftool (Debian packages).
set -euo pipefail

arch=${1:?usage: gen-vmlinux.sh x86|arm64 [PACKAGE]}
case $arch in
x86) debarch=amd64 ;;
arm64) debarch=arm64 ;;
*) echo "gen-vmlinux.sh: unknown arch $arch (want x86 or arm64)" >&2; exit 2 ;;
esac
pkg=${2:-$(apt-cache search --names-only "^linux-image-6\.12\.[0-9]+\+deb12-$debarch-unsigned\$" |
	awk '{print $1}' | sort -V | tail -1)}
[ -n "$pkg" ] || { echo "gen-vmlinux.sh: no 6.12 $debarch kernel in apt-cache" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -qq "$pkg:$debarch")
dpkg-deb -x "$tmp"/*.deb "$tmp/root"

python3 - "$tmp"/root/boot/vmlinuz-* "$tmp/vmlinux.btf" <<'PY'
import lzma, struct, subprocess, sys, zlib

def carve(img):
    """The first BTF blob in img: magic 0xeb9f, version 1, a 24-byte header,
    types then strings, big enough to be a kernel's."""
    magic = struct.pack("<HBB", 0xEB9F, 1, 0)
    i = img.find(magic)
    while i >= 0:
        hdr, toff, tlen, soff, slen = struct.unpack_from("<IIIII", img, i + 4)
        if hdr == 24 and toff == 0 and soff == tlen and tlen > 1 << 20:
            return img[i : i + hdr + tlen + slen]
        i = img.find(magic, i + 1)
    return None

def payloads(img):
    """Images inside a compressed kernel, tried at each compressor's magic."""
    unzstd = lambda b: subprocess.run(["zstd", "-dcq"], input=b, capture_output=True).stdout
    for sig, open_ in ((b"\x28\xb5\x2f\xfd", unzstd),
                       (b"\xfd7zXZ\x00", lzma.decompress),
                       (b"\x1f\x8b\x08", lambda b: zlib.decompressobj(31).decompress(b))):
        i = img.find(sig)
        while i >= 0:
            try:
                yield open_(img[i:])
            except Exception:
                pass
            i = img.find(sig, i + 1)

img = open(sys.argv[1], "rb").read()
btf = carve(img)
for inner in ([] if btf else payloads(img)):
    btf = carve(inner)
    if btf:
        break
if not btf:
    sys.exit("gen-vmlinux.sh: no BTF in " + sys.argv[1])
open(sys.argv[2], "wb").write(btf)
PY

mkdir -p "$here/$arch"
bpftool btf dump file "$tmp/vmlinux.btf" format c >"$here/$arch/vmlinux.h"
echo "gen-vmlinux.sh: $arch/vmlinux.h from $pkg"
