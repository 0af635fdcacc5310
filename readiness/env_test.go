package readiness

import (
	"errors"
	"math"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
)

func TestWatchdogIntervalFromEnvironment(t *testing.T) {
	for _, tc := range []struct {
		usec string
		want time.Duration // 0: no watchdog
		bad  bool          // WatchdogIntervalErr returns an ErrBadWatchdog
	}{
		{"", 0, false},
		{"3000000", 1500 * time.Millisecond, false},
		{" 3000000\n", 1500 * time.Millisecond, false},
		{"+3000000", 1500 * time.Millisecond, false},
		{"0003000000", 1500 * time.Millisecond, false},
		{"20000", 10 * time.Millisecond, false},             // exactly the floor
		{"40000", 20 * time.Millisecond, false},             // above it: half
		{"19999", MinWatchdogInterval, false},               // below it: clamped
		{"1", MinWatchdogInterval, false},                   // the review's busy loop
		{"9223372036854775", 9223372036854775 * 500, false}, // the largest a Duration holds
		{"9223372036854776", 0, true},                       // the review's panic
		{"9223372036854775807", 0, true},                    // MaxInt64
		{"9223372036854775808", 0, true},                    // beyond int64
		{"99999999999999999999999999999999", 0, true},       // huge
		{"18446744073709551615", 0, true},                   // USEC_INFINITY
		{"0", 0, true},
		{"-0", 0, true},
		{"-5", 0, true},
		{"abc", 0, true},
		{"3e6", 0, true},
		{"3_000_000", 0, true},
		{"0x10", 0, true},
		{"1.5", 0, true},
		{" ", 0, true},
		{"3000000 3000000", 0, true},
	} {
		t.Run(strconv.Quote(tc.usec), func(t *testing.T) {
			t.Setenv("WATCHDOG_USEC", tc.usec)
			d, err := WatchdogIntervalErr()
			if tc.bad {
				if !errors.Is(err, ErrBadWatchdog) || !strings.Contains(err.Error(), "WATCHDOG_USEC="+strconv.Quote(tc.usec)) || d != 0 {
					t.Errorf("WatchdogIntervalErr = %v, %v; want 0 and an ErrBadWatchdog quoting the value", d, err)
				}
			} else if err != nil || d != tc.want {
				t.Errorf("WatchdogIntervalErr = %v, %v; want %v, nil", d, err, tc.want)
			}
			d2, ok := WatchdogInterval()
			if ok != (tc.want > 0) || d2 != tc.want {
				t.Errorf("WatchdogInterval = %v, %v; want %v, %v", d2, ok, tc.want, tc.want > 0)
			}
		})
	}
}

// WATCHDOG_PID is not looked at, whatever it says (see WatchdogInterval).
func TestWatchdogIgnoresWatchdogPID(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "3000000")
	for _, pid := range []string{"1", strconv.Itoa(math.MaxInt32), "abc", "-1", ""} {
		t.Setenv("WATCHDOG_PID", pid)
		if d, ok := WatchdogInterval(); !ok || d != 1500*time.Millisecond {
			t.Errorf("WATCHDOG_PID=%q: WatchdogInterval = %v, %v", pid, d, ok)
		}
	}
}

// watchdogOracle is what WatchdogIntervalErr's doc comment promises,
// computed with math/big and sharing no code with it: the interval in
// nanoseconds, or on=false, with bad=true when the value is malformed
// rather than absent.
func watchdogOracle(raw string) (ns *big.Int, on, bad bool) {
	if raw == "" {
		return nil, false, false
	}
	s := strings.TrimFunc(raw, unicode.IsSpace)
	digits := strings.TrimPrefix(s, "+")
	if digits == s {
		digits = strings.TrimPrefix(s, "-")
	}
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return nil, false, true
	}
	usec, ok := new(big.Int).SetString(s, 10)
	if !ok || usec.Sign() <= 0 {
		return nil, false, true
	}
	full := new(big.Int).Mul(usec, big.NewInt(1000))
	if full.Cmp(big.NewInt(math.MaxInt64)) > 0 {
		return nil, false, true
	}
	half := new(big.Int).Quo(full, big.NewInt(2))
	if floor := big.NewInt(10_000_000); half.Cmp(floor) < 0 {
		half = floor
	}
	return half, true, false
}

func FuzzWatchdogInterval(f *testing.F) {
	for _, s := range []string{
		"", "3000000", "1", "2", "19999", "20000", "20001", "0", "-1", "-0", "+5", "007",
		" 42 ", "\t42", "42\n", "\u00a042", "abc", "1e3", "0x10", "1_000",
		"9223372036854775", "9223372036854776", "9223372036854775807", "9223372036854775808",
		"18446744073709551615", "-9223372036854775808", strings.Repeat("9", 40),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, usec string) {
		if strings.IndexByte(usec, 0) >= 0 {
			t.Skip("an environment variable cannot hold a NUL byte")
		}
		t.Setenv("WATCHDOG_USEC", usec)
		d, ok := WatchdogInterval()
		d2, err := WatchdogIntervalErr()
		want, on, bad := watchdogOracle(usec)
		if ok && d <= 0 {
			t.Fatalf("WATCHDOG_USEC=%q: WatchdogInterval = %v, true: a ticker would panic", usec, d)
		}
		if ok != on || (err != nil) != bad || (bad && !errors.Is(err, ErrBadWatchdog)) {
			t.Fatalf("WATCHDOG_USEC=%q: WatchdogInterval = %v, %v; WatchdogIntervalErr = %v, %v; want on=%v, bad=%v", usec, d, ok, d2, err, on, bad)
		}
		if !on {
			if d != 0 || d2 != 0 {
				t.Fatalf("WATCHDOG_USEC=%q: interval %v, %v without a watchdog", usec, d, d2)
			}
			return
		}
		if int64(d) != want.Int64() || d2 != d {
			t.Fatalf("WATCHDOG_USEC=%q: interval %v, %v; want %v", usec, d, d2, time.Duration(want.Int64()))
		}
		// Pings at least twice per WATCHDOG_USEC unless that is below the
		// floor; never faster than the floor.
		usecs, _ := new(big.Int).SetString(strings.TrimFunc(usec, unicode.IsSpace), 10)
		if d != MinWatchdogInterval && big.NewInt(int64(d/time.Microsecond)*2).Cmp(usecs) > 0 {
			t.Fatalf("WATCHDOG_USEC=%q: every %v is less often than twice per period", usec, d)
		}
		if d < MinWatchdogInterval {
			t.Fatalf("WATCHDOG_USEC=%q: every %v is a busy loop", usec, d)
		}
	})
}
