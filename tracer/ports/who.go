package ports

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/netns"
	"github.com/porttrace/porttrace/tracer/internal/proc"
	"github.com/porttrace/porttrace/tracer/internal/workload"
	"github.com/porttrace/porttrace/tracer/textout"
)

// RunWho tells who holds a port now and, with --wait, who binds it next.
func RunWho(ctx context.Context, cfg WhoConfig, stdout, stderr io.Writer) error {
	var t *tracer.Tracer
	if cfg.Wait {
		var ports tracer.PortSet
		_ = ports.Set(strconv.Itoa(int(cfg.Port)))
		var err error
		// Attached before looking, so a bind in between is not missed.
		t, err = tracer.New(tracer.Options{Backend: cfg.Backend, Events: tracer.KindsOf(event.KindBind), Ports: &ports})
		if err != nil {
			return err
		}
		defer t.Close()
	}
	held, err := whoNow(cfg, stdout, stderr)
	if err != nil {
		return err
	}
	if !cfg.Wait {
		if !held {
			return ErrNobody
		}
		return nil
	}
	return whoWait(ctx, cfg, t, stdout, stderr)
}

// protoName is the protocols who looks at, as it names them.
func (c *WhoConfig) protoName() string {
	if c.Proto == 0 {
		return "tcp,udp"
	}
	return event.ProtoName(c.Proto)
}

// whoNow prints the sockets on the port now, and whether a process holds
// one of them.
func whoNow(cfg WhoConfig, stdout, stderr io.Writer) (held bool, err error) {
	snap, unopened, err := Snapshot(SnapshotOptions{All: true, Netns: cfg.Netns, Port: cfg.Port})
	if err != nil {
		return false, err
	}
	now := time.Now()
	(&unopenedNotice{cmd: "who"}).say(stderr, unopened)
	var matched []Socket
	for _, s := range snap {
		if s.Local.Port() == cfg.Port && cfg.protoMatches(s.Proto) {
			matched = append(matched, s)
			held = held || s.Owned()
		}
	}
	names := workload.NewResolver(cfg.RuntimeSockets...)
	defer names.Close()
	nameHolders(matched, names)
	names.Announce(stderr, "porttrace who", anyContainer(matched))
	if cfg.Output != "json" {
		return held, textout.OutputError(WriteWho(stdout, cfg.Port, cfg.protoName(), matched, now))
	}
	_, err = stdout.Write(AppendWhoJSON(nil, now, cfg.Port, cfg.protoName(), held, matched))
	return held, textout.OutputError(err)
}

// AppendWhoJSON appends who's answer as one JSON object and a newline,
// whether or not the port is held, so that a script reads one object
// either way: `held`, the processes holding the port's sockets (each
// once, by pid; the sockets say which fd), and the sockets on it.
func AppendWhoJSON(buf []byte, at time.Time, port uint16, proto string, held bool, sockets []Socket) []byte {
	buf = append(buf, `{"time":"`...)
	buf = at.UTC().AppendFormat(buf, textout.TimeLayout)
	buf = append(buf, `","event":"who"`...)
	buf = textout.AppendUint(buf, "port", uint64(port))
	buf = textout.AppendStr(buf, "proto", proto)
	buf = textout.AppendBool(buf, "held", held)
	buf = append(buf, `,"holders":[`...)
	seen := map[uint32]bool{}
	for i := range sockets {
		for _, h := range sockets[i].Holders {
			if seen[h.PID] {
				continue
			}
			if len(seen) > 0 {
				buf = append(buf, ',')
			}
			seen[h.PID] = true
			h.FD = -1
			buf = appendHolderJSON(buf, &h)
		}
	}
	buf = append(buf, `],"sockets":[`...)
	for i := range sockets {
		if i > 0 {
			buf = append(buf, ',')
		}
		line := AppendSocketJSON(nil, EventSnapshot, at, &sockets[i])
		buf = append(buf, line[:len(line)-1]...)
	}
	return append(buf, "]}\n"...)
}

// whoWait waits for the next bind of the port in the namespaces in scope
// and reports it; a bind that failed otherwise than by a permission check
// is reported and the wait goes on.
func whoWait(ctx context.Context, cfg WhoConfig, t *tracer.Tracer, stdout, stderr io.Writer) error {
	inScope, err := netns.Filter(cfg.Netns)
	if err != nil {
		return err
	}
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	// Nothing binds in a namespace that is gone: the wait ends there.
	ctx, gone := context.WithCancelCause(ctx)
	defer gone(nil)
	if inScope != nil {
		go watchNamespaces(ctx, inScope, gone)
	}
	stop := context.AfterFunc(ctx, t.Stop)
	defer stop()
	fmt.Fprintf(stderr, "porttrace who: waiting for a bind of port %d/%s with %s\n", cfg.Port, cfg.protoName(), t.Describe(cfg.Verbose))
	en := proc.NewEnricher()
	names := workload.NewResolver(cfg.RuntimeSockets...)
	defer names.Close()
	en.NameContainers(names)
	sw := textout.NewStopWriter(ctx, stdout)
	defer sw.Close()
	var ev event.Event
	for {
		if err := t.Read(&ev); errors.Is(err, tracer.ErrStopped) {
			return whyNoBind(ctx, cfg)
		} else if err != nil {
			return err
		}
		if ev.Local.Port() != cfg.Port || !cfg.protoMatches(ev.Proto) || (inScope != nil && !inScope[ev.Netns]) {
			continue
		}
		en.Enrich(&ev)
		if ev.Workload.ContainerID != "" && ev.Names.Container == "" && names.Active() {
			// Waiting for a bind is no stream: its one event may wait for its names.
			wctx, cancel := context.WithTimeout(ctx, namesWait)
			ev.Names, _ = names.WaitOf(wctx, ev.Workload)
			cancel()
		}
		names.Announce(stderr, "porttrace who", ev.Workload.ContainerID != "")
		if err := writeWhoEvent(sw, cfg.Output, &ev, len(cfg.Netns) > 0); errors.Is(err, textout.ErrStalled) {
			return fmt.Errorf("%w: stopped while the output was not being read", ErrInterrupted)
		} else if err != nil {
			return textout.OutputError(err)
		}
		// A bind that worked, or that a permission check refused, is the
		// one waited for: someone holds the port, or tried and may not.
		// Any other failure (the address in use, a bad address) changes
		// nothing: it is told, and the wait goes on.
		if ev.Result == event.ResultOK || ev.Result == event.ResultDenied {
			return nil
		}
	}
}

// whyNoBind is the error of a wait that ended with no bind: its namespaces
// gone, --timeout, or a signal.
func whyNoBind(ctx context.Context, cfg WhoConfig) error {
	if cause := context.Cause(ctx); errors.Is(cause, ErrNetnsGone) {
		return fmt.Errorf("no bind of port %d/%s: %w", cfg.Port, cfg.protoName(), cause)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w after %s: no bind of port %d/%s", ErrTimeout, cfg.Timeout, cfg.Port, cfg.protoName())
	}
	return fmt.Errorf("%w: no bind of port %d/%s", ErrInterrupted, cfg.Port, cfg.protoName())
}

// ErrNetnsGone ends who --wait on namespaces that no longer exist.
var ErrNetnsGone = errors.New("the network namespace is gone")

// NetnsCheckEvery spaces the looks for the namespaces who --wait watches
// (tests shorten it).
var NetnsCheckEvery = 2 * time.Second

// watchNamespaces ends ctx with errNetnsGone once none of the namespaces
// in scope exists any more: no process lives in one, no mount names it,
// no fd holds it. porttrace holds none, so as not to keep one alive.
func watchNamespaces(ctx context.Context, inScope map[uint32]bool, gone context.CancelCauseFunc) {
	tick := time.NewTicker(NetnsCheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var missing []string
		for inode := range inScope {
			if _, fd, ok := netns.Search(inode); ok {
				unix.Close(fd)
				break
			}
			missing = append(missing, strconv.FormatUint(uint64(inode), 10))
		}
		if len(missing) == len(inScope) {
			slices.Sort(missing)
			gone(fmt.Errorf("%w: netns %s", ErrNetnsGone, strings.Join(missing, ", ")))
			return
		}
	}
}

// writeWhoEvent prints a bind of the port who --wait waits for, with its
// process as who describes a holder, and its namespace when who looks
// into others than its own.
func writeWhoEvent(w io.Writer, output string, ev *event.Event, netns bool) error {
	h := holderFromEvent(ev)
	var err error
	if output == "json" {
		var more func([]byte) []byte
		if !h.Start.IsZero() {
			more = func(b []byte) []byte { return textout.AppendStr(b, "start", h.Start.UTC().Format(time.RFC3339)) }
		}
		_, err = w.Write(event.AppendJSONWith(nil, ev, more))
	} else {
		where := ""
		if netns {
			where = " netns " + strconv.FormatUint(uint64(ev.Netns), 10)
		}
		_, err = fmt.Fprintf(w, "%s %s %s %s%s by %s%s\n", ev.Time.In(textout.DisplayZone).Format("15:04:05.000"),
			ev.Kind, event.ProtoName(ev.Proto), sockAddr(ev.Local), where, holderLine(&h, time.Now()), textout.Printable(resultNote(ev)))
	}
	return err
}
