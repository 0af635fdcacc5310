package timeline

import (
	"bytes"
	"encoding/xml"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.svg from the current output")

func TestWriteSVGGolden(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteSVG(&buf, syntheticRun(), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	wellFormed(t, buf.Bytes())
	golden := filepath.Join("testdata", "synthetic.svg")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("WriteSVG output differs from %s; if the change is meant, look at the picture and run go test -update", golden)
	}
	// Deterministic: a second drawing is the same bytes.
	var again bytes.Buffer
	if err := WriteSVG(&again, syntheticRun(), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("two drawings of the same run differ")
	}
}

func TestWriteSVGEscapesAndEdgeCases(t *testing.T) {
	for name, r := range map[string]*Run{
		"empty":    {Kind: `a<b & "c"`, Server: "</svg>"},
		"failures": {Kind: "tcp", Requests: []Request{{Start: t0, Failed: true}, {Start: t0.Add(time.Second), Failed: true}}},
		"one":      {Requests: []Request{{Start: t0, Latency: time.Millisecond, PID: 3}}, Marks: []Mark{{Signalled: t0.Add(-time.Hour)}}},
	} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteSVG(&buf, r, 0); err != nil {
				t.Fatal(err)
			}
			wellFormed(t, buf.Bytes())
			if r.Server == "</svg>" && !strings.Contains(buf.String(), "a&lt;b &amp; &#34;c&#34; against &lt;/svg&gt;") {
				t.Errorf("title not escaped:\n%s", buf.String())
			}
		})
	}
}

func TestWriteSVGWriteError(t *testing.T) {
	want := errors.New("disk full")
	if err := WriteSVG(failWriter{want}, syntheticRun(), 0); !errors.Is(err, want) {
		t.Errorf("WriteSVG = %v, want %v", err, want)
	}
}

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

// wellFormed parses b as XML and checks it is one svg element.
func wellFormed(t *testing.T, b []byte) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	var root string
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		if s, ok := tok.(xml.StartElement); ok && root == "" {
			root = s.Name.Local
			if s.Name.Space != "http://www.w3.org/2000/svg" {
				t.Errorf("root namespace %q", s.Name.Space)
			}
		}
	}
	if root != "svg" {
		t.Errorf("root element %q, want svg", root)
	}
}

func TestFmtDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                        "0ns",
		250 * time.Microsecond:   "250µs",
		1500 * time.Microsecond:  "1.5ms",
		2 * time.Millisecond:     "2ms",
		12340 * time.Microsecond: "12.3ms",
		1200 * time.Millisecond:  "1.2s",
	} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", d, got, want)
		}
	}
}
