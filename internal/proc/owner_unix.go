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

// walkPrivate resolves path (absolute) one component at a time, as the
// kernel does, noting every directory it looks a name up in, and then
// checks those directories against the owner of the file it arrives at.
func walkPrivate(path string, lstat func(string) (node, error)) (int, error) {
	var consulted []string
	seen := make(map[string]bool)
	dir := "/" // resolved: holds no symbolic link
	rest := split(path)
	links := 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		if name == ".." {
			dir = filepath.Dir(dir)
			continue
		}
		if !seen[dir] {
			seen[dir] = true
			consulted = append(consulted, dir)
		}
		p := filepath.Join(dir, name)
		n, err := lstat(p)
		if err != nil {
			return -1, err
		}
		switch {
		case n.mode&fs.ModeSymlink != 0:
			if links++; links > maxSymlinks {
				return -1, fmt.Errorf("%s: %w", path, syscall.ELOOP)
			}
			if filepath.IsAbs(n.link) {
				dir = "/"
			}
			rest = append(split(n.link), rest...)
		case n.mode.IsDir():
			dir = p
		case len(rest) == 0:
			return checkPrivate(path, p, n.uid, consulted, lstat)
		default:
			return -1, fmt.Errorf("%s: %w", p, syscall.ENOTDIR)
		}
	}
	return -1, errors.New("proc: " + path + " names a directory, not a file")
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
