package drain

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Drainer is something that can be drained. Drain stops new work, waits for
// the work in flight until ctx is done, then cuts what is left. It returns
// an error wrapping ctx.Err() if anything had to be cut, and a report
// either way.
type Drainer interface {
	Drain(ctx context.Context) (Report, error)
}

// Report says how a drain went. It is a plain value: log it (it implements
// slog.LogValuer and fmt.Stringer), compare it, or expose it as metrics.
type Report struct {
	// Name names the drained server, for logs.
	Name string
	// Open is the number of connections open when the drain began, plus
	// those accepted while it stopped accepting. For a datagram server
	// ([Packet]), Open, Ended and Cut count handlers instead.
	Open int
	// Ended is the number of connections that ended gracefully: the client
	// closed them, they were closed after a response or message that said
	// so, or they were closed while idle.
	Ended int
	// Cut is the number of connections closed at the deadline while work
	// was in progress on them (or, for a hijacked or raw connection, while
	// its handler still held it).
	Cut int
	// Duration is how long the drain took.
	Duration time.Duration
	// LastEnded is how long after the start of the drain the last
	// connection that ended gracefully ended; zero if none did.
	LastEnded time.Duration
	// Datagrams is, for a datagram server ([Packet]), the number of
	// datagrams read over the server's life.
	Datagrams int
	// Answers is, for a datagram server, the number of datagrams written
	// (answers sent) over the server's life.
	Answers int
	// Servers holds, for a Group, the report of each of its drainers in
	// the order they were added; its counts are the sums of theirs.
	Servers []Report
}

// String renders the report on one line, for logs and errors.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: open=%d ended=%d cut=%d took=%v", r.Name, r.Open, r.Ended, r.Cut, r.Duration.Round(time.Millisecond))
	if r.Ended > 0 {
		fmt.Fprintf(&b, " last-ended=%v", r.LastEnded.Round(time.Millisecond))
	}
	// Only for datagram servers, so that the line of any other server
	// reads as it always has.
	if r.Datagrams > 0 || r.Answers > 0 {
		fmt.Fprintf(&b, " datagrams=%d answers=%d", r.Datagrams, r.Answers)
	}
	for _, s := range r.Servers {
		b.WriteString(" [")
		b.WriteString(s.String())
		b.WriteString("]")
	}
	return b.String()
}

// LogValue renders the report as a slog group.
func (r Report) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("name", r.Name),
		slog.Int("open", r.Open),
		slog.Int("ended", r.Ended),
		slog.Int("cut", r.Cut),
		slog.Duration("took", r.Duration),
		slog.Duration("last_ended", r.LastEnded),
	}
	if r.Datagrams > 0 || r.Answers > 0 {
		attrs = append(attrs, slog.Int("datagrams", r.Datagrams), slog.Int("answers", r.Answers))
	}
	for _, s := range r.Servers {
		attrs = append(attrs, slog.Any(s.Name, s))
	}
	return slog.GroupValue(attrs...)
}

// cutError is the error of a drain that had to cut connections.
func cutError(name string, cut int, err error) error {
	return fmt.Errorf("drain %s: %d connection(s) cut at the deadline: %w", name, cut, err)
}
