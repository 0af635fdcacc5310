package handoff

import (
	"bytes"
	"debug/elf"
	"debug/macho"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
)

// Binary returns the path the next generation will be started from, and
// checks that the kernel could execute it: a regular, executable file,
// an executable for this platform (Linux and the BSDs: an ELF of this
// process's architecture; darwin: a Mach-O of this CPU, alone or in a fat
// binary; or a "#!" script whose interpreter is executable), and
// complete (a binary still being copied is shorter than its headers say).
//
// It runs just before every start, at the moment the upgrade begins, so it
// reads only headers: two stats, an access check, one open and usually one
// read, tens of microseconds (BenchmarkBinaryCheck), against milliseconds
// for any check that runs the binary.
func Binary() (string, error) {
	path := os.Args[0]
	if !containsSlash(path) {
		found, err := lookPath(path)
		if err != nil {
			return "", fmt.Errorf("binary %s: not found in $PATH", path)
		}
		path = found
	}
	if err := checkBinary(path); err != nil {
		return "", err
	}
	return path, nil
}

// checkBinary is Binary's check of the file at path.
func checkBinary(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("binary %s: %w", path, err)
	}
	// Before opening it: opening a FIFO would block.
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("binary %s: not a regular file", path)
	}
	if err := checkExecutable(path); err != nil {
		return fmt.Errorf("binary %s: not executable (mode %v): %w", path, fi.Mode().Perm(), err)
	}
	want, ok := platformTarget()
	if !ok {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("binary %s: %w", path, err)
	}
	defer f.Close()
	// The size now, not at the Stat above: a copy may be under way.
	if fi, err = f.Stat(); err != nil {
		return fmt.Errorf("binary %s: %w", path, err)
	}
	if err := checkFormat(f, fi.Size(), want); err != nil {
		return fmt.Errorf("binary %s: %w", path, err)
	}
	return nil
}

// target is what a process can execute: an executable format and an
// architecture (a GOARCH).
type target struct {
	macho bool // Mach-O (darwin), rather than ELF
	arch  string
}

// platformTarget is this process's target; ok is false where the format
// is not checked (Windows' PE, AIX's XCOFF, Plan 9, wasm).
func platformTarget() (t target, ok bool) {
	switch runtime.GOOS {
	case "darwin", "ios":
		return target{macho: true, arch: runtime.GOARCH}, true
	case "linux", "android", "freebsd", "netbsd", "openbsd", "dragonfly", "solaris", "illumos":
		return target{arch: runtime.GOARCH}, true
	}
	return target{}, false
}

// headLen is how much of the file checkFormat reads at once: more than
// the longest "#!" line Linux reads (BINPRM_BUF_SIZE, 256) and than any
// file header, and enough for the program and section headers of a binary
// made by Go's linker (which puts both near the start): one read is
// usually all the check costs.
const headLen = 4096

// image is the file being checked: its size, and its first bytes.
type image struct {
	r    io.ReaderAt
	size int64
	head []byte
}

// at returns n bytes at off, from head when it holds them. The caller has
// checked that they are within the file.
func (im *image) at(off, n uint64) ([]byte, error) {
	if off+n <= uint64(len(im.head)) {
		return im.head[off : off+n], nil
	}
	b := make([]byte, n)
	if _, err := im.r.ReadAt(b, int64(off)); err != nil {
		return nil, err
	}
	return b, nil
}

// checkFormat checks that the size bytes of r are an executable for t.
func checkFormat(r io.ReaderAt, size int64, t target) error {
	head := make([]byte, min(size, headLen))
	n, err := r.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return err
	}
	im := &image{r: r, size: size, head: head[:n]}
	switch {
	case bytes.HasPrefix(im.head, []byte("#!")):
		return checkScript(im.head[:min(n, 256)])
	case !t.macho && bytes.HasPrefix(im.head, []byte(elf.ELFMAG)):
		return checkELF(im, t.arch)
	case t.macho && isMachO(im.head):
		return checkMachO(r, size, t.arch)
	}
	format := "an ELF"
	if t.macho {
		format = "a Mach-O"
	}
	return fmt.Errorf("not an executable: neither %s for %s nor a #! script (it starts with %q)", format, t.arch, im.head[:min(n, 16)])
}

// checkScript checks the interpreter named on a script's "#!" line: the
// kernel runs it with the script as an argument.
func checkScript(head []byte) error {
	line := head[2:]
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	// The kernel splits the line at spaces and tabs only: a "\r" left by
	// an editor is part of the name, and the script cannot run.
	line = bytes.TrimLeft(line, " \t")
	if i := bytes.IndexAny(line, " \t"); i >= 0 {
		line = line[:i]
	}
	if len(line) == 0 {
		return errors.New("a #! script that names no interpreter")
	}
	interp := string(line)
	fi, err := os.Stat(interp)
	if err != nil && strings.HasSuffix(interp, "\r") {
		return fmt.Errorf("a #! script whose interpreter %q ends in a carriage return (DOS line ends?): %w", interp, err)
	}
	if err != nil {
		return fmt.Errorf("a #! script whose interpreter %s cannot be used: %w", interp, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("a #! script whose interpreter %s is not a regular file", interp)
	}
	if err := checkExecutable(interp); err != nil {
		return fmt.Errorf("a #! script whose interpreter %s is not executable (mode %v): %w", interp, fi.Mode().Perm(), err)
	}
	return nil
}

// elfArch maps a GOARCH to the ELF machine, class and byte order of its
// executables.
var elfArch = map[string]struct {
	machine elf.Machine
	class   elf.Class
	data    elf.Data
}{
	"386":      {elf.EM_386, elf.ELFCLASS32, elf.ELFDATA2LSB},
	"amd64":    {elf.EM_X86_64, elf.ELFCLASS64, elf.ELFDATA2LSB},
	"arm":      {elf.EM_ARM, elf.ELFCLASS32, elf.ELFDATA2LSB},
	"arm64":    {elf.EM_AARCH64, elf.ELFCLASS64, elf.ELFDATA2LSB},
	"loong64":  {elf.EM_LOONGARCH, elf.ELFCLASS64, elf.ELFDATA2LSB},
	"mips":     {elf.EM_MIPS, elf.ELFCLASS32, elf.ELFDATA2MSB},
	"mipsle":   {elf.EM_MIPS, elf.ELFCLASS32, elf.ELFDATA2LSB},
	"mips64":   {elf.EM_MIPS, elf.ELFCLASS64, elf.ELFDATA2MSB},
	"mips64le": {elf.EM_MIPS, elf.ELFCLASS64, elf.ELFDATA2LSB},
	"ppc64":    {elf.EM_PPC64, elf.ELFCLASS64, elf.ELFDATA2MSB},
	"ppc64le":  {elf.EM_PPC64, elf.ELFCLASS64, elf.ELFDATA2LSB},
	"riscv64":  {elf.EM_RISCV, elf.ELFCLASS64, elf.ELFDATA2LSB},
	"s390x":    {elf.EM_S390, elf.ELFCLASS64, elf.ELFDATA2MSB},
}

// elfArchName names the architecture of an ELF's machine, class and byte
// order as a GOARCH where there is one.
func elfArchName(m elf.Machine, c elf.Class, d elf.Data) string {
	for name, a := range elfArch {
		if a.machine == m && a.class == c && a.data == d {
			return name
		}
	}
	return fmt.Sprintf("%v (%v, %v)", m, c, d)
}

// checkELF reads the file, program and section headers itself, with
// debug/elf's types and constants, rather than with elf.NewFile: NewFile
// fails on a truncated file without saying so, and reads more than this
// needs.
func checkELF(im *image, arch string) error {
	size := uint64(im.size)
	tooShort := fmt.Errorf("truncated: the file has %d bytes, too few for an ELF header: still being written?", size)
	if len(im.head) < elf.EI_NIDENT {
		return tooShort
	}
	class, data := elf.Class(im.head[elf.EI_CLASS]), elf.Data(im.head[elf.EI_DATA])
	var order binary.ByteOrder
	switch data {
	case elf.ELFDATA2LSB:
		order = binary.LittleEndian
	case elf.ELFDATA2MSB:
		order = binary.BigEndian
	default:
		return fmt.Errorf("a malformed ELF: byte order %v", data)
	}
	var (
		typ                elf.Type
		machine            elf.Machine
		phoff, shoff       uint64
		phentsize, phnum   uint16
		shentsize, shnum   uint16
		progSize, sectSize uint16
	)
	switch class {
	case elf.ELFCLASS64:
		var h elf.Header64
		if _, err := binary.Decode(im.head, order, &h); err != nil {
			return tooShort
		}
		typ, machine = elf.Type(h.Type), elf.Machine(h.Machine)
		phoff, phentsize, phnum = h.Phoff, h.Phentsize, h.Phnum
		shoff, shentsize, shnum = h.Shoff, h.Shentsize, h.Shnum
		progSize, sectSize = uint16(binary.Size(elf.Prog64{})), uint16(binary.Size(elf.Section64{}))
	case elf.ELFCLASS32:
		var h elf.Header32
		if _, err := binary.Decode(im.head, order, &h); err != nil {
			return tooShort
		}
		typ, machine = elf.Type(h.Type), elf.Machine(h.Machine)
		phoff, phentsize, phnum = uint64(h.Phoff), h.Phentsize, h.Phnum
		shoff, shentsize, shnum = uint64(h.Shoff), h.Shentsize, h.Shnum
		progSize, sectSize = uint16(binary.Size(elf.Prog32{})), uint16(binary.Size(elf.Section32{}))
	default:
		return fmt.Errorf("a malformed ELF: class %v", class)
	}
	want, known := elfArch[arch]
	if !known {
		return nil // an architecture this table does not know: trust the kernel
	}
	if machine != want.machine || class != want.class || data != want.data {
		return fmt.Errorf("an ELF for %s, this process runs on %s", elfArchName(machine, class, data), arch)
	}
	if typ != elf.ET_EXEC && typ != elf.ET_DYN {
		return fmt.Errorf("an ELF of type %v, not an executable (%v or %v)", typ, elf.ET_EXEC, elf.ET_DYN)
	}
	if phnum == 0 {
		return errors.New("an ELF without program headers: nothing to load")
	}
	if phentsize != progSize {
		return fmt.Errorf("a malformed ELF: program headers of %d bytes, not %d", phentsize, progSize)
	}
	n := uint64(phnum) * uint64(phentsize)
	if end := phoff + n; end < phoff || end > size {
		return truncated("its program headers end", end, size)
	}
	// The tables are decoded by hand, at the offsets of elf.Prog64 and
	// the others: binary.Read costs a reflective walk per entry, and this
	// runs at the upgrade's critical moment.
	progs, err := im.at(phoff, n)
	if err != nil {
		return err
	}
	for i := range int(phnum) {
		p := progs[i*int(phentsize):]
		var off, filesz uint64
		if class == elf.ELFCLASS64 {
			off, filesz = order.Uint64(p[8:]), order.Uint64(p[32:])
		} else {
			off, filesz = uint64(order.Uint32(p[4:])), uint64(order.Uint32(p[16:]))
		}
		if elf.ProgType(order.Uint32(p)) != elf.PT_LOAD {
			continue
		}
		if end := off + filesz; end < off || end > size {
			return truncated(fmt.Sprintf("segment %d ends", i), end, size)
		}
	}
	// Sections that are not loaded (symbols, debug information) can be
	// what a linker writes last, and so can the section headers (not Go's
	// linker: it puts them near the start): a copy that stopped after the
	// segments is caught here.
	if shoff == 0 {
		return nil // no sections (stripped to the segments)
	}
	if shentsize != sectSize {
		return fmt.Errorf("a malformed ELF: section headers of %d bytes, not %d", shentsize, sectSize)
	}
	count := uint64(shnum)
	if count == 0 {
		count = 1 // more than 0xff00 sections: their number is in section 0
	}
	n = count * uint64(shentsize)
	if end := shoff + n; end < shoff || end > size {
		return truncated("its section headers end", end, size)
	}
	sects, err := im.at(shoff, n)
	if err != nil {
		return err
	}
	for i := range int(shnum) {
		sh := sects[i*int(shentsize):]
		var off, sz uint64
		if class == elf.ELFCLASS64 {
			off, sz = order.Uint64(sh[24:]), order.Uint64(sh[32:])
		} else {
			off, sz = uint64(order.Uint32(sh[16:])), uint64(order.Uint32(sh[20:]))
		}
		switch elf.SectionType(order.Uint32(sh[4:])) {
		case elf.SHT_NULL, elf.SHT_NOBITS:
			continue // no bytes in the file
		}
		if end := off + sz; end < off || end > size {
			return truncated(fmt.Sprintf("section %d ends", i), end, size)
		}
	}
	return nil
}

func truncated(what string, end, size uint64) error {
	return fmt.Errorf("truncated: %s at byte %d, the file has %d: still being written?", what, end, size)
}

// machoCPU maps a GOARCH to the Mach-O CPU of its executables.
var machoCPU = map[string]macho.Cpu{
	"amd64": macho.CpuAmd64,
	"arm64": macho.CpuArm64,
}

// Mach-O magic numbers: debug/macho has the thin ones; the fat ones are
// big-endian on disk, and Magic64 fat files (64-bit offsets) are newer
// than debug/macho.
const (
	machoFatMagic   = 0xcafebabe
	machoFatMagic64 = 0xcafebabf
)

func isMachO(head []byte) bool {
	if len(head) < 4 {
		return false
	}
	switch binary.LittleEndian.Uint32(head) {
	case macho.Magic32, macho.Magic64:
		return true
	}
	switch binary.BigEndian.Uint32(head) {
	case macho.Magic32, macho.Magic64, machoFatMagic, machoFatMagic64:
		return true
	}
	return false
}

// checkMachO checks a thin Mach-O, or the slice of a fat one for arch.
// Like checkELF, it reads the headers with debug/macho's types rather
// than with macho.NewFile, which also reads the symbol table (large, and
// near the end of the file).
func checkMachO(r io.ReaderAt, size int64, arch string) error {
	want, known := machoCPU[arch]
	var magic [4]byte
	if _, err := r.ReadAt(magic[:], 0); err != nil {
		return err
	}
	fat := binary.BigEndian.Uint32(magic[:])
	if fat != machoFatMagic && fat != machoFatMagic64 {
		return checkThinMachO(io.NewSectionReader(r, 0, size), size, arch, want, known, "")
	}
	var nArch uint32
	if err := binary.Read(io.NewSectionReader(r, 4, 4), binary.BigEndian, &nArch); err != nil {
		return truncated("its fat header ends", 8, uint64(size))
	}
	entry := uint64(20)
	if fat == machoFatMagic64 {
		entry = 32
	}
	if end := 8 + uint64(nArch)*entry; end > uint64(size) {
		return truncated("its fat header ends", end, uint64(size))
	}
	var cpus []string
	for i := range uint64(nArch) {
		var cpu macho.Cpu
		var off, sz uint64
		sr := io.NewSectionReader(r, int64(8+i*entry), int64(entry))
		if fat == machoFatMagic64 {
			var a struct {
				Cpu             macho.Cpu
				SubCpu          uint32
				Offset, Size    uint64
				Align, Reserved uint32
			}
			if err := binary.Read(sr, binary.BigEndian, &a); err != nil {
				return err
			}
			cpu, off, sz = a.Cpu, a.Offset, a.Size
		} else {
			var a macho.FatArchHeader
			if err := binary.Read(sr, binary.BigEndian, &a); err != nil {
				return err
			}
			cpu, off, sz = a.Cpu, uint64(a.Offset), uint64(a.Size)
		}
		cpus = append(cpus, machoCPUName(cpu))
		if !known || cpu != want {
			continue
		}
		if end := off + sz; end < off || end > uint64(size) {
			return truncated(fmt.Sprintf("its %s part ends", arch), end, uint64(size))
		}
		return checkThinMachO(io.NewSectionReader(r, int64(off), int64(sz)), int64(sz), arch, want, known, fmt.Sprintf(" of its %s part", arch))
	}
	if !known {
		return nil
	}
	return fmt.Errorf("a fat Mach-O for %s, this process runs on %s", strings.Join(cpus, ", "), arch)
}

func machoCPUName(c macho.Cpu) string {
	for name, cpu := range machoCPU {
		if cpu == c {
			return name
		}
	}
	return c.String()
}

// checkThinMachO checks one Mach-O image of size bytes; in names the part
// of a fat file it is, for errors.
func checkThinMachO(sr *io.SectionReader, size int64, arch string, want macho.Cpu, known bool, in string) error {
	var magic [4]byte
	if _, err := sr.ReadAt(magic[:], 0); err != nil {
		return truncated("its Mach-O header ends"+in, 4, uint64(size))
	}
	var order binary.ByteOrder = binary.LittleEndian
	m := order.Uint32(magic[:])
	if m != macho.Magic32 && m != macho.Magic64 {
		order = binary.BigEndian
		m = order.Uint32(magic[:])
	}
	if m != macho.Magic32 && m != macho.Magic64 {
		return fmt.Errorf("a malformed Mach-O%s: magic %#x", in, magic)
	}
	var h macho.FileHeader
	if err := binary.Read(sr, order, &h); err != nil {
		return truncated("its Mach-O header ends"+in, 28, uint64(size))
	}
	if !known {
		return nil
	}
	if h.Cpu != want {
		return fmt.Errorf("a Mach-O for %s, this process runs on %s", machoCPUName(h.Cpu), arch)
	}
	if h.Type != macho.TypeExec {
		return fmt.Errorf("a Mach-O of type %v, not an executable (%v)", h.Type, macho.TypeExec)
	}
	hdr := uint64(28)
	if m == macho.Magic64 {
		hdr = 32
	}
	if end := hdr + uint64(h.Cmdsz); end > uint64(size) {
		return truncated("its load commands end"+in, end, uint64(size))
	}
	cmds := make([]byte, h.Cmdsz)
	if _, err := sr.ReadAt(cmds, int64(hdr)); err != nil {
		return err
	}
	for i := range h.Ncmd {
		if len(cmds) < 8 {
			return fmt.Errorf("a malformed Mach-O%s: %d load commands in %d bytes", in, h.Ncmd, h.Cmdsz)
		}
		cmd, n := macho.LoadCmd(order.Uint32(cmds)), order.Uint32(cmds[4:])
		if n < 8 || uint64(n) > uint64(len(cmds)) {
			return fmt.Errorf("a malformed Mach-O%s: load command %d is %d bytes", in, i, n)
		}
		var name string
		var off, filesz uint64
		switch cmd {
		case macho.LoadCmdSegment64:
			var s macho.Segment64
			if err := binary.Read(bytes.NewReader(cmds[:n]), order, &s); err != nil {
				return fmt.Errorf("a malformed Mach-O%s: load command %d: %v", in, i, err)
			}
			name, off, filesz = cstring(s.Name[:]), s.Offset, s.Filesz
		case macho.LoadCmdSegment:
			var s macho.Segment32
			if err := binary.Read(bytes.NewReader(cmds[:n]), order, &s); err != nil {
				return fmt.Errorf("a malformed Mach-O%s: load command %d: %v", in, i, err)
			}
			name, off, filesz = cstring(s.Name[:]), uint64(s.Offset), uint64(s.Filesz)
		default:
			cmds = cmds[n:]
			continue
		}
		if end := off + filesz; end < off || end > uint64(size) {
			return truncated(fmt.Sprintf("segment %d (%s) ends%s", i, name, in), end, uint64(size))
		}
		cmds = cmds[n:]
	}
	return nil
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
