package listener

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strings"
	"testing"
)

func TestParseListenEnv(t *testing.T) {
	for _, tc := range []struct {
		pid, fds, names string
		want            map[string][]int
		bad             string // the variable the error names
	}{
		{"", "", "", nil, ""},
		{"42", "2", "http:admin", map[string][]int{"http": {3}, "admin": {4}}, ""},
		{"42", "2", "", map[string][]int{"unknown": {3, 4}}, ""},
		{"42", "3", "http:http:", map[string][]int{"http": {3, 4}, "unknown": {5}}, ""},
		{"42", "0", "", map[string][]int{}, ""},
		{"7", "2", "http:admin", nil, ""}, // for another process
		{"7", "garbage", "x", nil, ""},    // for another process: not ours to judge
		{"", "", "http", nil, ""},         // names alone: nothing was passed
		{"+42", "+2", "", map[string][]int{"unknown": {3, 4}}, ""},
		{"0042", "002", "", map[string][]int{"unknown": {3, 4}}, ""},
		{"42", "-0", "", map[string][]int{}, ""},
		{"42", "4096", "", nil, ""}, // checked below: 4096 descriptors
		{"x", "2", "", nil, "LISTEN_PID"},
		{"", "2", "", nil, "LISTEN_PID"},
		{" 42", "2", "", nil, "LISTEN_PID"},
		{"42 ", "2", "", nil, "LISTEN_PID"},
		{"0", "2", "", nil, "LISTEN_PID"},
		{"-3", "1", "", nil, "LISTEN_PID"},
		{"99999999999999999999", "1", "", nil, "LISTEN_PID"},
		{"42", "-1", "", nil, "LISTEN_FDS"},
		{"42", "", "", nil, "LISTEN_FDS"},
		{"42", "two", "", nil, "LISTEN_FDS"},
		{"42", " 2", "", nil, "LISTEN_FDS"},
		{"42", "2\n", "", nil, "LISTEN_FDS"},
		{"42", "4097", "", nil, "LISTEN_FDS"},
		{"42", "99999", "", nil, "LISTEN_FDS"},
		{"42", "99999999999999999999", "", nil, "LISTEN_FDS"},
		{"42", "2", "http", nil, "LISTEN_FDNAMES"},
		{"42", "2", "a:b:c", nil, "LISTEN_FDNAMES"},
		{"42", "0", "a", nil, "LISTEN_FDNAMES"},
	} {
		got, err := parseListenEnv(listenEnv{tc.pid, tc.fds, tc.names, ""}, self{42, idOf(4242)})
		if tc.bad != "" {
			if !errors.Is(err, ErrBadEnvironment) || !strings.Contains(err.Error(), tc.bad) || got != nil {
				t.Errorf("parseListenEnv(%q, %q, %q) = %s, %v; want an ErrBadEnvironment naming %s", tc.pid, tc.fds, tc.names, brief(got), err, tc.bad)
			}
			continue
		}
		if tc.fds == "4096" {
			if err != nil || len(got["unknown"]) != 4096 {
				t.Errorf("parseListenEnv with LISTEN_FDS=4096 = %d descriptors, %v", len(got["unknown"]), err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseListenEnv(%q, %q, %q) = %s, %v; want %v", tc.pid, tc.fds, tc.names, brief(got), err, tc.want)
		}
	}
}

// brief prints a result of parseListenEnv, with at most a few descriptors
// per name.
func brief(m map[string][]int) string {
	if m == nil {
		return "nil"
	}
	var b strings.Builder
	b.WriteString("map[")
	for name, fds := range m {
		if len(fds) > 4 {
			fmt.Fprintf(&b, "%q:%d descriptors %d…%d ", name, len(fds), fds[0], fds[len(fds)-1])
		} else {
			fmt.Fprintf(&b, "%q:%v ", name, fds)
		}
	}
	return strings.TrimSpace(b.String()) + "]"
}

// idOf is a self.pidfdID that knows the ID; noID one that cannot tell.
func idOf(id uint64) func() (uint64, bool) { return func() (uint64, bool) { return id, true } }

func noID() (uint64, bool) { return 0, false }

// LISTEN_PIDFDID (systemd 258): for another process of the same PID, the
// variables are not ours; malformed, an error; unknown own ID, LISTEN_PID
// alone decides.
func TestParseListenEnvPIDFDID(t *testing.T) {
	ours := map[string][]int{"http": {3}}
	for _, tc := range []struct {
		pid, pidfdID string
		own          func() (uint64, bool)
		want         map[string][]int
		bad          bool
	}{
		{"42", "", idOf(4242), ours, false},        // 257 and older: not set
		{"42", "4242", idOf(4242), ours, false},    // ours
		{"42", "0004242", idOf(4242), ours, false}, // leading zeros
		{"42", "4243", idOf(4242), nil, false},     // same PID, another process
		{"42", "18446744073709551615", idOf(4242), nil, false},
		{"42", "18446744073709551615", idOf(18446744073709551615), ours, false},
		{"42", "4243", noID, ours, false},        // no pidfs: PID alone
		{"7", "4242", idOf(4242), nil, false},    // another PID: not judged
		{"7", "garbage", idOf(4242), nil, false}, // another PID: not judged
		{"42", "garbage", idOf(4242), nil, true},
		{"42", "garbage", noID, nil, true}, // malformed even when we cannot compare
		{"42", "0", idOf(4242), nil, true}, // pidfs never gives 0
		{"42", "000", idOf(4242), nil, true},
		{"42", "+4242", idOf(4242), nil, true}, // unsigned: no sign
		{"42", "-4242", idOf(4242), nil, true},
		{"42", " 4242", idOf(4242), nil, true},
		{"42", "4242\n", idOf(4242), nil, true},
		{"42", "0x1092", idOf(4242), nil, true},
		{"42", "4_242", idOf(4242), nil, true},
		{"42", "18446744073709551616", idOf(4242), nil, true}, // 2^64
		{"42", "99999999999999999999999", noID, nil, true},
	} {
		asked := false
		own := func() (uint64, bool) { asked = true; return tc.own() }
		got, err := parseListenEnv(listenEnv{tc.pid, "1", "http", tc.pidfdID}, self{42, own})
		if tc.bad {
			if !errors.Is(err, ErrBadEnvironment) || !strings.Contains(err.Error(), "LISTEN_PIDFDID=") || got != nil {
				t.Errorf("LISTEN_PID=%s LISTEN_PIDFDID=%q: %s, %v; want an ErrBadEnvironment naming LISTEN_PIDFDID", tc.pid, tc.pidfdID, brief(got), err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("LISTEN_PID=%s LISTEN_PIDFDID=%q: %s, %v; want %s", tc.pid, tc.pidfdID, brief(got), err, brief(tc.want))
		}
		// The own ID costs a pidfd_open: asked only when it matters.
		if asked != (tc.pid == "42" && tc.pidfdID != "") {
			t.Errorf("LISTEN_PID=%s LISTEN_PIDFDID=%q: own ID asked: %v", tc.pid, tc.pidfdID, asked)
		}
	}
}

// decimalOracle reads s as the contract of parseListenEnv states it: an
// optional sign, then one or more ASCII digits and nothing else. The value
// comes from math/big, so that no limit of int can hide in it.
func decimalOracle(s string) (*big.Int, bool) {
	digits := s
	if digits != "" && (digits[0] == '+' || digits[0] == '-') {
		digits = digits[1:]
	}
	if digits == "" {
		return nil, false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return nil, false
		}
	}
	return new(big.Int).SetString(s, 10)
}

// listenEnvOracle is parseListenEnv written again from its doc comment and
// sd_listen_fds_with_names(3), sharing no code with it: the descriptors by
// name, nil when nothing is for pid, or the variable that is malformed.
//
// LISTEN_PIDFDID follows the doc comment of FromSystemd: judged once
// LISTEN_PID is ours, digits only, 1 to 2^64-1; then it must be ownID
// unless ownID is 0 (unknown).
func listenEnvOracle(pidVar, fdsVar, namesVar, pidfdIDVar string, pid int, ownID uint64) (map[string][]int, string) {
	if pidVar == "" && fdsVar == "" {
		return nil, ""
	}
	p, ok := decimalOracle(pidVar)
	if !ok || p.Sign() <= 0 || p.Cmp(big.NewInt(math.MaxInt)) > 0 {
		return nil, "LISTEN_PID"
	}
	if p.Cmp(big.NewInt(int64(pid))) != 0 {
		return nil, ""
	}
	if pidfdIDVar != "" {
		id, ok := decimalOracle(pidfdIDVar)
		maxU64 := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 64), big.NewInt(1))
		if !ok || pidfdIDVar[0] == '+' || pidfdIDVar[0] == '-' || id.Sign() <= 0 || id.Cmp(maxU64) > 0 {
			return nil, "LISTEN_PIDFDID"
		}
		if ownID != 0 && id.Cmp(new(big.Int).SetUint64(ownID)) != 0 {
			return nil, ""
		}
	}
	n, ok := decimalOracle(fdsVar)
	if !ok || n.Sign() < 0 || n.Cmp(big.NewInt(4096)) > 0 {
		return nil, "LISTEN_FDS"
	}
	count := int(n.Int64())
	// The names, split by hand at every ':'.
	var names []string
	if namesVar != "" {
		start := 0
		for i := 0; i <= len(namesVar); i++ {
			if i == len(namesVar) || namesVar[i] == ':' {
				names = append(names, namesVar[start:i])
				start = i + 1
			}
		}
		if len(names) != count {
			return nil, "LISTEN_FDNAMES"
		}
	}
	out := map[string][]int{}
	for i := 0; i < count; i++ {
		name := "unknown"
		if len(names) > 0 && names[i] != "" {
			name = names[i]
		}
		out[name] = append(out[name], 3+i)
	}
	return out, ""
}

// namesVar reports whether err is about the variable v and no other
// (LISTEN_PID is a prefix of LISTEN_PIDFDID).
func namesVar(err error, v string) bool {
	msg := err.Error()
	if v != "LISTEN_PIDFDID" && strings.Contains(msg, "LISTEN_PIDFDID") {
		return false
	}
	return strings.Contains(msg, v)
}

func FuzzParseListenEnv(f *testing.F) {
	for _, seed := range [][3]string{
		{"42", "2", "http:admin"},
		{"42", "1", ""},
		{"", "", ""},
		{"42", "4096", ""},
		{"42", "4097", ""},
		{"42", "-1", ""},
		{"-42", "1", ""},
		{"0", "1", ""},
		{"+42", "+1", ""},
		{"0042", "0002", "a:b"},
		{"42", "00000000000000000000000000001", ""},
		{"99999999999999999999", "1", ""},
		{"42", "99999999999999999999", ""},
		{"42", "9223372036854775808", ""},
		{"9223372036854775807", "1", ""},
		{" 42", "1", ""},
		{"42", "1 ", ""},
		{"42", "\t1", ""},
		{"42", "3", "http:http:http"},
		{"42", "3", "::"},
		{"42", "2", "a:b:c"},
		{"7", "1", ""},
		{"", "1", ""},
		{"42", "", ""},
		{"", "", "http"},
		{"42", "1_0", ""},
		{"42", "0x10", ""},
	} {
		f.Add(seed[0], seed[1], seed[2], "", uint64(0))
	}
	for _, seed := range []struct {
		pidfdID string
		own     uint64
	}{
		{"4242", 4242}, {"4242", 4243}, {"4242", 0}, {"004242", 4242},
		{"0", 4242}, {"00", 0}, {"+4242", 4242}, {"-1", 0}, {" 1", 1},
		{"18446744073709551615", 18446744073709551615}, {"18446744073709551616", 0},
		{"x", 4242}, {"0x10", 16}, {"1_0", 10},
	} {
		f.Add("42", "1", "http", seed.pidfdID, seed.own)
		f.Add("7", "1", "http", seed.pidfdID, seed.own)
	}
	f.Fuzz(func(t *testing.T, pid, fds, names, pidfdID string, ownID uint64) {
		own := noID
		if ownID != 0 {
			own = idOf(ownID)
		}
		got, err := parseListenEnv(listenEnv{pid, fds, names, pidfdID}, self{42, own})
		want, bad := listenEnvOracle(pid, fds, names, pidfdID, 42, ownID)
		if bad != "" {
			if !errors.Is(err, ErrBadEnvironment) || got != nil || !namesVar(err, bad) {
				t.Fatalf("parseListenEnv(%q, %q, %q, %q; own ID %d) = %s, %v; want an ErrBadEnvironment naming %s", pid, fds, names, pidfdID, ownID, brief(got), err, bad)
			}
			return
		}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("parseListenEnv(%q, %q, %q, %q; own ID %d) = %s, %v; want %s", pid, fds, names, pidfdID, ownID, brief(got), err, brief(want))
		}
	})
}

// checkSockets over a fake kind: what the error says.
func TestCheckSocketsMessage(t *testing.T) {
	kind := func(fd int) (bool, string) {
		switch fd {
		case 4:
			return false, fdNotOpen
		case 6:
			return false, "a regular file (/x)"
		}
		return true, "a socket"
	}
	if err := checkSockets(map[string][]int{"a": {3}, "b": {5}}, "2", kind); err != nil {
		t.Fatalf("all sockets: %v", err)
	}
	if err := checkSockets(map[string][]int{}, "0", kind); err != nil {
		t.Fatalf("no descriptors: %v", err)
	}
	for _, tc := range []struct {
		named map[string][]int
		fds   string
		want  string
	}{
		{map[string][]int{"a": {3, 5}, "b": {6, 4}}, "4",
			"listener: malformed LISTEN_* environment: LISTEN_FDS=4 counts descriptors 3 to 6, but 4 is not open (2 of the 4 are not open sockets); no descriptor was taken"},
		{map[string][]int{"unknown": {3, 5, 6}}, "3",
			"listener: malformed LISTEN_* environment: LISTEN_FDS=3 counts descriptors 3 to 6, but 6 is a regular file (/x), not a socket; no descriptor was taken"},
		{map[string][]int{"unknown": {6}}, "1",
			"listener: malformed LISTEN_* environment: LISTEN_FDS=1 counts descriptor 6, but 6 is a regular file (/x), not a socket; no descriptor was taken"},
	} {
		err := checkSockets(tc.named, tc.fds, kind)
		if !errors.Is(err, ErrBadEnvironment) || err.Error() != tc.want {
			t.Errorf("checkSockets(%v) = %v\nwant %s", tc.named, err, tc.want)
		}
	}
}
