#!/usr/bin/env bash
# pkgversion.sh VERSION prints the version the .deb and .rpm carry for
# VERSION, what `git describe --tags --always --dirty` says (the Makefile's
# VERSION). Both formats want a version that starts with a digit, and a
# later build must sort after an earlier one ("~" sorts before anything,
# even the end of the version; "+" after it):
#
#   v1.2.3                 1.2.3
#   v1.2.3-rc.1            1.2.3~rc.1            before 1.2.3
#   v1.2.3-4-gabc1234      1.2.3+4.gabc1234      4 commits after v1.2.3
#   abc1234 (no tag yet)   0.0.0~gabc1234        before any release
#   dev (no git)           0.0.0~dev
#   any of them, -dirty    +dirty after it (.dirty after a "+")
#
# A tag is a release when it is v (optional) and numbers with dots; any
# other tag is kept, as 0.0.0~TAG with what neither format allows as ".".
set -euo pipefail

v=${1:?usage: pkgversion.sh VERSION}
dirty=
if [[ $v == *-dirty ]]; then
	v=${v%-dirty}
	dirty=1
fi
# Commits since the tag, and the commit: git describe's -N-gHASH.
since=
if [[ $v =~ ^(.+)-([0-9]+)-g([0-9a-f]+)$ ]]; then
	v=${BASH_REMATCH[1]}
	since="${BASH_REMATCH[2]}.g${BASH_REMATCH[3]}"
fi

if [[ $v =~ ^v?([0-9]+(\.[0-9]+)+)(-(.+))?$ ]]; then
	out=${BASH_REMATCH[1]}
	pre=${BASH_REMATCH[4]}
	[ -z "$pre" ] || out+="~${pre//[^A-Za-z0-9.]/.}"
elif [[ $v =~ ^[0-9a-f]{4,40}$ && -z $since ]]; then
	# describe --always with no tag to describe from: the commit alone.
	out="0.0.0~g$v"
else
	out="0.0.0~${v//[^A-Za-z0-9.]/.}"
fi
[ -z "$since" ] || out+="+$since"
if [ -n "$dirty" ]; then
	if [[ $out == *+* ]]; then out+=".dirty"; else out+="+dirty"; fi
fi

if ! [[ $out =~ ^[0-9][A-Za-z0-9.+~]*$ ]]; then
	echo "pkgversion.sh: cannot make a package version of $1 (got $out)" >&2
	exit 1
fi
echo "$out"
