#!/usr/bin/env bash
# Kernel matrix: boot each kernel of vm/kernels in QEMU (TCG, no KVM needed)
# with the static kernel-test binary as part of the initramfs, run the tests
# once per backend, then run them on the host kernel too, and print a
# kernel x backend matrix. Exits non-zero on any failure: a failed test, one
# that crashed the test binary or never ran, a skip in a guest that
# vm/kernels does not allow, a kernel warning or taint in a guest, a guest
# that did not finish. A test that fails is run once more (under emulation a
# guest can stall for seconds); if it then passes it counts as passed, and
# is named below the matrix, without failing the run.
#
# Kernels are Debian packages, amd64 and arm64, of Debian 12 (bookworm) and
# 11 (bullseye), fetched with apt into the cache under its own package
# lists and sources (the machine's apt setup is neither read nor changed).
# amd64 kernels boot in qemu-system-x86_64, arm64 ones in
# qemu-system-aarch64, each with an initramfs built for its architecture.
#
# Kernels and built artefacts are cached in .cache/vm (VM_CACHE overrides,
# relative to the repository). VM_BACKENDS (default fentry,kprobe,tracepoint)
# and VM_RUN (a go test -run pattern, in place of every line's own) narrow a
# run; VM_JOBS (default: the number of cores) caps the guests booted at
# once, VM_TIMEOUT (seconds) the time each may take. VM_BENCH=ARGS runs the
# benchmark instead, on the last amd64 kernel of vm/kernels, with ARGS
# (bench flags separated by "+", e.g. -reps+5+-backends+fentry,tracepoint)
# and prints its output; VM_BASELINE (a static porttrace built elsewhere)
# goes in the guest as /baseline, for -baseline+/baseline, so that two
# builds are measured side by side on a backend this host cannot load.
set -euo pipefail
shopt -s inherit_errexit # set -e inside $(...) too: a failed download stops the run
cd "$(dirname "$0")/.."
cache=${VM_CACHE:-.cache/vm}
backends=${VM_BACKENDS:-fentry,kprobe,tracepoint}
run=${VM_RUN:-^TestKernel}
# A guest runs the tests once per backend on one emulated CPU, two guests
# at once on a 2-core host: 16 to 25 minutes each on the slowest such host
# seen (2026-12-01: 5.10 1361 s; 6.1 ran out of its then limit, 1500 s,
# with its last backend's tests a few minutes from done). The limit leaves
# about half as much again. By it a test that hangs has been named (the
# guest is told the limit); the guests, two at a time, take at most the
# limit each in turn.
timeout_s=${VM_TIMEOUT:-2400}
jobs=${VM_JOBS:-$(nproc)}
prefix=porttrace-matrix:
mkdir -p "$cache"
# One run at a time on a cache: two would write the same logs and initrds,
# and each would remove the kernels the other's vm/kernels does not name.
exec 9>>"$cache/.lock"
if ! flock -n 9; then
	echo "test-vm: another run is using $cache; waiting for it to end" >&2
	flock 9
fi

die() { echo "test-vm: $*" >&2; exit 1; }
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "VM_JOBS=$jobs: want 1 or more"

# No guest outlives the run: stopped or failed, it takes its guests along
# (timeout passes the signal on to its qemu).
stop_guests() {
	local p
	for p in $(jobs -p); do
		pkill -TERM -P "$p" 2>/dev/null || true
		kill "$p" 2>/dev/null || true
	done
}
trap stop_guests EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

for tool in cpio dpkg dpkg-deb apt-cache apt-get timeout flock; do
	command -v "$tool" >/dev/null || die "$tool not found (apt-get install cpio)"
done
# The churn test cross-checks porttrace against ss(8) in the guests.
command -v ss >/dev/null || die "ss not found (apt-get install iproute2)"
harch=$(dpkg --print-architecture)

# vm/kernels: "PACKAGE AUTO [RUN] [cpus=N]" lines, and "skip PACKAGE
# BACKEND TEST REASON". The architecture is the package name's last word
# (-amd64, -arm64).
patterns=() autos=() runs=() cpus=() arches=() skips=()
n=0
while IFS= read -r line; do
	n=$((n + 1))
	read -r -a f <<<"$line"
	case ${f[0]:-#} in
	'#'*) continue ;;
	skip)
		[ ${#f[@]} -ge 5 ] || die "vm/kernels:$n: want skip PACKAGE BACKEND TEST REASON"
		case ${f[2]} in fentry | kprobe | tracepoint | '*') ;; *) die "vm/kernels:$n: unknown backend ${f[2]}" ;; esac
		skips+=("${f[*]:1}")
		;;
	*)
		c=1
		if [ ${#f[@]} -ge 3 ] && [[ ${f[-1]} == cpus=* ]]; then
			c=${f[-1]#cpus=}
			[[ $c =~ ^[1-9][0-9]*$ ]] || die "vm/kernels:$n: ${f[-1]}: want cpus=N, N 1 or more"
			unset 'f[-1]'
		fi
		[ ${#f[@]} = 2 ] || [ ${#f[@]} = 3 ] || die "vm/kernels:$n: want PACKAGE AUTO [RUN] [cpus=N] (the backend auto picks on that kernel, the tests it runs, its CPUs)"
		case ${f[1]} in fentry | kprobe | tracepoint) ;; *) die "vm/kernels:$n: unknown backend ${f[1]}" ;; esac
		case ${f[0]} in
		*-amd64) arches+=(amd64) ;;
		*-arm64) arches+=(arm64) ;;
		*) die "vm/kernels:$n: ${f[0]}: the name must end in -amd64 or -arm64 (its architecture)" ;;
		esac
		patterns+=("${f[0]}") autos+=("${f[1]}") runs+=("${VM_RUN:-${f[2]:-$run}}") cpus+=("$c")
		;;
	esac
done <vm/kernels
[ ${#patterns[@]} -gt 0 ] || die "vm/kernels names no kernel"
for s in "${skips[@]}"; do
	read -r pat _ <<<"$s"
	printf '%s\n' "${patterns[@]}" | grep -qxF -- "$pat" || die "vm/kernels: skip $s: no kernel line names $pat"
done
# The architectures to build for: the kernels' and the host's (its row).
mapfile -t builds < <(printf '%s\n' "$harch" "${arches[@]}" | sort -u)
for a in $(printf '%s\n' "${arches[@]}" | sort -u); do
	case $a in
	amd64) command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)" ;;
	arm64) command -v qemu-system-aarch64 >/dev/null || die "qemu-system-aarch64 not found (apt-get install qemu-system-arm)" ;;
	esac
done
[ "$harch" = amd64 ] || [ "$harch" = arm64 ] || die "no build for this machine's architecture, $harch"

# apt, on package lists of its own in the cache: Debian 12 and 11, amd64
# and arm64, for download only. Updated once a run, so that "*" picks the
# newest kernel of the day; the machine's own apt setup is not touched.
aptdir=$cache/apt
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$keyring" ] || die "$keyring not found (apt-get install debian-archive-keyring)"
mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial"
{
	for suite in bookworm bullseye; do
		archs=amd64,arm64
		[ "$suite" = bookworm ] || archs=amd64
		echo "deb [signed-by=$keyring arch=$archs] http://deb.debian.org/debian $suite main"
		echo "deb [signed-by=$keyring arch=$archs] http://deb.debian.org/debian-security $suite-security main"
	done
} >"$aptdir/sources.list"
apt_opts=(
	-o "Dir::Etc::SourceList=$aptdir/sources.list" -o Dir::Etc::SourceParts=/dev/null
	-o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache=$aptdir/cache"
	-o APT::Architectures::=amd64 -o APT::Architectures::=arm64
	-o Debug::NoLocking=1 -o APT::Sandbox::User=root
)
echo "test-vm: updating the kernel package lists ($aptdir)"
if ! apt-get "${apt_opts[@]}" update -qq >&2; then
	compgen -G "$aptdir/lists/*_Packages*" >/dev/null || die "apt-get update failed (deb.debian.org unreachable?)"
	echo "test-vm: apt-get update failed; the kernels are picked from the lists of an earlier run" >&2
fi

# fetch DIR PKG:ARCH...: downloads the packages into DIR.
fetch() {
	local dir=$1
	shift
	(cd "$dir" && apt-get "${apt_opts[@]}" download -q "$@" >&2) || die "downloading $* failed"
}

# resolve PATTERN: the newest package apt-cache lists that matches it. "*"
# stands for a version number (digits and dots), so write the rest of the
# name as Debian does: linux-image-6.12.*+deb12-amd64.
resolve() {
	local re pkg
	re=$(printf '%s' "$1" | sed -e 's/[.+]/\\&/g' -e 's/\*/[0-9.]*/g')
	pkg=$(apt-cache "${apt_opts[@]}" search --names-only "^${re}\$" | awk '{print $1}' | sort -V | tail -n 1)
	if [ -z "$pkg" ]; then
		echo "test-vm: no package matches $1 (\"*\" stands for digits and dots); near it:" >&2
		apt-cache "${apt_opts[@]}" search --names-only "^${1%%\**}" | awk '{print "  " $1}' | sort -V | tail -n 5 >&2 || true
		return 1
	fi
	echo "$pkg"
}

# kernel PACKAGE ARCH: prints the path of its vmlinuz, downloading and
# unpacking once. The unpacked tree is moved into place only once whole,
# with a mark, so an interrupted or failed fetch is fetched again rather
# than half used.
kernel() {
	local pkg=$1 arch=$2 dir=$cache/kernels/$1 dl
	if [ ! -e "$dir/.complete" ]; then
		dl=$(mktemp -d)
		fetch "$dl" "$pkg:$arch"
		rm -rf "$dir" "$dir.new" && mkdir -p "$dir.new"
		dpkg-deb -x "$dl"/"${pkg}"_*.deb "$dir.new" || die "unpacking $pkg failed"
		ls "$dir.new"/boot/vmlinuz-* >/dev/null 2>&1 || die "$pkg has no boot/vmlinuz-*"
		touch "$dir.new/.complete"
		mv "$dir.new" "$dir"
		rm -rf "$dl"
	fi
	ls "$dir"/boot/vmlinuz-*
}

# lib ARCH PATH: where the library (or loader) this machine has at PATH
# lies on ARCH.
lib() {
	case $1 in
	amd64) sed -e 's|aarch64-linux-gnu|x86_64-linux-gnu|' -e 's|^/lib/ld-linux-aarch64\.so\.1$|/lib64/ld-linux-x86-64.so.2|' <<<"$2" ;;
	arm64) sed -e 's|x86_64-linux-gnu|aarch64-linux-gnu|' -e 's|^/lib64/ld-linux-x86-64\.so\.2$|/lib/ld-linux-aarch64.so.1|' <<<"$2" ;;
	esac
}

# inroot ROOT PATH: the file PATH names inside the unpacked tree ROOT,
# following its links (absolute ones inside ROOT too), and /lib as /usr/lib
# where only one of the two holds it.
inroot() {
	local root=$1 p=$2 t i
	for i in $(seq 40); do
		[ -e "$root$p" ] || [ -L "$root$p" ] || case $p in /usr/*) p=${p#/usr} ;; *) p=/usr$p ;; esac
		if [ -L "$root$p" ]; then
			t=$(readlink "$root$p")
			case $t in /*) p=$t ;; *) p=$(dirname "$p")/$t ;; esac
		elif [ -f "$root$p" ]; then
			echo "$root$p"
			return 0
		else
			return 1
		fi
	done
	return 1
}

# foreign_ss ARCH DEST: ss(8) and its libraries for ARCH, at the paths
# they have there, under DEST: the packages that hold this machine's ss and
# its libraries, fetched for ARCH and unpacked once (again when that list
# of packages changes).
foreign_ss() {
	local arch=$1 dest=$2 dir=$cache/ss-$1 f p pkgs=() ssbin dl
	for f in "$(command -v ss)" $(ldd "$(command -v ss)" | grep -o '/[^ ]*'); do
		# /bin and /lib are /usr/bin and /usr/lib: a package may name either.
		p=$(dpkg -S "$f" 2>/dev/null || dpkg -S "/usr$f" 2>/dev/null || dpkg -S "${f#/usr}" 2>/dev/null) ||
			die "no package holds $f (dpkg -S)"
		p=${p%%$'\n'*}
		pkgs+=("${p%%:*}:$arch")
	done
	mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
	if [ "$(cat "$dir/.complete" 2>/dev/null)" != "${pkgs[*]}" ]; then
		echo "test-vm: fetching ss for $arch: ${pkgs[*]}"
		dl=$(mktemp -d)
		fetch "$dl" "${pkgs[@]}"
		rm -rf "$dir" "$dir.new" && mkdir -p "$dir.new"
		for f in "$dl"/*.deb; do dpkg-deb -x "$f" "$dir.new" || die "unpacking $f failed"; done
		echo "${pkgs[*]}" >"$dir.new/.complete"
		mv "$dir.new" "$dir"
		rm -rf "$dl"
	fi
	ssbin=$(command -v ss)
	for f in "$ssbin" $(ldd "$ssbin" | grep -o '/[^ ]*'); do
		[ "$f" = "$ssbin" ] || f=$(lib "$arch" "$f")
		p=$(inroot "$dir" "$f") || die "$f not found in the $arch packages ${pkgs[*]}"
		mkdir -p "$dest$(dirname "$f")"
		cp "$p" "$dest$f"
	done
}

# build ARCH: the guest's files for ARCH, once a run, shared by all its
# kernels: the static kernel-test binary, /init, test2json, ss and its
# libraries, passwd and group; packed as $cache/initramfs-ARCH.cpio.
build() {
	local arch=$1 root=$cache/root-$1 f go=(env GOARCH="$1" CGO_ENABLED=0 go)
	echo "test-vm: building the $arch guest"
	rm -rf "$root" && mkdir -p "$root"
	"${go[@]}" test -c -o "$root/tracer.test" ./tracer
	"${go[@]}" build -o "$root/init" ./vm/init
	"${go[@]}" build -o "$root/test2json" cmd/test2json
	if [ -n "${VM_BENCH:-}" ] && [ "$arch" = amd64 ]; then
		"${go[@]}" build -o "$root/porttrace" ./cmd/porttrace
		"${go[@]}" build -o "$root/bench" ./bench
		[ -z "${VM_BASELINE:-}" ] || cp "$VM_BASELINE" "$root/baseline"
	fi
	# ss(8) and its libraries.
	if [ "$arch" = "$harch" ]; then
		for f in "$(command -v ss)" $(ldd "$(command -v ss)" | grep -o '/[^ ]*'); do
			mkdir -p "$root$(dirname "$f")"
			cp -L "$f" "$root$f"
		done
	else
		foreign_ss "$arch" "$root"
	fi
	# The users the tests run as and look up (the "user" field).
	mkdir -p "$root/etc"
	printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' >"$root/etc/passwd"
	printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$root/etc/group"
	(cd "$root" && mkdir -p tmp dev proc sys && find . -mindepth 1 | cpio -o -H newc --quiet) >"$cache/initramfs-$arch.cpio"
}
# What the cache held before the guests had an architecture each, and the
# builds of architectures no line names any more.
rm -rf "$cache/root" "$cache/initramfs.cpio"
for a in amd64 arm64; do
	printf '%s\n' "${builds[@]}" | grep -qx "$a" || rm -rf "$cache/root-$a" "$cache/initramfs-$a.cpio" "$cache/ss-$a"
done
for a in "${builds[@]}"; do build "$a"; done

# Modules the tests need that Debian builds as modules, in load order.
modules="net/ipv4/inet_diag net/ipv4/tcp_diag net/ipv4/udp_diag drivers/net/veth drivers/net/tun"

# initrd NAME ARCH DIR PATTERN: ARCH's shared initramfs with NAME's modules
# and, as /skips, the skips vm/kernels allows on PATTERN's kernel appended
# (the kernel unpacks concatenated cpio archives in turn).
initrd() {
	local name=$1 arch=$2 dir=$3 pattern=$4 stage=$cache/modules/$1 i=0 m f s pat rest
	rm -rf "$stage" && mkdir -p "$stage/modules"
	for m in $modules; do
		f=$(compgen -G "$dir/lib/modules/*/kernel/$m.ko*" | head -n 1 || true)
		[ -n "$f" ] || continue # built in
		i=$((i + 1))
		cp "$f" "$stage/modules/$i-$(basename "$f")"
	done
	: >"$stage/skips"
	for s in "${skips[@]}"; do
		read -r pat rest <<<"$s"
		[ "$pat" != "$pattern" ] || printf '%s\n' "$rest" >>"$stage/skips"
	done
	cat "$cache/initramfs-$arch.cpio" >"$cache/initrd-$name.cpio"
	(cd "$stage" && find modules skips | cpio -o -H newc --quiet) >>"$cache/initrd-$name.cpio"
}

# One vCPU a guest, at most one guest per host core: one vCPU is faster on
# a 2-core host. A line with cpus=N gets N vCPUs, all run in turn by one
# host thread (thread=single): with a thread a vCPU, the kernel's code
# patching across CPUs is not seen coherently by the others, and attaching
# syscall tracepoints crashed 6.12 at a stale int3 (16 vCPUs) and left 6.1
# spinning in syscall_trace_enter (2 vCPUs). The guest is told its time
# limit so that a test that hangs is named before the guest is killed.
# arm64 guests are QEMU's "virt" machine, booted straight into the kernel
# (no firmware), with the PL011 serial console. Debian's arm64 kernel signs
# return addresses (pointer authentication) in every function; TCG computes
# the architected algorithm about three times slower than the
# implementation-defined one pauth-impdef selects, which the kernel runs on
# just as well.
boot() {
	local name=$1 arch=$2 vmlinuz=$3 auto=$4 pattern=$5 ncpu=$6 log=$cache/$1.log start=$SECONDS rc=0 machine console tcg=tcg
	[ "$ncpu" = 1 ] || tcg=tcg,thread=single
	case $arch in
	amd64) machine=(qemu-system-x86_64 -M q35 -accel "$tcg" -cpu max) console=ttyS0 ;;
	arm64) machine=(qemu-system-aarch64 -M virt -accel "$tcg" -cpu "max,pauth-impdef=on") console=ttyAMA0 ;;
	esac
	timeout "$timeout_s" "${machine[@]}" -smp "$ncpu" -m 1G \
		-nographic -no-reboot -nic none \
		-kernel "$vmlinuz" -initrd "$cache/initrd-$name.cpio" \
		-append "console=$console panic=-1 quiet porttrace.backends=$backends porttrace.auto=$auto porttrace.run=$pattern porttrace.timeout=$timeout_s${VM_BENCH:+ porttrace.bench=$VM_BENCH}" \
		-serial "file:$log" -monitor none -display none </dev/null >/dev/null 2>&1 || rc=$?
	echo "$rc" >"$cache/$name.rc"
	echo "test-vm: $name took $((SECONDS - start))s, log in $log"
}

# guest I: the name of the guest of line I of vm/kernels: its kernel's,
# and its CPUs where it has more than one.
guest() {
	local n=${pkgs[$1]#linux-image-}
	[ "${cpus[$1]}" = 1 ] || n+=-${cpus[$1]}cpus
	echo "$n"
}

# prepare I: fetches and packs kernel I of vm/kernels (resolved in pkgs);
# sets name.
prepare() {
	local pkg=${pkgs[$1]} arch=${arches[$1]} vmlinuz
	vmlinuz=$(kernel "$pkg" "$arch")
	name=$(guest "$1")
	initrd "$name" "$arch" "$cache/kernels/$pkg" "${patterns[$1]}"
	rm -f "$cache/$name.log" "$cache/$name.rc"
	boot_args=("$name" "$arch" "$vmlinuz" "${autos[$1]}" "${runs[$1]}" "${cpus[$1]}")
}

# Every line resolved before any guest boots: a line that matches nothing,
# or the same package with as many CPUs as another, stops the run before
# it starts.
pkgs=()
for i in "${!patterns[@]}"; do
	pkgs+=("$(resolve "${patterns[$i]}")") || die "vm/kernels: ${patterns[$i]} matches no package"
done
dups=$(for i in "${!pkgs[@]}"; do guest "$i"; done | sort | uniq -d)
[ -z "$dups" ] || die "vm/kernels: two lines pick $dups"

# The benchmark runs on the last amd64 kernel of one CPU only: under
# emulation its numbers compare backends on one kernel, and one is enough.
if [ -n "${VM_BENCH:-}" ]; then
	last=
	for i in "${!patterns[@]}"; do [ "${arches[$i]}" != amd64 ] || [ "${cpus[$i]}" != 1 ] || last=$i; done
	[ -n "$last" ] || die "VM_BENCH: vm/kernels names no amd64 kernel of one CPU"
	prepare "$last"
	timeout_s=${VM_TIMEOUT:-1800}
	echo "test-vm: benchmarking on $name (one emulated CPU)"
	boot "${boot_args[@]}"
	log=$cache/$name.log
	# From the first line of any mode's output (bench:, bench -kernel:, ...).
	sed -n '/porttrace bench/,$p' "$log" | { grep -av "$prefix done" || true; } | tr -d '\r'
	grep -aq "$prefix done" "$log" && ! grep -aq 'bench-error' "$log" || die "the benchmark failed, see $log"
	exit 0
fi

kernels=()
for i in "${!patterns[@]}"; do
	prepare "$i"
	kernels+=("$name")
	while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
	echo "test-vm: booting $name ($backends; ${runs[$i]}; auto should pick ${autos[$i]})"
	boot "${boot_args[@]}" &
done
wait

# Kernels that no line of vm/kernels picks any more, and guests none boots.
for d in "$cache"/kernels/linux-image-*; do
	[ -d "$d" ] || continue
	printf '%s\n' "${pkgs[@]}" | grep -qxF -- "${d##*/}" || rm -rf "$d"
done
for f in "$cache"/*.rc; do
	[ -e "$f" ] || continue
	k=$(basename "$f" .rc)
	[ "$k" = host ] || printf '%s\n' "${kernels[@]}" | grep -qxF -- "$k" || rm -rf "$cache/initrd-$k.cpio" "$cache/modules/$k" "$cache/$k.log" "$cache/$k.rc"
done

# The host kernel: judged as a guest is, except that it may refuse a
# backend outright (here fentry and kprobes), whose tests then skip.
host="$(uname -r) (host, $harch)"
echo "test-vm: $host, log in $cache/host.log"
rc=0
"$cache/root-$harch/init" --backends "$backends" --run "$run" --test "$cache/root-$harch/tracer.test" \
	--test2json "$cache/root-$harch/test2json" >"$cache/host.log" 2>&1 || rc=$?
echo "$rc" >"$cache/host.rc"
kernels+=("$host")

declare -A result label
failed=() # one line per failure, for the list below the matrix
flaky=()  # one line per test that passed only when run again
total_p=0 total_f=0 total_s=0
for k in "${kernels[@]}"; do
	if [ "$k" = "$host" ]; then log=$cache/host.log rcfile=$cache/host.rc; else log=$cache/$k.log rcfile=$cache/$k.rc; fi
	label[$k]=$k
	lines=$(grep -a "$prefix " "$log" | sed "s/.*$prefix //" | tr -d '\r' || true)
	echo
	echo "test-vm: $k"
	[ -z "$lines" ] || sed 's/^/  /' <<<"$lines"
	while IFS= read -r l; do
		[ -n "$l" ] || continue
		failed+=("$k: $l")
		total_f=$((total_f + 1))
	done < <(grep -E '^(boot fail |setup-error )' <<<"$lines" | sed 's/^boot fail /at boot: /' || true)
	grep -q '^boot fail ' <<<"$lines" && label[$k]="$k (kernel warned at boot)"
	if ! grep -qx 'done' <<<"$lines"; then
		rc=$(cat "$rcfile" 2>/dev/null || echo '?')
		case $rc in 124) why="timed out after ${timeout_s}s" ;; *) why="exited with $rc" ;; esac
		echo "  did not finish ($why); the last lines of $log:"
		tail -n 15 "$log" | tr -d '\r' | sed 's/^/  > /'
		failed+=("$k: did not finish ($why)")
	fi
	for b in ${backends//,/ }; do
		line=$(grep -E "^$b pass=" <<<"$lines" | tail -n 1 || true)
		if ! [[ $line =~ pass=([0-9]+)\ fail=([0-9]+)\ skip=([0-9]+)\ flaky=([0-9]+)\ refused=([01]) ]]; then
			result[$k,$b]="no result"
			failed+=("$k $b: no result")
			total_f=$((total_f + 1))
			continue
		fi
		p=${BASH_REMATCH[1]} f=${BASH_REMATCH[2]} s=${BASH_REMATCH[3]} fl=${BASH_REMATCH[4]} refused=${BASH_REMATCH[5]}
		total_p=$((total_p + p)) total_f=$((total_f + f)) total_s=$((total_s + s))
		cell="$p passed, $f failed, $s skipped"
		[ "$fl" = 0 ] || cell+=" ($fl passed only when run again)"
		grep -q "^$b fail kernel: " <<<"$lines" && cell+=" (kernel warned)"
		[ "$refused" = 0 ] || cell="refused by this kernel ($cell)"
		result[$k,$b]=$cell
		while IFS= read -r l; do
			[ -z "$l" ] || failed+=("$k $b: ${l#"$b fail "}")
		done < <(grep "^$b fail " <<<"$lines" || true)
		while IFS= read -r l; do
			[ -z "$l" ] || flaky+=("$k $b: ${l#"$b flaky "}")
		done < <(grep "^$b flaky " <<<"$lines" || true)
	done
done

echo
printf '| kernel |'
for b in ${backends//,/ }; do printf ' %s |' "$b"; done
echo
printf '|---|'
for b in ${backends//,/ }; do printf -- '---|'; done
echo
for k in "${kernels[@]}"; do
	printf '| %s |' "${label[$k]}"
	for b in ${backends//,/ }; do printf ' %s |' "${result[$k,$b]}"; done
	echo
done
echo
echo "matrix: $total_p passed, $total_f failed, $total_s skipped (leaf tests; a test that passed only when run again counts as passed)"
if [ ${#flaky[@]} -gt 0 ]; then
	echo "test-vm: passed only when run again:"
	printf '  %s\n' "${flaky[@]}"
fi
if [ ${#failed[@]} -gt 0 ]; then
	echo "test-vm: FAILED:"
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
