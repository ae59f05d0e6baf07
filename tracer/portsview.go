package tracer

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"
)

// WritePortsTable prints sockets as a table, one row a socket, its first
// holder named and the others counted.
func WritePortsTable(w io.Writer, socks []Socket, showNetns bool) error {
	header := []any{"PROTO", "LOCAL", "REMOTE", "STATE", "PID", "USER", "COMM", "CLASS", "DIR", "NOTE"}
	if showNetns {
		header = append([]any{"NETNS"}, header...)
	}
	t := tablewriter.NewTable(w,
		tablewriter.WithRenderer(renderer.NewBlueprint(tw.Rendition{
			Borders:  tw.BorderNone,
			Symbols:  tw.NewSymbols(tw.StyleNone),
			Settings: tw.Settings{Separators: tw.Separators{BetweenColumns: tw.Off, BetweenRows: tw.Off}, Lines: tw.Lines{ShowHeaderLine: tw.Off}},
		})),
		tablewriter.WithConfig(tablewriter.Config{
			Header: tw.CellConfig{Formatting: tw.CellFormatting{AutoFormat: tw.Off}, Alignment: tw.CellAlignment{Global: tw.AlignLeft}, Padding: tw.CellPadding{Global: tw.Padding{Right: "  "}}},
			Row:    tw.CellConfig{Formatting: tw.CellFormatting{AutoWrap: tw.WrapNone}, Alignment: tw.CellAlignment{Global: tw.AlignLeft}, Padding: tw.CellPadding{Global: tw.Padding{Right: "  "}}},
		}),
	)
	t.Header(header...)
	for i := range socks {
		s := &socks[i]
		pid, user, comm := "-", "-", "-"
		if len(s.Holders) > 0 {
			h := s.Holders[0]
			pid, user, comm = strconv.Itoa(int(h.PID)), h.User, h.Comm
			if n := distinctPIDs(s.Holders); n > 1 {
				pid += fmt.Sprintf("+%d", n-1)
			}
		}
		class := shortClass(&Event{PortClass: s.PortClass, Privileged: s.Privileged})
		var note []string
		if s.Scope != "" {
			note = append(note, s.Scope)
		}
		for _, why := range s.Suspicious {
			note = append(note, "! "+why)
		}
		row := []any{ProtoName(s.Proto), hostPort(s.Local, 99), hostPort(s.Remote, 99), s.State, pid, user, comm, class, shortDir(s.Direction), strings.Join(note, "; ")}
		if showNetns {
			row = append([]any{strconv.FormatUint(uint64(s.Netns), 10)}, row...)
		}
		if err := t.Append(row...); err != nil {
			return err
		}
	}
	return t.Render()
}

func distinctPIDs(hs []Holder) int {
	seen := map[uint32]bool{}
	for _, h := range hs {
		seen[h.PID] = true
	}
	return len(seen)
}

// AppendSocketJSON appends s as one JSON object and a newline, with the
// event stream's field names where they mean the same.
func AppendSocketJSON(buf []byte, s *Socket) []byte {
	buf = append(buf, `{"netns":`...)
	buf = strconv.AppendUint(buf, uint64(s.Netns), 10)
	buf = appendStr(buf, "proto", ProtoName(s.Proto))
	buf = appendStr(buf, "family", FamilyName(s.Family))
	buf = appendStr(buf, "state", s.State)
	buf = appendAddrPort(buf, "local_addr", "local_port", s.Local)
	buf = appendAddrPort(buf, "remote_addr", "remote_port", s.Remote)
	buf = appendStr(buf, "port_class", s.PortClass.String())
	buf = appendBool(buf, "privileged", s.Privileged)
	buf = appendBool(buf, "ephemeral", s.Ephemeral)
	if s.Scope != "" {
		buf = appendStr(buf, "scope", s.Scope)
	}
	if s.Direction != DirNone {
		buf = appendStr(buf, "direction", s.Direction.String())
	}
	buf = appendUint(buf, "inode", uint64(s.Inode))
	if len(s.Holders) > 0 {
		h := &s.Holders[0]
		buf = appendUint(buf, "pid", uint64(h.PID))
		buf = appendStr(buf, "user", h.User)
		buf = appendStr(buf, "comm", h.Comm)
		buf = appendStr(buf, "exe", h.Exe)
		buf = appendBool(buf, "exe_deleted", h.ExeDeleted)
		if h.Cgroup != "" {
			buf = appendStr(buf, "cgroup", h.Cgroup)
		}
	}
	buf = append(buf, `,"holders":[`...)
	for i := range s.Holders {
		h := &s.Holders[i]
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"pid":`...)
		buf = strconv.AppendUint(buf, uint64(h.PID), 10)
		buf = appendUint(buf, "ppid", uint64(h.PPID))
		buf = appendUint(buf, "uid", uint64(h.UID))
		buf = appendStr(buf, "user", h.User)
		buf = appendStr(buf, "comm", h.Comm)
		buf = appendStr(buf, "exe", h.Exe)
		buf = appendBool(buf, "exe_deleted", h.ExeDeleted)
		buf = appendStr(buf, "cgroup", h.Cgroup)
		if !h.Start.IsZero() {
			buf = appendStr(buf, "start", h.Start.UTC().Format(time.RFC3339))
		}
		buf = appendUint(buf, "fd", uint64(h.FD))
		buf = append(buf, '}')
	}
	buf = append(buf, `],"suspicious":[`...)
	for i, why := range s.Suspicious {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, why)
	}
	return append(buf, "]}\n"...)
}

// WriteWho tells who holds the sockets of one port, a paragraph a holder.
func WriteWho(w io.Writer, port uint16, proto string, socks []Socket, now time.Time) error {
	var b strings.Builder
	if len(socks) == 0 {
		fmt.Fprintf(&b, "port %d/%s: nobody holds it\n", port, proto)
	}
	for i := range socks {
		s := &socks[i]
		fmt.Fprintf(&b, "%s %s", ProtoName(s.Proto), hostPort(s.Local, 99))
		if s.Remote.IsValid() {
			fmt.Fprintf(&b, " <-> %s", hostPort(s.Remote, 99))
		}
		fmt.Fprintf(&b, "  %s", s.State)
		if s.Scope != "" {
			fmt.Fprintf(&b, " (%s)", s.Scope)
		}
		if s.Direction != DirNone {
			fmt.Fprintf(&b, " %s", s.Direction)
		}
		fmt.Fprintf(&b, "  netns %d\n", s.Netns)
		if len(s.Holders) == 0 {
			b.WriteString("  held by no live process\n")
		}
		for _, h := range s.Holders {
			exe := h.Exe
			if h.ExeDeleted {
				exe += " (DELETED)"
			}
			fmt.Fprintf(&b, "  pid %d (%s), user %s, exe %s, parent %d", h.PID, h.Comm, h.User, exe, h.PPID)
			if !h.Start.IsZero() {
				fmt.Fprintf(&b, ", started %s (%s ago)", h.Start.In(displayZone).Format("2006-01-02 15:04:05"), now.Sub(h.Start).Round(time.Second))
			}
			if h.Cgroup != "" {
				fmt.Fprintf(&b, ", cgroup %s", h.Cgroup)
			}
			fmt.Fprintf(&b, ", fd %d\n", h.FD)
		}
		for _, why := range s.Suspicious {
			fmt.Fprintf(&b, "  ! %s\n", why)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
