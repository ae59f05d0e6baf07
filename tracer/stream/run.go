package stream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/netns"
	"github.com/porttrace/porttrace/tracer/internal/proc"
	"github.com/porttrace/porttrace/tracer/internal/workload"
	"github.com/porttrace/porttrace/tracer/textout"
)

// Run traces until ctx is done, --duration passes or --count events have
// been written, then detaches and prints a one-line summary on stderr.
// Told to stop while its output is not being read, it stops all the same
// (see stopWriter) and says so.
func Run(ctx context.Context, cfg Config, stdout io.Writer, stderr io.Writer) error {
	stderr = &lockedWriter{w: stderr}
	nsScope, err := netns.Inodes(cfg.Netns)
	if err != nil {
		return err
	}
	var metrics *Metrics
	if cfg.Metrics != "" {
		metrics = NewMetrics()
	}
	names := workload.NewResolver(cfg.RuntimeSockets...)
	defer names.Close()
	t, srv, detach, err := tracer.Attach(cfg.options(nsScope), metrics, cfg.server(), "porttrace", "tracing", cfg.Verbose, stderr)
	if err != nil {
		return err
	}
	defer detach()
	// A namespace of --netns destroyed (deleted, its last process gone)
	// ends the trace once none is left, said on stderr.
	ctx, stopGone := netns.UntilGone(ctx, cfg.Netns, stderr, "porttrace")
	defer stopGone()
	names.Announce(stderr, "porttrace", false)
	scope, err := tracer.ScopeWorkloads(ctx, t, cfg.Workloads, names, "porttrace", stderr)
	if err != nil {
		return err
	}
	defer scope.Stop() // before detach: no verdict is set on closed maps
	if srv != nil {
		metrics.port = srv.Port()
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	stop := context.AfterFunc(ctx, t.Stop)
	defer stop()

	sw := textout.NewStopWriter(ctx, stdout)
	defer sw.Close()
	tw := &timedWriter{w: sw}
	out := bufio.NewWriterSize(tw, 64<<10)
	w, err := openWriter(cfg, out, stdout)
	if err != nil {
		return err
	}
	en := proc.NewEnricher()
	en.NameContainers(names)
	l := &streamLoop{cfg: cfg, metrics: metrics, w: w, out: out, sw: sw, s: newSummary(), en: en, names: names, ifnames: netns.NewIfNames(), holders: newHolderLookup(stderr), scope: scope, ctx: ctx, stderr: stderr,
		lost: &lostReport{counter: t, maxConnecting: t.MaxConnecting(), out: w, stderr: stderr, metrics: metrics,
			pace: pace{busy: &tw.busy, since: time.Now()}}}
	l.lost.pace.written = &l.s.total
	if err := l.run(t, pipelineWorkers()); err != nil {
		return err
	}
	t.Stop()
	l.lost.check()
	if err := tracer.JoinErrors(w.Close(), out.Flush()); errors.Is(err, textout.ErrStalled) {
		l.unwritten += l.buffered
	} else if err != nil {
		return textout.OutputError(err)
	}
	fmt.Fprintf(stderr, "porttrace: %s, %d lost%s\n", l.s, l.lost.reported, sampledNote(t, cfg.Sample))
	if sw.Stalled() {
		fmt.Fprintf(stderr, "porttrace: stopped while the output was not being read: %d %s not written\n",
			l.unwritten, textout.Plural(int(l.unwritten), "event", "events"))
	}
	return nil
}

// sampledNote is what the summary adds under --sample: how many events it
// left out.
func sampledNote(t interface{ SampledOut() (uint64, error) }, sample uint32) string {
	if sample <= 1 {
		return ""
	}
	n, err := t.SampledOut()
	if err != nil {
		return ""
	}
	return fmt.Sprintf(", %d sampled out (one in %d sent)", n, sample)
}

// streamLoop reads events until the tracer stops or --count is reached,
// and writes those the filters want: its run is the pipeline's write stage
// (pipeline.go), and its prepare what the workers do to each event.
type streamLoop struct {
	cfg       Config
	metrics   *Metrics
	w         writer
	out       *bufio.Writer
	sw        *textout.StopWriter
	s         *summary
	en        *proc.Enricher
	names     *workload.Resolver
	ifnames   *netns.IfNames    // SO_BINDTODEVICE's interfaces, by name
	holders   *holderLookup     // what held the port of a bind that found it in use
	scope     *workload.Watcher // --container, --pod, --k8s-namespace; nil without
	ctx       context.Context
	stderr    io.Writer
	lost      *lostReport
	buffered  uint64 // events written since the last flush
	unwritten uint64 // events the output never took
	lastLost  time.Time
	lastFlush time.Time
}

// run writes what src gives, through workers that prepare it, until src
// stops or --count events are written.
func (l *streamLoop) run(src source, workers int) error {
	_, isJSON := l.w.(*jsonWriter)
	p := startPipeline(src, workers, l.prepare, isJSON)
	defer p.stop()
	l.lost.pace.waited = func() time.Duration { return p.waited }
	l.lastLost, l.lastFlush = time.Now(), time.Now()
	for {
		b := p.next()
		if b == nil {
			return nil
		}
		lines, start := 0, 0 // the lines of b written, and where the next starts
		for i := range b.evs {
			if !b.keep[i] {
				continue
			}
			var line []byte
			if isJSON {
				line, start = b.lines[start:b.ends[lines]], b.ends[lines]
				lines++
			}
			if err := l.write(&b.evs[i], line); err != nil {
				return err
			}
			if l.cfg.Count != 0 && l.s.total == l.cfg.Count {
				return l.flush()
			}
		}
		if time.Since(l.lastLost) > time.Second {
			l.lastLost = time.Now()
			l.lost.check()
		}
		// Flush when nothing more is on its way, or at least every
		// readEvery under a steady stream.
		if b.idle && !p.more() || time.Since(l.lastFlush) > tracer.ReadEvery {
			if err := l.flush(); err != nil {
				return err
			}
		}
		err := b.err
		p.release(b)
		if errors.Is(err, tracer.ErrStopped) {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// prepare is the workers' part: whether ev passes the filters userspace
// applies, and what /proc and the runtimes say of it.
func (l *streamLoop) prepare(ev *event.Event) bool {
	if !l.cfg.Wants(ev, l.en) || (l.metrics != nil && l.metrics.ownAccept(ev)) {
		return false
	}
	l.en.Enrich(ev)
	if ev.BoundIf != 0 && ev.HasNet {
		ev.BoundIfName = l.ifnames.Name(ev.Netns, ev.BoundIf)
	}
	// The kernel sends the calls of a cgroup it has no verdict on yet
	// (a workload that started since the last scan): judged here, once.
	if l.scope != nil && !l.scope.Judge(l.ctx, ev.CgroupID, ev.Cgroup) {
		return false
	}
	if ev.Workload.ContainerID != "" {
		l.names.Announce(l.stderr, "porttrace", true)
	}
	l.holders.fill(ev)
	return true
}

// write writes one event, with line, its JSON a worker encoded, where the
// output is JSON. Once the output has stalled (porttrace is stopping),
// what is left is counted, not written.
func (l *streamLoop) write(ev *event.Event, line []byte) error {
	if l.sw.Stalled() {
		l.unwritten++
		return nil
	}
	err := l.w.write(ev, line)
	if errors.Is(err, textout.ErrStalled) {
		l.unwritten += l.buffered + 1
		l.buffered = 0
		return nil
	} else if err != nil {
		return textout.OutputError(err)
	}
	l.buffered++
	l.s.add(ev)
	if l.metrics != nil {
		l.metrics.Event(ev)
	}
	return nil
}

func (l *streamLoop) flush() error {
	l.lastFlush = time.Now()
	if err := l.out.Flush(); errors.Is(err, textout.ErrStalled) {
		l.unwritten += l.buffered
	} else if err != nil {
		return textout.OutputError(err)
	}
	l.buffered = 0
	return nil
}

// writer is the output format.
type writer interface {
	// write writes ev; line is its JSON line where the pipeline's
	// workers encoded it (-o json), else nil.
	write(ev *event.Event, line []byte) error
	Lost(n uint64, kind string)
	Close() error
}

func newWriter(cfg Config, out *bufio.Writer, stdout io.Writer) (writer, error) {
	if cfg.Output == "json" {
		return &jsonWriter{out: out}, nil
	}
	width, tty := textout.TerminalWidth(stdout)
	color := tty && !cfg.NoColor
	containers := !cfg.Workloads.Empty()
	if root, ok := proc.Cgroup2Root(); ok && !containers {
		containers = workload.AnyContainer(root)
	}
	var tw *TableWriter
	var err error
	switch {
	case cfg.Columns != nil:
		tw, err = NewColumnsWriter(out, width, color, cfg.Columns)
	case cfg.Output == "wide":
		tw, err = NewColumnsWriter(out, width, color, WideLayout(containers))
	default:
		tw, err = NewTableWriter(out, width, color, containers)
	}
	if err != nil {
		return nil, err
	}
	return &Table{tw: tw, out: out, width: width}, nil
}

// NewTable writes events to w as the stream's table, sized for a terminal
// of width columns (0: into a pipe), coloured or not: each a row, and
// under it the lines that say why a call failed or that its executable
// was deleted; containers adds a CONTAINER column (NewTableWriter). names,
// when not nil, are the columns (NewColumnsWriter).
func NewTable(w io.Writer, width int, color, containers bool, names []string) (*Table, error) {
	var tw *TableWriter
	var err error
	if names != nil {
		tw, err = NewColumnsWriter(w, width, color, names)
	} else {
		tw, err = NewTableWriter(w, width, color, containers)
	}
	if err != nil {
		return nil, err
	}
	return &Table{tw: tw, out: w, width: width}, nil
}

type jsonWriter struct {
	out *bufio.Writer
	buf []byte
}

// write writes the line a worker encoded: the JSON is made there, off
// the write stage.
func (j *jsonWriter) write(_ *event.Event, line []byte) error {
	_, err := j.out.Write(line)
	return err
}

func (j *jsonWriter) Lost(n uint64, kind string) {
	j.buf = AppendLostJSON(j.buf[:0], n, kind)
	_, _ = j.out.Write(j.buf)
}

func (j *jsonWriter) Close() error { return nil }

// Table is the stream's table: a TableWriter's rows, and under a row the
// lines saying why a call was denied or failed or that its executable was
// deleted.
type Table struct {
	tw    *TableWriter
	out   io.Writer
	width int // terminal width, 0 when not a terminal
}

func (t *Table) Write(ev *event.Event) error {
	if err := t.tw.Write(ev); err != nil {
		return err
	}
	for n, note := range t.tw.notes(ev) {
		for i, line := range textout.WrapWords(note, t.width-len(ReasonIndent)) {
			prefix := ReasonIndent
			if i > 0 {
				prefix = strings.Repeat(" ", len(ReasonIndent))
			} else if n == 0 && !t.tw.hasResult && ev.Result.Failed() {
				// The errno leads the note when no RESULT column shows it.
				errno := ev.ErrnoName()
				line = t.tw.paint(ev, errno) + line[len(errno):]
			}
			if _, err := io.WriteString(t.out, prefix+line+"\n"); err != nil {
				return err
			}
		}
	}
	return nil
}

const ReasonIndent = "         \u2514 "

func (t *Table) write(ev *event.Event, _ []byte) error { return t.Write(ev) }

func (t *Table) Lost(n uint64, kind string) {}

func (t *Table) Close() error { return t.tw.Close() }

// summary counts what was written, for the line printed on exit.
type summary struct {
	total  uint64
	byKind [event.KindConnectDone + 1]uint64
	failed uint64
	denied uint64
}

func newSummary() *summary { return &summary{} }

func (s *summary) add(ev *event.Event) {
	s.total++
	if int(ev.Kind) < len(s.byKind) {
		s.byKind[ev.Kind]++
	}
	switch ev.Result {
	case event.ResultDenied:
		s.denied++
	case event.ResultFailed:
		s.failed++
	}
}

func (s *summary) String() string {
	var parts []string
	for k := event.KindBind; k <= event.KindAccept; k++ {
		parts = append(parts, fmt.Sprintf("%s %d", k, s.byKind[k]))
	}
	if n := s.byKind[event.KindConnectDone]; n > 0 {
		parts = append(parts, fmt.Sprintf("%s %d", event.KindConnectDone, n))
	}
	return fmt.Sprintf("%d %s (%s), %d denied, %d failed", s.total, textout.Plural(int(s.total), "event", "events"),
		strings.Join(parts, ", "), s.denied, s.failed)
}

// AppendLostJSON appends the line that reports dropped events: of any
// kind (kind ""), or only of one (connect_done: connects not followed).
func AppendLostJSON(buf []byte, n uint64, kind string) []byte {
	buf = append(buf, `{"event":"lost","count":`...)
	buf = strconv.AppendUint(buf, n, 10)
	if kind != "" {
		buf = textout.AppendStr(buf, "lost_event", kind)
	}
	return append(buf, "}\n"...)
}
