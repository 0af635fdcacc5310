//go:build unix

package proc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// maxSymlinks bounds how many symbolic links a path may go through (Linux's
// MAXSYMLINKS).
const maxSymlinks = 40

// node is what privateOwner needs to know of one path, without following
// it if it is a symbolic link.
type node struct {
	uid  int
	mode fs.FileMode
	link string // the target, when mode is a symlink
}

func lstatNode(path string) (node, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return node{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return node{}, ErrNotSupported
	}
	n := node{uid: int(st.Uid), mode: fi.Mode()}
	if n.mode&fs.ModeSymlink != 0 {
		if n.link, err = os.Readlink(path); err != nil {
			return node{}, err
		}
	}
	return n, nil
}

func privateOwner(path string) (int, error) {
	if !filepath.IsAbs(path) {
		wd, err := os.Getwd()
		if err != nil {
			return -1, err
		}
		path = filepath.Join(wd, path)
	}
	return walkPrivate(path, lstatNode)
}

func behindRootOnly(path string) bool {
	if !filepath.IsAbs(path) {
		wd, err := os.Getwd()
		if err != nil {
			return false
		}
		path = filepath.Join(wd, path)
	}
	return walkRootOnly(path, lstatNode)
}

// walkRootOnly resolves path (absolute) and reports whether one of the
// directories it looked names up in is root's with no permission for its
// group or others.
func walkRootOnly(path string, lstat func(string) (node, error)) bool {
	consulted, _, _, err := resolve(path, lstat, nil)
	if err != nil {
		return false
	}
	for _, d := range consulted {
		n, err := lstat(d)
		if err == nil && n.uid == 0 && n.mode.IsDir() && n.mode.Perm()&0o077 == 0 {
			return true
		}
	}
	return false
}

// walkPrivate resolves path (absolute) and checks the directories it
// looked names up in against the owner of the file it arrives at.
func walkPrivate(path string, lstat func(string) (node, error)) (int, error) {
	consulted, last, n, err := resolve(path, lstat, nil)
	if err != nil {
		return -1, err
	}
	if n.mode.IsDir() {
		return -1, errors.New("proc: " + path + " names a directory, not a file")
	}
	return checkPrivate(path, last, n.uid, consulted, lstat)
}

// resolve walks path (absolute) one component at a time, as the kernel
// does (through symbolic links, ".." taken after them), calling visit, if
// set, for every entry it looks up. It returns the directories it looked
// names up in, in order, and the entry it arrives at.
func resolve(path string, lstat func(string) (node, error), visit func(p string, n node) error) (consulted []string, last string, ln node, err error) {
	seen := make(map[string]bool)
	dir := "/" // resolved: holds no symbolic link
	last, ln = "/", node{mode: fs.ModeDir}
	rest := split(path)
	links := 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		if name == ".." {
			dir = filepath.Dir(dir)
			last = dir
			continue
		}
		if !seen[dir] {
			seen[dir] = true
			consulted = append(consulted, dir)
		}
		p := filepath.Join(dir, name)
		n, err := lstat(p)
		if err != nil {
			return nil, "", node{}, err
		}
		if visit != nil {
			if err := visit(p, n); err != nil {
				return nil, "", node{}, err
			}
		}
		switch {
		case n.mode&fs.ModeSymlink != 0:
			if links++; links > maxSymlinks {
				return nil, "", node{}, fmt.Errorf("%s: %w", path, syscall.ELOOP)
			}
			if filepath.IsAbs(n.link) {
				dir = "/"
			}
			rest = append(split(n.link), rest...)
		case n.mode.IsDir():
			dir = p
		case len(rest) > 0:
			return nil, "", node{}, fmt.Errorf("%s: %w", p, syscall.ENOTDIR)
		}
		last, ln = p, n
	}
	return consulted, last, ln, nil
}

// SafeDir returns an error naming the first entry on the way to dir (dir
// included) through which a user other than root and this process's
// effective user could replace a file in dir, or nil if there is none.
// Every entry looked up counts, symbolic links included: one fails if it
// is owned by such a user (the owner of a directory can make it writable;
// in a sticky directory the owner of an entry can replace it), and a
// directory fails if its group or others may write it and it is not
// sticky. This is sshd's StrictModes rule, with sticky directories (/tmp)
// allowed: there others cannot replace a file they do not own.
func SafeDir(dir string) error {
	// Not filepath.Abs: it would clean "link/.." away, which the kernel
	// resolves through the link.
	if !filepath.IsAbs(dir) {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		dir = wd + "/" + dir
	}
	me := os.Geteuid()
	check := func(p string, n node) error {
		if n.uid != 0 && n.uid != me {
			return fmt.Errorf("%s is owned by uid %d, which is neither root nor this process's uid %d, and could make it lead elsewhere", p, n.uid, me)
		}
		if n.mode.IsDir() && n.mode.Perm()&0o022 != 0 && n.mode&fs.ModeSticky == 0 {
			return fmt.Errorf("%s (%v) is writable by its group or others and not sticky", p, n.mode)
		}
		return nil
	}
	root, err := lstatNode("/")
	if err != nil {
		return err
	}
	if err := check("/", root); err != nil {
		return err
	}
	_, last, n, err := resolve(dir, lstatNode, check)
	if err != nil {
		return err
	}
	if !n.mode.IsDir() {
		return fmt.Errorf("%s: %w", last, syscall.ENOTDIR)
	}
	return nil
}

// checkPrivate checks the directories consulted to resolve path (which
// led to file) against owner, the owner of file.
func checkPrivate(path, file string, owner int, dirs []string, lstat func(string) (node, error)) (int, error) {
	what := file
	if file != path {
		what = path + " (" + file + ")"
	}
	for _, d := range dirs {
		n, err := lstat(d)
		if err != nil {
			return -1, err
		}
		if n.uid != 0 && n.uid != owner {
			return -1, fmt.Errorf("proc: %s is owned by uid %d, and %s by uid %d: uid %d could replace it", d, n.uid, what, owner, n.uid)
		}
		if n.mode.Perm()&0o022 != 0 {
			return -1, fmt.Errorf("proc: %s (%v) is writable by users other than its owner: they could replace %s", d, n.mode, what)
		}
	}
	return owner, nil
}

// split returns the components of p, without empty ones and ".".
func split(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}
