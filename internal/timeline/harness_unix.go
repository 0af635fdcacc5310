//go:build unix

package timeline

import "github.com/hitlessgo/hitless/internal/harness"

// FromHarness converts the harness's upgrades. It exists only where the
// harness does (unix).
func FromHarness(u []harness.Upgrade) []Mark {
	out := make([]Mark, len(u))
	for i, x := range u {
		out[i] = Mark{Signalled: x.Signalled, Ready: x.Ready, OldExited: x.OldExited, Old: x.Old, New: x.New}
	}
	return out
}
