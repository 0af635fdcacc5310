//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestBenchSmoke runs the whole bench small: one kind, both servers, two
// upgrades, and checks that the table and the pictures are there and
// parse. The figures themselves are not checked: on a shared machine
// under -race they say little.
func TestBenchSmoke(t *testing.T) {
	cfg := defaultConfig()
	cfg.Runs, cfg.Upgrades = 1, 2
	cfg.Gap, cfg.Warmup, cfg.After = 400*time.Millisecond, 300*time.Millisecond, 600*time.Millisecond
	cfg.Steady = 500 * time.Millisecond
	cfg.Rate, cfg.Conns = 200, 8
	cfg.Kinds = []string{"http1-keepalive"}
	cfg.Out = t.TempDir()
	cfg.Raw = true
	cfg.Command = "test"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := bench(ctx, cfg, &stdout, &stderr); err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	md, err := os.ReadFile(filepath.Join(cfg.Out, "bench.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(md, stdout.Bytes()) {
		t.Error("bench.md is not what was printed")
	}
	t.Logf("\n%s", md)
	for _, server := range []string{"hitless", "tableflip-readme"} {
		cells := tableRow(t, string(md), "http1-keepalive", server)
		if n, err := strconv.Atoi(cells[3]); err != nil || n < 100 {
			t.Errorf("%s: requests %q, want 100 or more", server, cells[3])
		}
		if _, err := strconv.Atoi(strings.Trim(cells[5], "*")); err != nil {
			t.Errorf("%s: failed %q: %v", server, cells[5], err)
		}
		if r, err := strconv.ParseFloat(cells[8], 64); err != nil || r <= 0 {
			t.Errorf("%s: near/steady %q, want a positive ratio", server, cells[8])
		}
		checkSVG(t, filepath.Join(cfg.Out, "http1-keepalive-"+server+".svg"))
		raw, err := os.ReadFile(filepath.Join(cfg.Out, "http1-keepalive-"+server+"-run1.csv"))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		if lines[0] != "start_us,since_sighup_us,latency_us,reconnect_us,failed,pid" || len(lines) < 101 {
			t.Errorf("%s: the CSV has %d lines, header %q", server, len(lines), lines[0])
		}
		n, _ := strconv.Atoi(cells[3])
		if len(lines)-1 != n {
			t.Errorf("%s: the CSV has %d requests, the table %d", server, len(lines)-1, n)
		}
	}
}

// tableRow returns the cells of the Markdown table's row for kind and
// server.
func tableRow(t *testing.T, md, kind, server string) []string {
	t.Helper()
	for line := range strings.Lines(md) {
		cells := strings.Split(strings.TrimSpace(line), "|")
		if len(cells) < 3 {
			continue
		}
		cells = cells[1 : len(cells)-1]
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if cells[0] == kind && cells[1] == server {
			if len(cells) != 15 {
				t.Fatalf("row %q has %d cells, want 15", line, len(cells))
			}
			return cells
		}
	}
	t.Fatalf("no row for %s, %s in:\n%s", kind, server, md)
	return nil
}

// checkSVG checks that path is well-formed XML whose root is an svg.
func checkSVG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	d := xml.NewDecoder(f)
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Errorf("%s: root element %q, want svg", path, root)
	}
}

// -args reaches the library's examples, and only them: the tableflip
// server is measured as its README writes it.
func TestArgsReachOnlyTheLibrarysExamples(t *testing.T) {
	cfg, err := parseFlags([]string{"-kinds", "http1-keepalive", "-args", "-preflight -drain-timeout 5s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"-addr", "A", "-pidfile", "P", "-preflight", "-drain-timeout", "5s"}
	if got := serverArgs(cfg, hitlessHTTP, []string{"A"}, "P"); !slices.Equal(got, want) {
		t.Errorf("hitless gets %q, want %q", got, want)
	}
	want = []string{"-addr", "A", "-pidfile", "P"}
	if got := serverArgs(cfg, readmeHTTP, []string{"A"}, "P"); !slices.Equal(got, want) {
		t.Errorf("tableflip-readme gets %q, want %q", got, want)
	}
	if want := `go run ./bench -kinds http1-keepalive -args "-preflight -drain-timeout 5s"`; cfg.Command != want {
		t.Errorf("the report says %q, want %q", cfg.Command, want)
	}
}
