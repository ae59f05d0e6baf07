// Package faults holds porttrace's fault tests: the real porttrace binary
// run as root against the real kernel while something goes wrong around
// it (it is killed, run many times at once, started without tracefs, BTF
// or room under RLIMIT_MEMLOCK, the processes it reports exec or exit
// before /proc is read, the namespace it watches is deleted). Each test
// names the fault and checks what porttrace does. It has no code of its
// own; the tests need tools the kernel matrix's guests lack (ip), so
// none is named TestKernel.
package faults
