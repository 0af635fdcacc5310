//go:build unix

package proc

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pair returns both ends of a unix stream connection.
func pair(t *testing.T) (client, server *net.UnixConn) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "s"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.DialUnix("unix", nil, ln.Addr().(*net.UnixAddr))
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestPeerCred(t *testing.T) {
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" && runtime.GOOS != "freebsd" {
		t.Skip("no peer credentials on " + runtime.GOOS)
	}
	client, server := pair(t)
	for name, c := range map[string]*net.UnixConn{"the client, seen by the server": server, "the server, seen by the client": client} {
		cred, err := PeerCred(c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if cred.UID != os.Geteuid() {
			t.Errorf("%s: uid %d, want %d", name, cred.UID, os.Geteuid())
		}
		if runtime.GOOS == "linux" && cred.PID != os.Getpid() {
			t.Errorf("%s: pid %d, want %d", name, cred.PID, os.Getpid())
		}
	}
}

func TestPeerClosed(t *testing.T) {
	client, server := pair(t)
	if closed, err := PeerClosed(server); closed || err != nil {
		t.Fatalf("open connection: closed=%v, %v", closed, err)
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if closed, err := PeerClosed(server); closed || err != nil {
		t.Fatalf("with data waiting: closed=%v, %v", closed, err)
	}
	b := make([]byte, 1)
	if _, err := server.Read(b); err != nil || b[0] != 'x' {
		t.Fatalf("PeerClosed consumed the data: %q, %v", b, err)
	}
	client.Close()
	if closed, err := PeerClosed(server); !closed || err != nil {
		t.Fatalf("after the peer closed: closed=%v, %v", closed, err)
	}
}

func TestWaitGone(t *testing.T) {
	for _, pid := range []int{0, -1} {
		if err := WaitGone(context.Background(), pid); err == nil || !strings.Contains(err.Error(), "invalid pid") {
			t.Errorf("WaitGone(%d) = %v; want an invalid pid error", pid, err)
		}
	}

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=sleep")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := false
	defer func() {
		if !reaped {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	pid := cmd.Process.Pid

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := WaitGone(ctx, pid); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitGone of a running process = %v; want DeadlineExceeded", err)
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS == "linux" || runtime.GOOS == "darwin" {
		// Not reaped yet: a zombie, which counts as gone.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := WaitGone(ctx, pid); err != nil {
			t.Fatalf("WaitGone of a zombie = %v", err)
		}
	}
	cmd.Wait()
	reaped = true
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := WaitGone(ctx, pid); err != nil {
		t.Fatalf("WaitGone of a reaped process = %v", err)
	}
}

func TestWalkPrivate(t *testing.T) {
	const me, other = 1000, 1001
	dir := func(uid int, perm fs.FileMode) node { return node{uid: uid, mode: fs.ModeDir | perm} }
	sock := func(uid int) node { return node{uid: uid, mode: fs.ModeSocket | 0o600} }
	link := func(uid int, to string) node { return node{uid: uid, mode: fs.ModeSymlink | 0o777, link: to} }
	base := map[string]node{
		"/":                 dir(0, 0o755),
		"/run":              dir(0, 0o755),
		"/run/app":          dir(me, 0o755),
		"/run/app/ctl.sock": sock(me),
		"/run/rootsvc.sock": sock(0),
		"/tmp":              dir(0, fs.ModeSticky|0o777),
		"/tmp/ctl.sock":     sock(other),
		"/shared":           dir(0, 0o777),
		"/shared/app":       dir(me, 0o700),
		"/shared/app/s":     sock(me),
		"/grp":              dir(me, 0o775),
		"/grp/s":            sock(me),
		"/home":             dir(0, 0o755),
		"/home/other":       dir(other, 0o755),
		"/home/other/s":     sock(me),
		"/home/other/mine":  sock(other),
		"/var":              dir(0, 0o755),
		"/var/run":          link(0, "../run"),
		"/run/tmplink":      link(0, "/tmp/ctl.sock"),
		"/run/loop":         link(0, "loop"),
		"/run/app/notadir":  sock(me),
	}
	lstat := func(p string) (node, error) {
		if n, ok := base[p]; ok {
			return n, nil
		}
		return node{}, &fs.PathError{Op: "lstat", Path: p, Err: fs.ErrNotExist}
	}
	for _, tc := range []struct {
		name, path string
		uid        int
		err        string
	}{
		{"socket in the service's own directory", "/run/app/ctl.sock", me, ""},
		{"root's socket", "/run/rootsvc.sock", 0, ""},
		{"through a symlink owned by root", "/var/run/app/ctl.sock", me, ""},
		{"with dot-dot", "/run/app/../app/./ctl.sock", me, ""},
		{"another user's home", "/home/other/mine", other, ""},
		{"sticky /tmp", "/tmp/ctl.sock", -1, "/tmp (dtrwxrwxrwx) is writable by users other than its owner"},
		{"private directory inside a shared one", "/shared/app/s", -1, "/shared (drwxrwxrwx) is writable"},
		{"group-writable directory", "/grp/s", -1, "/grp (drwxrwxr-x) is writable"},
		{"directory owned by someone else", "/home/other/s", -1, "/home/other is owned by uid 1001, and /home/other/s by uid 1000"},
		{"symlink into /tmp", "/run/tmplink", -1, "/tmp (dtrwxrwxrwx) is writable by users other than its owner: they could replace /run/tmplink (/tmp/ctl.sock)"},
		{"symlink loop", "/run/loop", -1, "too many levels of symbolic links"},
		{"missing", "/run/app/nope", -1, "file does not exist"},
		{"through a non-directory", "/run/app/notadir/x", -1, "not a directory"},
		{"a directory", "/run/app/", -1, "names a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			uid, err := walkPrivate(tc.path, lstat)
			if tc.err == "" {
				if err != nil || uid != tc.uid {
					t.Fatalf("walkPrivate(%s) = %d, %v; want %d", tc.path, uid, err, tc.uid)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || uid != -1 {
				t.Fatalf("walkPrivate(%s) = %d, %v; want -1 and an error saying %q", tc.path, uid, err, tc.err)
			}
		})
	}
}

// TestWalkRootOnly: a path behind a directory only root may enter, as
// systemd's /run/private for DynamicUser= services, whose id-mapped
// runtime directory shows its files as nobody's from outside.
func TestWalkRootOnly(t *testing.T) {
	const nobody, svc = 65534, 61000
	dir := func(uid int, perm fs.FileMode) node { return node{uid: uid, mode: fs.ModeDir | perm} }
	sock := func(uid int) node { return node{uid: uid, mode: fs.ModeSocket | 0o600} }
	base := map[string]node{
		"/":                          dir(0, 0o755),
		"/run":                       dir(0, 0o755),
		"/run/private":               dir(0, 0o700),
		"/run/private/app":           dir(nobody, 0o755),
		"/run/private/app/ctl.sock":  sock(nobody),
		"/run/app":                   {uid: 0, mode: fs.ModeSymlink | 0o777, link: "private/app"},
		"/run/open":                  dir(0, 0o755),
		"/run/open/ctl.sock":         sock(svc),
		"/run/peek":                  dir(0, 0o701), // others may pass through
		"/run/peek/ctl.sock":         sock(svc),
		"/run/svcdir":                dir(svc, 0o700), // private, but not root's
		"/run/svcdir/ctl.sock":       sock(svc),
		"/run/private/app/notadir/x": sock(nobody),
	}
	lstat := func(p string) (node, error) {
		if n, ok := base[p]; ok {
			return n, nil
		}
		return node{}, &fs.PathError{Op: "lstat", Path: p, Err: fs.ErrNotExist}
	}
	for path, want := range map[string]bool{
		"/run/private/app/ctl.sock": true,
		"/run/app/ctl.sock":         true, // through the symlink systemd makes
		"/run/open/ctl.sock":        false,
		"/run/peek/ctl.sock":        false,
		"/run/svcdir/ctl.sock":      false,
		"/run/private/app/nope":     false, // unresolvable: not vouched for
	} {
		if got := walkRootOnly(path, lstat); got != want {
			t.Errorf("walkRootOnly(%s) = %v, want %v", path, got, want)
		}
	}
}

// TestPrivateOwnerRealFiles runs the real lookups: the verdict depends on
// where the temporary directory is, so it checks it against the modes it
// finds on the way.
func TestPrivateOwnerRealFiles(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(file)
	if err != nil {
		t.Fatal(err)
	}
	shared := ""
	for d := filepath.Dir(real); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm()&0o022 != 0 || st.Uid != 0 && int(st.Uid) != os.Geteuid() {
			shared = d
		}
		if d == "/" {
			break
		}
	}
	uid, err := PrivateOwner(file)
	switch {
	case shared == "" && (err != nil || uid != os.Geteuid()):
		t.Fatalf("PrivateOwner(%s) = %d, %v; want %d", file, uid, err, os.Geteuid())
	case shared != "" && (err == nil || !strings.Contains(err.Error(), shared)):
		t.Fatalf("PrivateOwner(%s) = %d, %v; want an error naming %s", file, uid, err, shared)
	}
	t.Logf("PrivateOwner(%s) = %d, %v", file, uid, err)

	t.Chdir(dir)
	if uid2, err2 := PrivateOwner("f"); uid2 != uid || (err2 == nil) != (err == nil) {
		t.Fatalf("relative path: %d, %v; absolute: %d, %v", uid2, err2, uid, err)
	}
}
