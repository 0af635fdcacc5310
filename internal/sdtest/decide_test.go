package sdtest

import (
	"fmt"
	"strings"
	"testing"
)

// fakeTB records what giveUp asked for instead of ending the test.
type fakeTB struct {
	testing.TB
	skipped, fatal string
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Skip(args ...any)      { f.skipped = fmt.Sprint(args...) }
func (f *fakeTB) Fatal(args ...any)     { f.fatal = fmt.Sprint(args...) }
func (f *fakeTB) Skipf(string, ...any)  { panic("unexpected Skipf") }
func (f *fakeTB) Fatalf(string, ...any) { panic("unexpected Fatalf") }

func TestRequired(t *testing.T) {
	for v, want := range map[string]bool{"": false, "0": false, "false": false, "no": false, "1": true, "true": true, " TRUE ": true, "yes": true} {
		got := required(func(k string) string {
			if k != EnvRequire {
				t.Errorf("getenv(%q)", k)
			}
			return v
		})
		if got != want {
			t.Errorf("required with %s=%q = %v, want %v", EnvRequire, v, got, want)
		}
	}
}

func TestUnavailable(t *testing.T) {
	ok := probe{goos: "linux", euid: 0, script: "/src/.ci/systemd/start-systemd.sh"}
	if r := unavailable(ok); r != "" {
		t.Errorf("unavailable(%+v) = %q, want \"\"", ok, r)
	}
	for _, tc := range []struct {
		change func(*probe)
		want   string
	}{
		{func(p *probe) { p.goos = "darwin" }, "need Linux"},
		{func(p *probe) { p.euid = 1000 }, "need root"},
		{func(p *probe) { p.missing = []string{"systemd-nspawn"} }, "need systemd-nspawn; `.ci/systemd/start-systemd.sh start` installs them"},
		{func(p *probe) { p.script = "" }, "cannot find .ci/systemd/start-systemd.sh"},
	} {
		p := ok
		tc.change(&p)
		if r := unavailable(p); !strings.Contains(r, tc.want) {
			t.Errorf("unavailable(%+v) = %q, want it to contain %q", p, r, tc.want)
		}
	}
}

func TestGiveUpSkipsUnlessRequired(t *testing.T) {
	var f fakeTB
	giveUp(&f, false, "no nspawn here")
	if f.fatal != "" || !strings.Contains(f.skipped, "no nspawn here") || !strings.Contains(f.skipped, EnvRequire+"=1") {
		t.Errorf("not required: skipped=%q fatal=%q; want a skip naming the reason and %s", f.skipped, f.fatal, EnvRequire)
	}
	f = fakeTB{}
	giveUp(&f, true, "no nspawn here")
	if f.skipped != "" || !strings.Contains(f.fatal, "no nspawn here") || !strings.Contains(f.fatal, EnvRequire+"=1 requires") {
		t.Errorf("required: skipped=%q fatal=%q; want a failure naming the reason", f.skipped, f.fatal)
	}
}

func TestNoStartLimit(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"[Service]\nExecStart=/x\n", "[Unit]\nStartLimitIntervalSec=0\n\n[Service]\nExecStart=/x\n"},
		{"[Unit]\nDescription=d\n[Service]\nExecStart=/x\n", "[Unit]\nStartLimitIntervalSec=0\nDescription=d\n[Service]\nExecStart=/x\n"},
		{"[Unit]", "[Unit]\nStartLimitIntervalSec=0\n"},
		{"[Unit]\nStartLimitIntervalSec=5\n", "[Unit]\nStartLimitIntervalSec=5\n"},
	} {
		if got := NoStartLimit(tc.in); got != tc.want {
			t.Errorf("NoStartLimit(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSelected(t *testing.T) {
	for _, tc := range []struct {
		list string
		f    Flavor
		want bool
	}{
		{"", Host, true},
		{"", Trixie, true},
		{"  ", Trixie, true},
		{"trixie", Trixie, true},
		{"trixie", Host, false},
		{"host, trixie", Trixie, true},
		{"host,trixie", Host, true},
		{"hostess", Host, false},
	} {
		ok, why := selected(tc.list, tc.f)
		if ok != tc.want {
			t.Errorf("selected(%q, %s) = %v, want %v", tc.list, tc.f.Name, ok, tc.want)
		}
		if !ok && (!strings.Contains(why, EnvFlavors) || !strings.Contains(why, tc.f.Name)) {
			t.Errorf("selected(%q, %s): reason %q names neither the variable nor the flavor", tc.list, tc.f.Name, why)
		}
	}
}
