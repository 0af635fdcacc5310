package listener_test

import (
	"context"
	"fmt"

	"github.com/hitlessgo/hitless/listener"
)

// A Set without a Handoff binds every listener anew; upgrade.Upgrader gives
// it one, so that the next generation inherits the same sockets by name.
func ExampleSet() {
	var set listener.Set
	ln, err := set.Listen(context.Background(), "http", "tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer set.Close()
	fmt.Println(set.Source("http"), ln.Addr().Network())

	_, err = set.Listen(context.Background(), "admin", "tcp", "nonsense")
	fmt.Println(err)
	// Output:
	// bound tcp
	// listener "admin" (tcp nonsense): address nonsense: missing port in address
}

// Datagram sockets share the names of listeners: "dns" is one or the
// other.
func ExampleSet_ListenPacket() {
	var set listener.Set
	defer set.Close()
	pc, err := set.ListenPacket(context.Background(), "dns", "udp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(set.Source("dns"), pc.LocalAddr().Network())

	_, err = set.Listen(context.Background(), "dns", "tcp", "127.0.0.1:0")
	fmt.Println(err)
	// Output:
	// bound udp
	// listener "dns" (tcp 127.0.0.1:0): listener: name already in use in this set
}
