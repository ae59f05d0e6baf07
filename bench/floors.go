package main

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// The floors: empty programs on the hooks porttrace uses, for what
// attaching alone costs.

// floor holds programs that do nothing, attached where a tracer would hook:
// what it pays before its programs do any work.
type floor struct {
	links []link.Link
	progs []*ebpf.Program
}

// add loads a program that returns ret at once and attaches it with attach.
func (f *floor) add(typ ebpf.ProgramType, at ebpf.AttachType, to string, ret int32, attach func(*ebpf.Program) (link.Link, error)) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: typ, AttachType: at, AttachTo: to, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, ret), asm.Return()},
	})
	if err != nil {
		return err
	}
	f.progs = append(f.progs, prog)
	l, err := attach(prog)
	if err != nil {
		return err
	}
	f.links = append(f.links, l)
	return nil
}

func (f *floor) close() error {
	for _, l := range f.links {
		l.Close()
	}
	for _, p := range f.progs {
		p.Close()
	}
	return nil
}

// attachEmpty attaches programs that do nothing to the tracepoints the
// tracepoint backend uses: what any syscall-tracepoint tool pays on this
// kernel before its program does any work.
func attachEmpty() (func() error, error) {
	f := &floor{}
	for _, tp := range []string{"sys_exit_bind", "sys_exit_listen", "sys_enter_connect", "sys_exit_connect", "sys_exit_accept", "sys_exit_accept4"} {
		err := f.add(ebpf.TracePoint, ebpf.AttachNone, "", 0, func(p *ebpf.Program) (link.Link, error) {
			return link.Tracepoint("syscalls", tp, p, nil)
		})
		if err != nil {
			f.close()
			return nil, fmt.Errorf("%s: %w", tp, err)
		}
	}
	return f.close, nil
}

// attachEmptyCgroup attaches programs that do nothing to the cgroup v2
// root's connect, bind and post-bind hooks, the hooks that see socket calls
// without the syscall slow path: what a tracer built on them would pay
// before doing any work.
func attachEmptyCgroup() (func() error, error) {
	root, err := cgroup2Root()
	if err != nil {
		return nil, err
	}
	f := &floor{}
	for _, h := range []struct {
		typ    ebpf.ProgramType
		attach ebpf.AttachType
	}{
		{ebpf.CGroupSockAddr, ebpf.AttachCGroupInet4Connect},
		{ebpf.CGroupSockAddr, ebpf.AttachCGroupInet4Bind},
		{ebpf.CGroupSock, ebpf.AttachCGroupInet4PostBind},
	} {
		err := f.add(h.typ, h.attach, "", 1, func(p *ebpf.Program) (link.Link, error) {
			return link.AttachCgroup(link.CgroupOptions{Path: root, Attach: h.attach, Program: p})
		})
		if err != nil {
			f.close()
			return nil, err
		}
	}
	return f.close, nil
}

// attachEmptyFexit attaches programs that do nothing where the fentry
// backend hooks the binds, connects and accepts: the floor of that backend.
func attachEmptyFexit() (func() error, error) {
	f := &floor{}
	for _, h := range []struct {
		fn     string
		attach ebpf.AttachType
	}{
		{"__inet_bind", ebpf.AttachTraceFExit},
		{"tcp_v4_connect", ebpf.AttachTraceFEntry},
		{"tcp_v4_connect", ebpf.AttachTraceFExit},
		{"inet_csk_accept", ebpf.AttachTraceFExit},
	} {
		err := f.add(ebpf.Tracing, h.attach, h.fn, 0, func(p *ebpf.Program) (link.Link, error) {
			return link.AttachTracing(link.TracingOptions{Program: p})
		})
		if err != nil {
			f.close()
			return nil, fmt.Errorf("%s: %w", h.fn, err)
		}
	}
	return f.close, nil
}

// cgroup2Root finds where the cgroup v2 hierarchy is mounted.
func cgroup2Root() (string, error) {
	for _, dir := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return dir, nil
		}
	}
	return "", errors.New("no cgroup v2 hierarchy mounted")
}
