//go:build unix

package upgrade

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// noFollow opens a PID file without following a symlink or blocking on a
// FIFO planted at its path.
const noFollow = syscall.O_NOFOLLOW | syscall.O_NONBLOCK

// maxSymlinks bounds how many symbolic links unsafeDir follows (Linux's
// MAXSYMLINKS).
const maxSymlinks = 40

// unsafeDir returns an error naming the first entry on the way to dir (dir
// included) through which a user other than root and this process's
// effective user could replace a file in dir, or nil if there is none.
// The path is resolved one component at a time, as the kernel does, so
// that every directory a name is looked up in counts, and every symbolic
// link met on the way. An entry fails if it is owned by such a user (the
// owner of a directory can make it writable; in a sticky directory the
// owner of an entry can replace it), and a directory fails if its group
// or others may write it and it is not sticky. This is sshd's StrictModes
// rule, with sticky directories (/tmp) allowed: there others cannot
// replace a file they do not own (security review M3).
func unsafeDir(dir string) error {
	// Not filepath.Abs: it would clean "link/.." away, which the kernel
	// resolves through the link.
	abs := dir
	if !filepath.IsAbs(abs) {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		abs = wd + "/" + abs
	}
	me := os.Geteuid()
	check := func(p string, fi fs.FileInfo) error {
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil // no owner to judge by
		}
		if uid := int(st.Uid); uid != 0 && uid != me {
			return fmt.Errorf("%s is owned by uid %d, which is neither root nor this process's uid %d, and could make it lead elsewhere", p, uid, me)
		}
		if fi.IsDir() && fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
			return fmt.Errorf("%s (%v) is writable by its group or others and not sticky", p, fi.Mode())
		}
		return nil
	}
	fi, err := os.Lstat("/")
	if err != nil {
		return err
	}
	if err := check("/", fi); err != nil {
		return err
	}
	cur := "/" // resolved: no symbolic link in it
	rest := splitPath(abs)
	links := 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		if name == ".." {
			cur = filepath.Dir(cur)
			continue
		}
		p := filepath.Join(cur, name)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if err := check(p, fi); err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			if links++; links > maxSymlinks {
				return fmt.Errorf("%s: %w", abs, syscall.ELOOP)
			}
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if filepath.IsAbs(target) {
				cur = "/"
			}
			rest = append(splitPath(target), rest...)
		case fi.IsDir():
			cur = p
		default:
			return fmt.Errorf("%s: %w", p, syscall.ENOTDIR)
		}
	}
	return nil
}

// splitPath returns the components of p, without empty ones and ".".
func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}
