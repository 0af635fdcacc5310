package control

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCommandLinksOnlyControl keeps `hitless` (and this package) small: an
// operator's command has no business linking the upgrade machinery, an
// HTTP stack or the drain engine.
func TestCommandLinksOnlyControl(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command in PATH")
	}
	forbidden := []string{
		"github.com/cloudflare/tableflip",
		"net/http",
		"github.com/hitlessgo/hitless/drain",
		"github.com/hitlessgo/hitless/listener",
		"github.com/hitlessgo/hitless/readiness",
		"github.com/hitlessgo/hitless/upgrade",
		"github.com/hitlessgo/hitless/internal/handoff",
	}
	for _, pkg := range []string{"github.com/hitlessgo/hitless/cmd/hitless", "github.com/hitlessgo/hitless/control"} {
		out, err := exec.Command(goTool, "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go list -deps %s listed only %v", pkg, deps)
		}
		for _, dep := range deps {
			for _, bad := range forbidden {
				if dep == bad || strings.HasPrefix(dep, bad+"/") {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}
