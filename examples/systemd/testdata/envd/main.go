// Command envd is a test server of examples/systemd (env_test.go): an HTTP
// server with hitless upgrades that reports what each generation, and each
// process it starts, was given by its environment.
//
//	GET /env     this process: {"pid", "env" (now), "execEnv" (as exec'd,
//	             from /proc/self/environ), "sockets" (inodes of its open
//	             sockets), "pidfdID"}
//	GET /child   the same for a process it starts (itself with -printenv),
//	             plus "sh": what /bin/sh -c env prints
//
// With -fdstore the socket goes to systemd's fd store, from which systemd
// passes it (LISTEN_*) to the process it starts after a restart.
//
// With -pidfdid=own (or other) it first sets LISTEN_PIDFDID to its own
// pidfd inode ID (or another one) and executes itself again: the same
// process, PID and ID, so that the server starts with LISTEN_PIDFDID as
// systemd 258 sets it, on a systemd that does not.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/readiness"
	"github.com/hitlessgo/hitless/upgrade"
)

// report is what /env answers, and -printenv prints.
type report struct {
	PID     int               `json:"pid"`
	PPID    int               `json:"ppid"`
	Env     map[string]string `json:"env"`
	ExecEnv map[string]string `json:"execEnv"`
	Sockets []string          `json:"sockets,omitempty"`
	PIDFDID uint64            `json:"pidfdID"`
	Sh      map[string]string `json:"sh,omitempty"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "envd:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	control := flag.String("control", "", "control socket path")
	printEnv := flag.Bool("printenv", false, "print this process's report as JSON and exit")
	pidfdID := flag.String("pidfdid", "", "own or other: set LISTEN_PIDFDID so, then run again")
	fdStore := flag.Bool("fdstore", false, "keep the listening socket in systemd's fd store")
	flag.Parse()
	if *printEnv {
		return json.NewEncoder(os.Stdout).Encode(self())
	}
	if *pidfdID != "" {
		return reexecWithPIDFDID(*pidfdID)
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	upg, err := upgrade.New(upgrade.Options{
		Logger:         log,
		ControlSocket:  *control,
		UpgradeTimeout: 20 * time.Second,
		DrainTimeout:   10 * time.Second,
		FDStore:        *fdStore,
	})
	if err != nil {
		return err
	}
	defer upg.Stop()
	defer upg.HandleSignals()()
	ln, err := upg.Listen(context.Background(), "http", "tcp", *addr)
	if err != nil {
		return err
	}
	srv := &drain.HTTP{Server: &http.Server{Handler: handler(), ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("serve", "err", err)
			upg.Stop()
		}
	}()
	return upg.Run(context.Background(), srv)
}

// reexecWithPIDFDID sets LISTEN_PIDFDID and executes this binary again
// without the flag. execve keeps the process, hence its PID (LISTEN_PID
// still names it) and its pidfd inode ID.
func reexecWithPIDFDID(mode string) error {
	id, err := readiness.PIDFDID(os.Getpid())
	if err != nil {
		return fmt.Errorf("-pidfdid: %w", err)
	}
	if mode == "other" {
		id++ // IDs are never reused: this one is not ours
	}
	os.Setenv("LISTEN_PIDFDID", strconv.FormatUint(id, 10))
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	args := slices.DeleteFunc(slices.Clone(os.Args), func(a string) bool { return strings.HasPrefix(a, "-pidfdid") })
	return syscall.Exec(exe, args, os.Environ())
}

func handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /env", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, self())
	})
	mux.HandleFunc("GET /child", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		exe, err := os.Executable()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		out, err := exec.CommandContext(ctx, exe, "-printenv").Output()
		if err != nil {
			http.Error(w, "-printenv: "+err.Error(), http.StatusInternalServerError)
			return
		}
		var rep report
		if err := json.Unmarshal(out, &rep); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		sh, err := exec.CommandContext(ctx, "/bin/sh", "-c", "env").Output()
		if err != nil {
			http.Error(w, "sh: "+err.Error(), http.StatusInternalServerError)
			return
		}
		rep.Sh = parseEnv(string(sh), "\n")
		writeJSON(w, rep)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// self reports this process.
func self() report {
	rep := report{PID: os.Getpid(), PPID: os.Getppid(), Env: parseEnv(strings.Join(os.Environ(), "\x00"), "\x00")}
	// The environment execve gave this process: Go's os.Unsetenv changes
	// its own copy, not this block (CGO_ENABLED=0).
	if b, err := os.ReadFile("/proc/self/environ"); err == nil {
		rep.ExecEnv = parseEnv(string(bytes.TrimRight(b, "\x00")), "\x00")
	}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		for _, e := range ents {
			if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:[") {
				rep.Sockets = append(rep.Sockets, strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]"))
			}
		}
	}
	rep.PIDFDID, _ = readiness.PIDFDID(os.Getpid())
	return rep
}

func parseEnv(s, sep string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(s, sep) {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			m[k] = v
		}
	}
	return m
}
