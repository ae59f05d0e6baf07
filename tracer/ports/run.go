package ports

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/netns"
	"github.com/porttrace/porttrace/tracer/internal/workload"
	"github.com/porttrace/porttrace/tracer/textout"
)

// Run prints what holds every port now and, with --watch, what changes.
func Run(ctx context.Context, cfg Config, stdout, stderr io.Writer) error {
	var t *tracer.Tracer
	var watched []*netns.Held
	if cfg.Watch {
		// Attached before the snapshot, so nothing falls between the two.
		var err error
		t, err = tracer.New(tracer.Options{Backend: cfg.Backend, Events: tracer.KindsOf(event.KindBind, event.KindListen)})
		if err != nil {
			return err
		}
		defer t.Close()
		// A namespace named on the command line is watched through an fd
		// of porttrace's own: its name may go (ip netns delete) while
		// processes inside still listen.
		held, err := netns.Hold(cfg.Netns)
		if err != nil {
			return err
		}
		defer func() {
			for _, h := range held {
				h.Close()
			}
		}()
		if held != nil {
			cfg.Netns = heldPaths(held)
		}
		watched = held
		if cfg.Duration > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
			defer cancel()
		}
	}
	notice := &unopenedNotice{cmd: "ports"}
	snap, unopened, err := Snapshot(SnapshotOptions{All: cfg.All, Netns: cfg.Netns})
	if err != nil {
		return err
	}
	notice.say(stderr, unopened)
	names := workload.NewResolver(cfg.RuntimeSockets...)
	defer names.Close()
	nameHolders(snap, names)
	names.Announce(stderr, "porttrace ports", anyContainer(snap))
	sw := textout.NewStopWriter(ctx, stdout)
	defer sw.Close()
	out := bufio.NewWriter(sw)
	if err := writeSnapshot(out, cfg, snap, time.Now()); errors.Is(err, textout.ErrStalled) {
		fmt.Fprintln(stderr, "porttrace ports: stopped while the output was not being read: the snapshot was not all delivered")
		return nil
	} else if err != nil {
		return err
	}
	if !cfg.Watch {
		return nil
	}
	fmt.Fprintf(stderr, "porttrace ports: watching with %s\n", t.Describe(cfg.Verbose))
	w := &portsWatch{cfg: cfg, held: watched, out: out, stderr: stderr, notice: notice, names: names, known: map[listenerKey]Socket{},
		manyNetns: len(cfg.Netns) > 1 || (len(cfg.Netns) == 1 && cfg.Netns[0] == "all")}
	for _, s := range snap {
		if s.Listening() {
			w.known[keyOf(&s)] = s
		}
	}
	if err := w.run(ctx, t); err != nil && !errors.Is(err, textout.ErrStalled) {
		return err
	}
	fmt.Fprintf(stderr, "porttrace ports: %d %s and %s seen, %d %s closed\n", w.seen,
		textout.Plural(w.seen, "bind", "binds"), textout.Plural(w.seen, "listen", "listens"), w.closed,
		textout.Plural(w.closed, "listener", "listeners"))
	if sw.Stalled() {
		fmt.Fprintln(stderr, "porttrace ports: stopped while the output was not being read: the last lines were not all delivered")
	}
	return nil
}

// writeSnapshot prints what a look found, as a table or one JSON object
// a socket.
func writeSnapshot(out *bufio.Writer, cfg Config, snap []Socket, now time.Time) error {
	if cfg.Output == "json" {
		var buf []byte
		for i := range snap {
			buf = AppendSocketJSON(buf[:0], EventSnapshot, now, &snap[i])
			_, _ = out.Write(buf)
		}
	} else if cfg.Columns != nil {
		if err := WriteColumns(out, snap, cfg.Columns); err != nil {
			return textout.OutputError(err)
		}
	} else if err := WriteTable(out, snap, len(cfg.Netns) > 0); err != nil {
		return textout.OutputError(err)
	}
	if err := out.Flush(); err != nil && !errors.Is(err, textout.ErrStalled) {
		return textout.OutputError(err)
	} else if err != nil {
		return err
	}
	return nil
}
