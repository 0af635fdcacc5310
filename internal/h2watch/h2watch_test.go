package h2watch

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func frame(typ byte, payload []byte) []byte {
	b := []byte{byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload)), typ, 0, 0, 0, 0, 0}
	return append(b, payload...)
}

func goAwayFrame(last, code uint32) []byte {
	p := binary.BigEndian.AppendUint32(nil, last)
	return frame(goAway, binary.BigEndian.AppendUint32(p, code))
}

// Frames split across reads anywhere, GOAWAYs among others, then EOF.
func TestConnFollowsFrames(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	var wire []byte
	wire = append(wire, frame(0x4, make([]byte, 6))...) // SETTINGS
	wire = append(wire, goAwayFrame(1<<31-1, 0)...)
	wire = append(wire, frame(0x6, make([]byte, 8))...) // PING
	wire = append(wire, goAwayFrame(7, 2)...)
	go func() {
		for i := 0; i < len(wire); i += 5 { // 5 bytes at a time: every boundary falls mid-read
			server.Write(wire[i:min(i+5, len(wire))])
		}
		server.Close()
	}()
	c := &Conn{Conn: client}
	start := time.Now()
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatal(err)
	}
	codes, first := c.GoAways()
	if !slices.Equal(codes, []uint32{0, 2}) {
		t.Errorf("GOAWAY codes %v, want [0 2]", codes)
	}
	if first.Before(start) {
		t.Errorf("first GOAWAY at %v, before the reads began", first)
	}
	if !errors.Is(c.End(), io.EOF) {
		t.Errorf("End = %v, want EOF", c.End())
	}
}

// After Closing, the read error is the client's own.
func TestClosingHidesTheClientsOwnClose(t *testing.T) {
	server, client := net.Pipe()
	defer server.Close()
	c := &Conn{Conn: client}
	c.Closing()
	client.Close()
	c.Read(make([]byte, 1))
	if c.End() != nil {
		t.Errorf("End = %v after Closing, want nil", c.End())
	}
	if codes, first := c.GoAways(); codes != nil || !first.IsZero() {
		t.Errorf("GoAways = %v, %v, want none", codes, first)
	}
}
