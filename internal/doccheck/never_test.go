package doccheck

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// The README (like invariant 6 of DESIGN.md) promises that the library
// "never calls os.Exit, never installs a signal handler unless asked
// (HandleSignals), never logs unless given a *slog.Logger". TestNeverClaims
// holds the library's code to that, and to two things the promise implies:
// it does not write to the process's stdout or stderr behind the
// application's back, and does not change the environment the application
// and its children see.
//
// The rules, by name (the Rule of an exception):
const (
	ruleExit   = "exit"   // os.Exit, syscall.Exit, unix.Exit
	ruleLog    = "log"    // the global loggers: std log's Print…, Fatal…, Panic…, Output, Default, Writer, Set…; slog's Info, Warn, …, Default, SetDefault
	rulePrint  = "print"  // fmt.Print, fmt.Printf, fmt.Println, and the print/println builtins
	ruleStdio  = "stdio"  // any use of os.Stdout or os.Stderr: writing, passing on, or assigning
	ruleSignal = "signal" // signal.Notify, NotifyContext or Ignore outside a function named HandleSignals
	ruleEnv    = "env"    // os.Setenv, os.Unsetenv, os.Clearenv (and syscall's, unix's)
)

// exception lets one function break one rule, for a reason that must hold
// up against the README's promise. To add one, copy the line that
// TestNeverClaims prints for the finding, and write the Why:
//
//	{Rule: ruleEnv, File: "listener/systemd.go", Func: "FromSystemd",
//		Why: "sd_listen_fds(3) unset_environment: LISTEN_* must not reach processes the service starts"},
//
// File is the path from the repository root (base names repeat across
// packages); Func is the function's name, or Type.Method for a method,
// or "" for code outside any function. An exception covers every finding
// of its rule in that function; one that covers nothing fails the test, so
// the table cannot keep an exception the code no longer needs.
type exception struct {
	Rule, File, Func, Why string
}

// allowed is the table of exceptions. It starts empty: every entry is a
// decision, to be taken where the code is rewritten.
var allowed = []exception{
	{Rule: "stdio", File: "internal/handoff/spawn.go", Func: "spawn",
		Why: "hands the new generation this process's descriptors 0-2, as tableflip did; writes nothing to them"},
	{Rule: "stdio", File: "internal/handoff/handoff.go", Func: "New",
		Why: "the default destination of a new generation's stderr, which passes through the old generation until it is ready: the stream it would have written to anyway (README: the only bytes the library writes to stderr)"},
	{Rule: "env", File: "internal/handoff/handoff.go", Func: "New",
		Why: "removes tableflip's marker, meant for this process only, so that processes the application starts do not think they were handed descriptors"},
	{Rule: "env", File: "internal/handoff/handoff.go", Func: "Handoff.legacyParent",
		Why: "removes HITLESS_GENERATION, which a parent of the previous release set for this process only"},
	{Rule: "env", File: "listener/systemd.go", Func: "FromSystemd",
		Why: "removes LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES, meant for this process only (sd_listen_fds(3) does the same with unset_environment)"},
	{Rule: "env", File: "upgrade/upgrader.go", Func: "New",
		Why: "makes WATCHDOG_PID name this generation, for code that checks it (sd_watchdog_enabled), since systemd set it for the first one"},
}

// notLibrary lists the directories, from the repository root, whose code
// is not the library: programs, and helpers of tests, the demo and the
// benchmarks, which may print and exit.
var notLibrary = []string{
	"examples", // programs (and the examples/extra module)
	"cmd",      // the hitless command
	"internal/harness",
	"internal/loadgen",
	"internal/baseline",
	"internal/bench",
	"internal/sdtest",
}

func isLibrary(rel string) bool {
	if !nonTestGo(rel) {
		return false
	}
	for _, d := range notLibrary {
		if strings.HasPrefix(rel, d+"/") {
			return false
		}
	}
	return true
}

// finding is one place that breaks a rule.
type finding struct {
	rule, file, fn, pos, what string
}

func (f finding) String() string {
	in := f.fn
	if in == "" {
		in = "package scope"
	}
	return fmt.Sprintf("%s: %s in %s (rule %q)", f.pos, f.what, in, f.rule)
}

// imports maps the names a file refers to imported packages by, to their
// import paths. Dot and blank imports give no name.
func imports(f *ast.File) map[string]string {
	m := map[string]string{}
	for _, s := range f.Imports {
		p, err := strconv.Unquote(s.Path.Value)
		if err != nil {
			continue
		}
		name := path.Base(p)
		if s.Name != nil {
			name = s.Name.Name
		}
		if name != "_" && name != "." {
			m[name] = p
		}
	}
	return m
}

var (
	stdlogGlobal = set("Print", "Printf", "Println", "Fatal", "Fatalf", "Fatalln", "Panic", "Panicf", "Panicln",
		"Output", "Default", "Writer", "SetOutput", "SetFlags", "SetPrefix")
	slogGlobal = set("Debug", "DebugContext", "Info", "InfoContext", "Warn", "WarnContext",
		"Error", "ErrorContext", "Log", "LogAttrs", "Default", "SetDefault", "SetLogLoggerLevel")
	envWrites   = set("Setenv", "Unsetenv", "Clearenv")
	exits       = set("Exit")
	fmtPrints   = set("Print", "Printf", "Println")
	signalCalls = set("Notify", "NotifyContext", "Ignore")
)

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

// classify returns the rule a reference to pkg.name (pkg an import path)
// breaks, if any.
func classify(pkg, name string) (rule string, ok bool) {
	switch {
	case exits[name] && (pkg == "os" || pkg == "syscall" || pkg == "golang.org/x/sys/unix"):
		return ruleExit, true
	case pkg == "log" && stdlogGlobal[name]:
		return ruleLog, true
	case pkg == "log/slog" && slogGlobal[name]:
		return ruleLog, true
	case pkg == "fmt" && fmtPrints[name]:
		return rulePrint, true
	case pkg == "os" && (name == "Stdout" || name == "Stderr"):
		return ruleStdio, true
	case pkg == "os/signal" && signalCalls[name]:
		return ruleSignal, true
	case envWrites[name] && (pkg == "os" || pkg == "syscall" || pkg == "golang.org/x/sys/unix"):
		return ruleEnv, true
	}
	return "", false
}

// funcName names a function declaration as an exception's Func does.
func funcName(fn *ast.FuncDecl) string {
	if fn.Recv == nil || len(fn.Recv.List) == 0 {
		return fn.Name.Name
	}
	t := fn.Recv.List[0].Type
	for {
		switch x := t.(type) {
		case *ast.StarExpr:
			t = x.X
			continue
		case *ast.IndexExpr: // generic receiver T[P]
			t = x.X
			continue
		case *ast.IndexListExpr:
			t = x.X
			continue
		case *ast.Ident:
			return x.Name + "." + fn.Name.Name
		}
		return fn.Name.Name
	}
}

// findNever returns the places in f that break a rule, before exceptions.
func findNever(f parsedFile) []finding {
	pkgs := imports(f.ast)
	var out []finding
	visit := func(fn string, n ast.Node) {
		ast.Inspect(n, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.SelectorExpr:
				id, ok := x.X.(*ast.Ident)
				if !ok {
					return true
				}
				pkg, ok := pkgs[id.Name]
				if !ok {
					return true
				}
				rule, ok := classify(pkg, x.Sel.Name)
				if !ok || rule == ruleSignal && (fn == "HandleSignals" || strings.HasSuffix(fn, ".HandleSignals")) {
					return true
				}
				out = append(out, finding{rule, f.rel, fn, f.relPos(x.Pos()), path.Base(pkg) + "." + x.Sel.Name})
			case *ast.CallExpr:
				if id, ok := x.Fun.(*ast.Ident); ok && (id.Name == "print" || id.Name == "println") {
					out = append(out, finding{rulePrint, f.rel, fn, f.relPos(x.Pos()), "builtin " + id.Name})
				}
			}
			return true
		})
	}
	for _, d := range f.ast.Decls {
		if fn, ok := d.(*ast.FuncDecl); ok {
			visit(funcName(fn), fn)
		} else {
			visit("", d)
		}
	}
	return out
}

// TestNeverClaims fails for every place in the library's code (every
// non-test Go file outside notLibrary) that exits the process, logs or
// prints through a global, touches os.Stdout or os.Stderr, installs a
// signal handler outside HandleSignals, or writes the environment, unless
// allowed lists it, and for every entry of allowed that no longer covers
// anything. It reads the source with go/parser, for every GOOS at once
// (build tags are not applied).
func TestNeverClaims(t *testing.T) {
	root := repoRoot(t)
	files := parseGo(t, walkRepo(t, root, isLibrary))
	if len(files) < 10 {
		t.Fatalf("found only %d library files under %s: the walk is broken", len(files), root)
	}
	var all []finding
	for _, f := range files {
		all = append(all, findNever(f)...)
	}
	broken, unused := applyExceptions(all, allowed)
	if len(broken) > 0 {
		var b strings.Builder
		seen := map[exception]bool{}
		for _, f := range broken {
			fmt.Fprintf(&b, "\n\t%s", f)
			seen[exception{Rule: f.rule, File: f.file, Func: f.fn}] = true
		}
		b.WriteString("\nFix the code, or, if the promise still holds, add to allowed (never_test.go) with the reason:")
		for _, f := range broken {
			if e := (exception{Rule: f.rule, File: f.file, Func: f.fn}); seen[e] {
				delete(seen, e)
				fmt.Fprintf(&b, "\n\t{Rule: %q, File: %q, Func: %q, Why: \"…\"},", e.Rule, e.File, e.Func)
			}
		}
		t.Errorf("%d place(s) in the library break the README's \"never\" promises:%s", len(broken), b.String())
	}
	for _, e := range unused {
		t.Errorf("exception %+v covers nothing any more: remove it from allowed", e)
	}
}

// applyExceptions returns the findings no exception covers, and the
// exceptions that cover no finding. An exception without a reason covers
// nothing.
func applyExceptions(all []finding, allowed []exception) (broken []finding, unused []exception) {
	used := make([]bool, len(allowed))
	for _, f := range all {
		covered := false
		for i, e := range allowed {
			if e.Rule == f.rule && e.File == f.file && e.Func == f.fn && strings.TrimSpace(e.Why) != "" {
				covered, used[i] = true, true
			}
		}
		if !covered {
			broken = append(broken, f)
		}
	}
	for i, e := range allowed {
		if !used[i] {
			unused = append(unused, e)
		}
	}
	return broken, unused
}

// parseSource parses src as the file rel, for the tests of the rules.
func parseSource(t *testing.T, rel, src string) parsedFile {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, rel, src, parser.ParseComments|parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	return parsedFile{repoFile: repoFile{rel: rel}, fset: fset, ast: f}
}

// TestFindNever checks each rule on code written here: what it catches,
// through an import alias too, and what it leaves alone.
func TestFindNever(t *testing.T) {
	src := `package p

import (
	"fmt"
	"log"
	"log/slog"
	sys "os"
	"os/signal"
	"syscall"
)

var out = sys.Stdout

type U struct{}

func (u *U) HandleSignals() {
	c := make(chan sys.Signal, 1)
	signal.Notify(c, syscall.SIGHUP)
	go func() { signal.Notify(c, syscall.SIGTERM) }()
}

func (U) hurry(c chan sys.Signal) { signal.Notify(c, syscall.SIGUSR1) }

func bad(l *slog.Logger, w *log.Logger) {
	sys.Exit(1)
	syscall.Exit(2)
	log.Printf("x")
	slog.Info("x")
	fmt.Println("x")
	fmt.Fprintln(sys.Stderr, "x")
	sys.Stderr = nil
	println("x")
	sys.Setenv("A", "1")
	sys.Unsetenv("A")
	_ = log.New(nil, "", 0) // a logger of one's own
	l.Info("x")             // the logger given
	w.Printf("x")           // not the log package
	fmt.Fprintf(nil, "x")   // to a writer given
	_ = fmt.Sprint("x")
	_ = sys.Getenv("A")
	signal.Stop(nil)
}
`
	var got []string
	for _, f := range findNever(parseSource(t, "p/p.go", src)) {
		got = append(got, f.String())
	}
	want := []string{
		`p/p.go:12: os.Stdout in package scope (rule "stdio")`,
		`p/p.go:22: signal.Notify in U.hurry (rule "signal")`,
		`p/p.go:25: os.Exit in bad (rule "exit")`,
		`p/p.go:26: syscall.Exit in bad (rule "exit")`,
		`p/p.go:27: log.Printf in bad (rule "log")`,
		`p/p.go:28: slog.Info in bad (rule "log")`,
		`p/p.go:29: fmt.Println in bad (rule "print")`,
		`p/p.go:30: os.Stderr in bad (rule "stdio")`,
		`p/p.go:31: os.Stderr in bad (rule "stdio")`,
		`p/p.go:32: builtin println in bad (rule "print")`,
		`p/p.go:33: os.Setenv in bad (rule "env")`,
		`p/p.go:34: os.Unsetenv in bad (rule "env")`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("findNever:\n got %s\nwant %s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

// TestApplyExceptions checks the allowlist: an exception covers its rule in
// its function of its file only, needs a reason, and is reported when it
// covers nothing.
func TestApplyExceptions(t *testing.T) {
	all := []finding{
		{rule: ruleEnv, file: "listener/systemd.go", fn: "FromSystemd", pos: "listener/systemd.go:34"},
		{rule: ruleEnv, file: "listener/systemd.go", fn: "FromSystemd", pos: "listener/systemd.go:35"},
		{rule: ruleStdio, file: "listener/systemd.go", fn: "FromSystemd", pos: "listener/systemd.go:36"},
		{rule: ruleEnv, file: "listener/other.go", fn: "FromSystemd", pos: "listener/other.go:1"},
		{rule: ruleEnv, file: "upgrade/upgrader.go", fn: "New", pos: "upgrade/upgrader.go:1"},
	}
	ok := exception{Rule: ruleEnv, File: "listener/systemd.go", Func: "FromSystemd", Why: "LISTEN_* must not reach children"}
	noWhy := exception{Rule: ruleEnv, File: "upgrade/upgrader.go", Func: "New", Why: " "}
	stale := exception{Rule: ruleExit, File: "listener/systemd.go", Func: "FromSystemd", Why: "gone"}
	broken, unused := applyExceptions(all, []exception{ok, noWhy, stale})
	if want := []finding{all[2], all[3], all[4]}; !reflect.DeepEqual(broken, want) {
		t.Errorf("broken = %v, want %v", broken, want)
	}
	if want := []exception{noWhy, stale}; !reflect.DeepEqual(unused, want) {
		t.Errorf("unused = %v, want %v", unused, want)
	}
}
