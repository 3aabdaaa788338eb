// Package gentree writes deterministic directory trees for tests, the demo
// and benchmarks: the same seed gives the same bytes, names, modes and
// times on every machine and Go version (math/rand/v2's PCG is specified).
package gentree

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"
)

// Spec says what to generate.
type Spec struct {
	Seed uint64
	// TextFiles of 1–TextMax bytes of compressible text in nested dirs.
	TextFiles int
	TextMax   int
	// BinFiles of 1–BinMax bytes of partly compressible binary data.
	BinFiles int
	BinMax   int
	// RandFiles of RandSize random (incompressible) bytes each.
	RandFiles int
	RandSize  int
	// Odd adds entries with odd names, symlinks and modes (see Generate).
	Odd bool
}

// Epoch is the base of generated mtimes (a fixed instant, so runs agree).
var Epoch = time.Date(2024, 2, 29, 12, 34, 56, 789000000, time.UTC)

var words = []string{
	"backup", "repository", "snapshot", "database", "page", "chunk", "index", "pack",
	"the", "a", "of", "to", "and", "in", "is", "it", "for", "on", "with", "as",
	"select", "insert", "update", "where", "from", "table", "row", "column", "value",
	"func", "return", "error", "nil", "struct", "int", "string", "byte", "if", "else",
	"0", "1", "42", "2024", "3.14159", "true", "false", "null", "{", "}", "(", ")", ";",
}

// Text returns n bytes of word soup from rng.
func Text(rng *rand.Rand, n int) []byte {
	b := make([]byte, 0, n+16)
	for len(b) < n {
		b = append(b, words[rng.IntN(len(words))]...)
		if rng.IntN(12) == 0 {
			b = append(b, '\n')
		} else {
			b = append(b, ' ')
		}
	}
	return b[:n]
}

// Random returns n random bytes from rng.
func Random(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// binary returns data that compresses partly: random runs between text.
func binary(rng *rand.Rand, n int) []byte {
	b := make([]byte, 0, n)
	for len(b) < n {
		k := min(n-len(b), 1+rng.IntN(64<<10))
		if rng.IntN(2) == 0 {
			b = append(b, Random(rng, k)...)
		} else {
			b = append(b, Text(rng, k)...)
		}
	}
	return b
}

// Generate writes the tree under dir (created). With Odd it adds: an empty
// file, a 1-byte file, names with spaces, unicode, a newline and a byte
// that is not UTF-8, a symlink to a file, a dangling symlink, a symlink to
// a directory, nested empty directories, a 0700 directory and a 0755
// executable. mtimes are set from Epoch, directories last.
func Generate(dir string, s Spec) error {
	rng := rand.New(rand.NewPCG(s.Seed, s.Seed^0x9e3779b97f4a7c15))
	var dirs []string
	mkdir := func(p string) error {
		dirs = append(dirs, p)
		return os.MkdirAll(p, 0o755)
	}
	write := func(p string, data []byte, mode os.FileMode, i int) error {
		if err := os.WriteFile(p, data, mode); err != nil {
			return err
		}
		if err := os.Chmod(p, mode); err != nil {
			return err
		}
		t := Epoch.Add(time.Duration(i) * 1234567891 * time.Nanosecond)
		return os.Chtimes(p, t, t)
	}
	if err := mkdir(dir); err != nil {
		return err
	}
	sub := func(i int) string {
		return filepath.Join(dir, fmt.Sprintf("d%02d", i%17), fmt.Sprintf("e%d", i%5))
	}
	n := 0
	for i := range s.TextFiles {
		d := sub(i)
		if err := mkdir(d); err != nil {
			return err
		}
		if err := write(filepath.Join(d, fmt.Sprintf("t%05d.txt", i)), Text(rng, 1+rng.IntN(max(1, s.TextMax))), 0o644, n); err != nil {
			return err
		}
		n++
	}
	for i := range s.BinFiles {
		d := filepath.Join(dir, "bin")
		if err := mkdir(d); err != nil {
			return err
		}
		if err := write(filepath.Join(d, fmt.Sprintf("b%03d.bin", i)), binary(rng, 1+rng.IntN(max(1, s.BinMax))), 0o644, n); err != nil {
			return err
		}
		n++
	}
	for i := range s.RandFiles {
		d := filepath.Join(dir, "rand")
		if err := mkdir(d); err != nil {
			return err
		}
		if err := write(filepath.Join(d, fmt.Sprintf("r%03d.dat", i)), Random(rng, s.RandSize), 0o600, n); err != nil {
			return err
		}
		n++
	}
	if s.Odd {
		odd := filepath.Join(dir, "odd")
		for _, d := range []string{odd, filepath.Join(odd, "emptydirs", "nested", "deeper"), filepath.Join(odd, "private")} {
			if err := mkdir(d); err != nil {
				return err
			}
		}
		files := []struct {
			name string
			data []byte
			mode os.FileMode
		}{
			{"empty", nil, 0o644},
			{"one-byte", []byte{'x'}, 0o644},
			{"with space.txt", Text(rng, 100), 0o644},
			{"ünïcödé-名前.txt", Text(rng, 100), 0o644},
			{"new\nline", Text(rng, 10), 0o644},
			{"not-utf8-\xff\xfe", Text(rng, 10), 0o644},
			{"run.sh", []byte("#!/bin/sh\necho hi\n"), 0o755},
			{"private/secret", Text(rng, 50), 0o600},
		}
		for _, f := range files {
			if err := write(filepath.Join(odd, f.name), f.data, f.mode, n); err != nil {
				return err
			}
			n++
		}
		for _, l := range []struct{ target, name string }{
			{"with space.txt", "link-to-file"},
			{"does/not/exist", "dangling"},
			{"empty", "link-to-dir-or-file"},
			{"private", "link-to-dir"},
		} {
			if err := os.Symlink(l.target, filepath.Join(odd, l.name)); err != nil {
				return err
			}
		}
		if err := os.Chmod(filepath.Join(odd, "private"), 0o700); err != nil {
			return err
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		t := Epoch.Add(time.Duration(i) * time.Hour)
		if err := os.Chtimes(dirs[i], t, t); err != nil {
			return err
		}
	}
	return nil
}
