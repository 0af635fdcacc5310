package outside

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Percentile is one row of a latency distribution: Percent of the requests
// took at most Value.
type Percentile struct {
	Percent float64
	Value   time.Duration
}

// parseCount parses a count as the tools print one: decimal digits only.
func parseCount(s string) (int64, error) {
	if !isDigits(s) {
		return 0, fmt.Errorf("%q is not a count", s)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a count: %w", s, err)
	}
	return n, nil
}

// parseDecimal parses a non-negative decimal as the tools print one with
// printf's %f: digits, optionally a point and more digits. Exponents,
// signs, "nan" and "inf" are refused.
func parseDecimal(s string) (float64, error) {
	whole, frac, hasPoint := strings.Cut(s, ".")
	if !isDigits(whole) || hasPoint && !isDigits(frac) {
		return 0, fmt.Errorf("%q is not a decimal", s)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%q is not a decimal", s)
	}
	return v, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// durationUnits are the units wrk and h2load print durations in, longest
// suffix first so that "ms" is not read as "m" after "…s".
var durationUnits = []struct {
	suffix string
	unit   time.Duration
}{
	{"us", time.Microsecond},
	{"ms", time.Millisecond},
	{"s", time.Second},
	{"m", time.Minute},
	{"h", time.Hour},
}

// parseUnitDuration parses a decimal followed by a unit: "384.00us",
// "1.68ms", "2.00s", wrk's "1.50m" beyond a minute, h2load's "89us".
func parseUnitDuration(s string) (time.Duration, error) {
	for _, u := range durationUnits {
		num, ok := strings.CutSuffix(s, u.suffix)
		if !ok {
			continue
		}
		v, err := parseDecimal(num)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration", s)
		}
		return scale(v, u.unit)
	}
	return 0, fmt.Errorf("%q is not a duration (no unit)", s)
}

// scale returns v units as a Duration, rounded to the nanosecond, or an
// error if it does not fit.
func scale(v float64, unit time.Duration) (time.Duration, error) {
	ns := math.Round(v * float64(unit))
	if ns >= math.MaxInt64 {
		return 0, fmt.Errorf("%v×%v does not fit a time.Duration", v, unit)
	}
	return time.Duration(ns), nil
}

// mulDuration returns n units as a Duration, or an error if it does not
// fit; unlike scale it is exact.
func mulDuration(n int64, unit time.Duration) (time.Duration, error) {
	if n < 0 || n > math.MaxInt64/int64(unit) {
		return 0, fmt.Errorf("%d×%v does not fit a time.Duration", n, unit)
	}
	return time.Duration(n) * unit, nil
}

// wholeSeconds renders d for the command lines of wrk and ab, which take
// whole seconds only (wrk refuses "500ms"; ab's -t and -s are integers).
func wholeSeconds(flag string, d time.Duration) (string, error) {
	if d <= 0 || d%time.Second != 0 {
		return "", fmt.Errorf("outside: %s %v: want a positive whole number of seconds", flag, d)
	}
	return strconv.FormatInt(int64(d/time.Second), 10), nil
}
