package repo

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"repo/chunk"
	"repo/index"
)

// multiBlobNode stores data as several blobs of 1 MiB (the last shorter)
// and returns a file node for it.
func multiBlobNode(t *testing.T, s *Saver, name string, data []byte) Node {
	t.Helper()
	n := Node{Name: name, Type: NodeFile, Mode: 0o644, ModTime: handTime, Size: uint64(len(data))}
	for len(data) > 0 {
		k := min(len(data), 1<<20)
		id, _, err := s.SaveBlob(index.DataBlob, data[:k])
		if err != nil {
			t.Fatal(err)
		}
		n.Content = append(n.Content, id)
		data = data[k:]
	}
	return n
}

// TestVerifyRestore restores a small tree, then damages the restored files
// in several ways; VerifyRestore must report exactly the damaged ones.
func TestVerifyRestore(t *testing.T) {
	r, _ := newTestRepo(t, true)
	big := randomBytes(11, 3<<20) // several chunks
	sn := handSnapshot(t, r, func(s *Saver) chunk.ID {
		return saveTree(t, s,
			fileNode(t, s, "a", []byte("alpha")),
			dirNode(t, s, "d", fileNode(t, s, "b", []byte("bravo")), multiBlobNode(t, s, "big", big)),
			fileNode(t, s, "c", []byte("charlie")),
		)
	})
	target := t.TempDir()
	if _, err := r.Restore(t.Context(), sn, "/", RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	var bad []string
	verify := func() VerifyStats {
		bad = nil
		st, err := r.VerifyRestore(t.Context(), sn, "/", target, func(p string, err error) {
			if !errors.Is(err, errVerifyMismatch) && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: unexpected error kind %v", p, err)
			}
			bad = append(bad, p)
		})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := verify(); st.Errors != 0 || st.Files != 4 || st.Bytes != int64(5+5+7+len(big)) {
		t.Fatalf("clean restore: %+v, bad %v", st, bad)
	}
	chmodW := func(p string) { os.Chmod(p, 0o644) }
	// One byte flipped deep inside the big file, a truncated file, an
	// extended file, and a missing one.
	p := filepath.Join(target, "d", "big")
	chmodW(p)
	b, _ := os.ReadFile(p)
	b[2<<20] ^= 1
	os.WriteFile(p, b, 0o644)
	chmodW(filepath.Join(target, "a"))
	os.WriteFile(filepath.Join(target, "a"), []byte("alph"), 0o644)
	chmodW(filepath.Join(target, "c"))
	os.WriteFile(filepath.Join(target, "c"), []byte("charliee"), 0o644)
	os.Remove(filepath.Join(target, "d", "b"))
	st := verify()
	if st.Errors != 4 || st.Files != 0 {
		t.Fatalf("damaged restore: %+v, reported %v", st, bad)
	}
	// A single file restored on its own is found under its name.
	one := t.TempDir()
	if _, err := r.Restore(t.Context(), sn, "/d/big", RestoreOptions{Target: one}); err != nil {
		t.Fatal(err)
	}
	st, err := r.VerifyRestore(t.Context(), sn, "/d/big", one, func(p string, err error) { t.Errorf("%s: %v", p, err) })
	if err != nil || st.Files != 1 {
		t.Fatalf("single file: %+v, %v", st, err)
	}
}
