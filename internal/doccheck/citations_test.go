package doccheck

import (
	"go/ast"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// citationRE is what counts as citing a test by name in prose.
var citationRE = regexp.MustCompile(`\b(Test|Benchmark|Fuzz)[A-Z]\w*`)

// patternFlagRE matches the text just before a name that is the argument of
// go test's -run, -bench or -fuzz: there the name is a regular expression,
// which go test matches anywhere in a function's name, so a prefix such as
// -run TestNothingAccumulates is a working command.
var patternFlagRE = regexp.MustCompile(`-(test\.)?(run|bench|fuzz)[= ]['"]?$`)

// citation is one name found in prose, at line (1-based) of its text.
type citation struct {
	line    int
	name    string
	pattern bool // the argument of -run, -bench or -fuzz
}

// findCitations returns the test names text cites. A name right after
// "func " is left out: it declares a test in example code (a doc comment's
// "func TestUnit(t *testing.T) {"), it does not cite one.
func findCitations(text string) []citation {
	var out []citation
	for i, line := range strings.Split(text, "\n") {
		for _, m := range citationRE.FindAllStringIndex(line, -1) {
			before := line[:m[0]]
			if strings.HasSuffix(before, "func ") {
				continue
			}
			out = append(out, citation{line: i + 1, name: line[m[0]:m[1]], pattern: patternFlagRE.MatchString(before)})
		}
	}
	return out
}

// resolves reports whether c names a declared function: exactly, or for a
// -run/-bench/-fuzz argument, as a part of one (go test's regexp match).
func (c citation) resolves(declared map[string]bool) bool {
	if declared[c.name] {
		return true
	}
	if c.pattern {
		for name := range declared {
			if strings.Contains(name, c.name) {
				return true
			}
		}
	}
	return false
}

// declaredTests returns the names of the Test, Benchmark, Fuzz and Example
// functions declared at top level in files (which should be *_test.go).
func declaredTests(files []parsedFile) map[string]bool {
	names := map[string]bool{}
	for _, f := range files {
		for _, d := range f.ast.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv != nil {
				continue
			}
			for _, prefix := range []string{"Test", "Benchmark", "Fuzz", "Example"} {
				if strings.HasPrefix(fn.Name.Name, prefix) {
					names[fn.Name.Name] = true
				}
			}
		}
	}
	return names
}

// TestCitedTestsExist fails for every Test…, Benchmark… or Fuzz… name cited
// in a Markdown file of the repository (README.md, BENCHMARKS.md,
// CHANGELOG.md, docs/, .ci/) or in a comment of a non-test Go file that
// names no function declared in any *_test.go file of either module. A
// renamed or removed test then cannot leave a guarantee in the README
// pointing at nothing.
func TestCitedTestsExist(t *testing.T) {
	root := repoRoot(t)
	declared := declaredTests(parseGo(t, walkRepo(t, root, isTest)))
	if len(declared) < 10 {
		t.Fatalf("found only %d test functions under %s: the walk is broken", len(declared), root)
	}

	var missing []string
	cited := 0
	check := func(where string, firstLine int, text string) {
		for _, c := range findCitations(text) {
			cited++
			if !c.resolves(declared) {
				missing = append(missing, where+":"+strconv.Itoa(firstLine+c.line-1)+": "+c.name)
			}
		}
	}

	sawReadme := false
	for _, f := range walkRepo(t, root, isMD) {
		sawReadme = sawReadme || f.rel == "README.md"
		check(f.rel, 1, readFile(t, f))
	}
	if !sawReadme {
		t.Fatalf("README.md not found under %s", root)
	}
	for _, f := range parseGo(t, walkRepo(t, root, nonTestGo)) {
		for _, g := range f.ast.Comments {
			for _, c := range g.List {
				check(f.rel, f.fset.Position(c.Slash).Line, c.Text)
			}
		}
	}

	if cited == 0 {
		t.Fatal("no citation found at all: the scan is broken")
	}
	if len(missing) > 0 {
		t.Errorf("%d cited test name(s) name no function in any *_test.go (rename the citation or restore the test):\n\t%s",
			len(missing), strings.Join(missing, "\n\t"))
	}
}

// TestFindCitations checks the rule itself on text written here: what is a
// citation, what is a declaration, what is a -run pattern.
func TestFindCitations(t *testing.T) {
	text := "Proven by `TestA` and BenchmarkB;\n" +
		"run `go test -run TestPre ./x/` or -fuzz=FuzzF.\n" +
		"\tfunc TestDecl(t *testing.T) {\n" +
		"Testing, Tests and TestMain_ are words; Test_x is not cited.\n"
	got := findCitations(text)
	want := []citation{
		{1, "TestA", false}, {1, "BenchmarkB", false},
		{2, "TestPre", true}, {2, "FuzzF", true},
		{4, "TestMain_", false},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("findCitations:\n got %v\nwant %v", got, want)
	}

	declared := map[string]bool{"TestA": true, "TestPrefixed": true}
	for _, tc := range []struct {
		c    citation
		want bool
	}{
		{citation{name: "TestA"}, true},
		{citation{name: "BenchmarkB"}, false},
		{citation{name: "TestPre", pattern: true}, true},
		{citation{name: "TestPre"}, false}, // in prose a prefix is not a name
		{citation{name: "TestGone", pattern: true}, false},
	} {
		if got := tc.c.resolves(declared); got != tc.want {
			t.Errorf("%+v resolves = %v, want %v", tc.c, got, tc.want)
		}
	}
}
