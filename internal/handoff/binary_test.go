package handoff

import (
	"bytes"
	"context"
	"debug/elf"
	"debug/macho"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/harness"
)

// otherArch is an architecture this process does not run on.
func otherArch() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

// fakeELF is the smallest ELF the check looks at: a file header and one
// PT_LOAD segment covering the whole file (or, with extra > 0, extra bytes
// beyond it: a file cut short). With sections, a section header table of
// three entries follows the segment.
func fakeELF(t *testing.T, arch string, typ elf.Type, extra uint64, sections bool) []byte {
	t.Helper()
	a, ok := elfArch[arch]
	if !ok {
		t.Fatalf("no ELF machine for %s", arch)
	}
	var order binary.ByteOrder = binary.LittleEndian
	if a.data == elf.ELFDATA2MSB {
		order = binary.BigEndian
	}
	var ident [elf.EI_NIDENT]byte
	copy(ident[:], elf.ELFMAG)
	ident[elf.EI_CLASS], ident[elf.EI_DATA], ident[elf.EI_VERSION] = byte(a.class), byte(a.data), byte(elf.EV_CURRENT)
	var buf bytes.Buffer
	body := []byte("pretend this is machine code")
	if a.class == elf.ELFCLASS64 {
		hdr, ph := uint64(64), uint64(56)
		size := hdr + ph + uint64(len(body))
		h := elf.Header64{Ident: ident, Type: uint16(typ), Machine: uint16(a.machine), Version: uint32(elf.EV_CURRENT),
			Phoff: hdr, Ehsize: uint16(hdr), Phentsize: uint16(ph), Phnum: 1, Shentsize: 64}
		if sections {
			h.Shoff, h.Shnum = size, 3
		}
		binary.Write(&buf, order, h)
		binary.Write(&buf, order, elf.Prog64{Type: uint32(elf.PT_LOAD), Off: 0, Filesz: size + extra, Memsz: size + extra})
	} else {
		hdr, ph := uint32(52), uint32(32)
		size := hdr + ph + uint32(len(body))
		h := elf.Header32{Ident: ident, Type: uint16(typ), Machine: uint16(a.machine), Version: uint32(elf.EV_CURRENT),
			Phoff: hdr, Ehsize: uint16(hdr), Phentsize: uint16(ph), Phnum: 1, Shentsize: 40}
		if sections {
			h.Shoff, h.Shnum = size, 3
		}
		binary.Write(&buf, order, h)
		binary.Write(&buf, order, elf.Prog32{Type: uint32(elf.PT_LOAD), Off: 0, Filesz: size + uint32(extra), Memsz: size + uint32(extra)})
	}
	buf.Write(body)
	if sections {
		n := 64
		if a.class == elf.ELFCLASS32 {
			n = 40
		}
		buf.Write(make([]byte, 3*n))
	}
	return buf.Bytes()
}

// fakeMachO is a minimal 64-bit Mach-O for cpu: a header and one
// LC_SEGMENT_64 covering the file, plus extra bytes it claims beyond it.
func fakeMachO(cpu macho.Cpu, typ macho.Type, extra uint64) []byte {
	const hdr, seg = 32, 72
	body := []byte("pretend this is machine code")
	size := uint64(hdr + seg + len(body))
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, macho.FileHeader{Magic: macho.Magic64, Cpu: cpu, Type: typ, Ncmd: 1, Cmdsz: seg})
	buf.Write(make([]byte, 4)) // reserved
	s := macho.Segment64{Cmd: macho.LoadCmdSegment64, Len: seg, Offset: 0, Filesz: size + extra}
	copy(s.Name[:], "__TEXT")
	binary.Write(&buf, binary.LittleEndian, s)
	buf.Write(body)
	return buf.Bytes()
}

// fakeFat is a fat Mach-O holding the images given, each at a 4 KiB
// boundary, as lipo lays them out.
func fakeFat(images map[macho.Cpu][]byte, cpus ...macho.Cpu) []byte {
	const align = 4096
	var hdr, body bytes.Buffer
	binary.Write(&hdr, binary.BigEndian, uint32(machoFatMagic))
	binary.Write(&hdr, binary.BigEndian, uint32(len(cpus)))
	off := uint32(align)
	for _, c := range cpus {
		img := images[c]
		binary.Write(&hdr, binary.BigEndian, macho.FatArchHeader{Cpu: c, Offset: off, Size: uint32(len(img)), Align: 12})
		body.Write(img)
		pad := (align - len(img)%align) % align
		body.Write(make([]byte, pad))
		off += uint32(len(img) + pad)
	}
	out := append(hdr.Bytes(), make([]byte, align-hdr.Len())...)
	return append(out, body.Bytes()...)
}

// write puts b in a new file called name in dir, with mode perm.
func write(t *testing.T, dir, name string, b []byte, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil { // not masked by the umask
		t.Fatal(err)
	}
	return p
}

// TestBinaryCheck runs the check on real files: what the kernel would
// refuse to execute fails, naming the file and what is wrong with it.
func TestBinaryCheck(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no executable bit or format check on Windows")
	}
	dir := t.TempDir()
	self, err := os.ReadFile(testBinary())
	if err != nil {
		t.Fatal(err)
	}
	want, checked := platformTarget()
	elfHere := checked && !want.macho
	sh, err := lookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	notExec := write(t, dir, "plain", []byte("#!/bin/sh\n"), 0o644)

	for _, tc := range []struct {
		name string
		path string
		want string // "": passes
		skip bool
	}{
		{name: "the test binary", path: testBinary()},
		{name: "a copy of it", path: write(t, dir, "copy", self, 0o755)},
		{name: "a copy cut short", path: write(t, dir, "half", self[:len(self)/2], 0o755), want: "truncated: ", skip: !checked},
		// The segments are all there; the section headers, which a
		// linker writes last, are not.
		{name: "a copy one byte short", path: write(t, dir, "short", self[:len(self)-1], 0o755), want: "truncated: ", skip: !checked},
		{name: "a copy of 10 bytes", path: write(t, dir, "stub", self[:10], 0o755), want: "truncated: ", skip: !checked},
		{name: "an empty file", path: write(t, dir, "empty", nil, 0o755), want: "not an executable", skip: !checked},
		{name: "a wrong-arch ELF", path: write(t, dir, "arm", fakeELF(t, otherArch(), elf.ET_EXEC, 0, true), 0o755),
			want: "an ELF for " + otherArch() + ", this process runs on " + runtime.GOARCH, skip: !elfHere},
		{name: "a fake ELF for here", path: write(t, dir, "fake", fakeELF(t, runtime.GOARCH, elf.ET_DYN, 0, true), 0o755), skip: !elfHere},
		{name: "a fake ELF cut short", path: write(t, dir, "fakehalf", fakeELF(t, runtime.GOARCH, elf.ET_EXEC, 1000, false), 0o755),
			want: "truncated: segment 0 ends at byte ", skip: !elfHere},
		{name: "an object file", path: write(t, dir, "obj.o", fakeELF(t, runtime.GOARCH, elf.ET_REL, 0, true), 0o755), want: "type ET_REL", skip: !elfHere},
		{name: "a text file", path: write(t, dir, "text", []byte("echo hello\n"), 0o755), want: `not an executable: neither `, skip: !checked},
		{name: "a script", path: write(t, dir, "script", []byte("#!"+sh+" -e\necho hello\n"), 0o755)},
		{name: "a script with a space", path: write(t, dir, "script2", []byte("#! "+sh+"\n"), 0o755)},
		{name: "a script without its interpreter", path: write(t, dir, "gone", []byte("#!/nonexistent/python3\nprint(1)\n"), 0o755),
			want: "interpreter /nonexistent/python3 cannot be used: stat /nonexistent/python3: no such file or directory", skip: !checked},
		{name: "a script whose interpreter is not executable", path: write(t, dir, "noexec", []byte("#!"+notExec+"\n"), 0o755),
			want: "interpreter " + notExec + " is not executable", skip: !checked},
		{name: "a script whose interpreter is a directory", path: write(t, dir, "dirinterp", []byte("#!"+dir+"\n"), 0o755),
			want: "interpreter " + dir + " is not a regular file", skip: !checked},
		{name: "a script with DOS line ends", path: write(t, dir, "dos", []byte("#!"+sh+"\r\necho hello\r\n"), 0o755),
			want: "ends in a carriage return", skip: !checked},
		{name: "a script naming nothing", path: write(t, dir, "nothing", []byte("#!  \n"), 0o755), want: "names no interpreter", skip: !checked},
		{name: "a directory", path: dir, want: "not a regular file"},
		{name: "no x bit", path: write(t, dir, "nox", self[:4096], 0o644), want: "not executable (mode -rw-r--r--)"},
		{name: "missing", path: filepath.Join(dir, "missing"), want: "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip {
				t.Skip("not checked on " + runtime.GOOS + "/" + runtime.GOARCH)
			}
			err := checkBinary(tc.path)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("%v", err)
			case tc.want == "":
			case err == nil:
				t.Fatalf("passed; want an error saying %q", tc.want)
			case !strings.HasPrefix(err.Error(), "binary "+tc.path+": ") || !strings.Contains(err.Error(), tc.want):
				t.Fatalf("%v\nwant it to name %s and say %q", err, tc.path, tc.want)
			default:
				t.Log(err)
			}
		})
	}
}

// TestBinaryFormats checks what a kernel of each target accepts, on files
// made up for the purpose (this machine can only produce its own).
func TestBinaryFormats(t *testing.T) {
	arm := fakeMachO(macho.CpuArm64, macho.TypeExec, 0)
	amd := fakeMachO(macho.CpuAmd64, macho.TypeExec, 0)
	for _, tc := range []struct {
		name string
		file []byte
		t    target
		want string
	}{
		{"ELF amd64 on amd64", fakeELF(t, "amd64", elf.ET_EXEC, 0, true), target{arch: "amd64"}, ""},
		{"ELF arm64 on arm64", fakeELF(t, "arm64", elf.ET_DYN, 0, false), target{arch: "arm64"}, ""},
		{"ELF 386 on 386", fakeELF(t, "386", elf.ET_EXEC, 0, true), target{arch: "386"}, ""},
		{"ELF s390x on s390x", fakeELF(t, "s390x", elf.ET_EXEC, 0, true), target{arch: "s390x"}, ""},
		{"ELF arm64 on amd64", fakeELF(t, "arm64", elf.ET_EXEC, 0, true), target{arch: "amd64"}, "an ELF for arm64, this process runs on amd64"},
		{"ELF 386 on amd64", fakeELF(t, "386", elf.ET_EXEC, 0, true), target{arch: "amd64"}, "an ELF for 386, this process runs on amd64"},
		{"ELF ppc64 on ppc64le", fakeELF(t, "ppc64", elf.ET_EXEC, 0, true), target{arch: "ppc64le"}, "an ELF for ppc64, this process runs on ppc64le"},
		{"ELF 386 cut short", fakeELF(t, "386", elf.ET_EXEC, 7, false), target{arch: "386"}, "truncated: segment 0 ends at byte 119, the file has 112"},
		{"ELF without its section headers", fakeELF(t, "amd64", elf.ET_EXEC, 0, true)[:148+64], target{arch: "amd64"},
			"truncated: its section headers end at byte 340, the file has 212"},
		{"ELF core file", fakeELF(t, "amd64", elf.ET_CORE, 0, true), target{arch: "amd64"}, "an ELF of type ET_CORE, not an executable"},
		{"ELF on darwin", fakeELF(t, "arm64", elf.ET_EXEC, 0, true), target{macho: true, arch: "arm64"}, "neither a Mach-O for arm64 nor a #! script"},
		{"Mach-O arm64 on arm64", arm, target{macho: true, arch: "arm64"}, ""},
		{"Mach-O amd64 on arm64", amd, target{macho: true, arch: "arm64"}, "a Mach-O for amd64, this process runs on arm64"},
		{"Mach-O dylib", fakeMachO(macho.CpuArm64, macho.TypeDylib, 0), target{macho: true, arch: "arm64"}, "not an executable"},
		{"Mach-O cut short", fakeMachO(macho.CpuArm64, macho.TypeExec, 50), target{macho: true, arch: "arm64"},
			"truncated: segment 0 (__TEXT) ends at byte 182, the file has 132"},
		{"Mach-O on linux", arm, target{arch: "arm64"}, "neither an ELF for arm64"},
		{"fat on arm64", fakeFat(map[macho.Cpu][]byte{macho.CpuAmd64: amd, macho.CpuArm64: arm}, macho.CpuAmd64, macho.CpuArm64), target{macho: true, arch: "arm64"}, ""},
		{"fat on amd64", fakeFat(map[macho.Cpu][]byte{macho.CpuAmd64: amd, macho.CpuArm64: arm}, macho.CpuAmd64, macho.CpuArm64), target{macho: true, arch: "amd64"}, ""},
		{"fat without arm64", fakeFat(map[macho.Cpu][]byte{macho.CpuAmd64: amd}, macho.CpuAmd64), target{macho: true, arch: "arm64"},
			"a fat Mach-O for amd64, this process runs on arm64"},
		{"fat whose arm64 part is cut short", fakeFat(map[macho.Cpu][]byte{macho.CpuArm64: fakeMachO(macho.CpuArm64, macho.TypeExec, 9)}, macho.CpuArm64), target{macho: true, arch: "arm64"},
			"truncated: segment 0 (__TEXT) ends of its arm64 part at byte 141, the file has 132"},
		{"fat cut short", fakeFat(map[macho.Cpu][]byte{macho.CpuArm64: arm}, macho.CpuArm64)[:4200], target{macho: true, arch: "arm64"},
			"truncated: its arm64 part ends at byte 4228, the file has 4200"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkFormat(bytes.NewReader(tc.file), int64(len(tc.file)), tc.t)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("%v", err)
			case tc.want == "":
			case err == nil:
				t.Fatalf("passed; want an error saying %q", tc.want)
			case !strings.Contains(err.Error(), tc.want):
				t.Fatalf("%v\nwant %q", err, tc.want)
			}
		})
	}
}

// BenchmarkBinaryCheck measures the check on the example server, the
// cost it adds to every upgrade:
//
//	go test -run '^$' -bench BinaryCheck ./internal/handoff/
func BenchmarkBinaryCheck(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "http")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := harness.Build(ctx, "./examples/http", bin, false, ""); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if err := checkBinary(bin); err != nil {
			b.Fatal(err)
		}
	}
}
