package doccheck

import (
	"bufio"
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// rootModule is the module whose directory is the repository root.
const rootModule = "github.com/hitlessgo/hitless"

// repoRoot walks up from the working directory (the package directory
// under go test) to the directory whose go.mod declares rootModule. The
// nested module examples/extra has its own go.mod with another path, so it
// is passed over.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if modulePath(filepath.Join(dir, "go.mod")) == rootModule {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod of %s above the working directory", rootModule)
		}
		dir = parent
	}
}

// modulePath returns the module path a go.mod declares, or "" if the file
// is missing or declares none.
func modulePath(gomod string) string {
	b, err := os.ReadFile(gomod)
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// repoFile is a file of the repository: its slash-separated path relative
// to the root (what messages show) and its absolute path.
type repoFile struct {
	rel, abs string
}

// walkRepo returns the files under root for which keep returns true,
// sorted by path, in both modules. Like the go command it skips testdata
// and directories whose names begin with "_"; it also skips .git. Other
// directories beginning with "." (.ci) are searched: keep decides.
func walkRepo(t *testing.T, root string, keep func(rel string) bool) []repoFile {
	t.Helper()
	var files []repoFile
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			name := d.Name()
			if rel != "." && (name == ".git" || name == "testdata" || name == "vendor" || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() && keep(rel) {
			files = append(files, repoFile{rel: rel, abs: path})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].rel < files[j].rel })
	return files
}

func isGo(rel string) bool      { return strings.HasSuffix(rel, ".go") }
func isTest(rel string) bool    { return strings.HasSuffix(rel, "_test.go") }
func isMD(rel string) bool      { return strings.HasSuffix(rel, ".md") }
func nonTestGo(rel string) bool { return isGo(rel) && !isTest(rel) }

// parsedFile is a parsed Go file with the file set that positions it.
type parsedFile struct {
	repoFile
	fset *token.FileSet
	ast  *ast.File
}

// parseGo parses files with their comments. A file that does not parse is
// reported as an error (it cannot be checked) and left out.
func parseGo(t *testing.T, files []repoFile) []parsedFile {
	t.Helper()
	out := make([]parsedFile, 0, len(files))
	for _, f := range files {
		fset := token.NewFileSet()
		af, err := parser.ParseFile(fset, f.abs, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			t.Errorf("%s: cannot check a file that does not parse: %v", f.rel, err)
			continue
		}
		out = append(out, parsedFile{repoFile: f, fset: fset, ast: af})
	}
	return out
}

// relPos formats pos as rel:line.
func (p parsedFile) relPos(pos token.Pos) string {
	return p.rel + ":" + strconv.Itoa(p.fset.Position(pos).Line)
}

func readFile(t *testing.T, f repoFile) string {
	t.Helper()
	b, err := os.ReadFile(f.abs)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
