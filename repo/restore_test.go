package repo

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"repo/backend"
	"repo/chunk"
	"repo/index"
)

var handTime = time.Date(2022, 1, 2, 3, 4, 5, 0, time.UTC)

// handSnapshot stores the trees build makes (with the Saver it is given)
// and a snapshot of the root tree build returns.
func handSnapshot(t *testing.T, r *Repository, build func(s *Saver) chunk.ID) *Snapshot {
	t.Helper()
	s := r.NewSaver(t.Context())
	root := build(s)
	if _, err := s.Finish(); err != nil {
		t.Fatal(err)
	}
	sn := &Snapshot{Time: handTime, Tree: root, Paths: []string{"/hand"}, Hostname: "testhost", Source: SourceInfo{Kind: SourceFiles}}
	if err := r.SaveSnapshot(t.Context(), sn); err != nil {
		t.Fatal(err)
	}
	return sn
}

// fileNode stores data and returns a file node for it.
func fileNode(t *testing.T, s *Saver, name string, data []byte) Node {
	t.Helper()
	id, _, err := s.SaveBlob(index.DataBlob, data)
	if err != nil {
		t.Fatal(err)
	}
	return Node{Name: name, Type: NodeFile, Mode: 0o644, ModTime: handTime, Size: uint64(len(data)), Content: []chunk.ID{id}}
}

// dirNode stores a tree of nodes and returns a directory node for it.
func dirNode(t *testing.T, s *Saver, name string, nodes ...Node) Node {
	t.Helper()
	id, err := s.SaveTree(&Tree{Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	return Node{Name: name, Type: NodeDir, Mode: 0o755, ModTime: handTime, Subtree: &id}
}

func saveTree(t *testing.T, s *Saver, nodes ...Node) chunk.ID {
	t.Helper()
	id, err := s.SaveTree(&Tree{Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// listDir returns every path below dir, relative, sorted.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRestoreHostileNames(t *testing.T) {
	hostile := []string{"..", ".", "", "../escape", "../../escape", "a/../../escape", "/abs-escape", "x\x00y", "d/"}
	for _, name := range hostile {
		for _, atRoot := range []bool{false, true} {
			t.Run(fmt.Sprintf("%q/root=%v", name, atRoot), func(t *testing.T) {
				r, _ := newTestRepo(t, false)
				evil := []byte("evil content")
				sn := handSnapshot(t, r, func(s *Saver) chunk.ID {
					bad := []Node{
						fileNode(t, s, name, evil),
						{Name: "zz", Type: NodeSymlink, LinkTarget: "/", ModTime: handTime},
					}
					good := fileNode(t, s, "good", []byte("good content"))
					if atRoot {
						return saveTree(t, s, append(bad, good)...)
					}
					return saveTree(t, s, dirNode(t, s, "d", bad...), good)
				})
				base := t.TempDir()
				target := filepath.Join(base, "target")
				var ec errorCollector
				st, err := r.Restore(t.Context(), sn, "/", RestoreOptions{Target: target, OnError: ec.onError})
				if err != nil {
					t.Fatalf("restore: %v", err)
				}
				wantErr := "/d"
				if atRoot {
					wantErr = "/"
				}
				if got := ec.paths(); !slices.Equal(got, []string{wantErr}) || st.Errors != 1 {
					t.Errorf("reported %q (%d errors), want exactly %s", got, st.Errors, wantErr)
				}
				for _, p := range listDir(t, base) {
					if p != "target" && !strings.HasPrefix(p, "target/") {
						t.Errorf("written outside the target: %q", p)
					}
				}
				if atRoot {
					if got := listDir(t, target); len(got) != 0 {
						t.Errorf("target holds %q, want nothing", got)
					}
				} else {
					// Nothing of the damaged directory, the rest restored.
					compareContent(t, filepath.Join(target, "good"), []byte("good content"))
					if got := listDir(t, target); !slices.Equal(got, []string{"d", "good"}) {
						t.Errorf("target holds %q, want d (empty) and good", got)
					}
				}
				// Check reports the hostile tree.
				findings, _ := checkFindings(t, r, CheckOptions{})
				if !slices.ContainsFunc(findings, func(f Finding) bool { return f.Severity == Error && f.Kind == "tree" }) {
					t.Errorf("check did not report the invalid tree: %+v", findings)
				}
				markDamaged(r)
			})
		}
	}
}

func compareContent(t *testing.T, p string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("%s: %q, %v; want %q", p, got, err, want)
	}
}

// A symlink already in the target is never followed: restoring a
// directory, file, link or fifo where it stands replaces the link.
func TestRestoreOverExistingSymlink(t *testing.T) {
	content := []byte("restored content")
	tests := []struct {
		name    string
		link    string // the symlink made in the target before restoring
		subpath string
		build   func(t *testing.T, s *Saver) chunk.ID
		check   func(t *testing.T, target string)
	}{
		{
			name: "dir over link to outside dir", link: "x",
			build: func(t *testing.T, s *Saver) chunk.ID {
				return saveTree(t, s, dirNode(t, s, "x", fileNode(t, s, "f", content)))
			},
			check: func(t *testing.T, target string) { compareContent(t, filepath.Join(target, "x", "f"), content) },
		},
		{
			name: "nested dir over link", link: "x",
			build: func(t *testing.T, s *Saver) chunk.ID {
				return saveTree(t, s, dirNode(t, s, "x", dirNode(t, s, "y", fileNode(t, s, "f", content))))
			},
			check: func(t *testing.T, target string) {
				compareContent(t, filepath.Join(target, "x", "y", "f"), content)
			},
		},
		{
			name: "file over link to outside file", link: "f",
			build: func(t *testing.T, s *Saver) chunk.ID {
				return saveTree(t, s, fileNode(t, s, "f", content))
			},
			check: func(t *testing.T, target string) { compareContent(t, filepath.Join(target, "f"), content) },
		},
		{
			name: "single file over link", link: "f", subpath: "/d/f",
			build: func(t *testing.T, s *Saver) chunk.ID {
				return saveTree(t, s, dirNode(t, s, "d", fileNode(t, s, "f", content)))
			},
			check: func(t *testing.T, target string) { compareContent(t, filepath.Join(target, "f"), content) },
		},
		{
			name: "symlink over link", link: "x",
			build: func(t *testing.T, s *Saver) chunk.ID {
				return saveTree(t, s, Node{Name: "x", Type: NodeSymlink, LinkTarget: "elsewhere"})
			},
			check: func(t *testing.T, target string) {
				if l, err := os.Readlink(filepath.Join(target, "x")); err != nil || l != "elsewhere" {
					t.Errorf("link: %q, %v", l, err)
				}
			},
		},
		{
			name: "fifo in dir over link", link: "x",
			build: func(t *testing.T, s *Saver) chunk.ID {
				return saveTree(t, s, dirNode(t, s, "x", Node{Name: "p", Type: NodeFIFO, Mode: 0o600, ModTime: handTime}))
			},
			check: func(t *testing.T, target string) {
				fi, err := os.Lstat(filepath.Join(target, "x", "p"))
				if err != nil || fi.Mode().Type() != fs.ModeNamedPipe {
					t.Errorf("fifo: %v, %v", fi, err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := newTestRepo(t, false)
			sn := handSnapshot(t, r, func(s *Saver) chunk.ID { return tt.build(t, s) })
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			if err := os.Mkdir(outside, 0o755); err != nil {
				t.Fatal(err)
			}
			outsideFile := filepath.Join(base, "outside-file")
			if err := os.WriteFile(outsideFile, []byte("keep"), 0o644); err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(base, "target")
			if err := os.Mkdir(target, 0o755); err != nil {
				t.Fatal(err)
			}
			linkTo := outside
			if tt.link == "f" {
				linkTo = outsideFile
			}
			if err := os.Symlink(linkTo, filepath.Join(target, tt.link)); err != nil {
				t.Fatal(err)
			}
			subpath := tt.subpath
			if subpath == "" {
				subpath = "/"
			}
			var ec errorCollector
			if _, err := r.Restore(t.Context(), sn, subpath, RestoreOptions{Target: target, OnError: ec.onError}); err != nil {
				t.Fatalf("restore: %v", err)
			}
			for _, p := range ec.paths() {
				t.Errorf("restore reported %s: %v", p, ec.errs[p])
			}
			if got := listDir(t, outside); len(got) != 0 {
				t.Errorf("restore wrote outside the target: %q", got)
			}
			compareContent(t, outsideFile, []byte("keep"))
			fi, err := os.Lstat(filepath.Join(target, tt.link))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode()&fs.ModeSymlink != 0 {
				if l, _ := os.Readlink(filepath.Join(target, tt.link)); l == linkTo {
					t.Errorf("%s is still the link to %s", tt.link, linkTo)
				}
			}
			tt.check(t, target)
		})
	}
}

// damageSource writes files that spread over several data packs: small
// single-blob files and (if large > 0) larger ones of several blobs.
func damageSource(t *testing.T, small, large int) (string, map[string][]byte) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	files := map[string][]byte{}
	for i := range small {
		files[fmt.Sprintf("small/f%02d", i)] = randomBytes(uint64(100+i), 300<<10+i)
	}
	for i := range large {
		files[fmt.Sprintf("large/g%d", i)] = randomBytes(uint64(200+i), 5<<20/2+i)
	}
	for i := range 4 {
		files[fmt.Sprintf("text/t%d.txt", i)] = bytes.Repeat(fmt.Appendf(nil, "line of file %d\n", i), 100+i)
	}
	for rel, data := range files {
		p := filepath.Join(src, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return src, files
}

// damageCase damages the repository and returns the data blobs it broke.
type damageCase struct {
	name   string
	damage func(t *testing.T, r *Repository, be backend.Backend, victim index.PackedBlob) []chunk.ID
}

// blobsOfPack returns the data blobs the index lists for pack id.
func blobsOfPack(t *testing.T, r *Repository, id chunk.ID) []index.Blob {
	t.Helper()
	for name := range indexedPacks(t, r) {
		iid, _ := chunk.ParseID(name)
		f, err := r.LoadIndexFile(t.Context(), iid)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Packs {
			if p.ID == id {
				return p.Blobs
			}
		}
	}
	t.Fatalf("pack %s not indexed", id.Short())
	return nil
}

var damageCases = []damageCase{
	{"pack deleted", func(t *testing.T, r *Repository, be backend.Backend, victim index.PackedBlob) []chunk.ID {
		var ids []chunk.ID
		for _, b := range blobsOfPack(t, r, victim.Pack) {
			ids = append(ids, b.ID)
		}
		removeObject(t, be, packHandle(victim.Pack))
		return ids
	}},
	{"byte flipped in a blob", func(t *testing.T, r *Repository, be backend.Backend, victim index.PackedBlob) []chunk.ID {
		rewrite(t, be, packHandle(victim.Pack), flipByte(int(victim.Offset+victim.Length/2)))
		return []chunk.ID{victim.ID}
	}},
	{"pack truncated", func(t *testing.T, r *Repository, be backend.Backend, victim index.PackedBlob) []chunk.ID {
		cut := int64(victim.Offset) + 1
		var ids []chunk.ID
		for _, b := range blobsOfPack(t, r, victim.Pack) {
			if int64(b.Offset)+int64(b.Length) > cut {
				ids = append(ids, b.ID)
			}
		}
		rewrite(t, be, packHandle(victim.Pack), func(b []byte) []byte { return b[:cut] })
		return ids
	}},
}

func TestRestoreDamagedRepository(t *testing.T) {
	for _, dc := range damageCases {
		t.Run(dc.name, func(t *testing.T) {
			r, be := newTestRepo(t, true)
			src, files := damageSource(t, 10, 3)
			sn := backup(t, r, BackupOptions{Paths: []string{src}})
			nodes := snapshotPaths(t, r, sn, src)
			// The victim: the last blob of the first large file (how many
			// it has depends on the repository's random polynomial).
			g0 := nodes["large/g0"].Content
			victimID := g0[len(g0)-1]
			victim, ok, err := r.LookupBlob(index.DataBlob, victimID)
			if !ok || err != nil {
				t.Fatalf("lookup victim: %v, %v", ok, err)
			}
			broken := dc.damage(t, r, be, victim)
			markDamaged(r)

			var wantLost []string
			for rel, n := range nodes {
				if n.Type == NodeFile && slices.ContainsFunc(n.Content, func(id chunk.ID) bool { return slices.Contains(broken, id) }) {
					wantLost = append(wantLost, path.Join(src, rel))
				}
			}
			slices.Sort(wantLost)
			if len(wantLost) == 0 || len(wantLost) == len(files) {
				t.Fatalf("setup: %d of %d files lost", len(wantLost), len(files))
			}

			target := filepath.Join(t.TempDir(), "target")
			var ec errorCollector
			st, err := r.Restore(t.Context(), sn, src, RestoreOptions{Target: target, OnError: ec.onError})
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			if got := ec.paths(); !slices.Equal(got, wantLost) {
				t.Errorf("reported %q, want %q", got, wantLost)
			}
			if st.Errors != len(wantLost) || st.Files != len(files)-len(wantLost) {
				t.Errorf("stats: %d errors, %d files; want %d, %d", st.Errors, st.Files, len(wantLost), len(files)-len(wantLost))
			}
			for _, err := range ec.errs {
				var be *BlobError
				if !errors.As(err, &be) || be.Pack != victim.Pack {
					t.Errorf("error %v does not name pack %s", err, victim.Pack.Short())
				}
			}
			for rel, data := range files {
				p := filepath.Join(target, rel)
				if slices.Contains(wantLost, path.Join(src, rel)) {
					if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
						t.Errorf("%s: lost file left in the target (%v)", rel, err)
					}
					continue
				}
				compareContent(t, p, data)
			}
		})
	}
}

func TestRestoreMissingSubpath(t *testing.T) {
	r, _ := newTestRepo(t, false)
	sn := handSnapshot(t, r, func(s *Saver) chunk.ID {
		return saveTree(t, s, fileNode(t, s, "f", []byte("x")))
	})
	target := filepath.Join(t.TempDir(), "target")
	for _, p := range []string{"/nope", "/f/below-a-file"} {
		if _, err := r.Restore(t.Context(), sn, p, RestoreOptions{Target: target}); err == nil {
			t.Errorf("restore of %s succeeded", p)
		}
	}
	// .. cannot climb out of the snapshot root.
	target2, _ := restore(t, r, sn, "/../../f")
	compareContent(t, filepath.Join(target2, "f"), []byte("x"))
}
