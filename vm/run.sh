#!/usr/bin/env bash
# Kernel matrix: boot each kernel of vm/kernels in QEMU (TCG, no KVM needed)
# with the static kernel-test binary as part of the initramfs, run the tests
# once per backend, then run them on the host kernel too, and print a
# kernel x backend matrix. Exits non-zero on any failure.
#
# Kernels and built artefacts are cached in .cache/vm (override: VM_CACHE).
# VM_BACKENDS (default fentry,kprobe,tracepoint) and VM_RUN (a go test -run
# pattern) narrow a run. VM_BENCH=ARGS runs the benchmark instead, on the
# last kernel of vm/kernels, with ARGS (bench flags separated by "+", e.g.
# -reps+5+-backends+fentry,tracepoint) and prints its output.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${VM_CACHE:-.cache/vm}
backends=${VM_BACKENDS:-fentry,kprobe,tracepoint}
run=${VM_RUN:-^TestKernel}
timeout_s=${VM_TIMEOUT:-420}
mkdir -p "$cache"

for tool in qemu-system-x86_64 cpio dpkg-deb apt-cache; do
	command -v "$tool" >/dev/null || { echo "test-vm: $tool not found (apt-get install qemu-system-x86 cpio)" >&2; exit 1; }
done

# resolve PATTERN: the newest package apt-cache lists that matches it.
resolve() {
	local re
	re=$(printf '%s' "$1" | sed -e 's/[.+]/\\&/g' -e 's/\*/[0-9.]*/g')
	apt-cache search --names-only "^${re}\$" | awk '{print $1}' | sort -V | tail -n 1
}

# kernel PACKAGE: prints the path of its vmlinuz, downloading and unpacking once.
kernel() {
	local pkg=$1 dir=$cache/kernels/$1
	if ! ls "$dir"/boot/vmlinuz-* >/dev/null 2>&1; then
		mkdir -p "$cache/debs" "$dir"
		(cd "$cache/debs" && apt-get download "$pkg" >/dev/null)
		dpkg-deb -x "$cache"/debs/"${pkg}"_*.deb "$dir"
	fi
	ls "$dir"/boot/vmlinuz-*
}

echo "test-vm: building the guest"
CGO_ENABLED=0 go test -c -o "$cache/root/tracer.test" ./tracer
CGO_ENABLED=0 go build -o "$cache/root/init" ./vm/init
rm -f "$cache/root/porttrace" "$cache/root/bench"
if [ -n "${VM_BENCH:-}" ]; then
	CGO_ENABLED=0 go build -o "$cache/root/porttrace" ./cmd/porttrace
	CGO_ENABLED=0 go build -o "$cache/root/bench" ./bench
fi
# ss(8) and its libraries, for the churn test that cross-checks against it.
if command -v ss >/dev/null; then
	for f in "$(command -v ss)" $(ldd "$(command -v ss)" | grep -o '/[^ ]*'); do
		mkdir -p "$cache/root$(dirname "$f")"
		cp -L "$f" "$cache/root$f"
	done
fi
(cd "$cache/root" && mkdir -p tmp dev proc sys && find . -mindepth 1 | cpio -o -H newc --quiet) > "$cache/initramfs.cpio"

# Modules the tests need that Debian builds as modules, in load order.
modules="net/ipv4/inet_diag net/ipv4/tcp_diag net/ipv4/udp_diag"

# initrd NAME DIR: the shared initramfs with NAME's modules appended (the
# kernel unpacks concatenated cpio archives in turn).
initrd() {
	local name=$1 dir=$2 stage=$cache/modules/$1 i=0 m f
	rm -rf "$stage" && mkdir -p "$stage/modules"
	for m in $modules; do
		f=$(ls "$dir"/lib/modules/*/kernel/"$m".ko* 2>/dev/null | head -n 1)
		[ -n "$f" ] || continue # built in
		i=$((i + 1))
		cp "$f" "$stage/modules/$i-$(basename "$f")"
	done
	cat "$cache/initramfs.cpio" > "$cache/initrd-$name.cpio"
	(cd "$stage" && find modules | cpio -o -H newc --quiet) >> "$cache/initrd-$name.cpio"
}

# One vCPU a guest, the guests side by side: with two vCPUs under TCG, 6.1
# was seen spinning in syscall_trace_enter while syscall tracepoints were
# attached and detached (code patching across emulated CPUs), and one vCPU
# is also faster on a 2-core host.
boot() {
	local name=$1 vmlinuz=$2 log=$cache/$1.log start=$SECONDS
	timeout "$timeout_s" qemu-system-x86_64 -M q35 -accel tcg -cpu max -smp 1 -m 1G \
		-nographic -no-reboot -nic none \
		-kernel "$vmlinuz" -initrd "$cache/initrd-$name.cpio" \
		-append "console=ttyS0 panic=-1 quiet porttrace.backends=$backends porttrace.auto=fentry porttrace.run=$run${VM_BENCH:+ porttrace.bench=$VM_BENCH}" \
		-serial "file:$log" -monitor none -display none </dev/null >/dev/null 2>&1 || true
	echo "test-vm: $name took $((SECONDS - start))s, log in $log"
}

if [ -n "${VM_BENCH:-}" ]; then
	pattern=$(grep -v '^#' vm/kernels | grep . | tail -n 1)
	pkg=$(resolve "$pattern")
	[ -n "$pkg" ] || { echo "test-vm: no package matches $pattern (apt-get update?)" >&2; exit 1; }
	vmlinuz=$(kernel "$pkg")
	name=${pkg#linux-image-}
	initrd "$name" "$cache/kernels/$pkg"
	timeout_s=${VM_TIMEOUT:-1800}
	echo "test-vm: benchmarking on $name (one emulated CPU)"
	boot "$name" "$vmlinuz"
	log=$cache/$name.log
	sed -n '/porttrace bench:/,$p' "$log" | grep -av 'porttrace-matrix: done' | tr -d '\r'
	grep -aq 'porttrace-matrix: done' "$log" && ! grep -aq 'bench-error' "$log" || { echo "test-vm: the benchmark failed, see $log" >&2; exit 1; }
	exit 0
fi

declare -A result
kernels=()
status=0
while read -r pattern; do
	case "$pattern" in ''|'#'*) continue ;; esac
	pkg=$(resolve "$pattern")
	if [ -z "$pkg" ]; then
		echo "test-vm: no package matches $pattern (apt-get update?)" >&2
		exit 1
	fi
	vmlinuz=$(kernel "$pkg")
	name=${pkg#linux-image-}
	kernels+=("$name")
	initrd "$name" "$cache/kernels/$pkg"
	echo "test-vm: booting $name ($backends)"
	boot "$name" "$vmlinuz" &
done < vm/kernels
wait

for name in "${kernels[@]}"; do
	log=$cache/$name.log
	echo "test-vm: $name"
	grep -a 'porttrace-matrix:' "$log" | sed 's/^/  /' || true
	grep -aq 'porttrace-matrix: done' "$log" || { echo "test-vm: $name did not finish" >&2; status=1; }
	for b in ${backends//,/ }; do
		line=$(grep -a "porttrace-matrix: $b pass=" "$log" | tail -n 1 || true)
		if [ -z "$line" ]; then
			result[$name,$b]="no result"
			status=1
			continue
		fi
		p=$(sed -E 's/.*pass=([0-9]+).*/\1/' <<<"$line")
		f=$(sed -E 's/.*fail=([0-9]+).*/\1/' <<<"$line")
		s=$(sed -E 's/.*skip=([0-9]+).*/\1/' <<<"$line")
		result[$name,$b]="$p passed, $f failed, $s skipped"
		fl=$(sed -nE 's/.*flaky=([0-9]+).*/\1/p' <<<"$line")
		[ "${fl:-0}" = 0 ] || result[$name,$b]+=" ($fl passed only when run again)"
		[ "$f" = 0 ] || status=1
	done
done

# The host kernel: whichever backends it allows (here, often tracepoint only).
host="$(uname -r) (host)"
kernels+=("$host")
for b in ${backends//,/ }; do
	out=$(PORTTRACE_BACKEND=$b "$cache/root/tracer.test" -test.v -test.count=1 -test.run "$run" 2>&1 || true)
	p=$(grep -c -- '--- PASS' <<<"$out" || true)
	f=$(grep -c -- '--- FAIL' <<<"$out" || true)
	s=$(grep -c -- '--- SKIP' <<<"$out" || true)
	if grep -q "backend $b not supported by this kernel" <<<"$out"; then
		result[$host,$b]="refused by this kernel ($p passed, $f failed, $s skipped)"
		[ "$f" = 0 ] || status=1
	else
		result[$host,$b]="$p passed, $f failed, $s skipped"
		[ "$f" = 0 ] || { status=1; grep -- '--- FAIL' <<<"$out" >&2; }
	fi
done

total_p=0 total_f=0 total_s=0
for cell in "${result[@]}"; do
	if [[ $cell =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed,\ ([0-9]+)\ skipped ]]; then
		total_p=$((total_p + BASH_REMATCH[1])) total_f=$((total_f + BASH_REMATCH[2])) total_s=$((total_s + BASH_REMATCH[3]))
	else
		total_f=$((total_f + 1)) # a guest that gave no result
	fi
done

echo
printf '| kernel |'; for b in ${backends//,/ }; do printf ' %s |' "$b"; done; echo
printf '|---|'; for b in ${backends//,/ }; do printf -- '---|'; done; echo
for k in "${kernels[@]}"; do
	printf '| %s |' "$k"
	for b in ${backends//,/ }; do printf ' %s |' "${result[$k,$b]}"; done
	echo
done
echo
echo "matrix: $total_p passed, $total_f failed, $total_s skipped"
exit $status
