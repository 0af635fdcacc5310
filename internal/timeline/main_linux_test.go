package timeline

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"
	"time"
)

func init() {
	helpers["cpu"] = burnKnown
	if os.Getenv(helperEnv) == "cpu" {
		// Keep the main goroutine on the main thread, so that the thread
		// burnKnown lets end is never the main one (which Go would keep).
		runtime.LockOSThread()
	}
}

// burnKnown is the child for TestSamplerCPUExact. It talks over stdin and
// stdout:
//
//   - it burns 100 ms of CPU, then 80 ms more on a thread of its own, and
//     writes "idle <tid of that thread>";
//   - on a line from stdin, it ends that thread, burns at least 30 ms more
//     on the main thread, stopping where its own CPU time is 5 to 8 ms past
//     a multiple of 10 ms, and writes "ready <its CPU time in ns>";
//   - at the end of stdin it exits.
//
// The threads idle between the steps, so the test can sample them at rest.
// Stopping 5 to 8 ms past a tick means a count in whole 10 ms ticks is at
// least 5 ms short, whatever the noise.
func burnKnown() {
	// stdin is read from the start, on a goroutine of its own, so that
	// once the child has written "ready" it only waits: a read begun
	// then would cost some CPU after the count it gave (the runtime
	// hands the blocked thread's P to another, perhaps new, thread).
	step, eof := make(chan bool), make(chan struct{})
	go func() {
		in := bufio.NewReader(os.Stdin)
		_, err := in.ReadString('\n')
		step <- err == nil
		_, _ = io.Copy(io.Discard, in)
		close(eof)
	}()
	spinUntil(100 * time.Millisecond)
	tid, end, ended := make(chan int), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		// Never unlocked: the thread ends with the goroutine, taking its
		// 80 ms out of the per-thread schedstat sum.
		runtime.LockOSThread()
		spinUntil(selfCPU() + 80*time.Millisecond)
		tid <- syscall.Gettid()
		<-end
	}()
	fmt.Printf("idle %d\n", <-tid)
	if !<-step {
		os.Exit(2)
	}
	close(end)
	<-ended
	from := selfCPU()
	for {
		c := selfCPU()
		if c-from >= 30*time.Millisecond && c%(10*time.Millisecond) >= 5*time.Millisecond && c%(10*time.Millisecond) < 8*time.Millisecond {
			fmt.Printf("ready %d\n", int64(c))
			break
		}
		spin()
	}
	<-eof
}

// selfCPU is this process's user+system CPU time, as the kernel accounts
// it (to the microsecond).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		os.Exit(3)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func spinUntil(cpu time.Duration) {
	for selfCPU() < cpu {
		spin()
	}
}

var spinSink int

// spin is a few microseconds of work.
func spin() {
	x := spinSink
	for i := range 2000 {
		x = x*31 + i
	}
	spinSink = x
}
