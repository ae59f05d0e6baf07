package event

// The event as the views write it: its JSON object, the stable contract
// every command's -o json shares, and the short forms of the tables.

import (
	"github.com/porttrace/porttrace/tracer/internal/workload"
	"github.com/porttrace/porttrace/tracer/textout"
)

// ShortDir is DIR in the tables: "in", "out" or nothing.
func ShortDir(d Direction) string {
	switch d {
	case DirInbound:
		return "in"
	case DirOutbound:
		return "out"
	}
	return ""
}

// ShortClass is "wk", "reg" or "dyn", with "*" when the port is privileged
// in its network namespace.
func ShortClass(class PortClass, privileged bool) string {
	var s string
	switch class {
	case ClassWellKnown:
		s = "wk"
	case ClassRegistered:
		s = "reg"
	case ClassDynamic:
		s = "dyn"
	}
	if privileged {
		s += "*"
	}
	return s
}

// AppendJSON appends ev as one JSON object and a newline. Field names are
// the stable event contract (see README); fields the backend could not know
// are left out. It allocates nothing once buf has grown.
func AppendJSON(buf []byte, ev *Event) []byte { return AppendJSONWith(buf, ev, nil) }

// AppendJSONWith is AppendJSON with the fields more appends added at the
// end of the object (ports --watch adds a listener's scope and flags).
func AppendJSONWith(buf []byte, ev *Event, more func([]byte) []byte) []byte {
	buf = append(buf, `{"time":"`...)
	buf = ev.Time.UTC().AppendFormat(buf, textout.TimeLayout)
	buf = append(buf, `","event":"`...)
	buf = append(buf, ev.Kind.String()...)
	buf = append(buf, `","result":"`...)
	buf = append(buf, ev.Result.String()...)
	buf = append(buf, '"')
	if ev.Errno != 0 {
		buf = textout.AppendStr(buf, "errno", ev.ErrnoName())
		buf = textout.AppendStr(buf, "reason", ev.Reason)
	}
	buf = textout.AppendUint(buf, "pid", uint64(ev.PID))
	buf = textout.AppendUint(buf, "tid", uint64(ev.TID))
	buf = textout.AppendUint(buf, "ppid", uint64(ev.PPID))
	buf = textout.AppendUint(buf, "uid", uint64(ev.UID))
	if ev.User != "" {
		buf = textout.AppendStr(buf, "user", ev.User)
	}
	buf = textout.AppendText(buf, "comm", ev.Comm)
	if ev.Exe != "" {
		buf = textout.AppendText(buf, "exe", ev.Exe)
	}
	buf = textout.AppendBool(buf, "exe_deleted", ev.ExeDeleted)
	if ev.Cgroup != "" {
		buf = textout.AppendText(buf, "cgroup", ev.Cgroup)
	}
	buf = textout.AppendUint(buf, "cgroup_id", ev.CgroupID)
	buf = workload.AppendJSON(buf, ev.Workload, ev.Names)
	if ev.HasNet {
		buf = textout.AppendUint(buf, "netns", uint64(ev.Netns))
	}
	if p := ProtoName(ev.Proto); p != "" {
		buf = textout.AppendStr(buf, "proto", p)
	}
	if f := ev.AddrFamily(); f != "" {
		buf = textout.AppendStr(buf, "family", f)
	}
	buf = textout.AppendAddrPort(buf, "local_addr", "local_port", ev.Local)
	buf = textout.AppendAddrPort(buf, "remote_addr", "remote_port", ev.Remote)
	if ev.Inode != 0 {
		buf = textout.AppendUint(buf, "inode", uint64(ev.Inode))
	}
	if ev.HasSockOpts {
		buf = ev.SockOpts.appendJSON(textout.AppendKey(buf, "sock_opts"))
		switch {
		case ev.BoundIfName != "":
			buf = textout.AppendText(buf, "bound_if", ev.BoundIfName)
		case ev.BoundIf != 0:
			buf = textout.AppendUint(buf, "bound_ifindex", uint64(ev.BoundIf))
		}
	}
	if ev.HasHolders {
		buf = appendHolders(textout.AppendKey(buf, "holders"), ev.Holders)
	}
	if ev.Local.IsValid() {
		buf = textout.AppendBool(buf, "ephemeral", ev.Ephemeral)
	}
	if ev.HasLatency {
		buf = textout.AppendUint(buf, "latency_ns", uint64(ev.Latency))
	}
	if ev.HasSynRetransmits {
		buf = textout.AppendUint(buf, "syn_retransmits", uint64(ev.SynRetransmits))
	}
	if ev.PortClass != ClassNone {
		buf = textout.AppendStr(buf, "port_class", ev.PortClass.String())
		if ev.HasNet {
			buf = textout.AppendBool(buf, "privileged", ev.Privileged)
		}
	}
	if ev.Direction != DirNone {
		buf = textout.AppendStr(buf, "direction", ev.Direction.String())
	}
	buf = textout.AppendStr(buf, "backend", ev.Backend.String())
	if more != nil {
		buf = more(buf)
	}
	return append(buf, "}\n"...)
}

// appendHolders writes the holders of a bind's address and port as a JSON
// array of objects; a field porttrace could not learn is left out.
func appendHolders(buf []byte, hs []Holder) []byte {
	buf = append(buf, '[')
	for i := range hs {
		h := &hs[i]
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"state":`...)
		buf = textout.AppendJSONString(buf, h.State)
		if h.PID != 0 {
			buf = textout.AppendUint(buf, "pid", uint64(h.PID))
			buf = textout.AppendText(buf, "comm", h.Comm)
		}
		if p := ProtoName(h.Proto); p != "" {
			buf = textout.AppendStr(buf, "proto", p)
		}
		buf = textout.AppendAddrPort(buf, "local_addr", "local_port", h.Local)
		buf = textout.AppendAddrPort(buf, "remote_addr", "remote_port", h.Remote)
		if h.HasSockOpts {
			buf = h.SockOpts.appendJSON(textout.AppendKey(buf, "sock_opts"))
		}
		if h.BoundIf != "" {
			buf = textout.AppendText(buf, "bound_if", h.BoundIf)
		}
		buf = append(buf, '}')
	}
	return append(buf, ']')
}
