package handoff

// Table tests of classifyNew on literal texts: cheap, and they document
// the format. That the texts are tableflip's, still, is what
// contract_test.go checks.

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cloudflare/tableflip"
)

func TestClassifyNew(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"nil", nil, nil},
		{"not supported", fmt.Errorf("%w", tableflip.ErrNotSupported), ErrNotSupported},
		{"singleton", errors.New("tableflip: only a single Upgrader allowed"), ErrSingleton},
		{"marker without descriptors", errors.New("can't decode names from parent process: EOF"), errMarkerWithoutFds},
		{"marker without descriptors, fd 4 closed", errors.New("can't decode names from parent process: read read: bad file descriptor"), errMarkerWithoutFds},
		{"no working directory", errors.New("couldn't determine initial working directory"), errNoWorkingDir},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := classifyNew(c.err)
			if c.want == nil {
				if got != nil {
					t.Errorf("classifyNew(%v) = %v, want nil", c.err, got)
				}
				return
			}
			if !errors.Is(got, c.want) {
				t.Errorf("classifyNew(%v) = %v, want %v", c.err, got, c.want)
			}
			if errors.Is(got, errUnrecognised) {
				t.Errorf("classifyNew(%v) = %v: marked unrecognised", c.err, got)
			}
			if got != c.want && !errors.Is(got, c.err) {
				t.Errorf("classifyNew(%v) = %v: drops tableflip's error, with its detail", c.err, got)
			}
			if !strings.HasPrefix(got.Error(), "handoff: ") {
				t.Errorf("classifyNew(%v) = %q: no package prefix", c.err, got)
			}
		})
	}
	t.Run("marker without descriptors says so", func(t *testing.T) {
		got := classifyNew(errors.New("can't decode names from parent process: EOF")).Error()
		for _, want := range []string{tableflipMarker, "descriptors", "EOF"} {
			if !strings.Contains(got, want) {
				t.Errorf("%q does not mention %q", got, want)
			}
		}
	})
	for _, text := range []string{
		"tableflip: only one Upgrader allowed",
		"can't decode names from parent: EOF",
		"tableflip: platform does not support graceful restart", // the text without the sentinel
	} {
		t.Run("unrecognised/"+text, func(t *testing.T) {
			orig := errors.New(text)
			expectUnrecognised(t, classifyNew(orig), orig)
		})
	}
}

// expectUnrecognised checks that got marks orig as an unrecognised
// tableflip error, and keeps it, text and all.
func expectUnrecognised(t *testing.T, got, orig error) {
	t.Helper()
	if !errors.Is(got, errUnrecognised) {
		t.Errorf("%q classified as %v, want it marked unrecognised", orig, got)
	}
	if !errors.Is(got, orig) {
		t.Errorf("%q classified as %v, which does not wrap it", orig, got)
	}
	if !strings.Contains(got.Error(), orig.Error()) || !strings.Contains(got.Error(), "unrecognised tableflip error") {
		t.Errorf("%q classified as %q, which does not say it is unrecognised and quote it", orig, got)
	}
	for _, s := range []error{errMarkerWithoutFds, errNoWorkingDir, ErrSingleton, ErrNotSupported} {
		if errors.Is(got, s) {
			t.Errorf("%q classified as %v, which matches %v", orig, got, s)
		}
	}
}
