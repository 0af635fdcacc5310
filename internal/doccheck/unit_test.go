package doccheck

import (
	"go/ast"
	"go/doc/comment"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// shippedUnit is the unit the project ships, and the one the tests of
// examples/systemd install on a real systemd; every unit snippet in the
// docs is checked against it.
const shippedUnit = "examples/systemd/hitless-http.service"

// unitEntry is one key=value assignment of a systemd unit.
type unitEntry struct {
	section, key, value string
	line                int // 1-based, in the text parsed
}

// parseUnit reads systemd unit syntax (systemd.syntax(7)): [Section]
// headers, Key=Value lines, # and ; comments, and lines continued with a
// trailing backslash.
func parseUnit(text string) []unitEntry {
	var out []unitEntry
	section := ""
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		start := i
		line := strings.TrimSpace(lines[i])
		for strings.HasSuffix(line, `\`) && i+1 < len(lines) {
			i++
			line = strings.TrimSuffix(line, `\`) + " " + strings.TrimSpace(lines[i])
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
		default:
			if k, v, ok := strings.Cut(line, "="); ok {
				out = append(out, unitEntry{section, strings.TrimSpace(k), strings.TrimSpace(v), start + 1})
			}
		}
	}
	return out
}

// service returns the values assigned to key in the [Service] section, in
// order.
func service(u []unitEntry, key string) []string {
	var vals []string
	for _, e := range u {
		if e.section == "Service" && e.key == key {
			vals = append(vals, e.value)
		}
	}
	return vals
}

// signalRE recognises a reload or stop done by sending a signal.
var signalRE = regexp.MustCompile(`\b(kill|pkill|killall)\b|\b(SIG)?HUP\b`)

// hitlessCommand reports whether the command line cmd runs `hitless verb`
// (any path to the binary, with systemd's optional prefixes "-@:+!"), and
// returns the names of the flags it passes.
func hitlessCommand(cmd, verb string) (flags []string, ok bool) {
	f := strings.Fields(cmd)
	if len(f) < 2 || path.Base(strings.TrimLeft(f[0], "-@:+!")) != "hitless" || f[1] != verb {
		return nil, false
	}
	for _, a := range f[2:] {
		if strings.HasPrefix(a, "-") {
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			flags = append(flags, name)
		}
	}
	return flags, true
}

// checkUnit returns what is wrong with unit u as a unit for a hitless
// service: the lines README, docs/systemd.md and the systemd tests depend
// on. With shipped non-nil, u is a snippet in the docs, and its hitless
// commands must also pass every flag that the shipped unit's pass (so a
// renamed flag cannot survive in the docs).
func checkUnit(u, shipped []unitEntry) []string {
	var problems []string
	for _, kv := range []struct{ key, want, why string }{
		{"Type", "notify", "the service reports READY=1 itself"},
		{"NotifyAccess", "all", "the new generation, not systemd's child, reports READY=1 and MAINPID="},
	} {
		vals := service(u, kv.key)
		if len(vals) == 0 || vals[len(vals)-1] != kv.want {
			problems = append(problems, "want "+kv.key+"="+kv.want+" ("+kv.why+"), have "+show(kv.key, vals))
		}
	}
	for _, c := range []struct{ key, verb, why string }{
		{"ExecReload", "reload", "systemctl reload must wait for the outcome and fail when the new version did"},
		{"ExecStop", "stop", "systemd 252 SIGKILLs a main process that is not its own child; hitless stop drains"},
	} {
		vals := service(u, c.key)
		if len(vals) == 0 {
			problems = append(problems, "no "+c.key+"=; want one that runs hitless "+c.verb+" ("+c.why+")")
		}
		for _, v := range vals {
			flags, ok := hitlessCommand(v, c.verb)
			switch {
			case signalRE.MatchString(v):
				problems = append(problems, c.key+"="+v+" sends a signal, which returns before anything is known; run hitless "+c.verb+" ("+c.why+")")
			case !ok:
				problems = append(problems, c.key+"="+v+" does not run hitless "+c.verb+" ("+c.why+")")
			case shipped != nil:
				for _, sv := range service(shipped, c.key) {
					want, _ := hitlessCommand(sv, c.verb)
					for _, w := range want {
						if !contains(flags, w) {
							problems = append(problems, c.key+"="+v+" does not pass -"+w+", which "+shippedUnit+" passes")
						}
					}
				}
			}
		}
	}
	if len(service(u, "TimeoutStopSec")) == 0 {
		problems = append(problems, "no TimeoutStopSec= (it must exceed the drain budget)")
	}
	return problems
}

func show(key string, vals []string) string {
	if len(vals) == 0 {
		return "none"
	}
	return key + "=" + vals[len(vals)-1]
}

func contains(s []string, x string) bool {
	for _, e := range s {
		if e == x {
			return true
		}
	}
	return false
}

// snippet is a unit in the docs: where it starts, and its text.
type snippet struct {
	where, text string
}

// isUnitLine reports whether line is the [Service] header of a unit. Only
// a line of its own counts: a Go example that writes "[Service]\n…" into a
// string (internal/sdtest's doc) shows code, not a unit.
func isUnitLine(line string) bool { return strings.TrimSpace(line) == "[Service]" }

func hasUnit(text string) bool {
	for _, l := range strings.Split(text, "\n") {
		if isUnitLine(l) {
			return true
		}
	}
	return false
}

// goSnippets returns the code blocks (gofmt's indented blocks, as go doc
// shows them) of f's comments that contain a [Service] line.
func goSnippets(f parsedFile) []snippet {
	var out []snippet
	var p comment.Parser
	for _, g := range f.ast.Comments {
		// The lines of g that are a [Service] header, in order, to say
		// where each snippet is.
		var headers []*ast.Comment
		for _, c := range g.List {
			if isUnitLine(strings.TrimPrefix(c.Text, "//")) {
				headers = append(headers, c)
			}
		}
		for _, b := range p.Parse(g.Text()).Content {
			code, ok := b.(*comment.Code)
			if !ok || !hasUnit(code.Text) {
				continue
			}
			where := f.relPos(g.Pos())
			if len(headers) > 0 {
				where = f.relPos(headers[0].Pos())
				headers = headers[1:]
			}
			out = append(out, snippet{where, code.Text})
		}
	}
	return out
}

// mdSnippets returns the fenced code blocks (``` or ~~~) of a Markdown
// file that contain a [Service] line.
func mdSnippets(rel, text string) []snippet {
	var out []snippet
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		fence, ok := openFence(lines[i])
		if !ok {
			continue
		}
		start := i + 1
		end := start
		for end < len(lines) && !closesFence(lines[end], fence) {
			end++
		}
		if body := strings.Join(lines[start:end], "\n"); hasUnit(body) {
			out = append(out, snippet{rel + ":" + strconv.Itoa(start+1), body})
		}
		i = end
	}
	return out
}

// openFence returns the fence a line opens (``` or ~~~, three or more,
// indented at most three spaces), if it opens one.
func openFence(line string) (string, bool) {
	t := strings.TrimLeft(line, " ")
	if len(line)-len(t) > 3 {
		return "", false
	}
	for _, c := range []string{"`", "~"} {
		n := len(t) - len(strings.TrimLeft(t, c))
		if n >= 3 {
			return strings.Repeat(c, n), true
		}
	}
	return "", false
}

func closesFence(line, fence string) bool {
	t := strings.TrimSpace(line)
	return strings.HasPrefix(t, fence) && strings.Trim(t, fence[:1]) == ""
}

// TestUnitSnippets fails for every unit snippet in the docs that differs
// from the shipped unit in the lines a hitless service depends on, and
// when a unit shipped in examples/systemd lacks them itself. Snippets are
// the code blocks with a [Service] line in the comments of non-test Go
// files (the package docs in doc.go) and in the code fences of Markdown
// files.
func TestUnitSnippets(t *testing.T) {
	root := repoRoot(t)
	shippedText := readFile(t, repoFile{shippedUnit, filepath.Join(root, filepath.FromSlash(shippedUnit))})
	shipped := parseUnit(shippedText)

	// The shipped units must pass the rules themselves: the rules then
	// describe the unit the systemd tests run, not a list written here.
	units := walkRepo(t, root, func(rel string) bool {
		return path.Dir(rel) == "examples/systemd" && strings.HasSuffix(rel, ".service")
	})
	if len(units) == 0 {
		t.Fatal("no unit in examples/systemd")
	}
	for _, f := range units {
		for _, p := range checkUnit(parseUnit(readFile(t, f)), nil) {
			t.Errorf("%s (shipped): %s", f.rel, p)
		}
	}

	var snippets []snippet
	for _, f := range parseGo(t, walkRepo(t, root, nonTestGo)) {
		snippets = append(snippets, goSnippets(f)...)
	}
	for _, f := range walkRepo(t, root, isMD) {
		snippets = append(snippets, mdSnippets(f.rel, readFile(t, f))...)
	}
	if len(snippets) == 0 {
		t.Fatal("no unit snippet found in the docs: the package docs should ship one (STYLE §9), or the scan is broken")
	}
	for _, s := range snippets {
		for _, p := range checkUnit(parseUnit(s.text), shipped) {
			t.Errorf("%s: unit snippet differs from %s: %s", s.where, shippedUnit, p)
		}
	}
}

// TestCheckUnit checks the unit rules on units written here.
func TestCheckUnit(t *testing.T) {
	shipped := parseUnit("[Service]\nType=notify\nNotifyAccess=all\n" +
		"ExecReload=/usr/local/bin/hitless reload -socket /run/a.sock -timeout 80s\n" +
		"ExecStop=/usr/local/bin/hitless stop -socket /run/a.sock -timeout 50s\nTimeoutStopSec=60s\n")
	if p := checkUnit(shipped, nil); len(p) != 0 {
		t.Fatalf("a good unit: %q", p)
	}
	for _, tc := range []struct {
		name, unit string
		want       []string // substrings, one per problem, in order
	}{
		{"the same", "[Service]\nType=notify\nNotifyAccess=all\n" +
			"ExecReload=-hitless reload -socket=/run/b.sock -timeout 2m\n" +
			"ExecStop=hitless stop \\\n  -socket /run/b.sock -timeout 50s\nTimeoutStopSec=1min\n", nil},
		{"kill -HUP, no ExecStop", "[Service]\nType=notify\nNotifyAccess=all\nExecReload=/bin/kill -HUP $MAINPID\nTimeoutStopSec=60\n",
			[]string{"ExecReload=/bin/kill -HUP $MAINPID sends a signal", "no ExecStop="}},
		{"a later Type wins", "[Service]\nType=notify\nType=notify-reload\nNotifyAccess=main\n" +
			"ExecReload=hitless reload -socket s -timeout 1s\nExecStop=hitless stop -socket s -timeout 1s\nTimeoutStopSec=1\n",
			[]string{"want Type=notify", "want NotifyAccess=all"}},
		{"another command, a missing flag", "[Service]\nType=notify\nNotifyAccess=all\n" +
			"ExecReload=/bin/systemctl kill -s HUP app\nExecStop=hitless stop -socket s\n",
			[]string{"sends a signal", "does not pass -timeout", "no TimeoutStopSec="}},
		{"wrong verb", "[Service]\nType=notify\nNotifyAccess=all\n" +
			"ExecReload=hitless stop -socket s -timeout 1s\nExecStop=hitless stop -socket s -timeout 1s\nTimeoutStopSec=1\n",
			[]string{"ExecReload=hitless stop -socket s -timeout 1s does not run hitless reload"}},
		{"keys outside [Service]", "[Unit]\nType=notify\nNotifyAccess=all\nExecReload=hitless reload\nExecStop=hitless stop\nTimeoutStopSec=1\n[Service]\n",
			[]string{"want Type=notify", "want NotifyAccess=all", "no ExecReload=", "no ExecStop=", "no TimeoutStopSec="}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := checkUnit(parseUnit(tc.unit), shipped)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d problem(s), want %d:\n%s", len(got), len(tc.want), strings.Join(got, "\n"))
			}
			for i := range got {
				if !strings.Contains(got[i], tc.want[i]) {
					t.Errorf("problem %d: %q does not say %q", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestSnippetExtraction checks what counts as a unit snippet in a Go
// comment and in Markdown, and where it is said to be.
func TestSnippetExtraction(t *testing.T) {
	src := "// Package p.\n" +
		"//\n" +
		"//\tsd.WriteUnit(u, \"[Service]\\nType=notify\\n\") // code, not a unit\n" +
		"//\n" +
		"// A unit:\n" +
		"//\n" +
		"//\t[Service]\n" +
		"//\tType=simple\n" +
		"//\n" +
		"// [Service] in prose is not a snippet either.\n" +
		"package p\n\n" +
		"// F is documented with a unit too:\n" +
		"//\n" +
		"//\t[Unit]\n" +
		"//\n" +
		"//\t[Service]\n" +
		"//\tType=notify\n" +
		"func F() {}\n"
	var got []snippet
	got = append(got, goSnippets(parseSource(t, "p/doc.go", src))...)
	md := "text\n\n```ini\n[Service]\nType=exec\n```\n\n```\n[Unit]\n```\n\n    [Service]\n\n~~~~\n```\n [Service]\n~~~~\n"
	got = append(got, mdSnippets("x.md", md)...)
	want := []snippet{
		{"p/doc.go:7", "[Service]\nType=simple\n"},
		{"p/doc.go:17", "[Unit]\n\n[Service]\nType=notify\n"},
		{"x.md:4", "[Service]\nType=exec"},
		{"x.md:15", "```\n [Service]"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("snippets:\n got %q\nwant %q", got, want)
	}
}
