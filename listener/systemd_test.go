package listener

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseListenEnv(t *testing.T) {
	for _, tc := range []struct {
		pid, fds, names string
		want            map[string][]int
		bad             bool
	}{
		{"", "", "", nil, false},
		{"42", "2", "http:admin", map[string][]int{"http": {3}, "admin": {4}}, false},
		{"42", "2", "", map[string][]int{"unknown": {3, 4}}, false},
		{"42", "3", "http:http:", map[string][]int{"http": {3, 4}, "unknown": {5}}, false},
		{"42", "0", "", map[string][]int{}, false},
		{"7", "2", "http:admin", nil, false}, // for another process
		{"x", "2", "", nil, true},
		{"42", "-1", "", nil, true},
		{"42", "two", "", nil, true},
		{"42", "99999", "", nil, true},
		{"42", "2", "http", nil, true},
		{"-3", "1", "", nil, true},
	} {
		got, err := parseListenEnv(tc.pid, tc.fds, tc.names, 42)
		if tc.bad {
			if !errors.Is(err, ErrBadEnvironment) {
				t.Errorf("parseListenEnv(%q, %q, %q) error = %v, want ErrBadEnvironment", tc.pid, tc.fds, tc.names, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseListenEnv(%q, %q, %q) = %v, %v; want %v", tc.pid, tc.fds, tc.names, got, err, tc.want)
		}
	}
}

func FuzzParseListenEnv(f *testing.F) {
	f.Add("42", "2", "http:admin")
	f.Add("42", "1", "")
	f.Add("", "", "")
	f.Add("42", "4096", "")
	f.Fuzz(func(t *testing.T, pid, fds, names string) {
		got, err := parseListenEnv(pid, fds, names, 42)
		if err != nil {
			if !errors.Is(err, ErrBadEnvironment) || got != nil {
				t.Fatalf("error %v with result %v", err, got)
			}
			return
		}
		seen := map[int]bool{}
		for name, nums := range got {
			if name == "" {
				t.Fatal("empty name")
			}
			for _, fd := range nums {
				if fd < listenFDsStart || fd >= listenFDsStart+maxListenFDs || seen[fd] {
					t.Fatalf("descriptor %d out of range or repeated", fd)
				}
				seen[fd] = true
			}
		}
	})
}
