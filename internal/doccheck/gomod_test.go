package doccheck

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// goLineRE is a go directive that names a minor release: "go 1.26", or
// "go 1.26.0" (what go mod tidy writes once a dependency's go.mod says
// 1.26.0; every 1.26.x toolchain satisfies both). A patch level above 0
// would force it on every importer.
var goLineRE = regexp.MustCompile(`^go (1\.\d+)(\.0)?$`)

// TestGoDirective fails when a go.mod of the repository (the library's or
// examples/extra's) requires a patch release, when the two disagree, or
// when the README states another Go version than go.mod.
func TestGoDirective(t *testing.T) {
	root := repoRoot(t)
	minor := ""
	for _, rel := range []string{"go.mod", "examples/extra/go.mod"} {
		text := readFile(t, repoFile{rel, filepath.Join(root, filepath.FromSlash(rel))})
		var line string
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, "go ") {
				line = strings.TrimSpace(l)
			}
		}
		m := goLineRE.FindStringSubmatch(line)
		switch {
		case m == nil:
			t.Errorf("%s: %q: want go 1.N (or 1.N.0), a minor release, not a patch release", rel, line)
		case minor == "":
			minor = m[1]
		case m[1] != minor:
			t.Errorf("%s: %q, but go.mod says go %s", rel, line, minor)
		}
	}
	if minor == "" {
		return
	}
	readme := readFile(t, repoFile{"README.md", filepath.Join(root, "README.md")})
	if !regexp.MustCompile(`\bGo ` + regexp.QuoteMeta(minor) + `\b`).MatchString(readme) {
		t.Errorf("README.md does not say Go %s, the version go.mod requires", minor)
	}
}
