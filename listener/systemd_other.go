//go:build !unix

package listener

// fdNotOpen is what fdKind says of a descriptor number that is not open.
const fdNotOpen = "not open"

// fdKind refuses every descriptor: systemd passes sockets to unix
// processes only, and a LISTEN_FDS seen here names nothing this process
// could serve.
func fdKind(int) (socket bool, what string) {
	return false, "unusable here (systemd passes descriptors to unix processes only)"
}
