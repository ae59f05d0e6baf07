#!/usr/bin/env bash
# release.sh ARCH... (`make release`) makes in $DIST (dist/), for each
# ARCH (amd64, arm64):
#
#   porttrace_VERSION_linux_ARCH.tar.gz  porttrace_VERSION_linux_ARCH/ with
#                                        the binary, README.md (and LICENSE
#                                        when the repository has one)
#   porttrace_PKGVERSION-1_ARCH.deb      nfpm.yaml: the binary as
#   porttrace-PKGVERSION-1.RPMARCH.rpm   /usr/bin/porttrace, the systemd
#                                        units, README.md
#
# and SHA256SUMS over them all. The binary is `make build`'s, with GOOS
# and GOARCH set; VERSION is the Makefile's (git describe) and
# PKGVERSION what pkgversion.sh makes of it. nfpm is a tool in go.mod
# (`go tool nfpm`), so nothing is fetched once the modules are.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${VERSION:?VERSION must be set, as the Makefile sets it}"
GO=${GO:-go}
MAKE=${MAKE:-make}
DIST=${DIST:-dist}
[ $# -gt 0 ] || { echo "usage: release.sh ARCH..." >&2; exit 2; }

pkgversion=$(bash packaging/pkgversion.sh "$VERSION")
# Every file packed gets the last commit's time, so that the same commit
# packs the same bytes, but for the rpm's build host (nfpm reads
# SOURCE_DATE_EPOCH too).
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
# The first paragraph of the README, the packages' long description.
PKG_DESCRIPTION=$(awk 'NR > 1 && NF { p = 1 } p && !NF { exit } p' README.md)
export PKG_DESCRIPTION

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$DIST"
mkdir -p "$DIST"

# The units under deploy/systemd/ run /usr/local/bin/porttrace, where the
# README installs it by hand; the packages install /usr/bin/porttrace.
mkdir "$work/systemd"
for unit in deploy/systemd/*.service; do
	sed 's|/usr/local/bin/porttrace|/usr/bin/porttrace|g' "$unit" >"$work/systemd/${unit##*/}"
	grep -q '^ExecStart=/usr/bin/porttrace\b' "$work/systemd/${unit##*/}" || {
		echo "release.sh: $unit: no ExecStart=/usr/local/bin/porttrace to point at /usr/bin/porttrace" >&2
		exit 1
	}
done
export PKG_UNITS=$work/systemd

for arch in "$@"; do
	name=porttrace_${VERSION}_linux_$arch
	mkdir "$work/$name"
	GOOS=linux GOARCH=$arch "$MAKE" --no-print-directory build VERSION="$VERSION" GO="$GO" BIN="$work/$name/porttrace"

	cp README.md "$work/$name/"
	[ ! -f LICENSE ] || cp LICENSE "$work/$name/"
	chmod -R u=rwX,go=rX "$work/$name"
	tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner \
		--mtime="@$SOURCE_DATE_EPOCH" -cf - "$name" | gzip -9n >"$DIST/$name.tar.gz"

	for packager in deb rpm; do
		PKG_ARCH=$arch PKG_VERSION=$pkgversion PKG_BINARY=$work/$name/porttrace \
			"$GO" tool nfpm package --config packaging/nfpm.yaml --packager "$packager" --target "$DIST/" >/dev/null
	done
done

(cd "$DIST" && sha256sum -- *.tar.gz *.deb *.rpm >SHA256SUMS)
ls -l "$DIST"
