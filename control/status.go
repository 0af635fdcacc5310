package control

import (
	"encoding/json"
	"fmt"

	"github.com/hitlessgo/hitless/internal/ctlproto"
)

// MarshalJSON encodes s the way the control socket sends it and
// `hitless status -json` prints it: an object with the keys pid,
// generation, state, last_upgrade, last_upgrade_at, consecutive_failures,
// backoff_until, version, history and totals, times in RFC 3339,
// durations in nanoseconds, and every field that is zero left out. The
// schema (StatusSchema) is documented in cmd/hitless and only grows.
func (s Status) MarshalJSON() ([]byte, error) { return json.Marshal(toWire(s)) }

// UnmarshalJSON decodes what MarshalJSON encodes. Unknown keys are ignored;
// a time that is not RFC 3339 is an error.
func (s *Status) UnmarshalJSON(b []byte) error {
	var w ctlproto.Status
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	st, err := fromWire(w)
	if err != nil {
		return fmt.Errorf("control: status: %w", err)
	}
	*s = st
	return nil
}
