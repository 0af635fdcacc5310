package handoff

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// message is one datagram of the side channel (see the package doc).
type message struct {
	Version    int    `json:"v,omitempty"`
	Min        int    `json:"min,omitempty"`
	PID        int    `json:"pid,omitempty"`
	Generation int    `json:"gen,omitempty"`
	Build      string `json:"build,omitempty"`  // in a new generation's hello: what it runs
	Err        string `json:"err,omitempty"`    // in a hello: why it cannot take over
	Failed     string `json:"failed,omitempty"` // later: why it will not become ready
	Hurry      bool   `json:"hurry,omitempty"`
	Upgrade    bool   `json:"upgrade,omitempty"`
	Leaving    bool   `json:"leaving,omitempty"`  // new → old: I stop for good, do not take the service back
	Rollback   bool   `json:"rollback,omitempty"` // in a hello: you were started by a rollback
	// Version 2: what the old generation hands over (handover.go).
	Offers int    `json:"offers,omitempty"` // in a hello: how many file and state messages follow it
	File   string `json:"file,omitempty"`   // the name of the file attached
	State  string `json:"state,omitempty"`  // the name of the state whose bytes are in the file attached
	Size   int64  `json:"size,omitempty"`   // of that state
	// Drained is what the old generation's drain came to, sent to the
	// generation it handed over to when the drain has ended; its content
	// is the upgrade package's (the handoff only carries it).
	Drained json.RawMessage `json:"drained,omitempty"`
}

// maxMessage bounds a datagram; ours are far smaller.
const maxMessage = 4096

// link is one end of a side channel: a unix datagram socket connected to
// the other generation's end.
type link struct {
	conn *net.UnixConn
}

func newLink(f *os.File) (*link, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("side channel is a %T, not a unix socket", c)
	}
	return &link{conn: uc}, nil
}

// newLinkPair returns our end of a new side channel and the file of the
// other end, to be handed to the new generation.
func newLinkPair() (*link, *os.File, error) {
	ours, theirs, err := socketpair()
	if err != nil {
		return nil, nil, err
	}
	l, err := newLink(ours)
	if err != nil {
		theirs.Close()
		return nil, nil, err
	}
	return l, theirs, nil
}

// write sends m, with f's descriptor attached if f is not nil.
func (l *link) write(m message, f *os.File) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if f != nil {
		oob = rights(f)
	}
	l.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _, err = l.conn.WriteMsgUnix(b, oob, nil)
	return err
}

// read receives one message and the descriptor attached to it, if any. It
// leaves the read deadline alone: whoever wants to end a read sets one
// (a reader that set it itself could undo an end it raced with).
func (l *link) read() (message, *os.File, error) {
	buf, oob := make([]byte, maxMessage), make([]byte, 128)
	n, oobn, _, _, err := l.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return message{}, nil, err
	}
	var m message
	jerr := json.Unmarshal(buf[:n], &m)
	f, ferr := parseRights(oob[:oobn], attachedName(m))
	if jerr != nil {
		if f != nil {
			f.Close()
		}
		return message{}, nil, fmt.Errorf("malformed side-channel message: %w", jerr)
	}
	return m, f, errors.Join(ferr)
}

// attachedName names the file that comes with m (what os.File.Name and
// errors about it say).
func attachedName(m message) string {
	switch {
	case m.File != "":
		return m.File
	case m.State != "":
		return "state " + m.State
	}
	return "hitless-stderr"
}

// readNow is read for a message already queued: it fails at once when
// there is none.
func (l *link) readNow() (message, *os.File, error) {
	buf, oob := make([]byte, maxMessage), make([]byte, 128)
	n, oobn, err := recvNow(l.conn, buf, oob)
	if err != nil {
		return message{}, nil, err
	}
	var m message
	jerr := json.Unmarshal(buf[:n], &m)
	f, _ := parseRights(oob[:oobn], attachedName(m))
	if jerr != nil {
		if f != nil {
			f.Close()
		}
		return message{}, nil, jerr
	}
	return m, f, nil
}

func (l *link) close() { l.conn.Close() }
