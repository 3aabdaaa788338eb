package repo

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"repo/chunk"
)

func TestParseOverwrite(t *testing.T) {
	for _, o := range []Overwrite{OverwriteAlways, OverwriteIfChanged, OverwriteIfNewer, OverwriteNever} {
		got, err := ParseOverwrite(o.String())
		if err != nil || got != o {
			t.Errorf("ParseOverwrite(%q) = %v, %v", o.String(), got, err)
		}
	}
	for _, s := range []string{"", "Always", "changed", "if_changed"} {
		if _, err := ParseOverwrite(s); err == nil {
			t.Errorf("ParseOverwrite(%q) succeeded", s)
		}
	}
}

// overwriteFile is a file of the snapshot in TestRestoreOverwrite and what
// the target holds at its place before the restore.
type overwriteFile struct {
	name    string
	old     []byte    // nil: nothing at the target
	oldTime time.Time // of old
	kept    map[Overwrite]bool
}

func keptIn(modes ...Overwrite) map[Overwrite]bool {
	m := map[Overwrite]bool{}
	for _, o := range modes {
		m[o] = true
	}
	return m
}

// TestRestoreOverwrite restores a snapshot into a target that already
// holds some of its entries, in each mode, and checks what was replaced
// and what was kept (a kept file is still hard-linked from outside the
// target), the metadata of each, and the counts.
func TestRestoreOverwrite(t *testing.T) {
	const changed, newer, never = OverwriteIfChanged, OverwriteIfNewer, OverwriteNever
	content := func(name string) []byte { return []byte("the snapshot's content of " + name) }
	other := func(name string) []byte { return bytes.ToUpper(content(name)) } // same size
	hour := time.Hour
	files := []overwriteFile{
		{"same", content("same"), handTime, keptIn(changed, newer, never)},
		// Same size and mtime: if-changed trusts them and does not read it.
		{"stale", other("stale"), handTime, keptIn(changed, newer, never)},
		{"touched", content("touched"), handTime.Add(-hour), keptIn(changed, never)},
		{"older", other("older"), handTime.Add(-hour), keptIn(never)},
		{"newer", other("newer"), handTime.Add(hour), keptIn(newer, never)},
		{"short", content("short")[:5], handTime, keptIn(newer, never)},
		{"missing", nil, time.Time{}, keptIn()},
	}
	r, _ := newTestRepo(t, false)
	sn := handSnapshot(t, r, func(s *Saver) chunk.ID {
		var nodes []Node
		for _, f := range files {
			nodes = append(nodes, fileNode(t, s, f.name, content(f.name)))
		}
		nodes = append(nodes,
			dirNode(t, s, "dir", fileNode(t, s, "f", content("dir/f"))),
			dirNode(t, s, "notdir", fileNode(t, s, "g", content("notdir/g"))),
			Node{Name: "link-same", Type: NodeSymlink, LinkTarget: "t1", ModTime: handTime},
			Node{Name: "link-diff", Type: NodeSymlink, LinkTarget: "t2", ModTime: handTime},
			Node{Name: "fifo", Type: NodeFIFO, Mode: 0o640, ModTime: handTime},
		)
		return saveTree(t, s, nodes...)
	})

	for _, mode := range []Overwrite{OverwriteAlways, changed, newer, never} {
		t.Run(mode.String(), func(t *testing.T) {
			base := t.TempDir()
			target, links := filepath.Join(base, "target"), filepath.Join(base, "links")
			for _, d := range []string{target, links, filepath.Join(target, "dir")} {
				if err := os.Mkdir(d, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			setTime(t, filepath.Join(target, "dir"), handTime.Add(hour))
			for _, f := range files {
				if f.old == nil {
					continue
				}
				p := filepath.Join(target, f.name)
				if err := os.WriteFile(p, f.old, 0o600); err != nil {
					t.Fatal(err)
				}
				setTime(t, p, f.oldTime)
				if err := os.Link(p, filepath.Join(links, f.name)); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(target, "notdir"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			setTime(t, filepath.Join(target, "notdir"), handTime.Add(-hour))
			// Links and the FIFO are made now, after the snapshot's time.
			for name, to := range map[string]string{"link-same": "t1", "link-diff": "other"} {
				if err := os.Symlink(to, filepath.Join(target, name)); err != nil {
					t.Fatal(err)
				}
			}
			if err := unix.Mkfifo(filepath.Join(target, "fifo"), 0o600); err != nil {
				t.Fatal(err)
			}

			var ec errorCollector
			st, err := r.Restore(t.Context(), sn, "/", RestoreOptions{Target: target, Overwrite: mode, OnError: ec.onError})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ec.paths() {
				t.Errorf("restore reported %s: %v", p, ec.errs[p])
			}

			var want RestoreStats
			want.Files = 1 // dir/f
			for _, f := range files {
				p := filepath.Join(target, f.name)
				fi, err := os.Lstat(p)
				if err != nil {
					t.Errorf("%s: %v", f.name, err)
					continue
				}
				nlink := fi.Sys().(*syscall.Stat_t).Nlink
				if !f.kept[mode] {
					want.Files++
					if nlink != 1 {
						t.Errorf("%s: kept, want it replaced", f.name)
					}
					checkFile(t, p, content(f.name), 0o644, handTime)
					continue
				}
				want.FilesSkipped++
				want.BytesSkipped += int64(len(content(f.name)))
				if nlink != 2 {
					t.Errorf("%s: replaced, want it kept", f.name)
				}
				if mode == changed {
					checkFile(t, p, f.old, 0o644, handTime) // only the metadata set
				} else {
					checkFile(t, p, f.old, 0o600, f.oldTime) // left alone
				}
			}

			fi, err := os.Stat(filepath.Join(target, "dir"))
			if err != nil {
				t.Fatal(err)
			}
			wantDirMode := fs.FileMode(0o755)
			if mode == newer || mode == never {
				wantDirMode = 0o700 // kept as it was, though restored into
			}
			if fi.Mode().Perm() != wantDirMode {
				t.Errorf("dir: mode %v, want %v", fi.Mode().Perm(), wantDirMode)
			}
			compareContent(t, filepath.Join(target, "dir", "f"), content("dir/f"))

			if mode == never {
				want.OtherSkipped++
				compareContent(t, filepath.Join(target, "notdir"), []byte("x"))
			} else {
				want.Files++
				compareContent(t, filepath.Join(target, "notdir", "g"), content("notdir/g"))
			}
			wantLinks := map[string]string{"link-same": "t1", "link-diff": "t2"}
			switch mode {
			case changed:
				want.OtherSkipped += 2 // link-same, fifo
				want.Symlinks = 1
			case newer, never:
				want.OtherSkipped += 3
				wantLinks["link-diff"] = "other"
			default:
				want.Symlinks, want.Other = 2, 1
			}
			for name, to := range wantLinks {
				if got, err := os.Readlink(filepath.Join(target, name)); err != nil || got != to {
					t.Errorf("%s -> %q (%v), want %q", name, got, err, to)
				}
			}
			fi, err = os.Lstat(filepath.Join(target, "fifo"))
			if err != nil || fi.Mode().Type() != fs.ModeNamedPipe {
				t.Fatalf("fifo: %v, %v", fi, err)
			}
			wantFIFOMode := fs.FileMode(0o640)
			if mode == newer || mode == never {
				wantFIFOMode = 0o600
			}
			if fi.Mode().Perm() != wantFIFOMode {
				t.Errorf("fifo: mode %v, want %v", fi.Mode().Perm(), wantFIFOMode)
			}

			want.Dirs = 2 // dir, and notdir unless kept
			if mode == never {
				want.Dirs = 1
			}
			got := st
			got.Bytes = 0
			if got != want {
				t.Errorf("stats\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func setTime(t *testing.T, p string, mt time.Time) {
	t.Helper()
	if err := os.Chtimes(p, mt, mt); err != nil {
		t.Fatal(err)
	}
}

// checkFile checks the content, permission bits and mtime of file p.
func checkFile(t *testing.T, p string, content []byte, perm fs.FileMode, mtime time.Time) {
	t.Helper()
	compareContent(t, p, content)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != perm || !fi.ModTime().Equal(mtime) {
		t.Errorf("%s: mode %v, mtime %v; want %v, %v", filepath.Base(p), fi.Mode().Perm(), fi.ModTime(), perm, mtime)
	}
}

// TestRestoreIfChangedAfterInterruption damages a restored tree the way an
// interrupted restore (or a user) would, restores again with
// OverwriteIfChanged, and checks that exactly the damaged files were
// written again, that the rest kept their inodes, and that every file has
// the snapshot's content, mode and mtime afterwards.
func TestRestoreIfChangedAfterInterruption(t *testing.T) {
	r, _ := newTestRepo(t, true)
	src, files := damageSource(t, 6, 3)
	sn := backup(t, r, BackupOptions{Paths: []string{src}})
	target, _ := restore(t, r, sn, src)
	links := filepath.Join(t.TempDir(), "links")
	for rel := range files {
		p := filepath.Join(links, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(filepath.Join(target, rel), p); err != nil {
			t.Fatal(err)
		}
	}

	at := func(rel string) string { return filepath.Join(target, rel) }
	now := time.Now()
	// Written again: cut short; removed; zeros over part of the content at
	// the full size (as a write cut off after preallocation would leave);
	// one byte changed.
	damaged := []string{"small/f00", "small/f01", "large/g0", "large/g1"}
	if err := os.Truncate(at("small/f00"), 1000); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(at("small/f01")); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(at("large/g0"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 1<<20), 1<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	g1 := bytes.Clone(files["large/g1"])
	g1[len(g1)-1] ^= 1
	if err := os.WriteFile(at("large/g1"), g1, 0); err != nil {
		t.Fatal(err)
	}
	// Kept, with their metadata set again: content intact but a new
	// mtime (cut off before its times were set), or another mode.
	setTime(t, at("large/g2"), now)
	setTime(t, at("small/f02"), now)
	if err := os.Chmod(at("text/t0.txt"), 0o600); err != nil {
		t.Fatal(err)
	}

	var ec errorCollector
	st, err := r.Restore(t.Context(), sn, src, RestoreOptions{Target: target, Overwrite: OverwriteIfChanged, OnError: ec.onError})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ec.paths() {
		t.Errorf("restore reported %s: %v", p, ec.errs[p])
	}
	if st.Files != len(damaged) || st.FilesSkipped != len(files)-len(damaged) {
		t.Errorf("wrote %d files and kept %d; want %d and %d", st.Files, st.FilesSkipped, len(damaged), len(files)-len(damaged))
	}
	for rel, data := range files {
		fi, err := os.Stat(at(rel))
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		want, err := os.Stat(filepath.Join(src, rel))
		if err != nil {
			t.Fatal(err)
		}
		checkFile(t, at(rel), data, want.Mode().Perm(), want.ModTime())
		nlink := fi.Sys().(*syscall.Stat_t).Nlink
		if rewritten := slices.Contains(damaged, rel); rewritten != (nlink == 1) {
			t.Errorf("%s: %d links; want it rewritten: %v", rel, nlink, rewritten)
		}
	}
	vs, err := r.VerifyRestore(t.Context(), sn, src, target, func(p string, err error) { t.Errorf("verify %s: %v", p, err) })
	if err != nil || vs.Files != len(files) {
		t.Errorf("verify: %+v, %v", vs, err)
	}
}
