package repo

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"repo/backend"
	"repo/chunk"
	"repo/index"
	"repo/repo/pack"
)

// checkRepo makes a repository holding one backup of damageSource (at
// least three data packs), and
// returns it with its data packs (those of the snapshot's files, in no
// particular order) and its tree packs.
func checkRepo(t *testing.T, encrypted bool) (*Repository, backend.Backend, []chunk.ID, []chunk.ID) {
	t.Helper()
	r, be := newTestRepo(t, encrypted)
	src, _ := damageSource(t, 12, 0)
	backup(t, r, BackupOptions{Paths: []string{src}})
	var data, trees []chunk.ID
	for name := range indexedPacks(t, r) {
		iid, _ := chunk.ParseID(name)
		f, err := r.LoadIndexFile(t.Context(), iid)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Packs {
			if p.Blobs[0].Type == index.DataBlob {
				data = append(data, p.ID)
			} else {
				trees = append(trees, p.ID)
			}
		}
	}
	if len(data) < 3 || len(trees) < 1 {
		t.Fatalf("setup: %d data packs, %d tree packs", len(data), len(trees))
	}
	return r, be, data, trees
}

// errorsAbout returns the Error findings whose object is obj.
func errorsAbout(fs []Finding, obj string) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.Severity == Error && f.Object == obj {
			out = append(out, f)
		}
	}
	return out
}

func bySeverity(fs []Finding, sev Severity) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.Severity == sev {
			out = append(out, f)
		}
	}
	return out
}

func TestCheckHealthy(t *testing.T) {
	for _, encrypted := range []bool{true, false} {
		t.Run(modeName(encrypted), func(t *testing.T) {
			r, be, data, trees := checkRepo(t, encrypted)
			for _, readData := range []bool{false, true} {
				fs, res := checkFindings(t, r, CheckOptions{ReadData: readData})
				if len(fs) != 0 || res.Errors != 0 || res.Notes != 0 {
					t.Errorf("read data %v: findings %+v", readData, fs)
				}
				packs := len(names(t, be, backend.PackFile))
				if res.Packs != packs || packs != len(data)+len(trees) {
					t.Errorf("checked %d packs, backend holds %d, index %d", res.Packs, packs, len(data)+len(trees))
				}
				wantRead := 0
				if readData {
					wantRead = packs
				}
				if res.PacksRead != wantRead {
					t.Errorf("read %d packs, want %d", res.PacksRead, wantRead)
				}
				if res.Snapshots != 1 || res.Trees < 4 || res.Blobs == 0 || res.IndexFiles == 0 {
					t.Errorf("result %+v", res)
				}
			}
		})
	}
}

func TestCheckFindsDamage(t *testing.T) {
	tests := []struct {
		name     string
		readData bool
		// damage breaks the repository and returns the objects that must
		// have Error findings.
		damage func(t *testing.T, r *Repository, be backend.Backend, data, trees []chunk.ID) []string
	}{
		{"pack missing", false, func(t *testing.T, r *Repository, be backend.Backend, data, _ []chunk.ID) []string {
			removeObject(t, be, packHandle(data[0]))
			return []string{packHandle(data[0]).String()}
		}},
		{"tree pack missing", false, func(t *testing.T, r *Repository, be backend.Backend, _, trees []chunk.ID) []string {
			removeObject(t, be, packHandle(trees[0]))
			return []string{packHandle(trees[0]).String()}
		}},
		{"pack truncated", false, func(t *testing.T, r *Repository, be backend.Backend, data, _ []chunk.ID) []string {
			rewrite(t, be, packHandle(data[0]), func(b []byte) []byte { return b[:len(b)-1] })
			return []string{packHandle(data[0]).String()}
		}},
		{"pack truncated, read data", true, func(t *testing.T, r *Repository, be backend.Backend, data, _ []chunk.ID) []string {
			rewrite(t, be, packHandle(data[0]), func(b []byte) []byte { return b[:len(b)/2] })
			return []string{packHandle(data[0]).String()}
		}},
		{"byte flipped in a blob, read data", true, func(t *testing.T, r *Repository, be backend.Backend, data, _ []chunk.ID) []string {
			b := blobsOfPack(t, r, data[0])[0]
			rewrite(t, be, packHandle(data[0]), flipByte(int(b.Offset+b.Length/2)))
			return []string{packHandle(data[0]).String()}
		}},
		{"byte flipped in a header, read data", true, func(t *testing.T, r *Repository, be backend.Backend, data, _ []chunk.ID) []string {
			rewrite(t, be, packHandle(data[0]), flipByte(-10))
			return []string{packHandle(data[0]).String()}
		}},
		{"index file damaged", false, func(t *testing.T, r *Repository, be backend.Backend, _, _ []chunk.ID) []string {
			name := names(t, be, backend.IndexFile)[0]
			rewrite(t, be, backend.Handle{Type: backend.IndexFile, Name: name}, flipByte(20))
			return []string{"index/" + name}
		}},
		{"snapshot damaged", false, func(t *testing.T, r *Repository, be backend.Backend, _, _ []chunk.ID) []string {
			name := names(t, be, backend.SnapshotFile)[0]
			rewrite(t, be, backend.Handle{Type: backend.SnapshotFile, Name: name}, flipByte(5))
			return []string{"snapshots/" + name}
		}},
		{"two packs damaged", false, func(t *testing.T, r *Repository, be backend.Backend, data, _ []chunk.ID) []string {
			removeObject(t, be, packHandle(data[0]))
			rewrite(t, be, packHandle(data[1]), func(b []byte) []byte { return append(b, 0) })
			return []string{packHandle(data[0]).String(), packHandle(data[1]).String()}
		}},
		{"pack and snapshot damaged", false, func(t *testing.T, r *Repository, be backend.Backend, data, _ []chunk.ID) []string {
			removeObject(t, be, packHandle(data[0]))
			rewrite(t, be, backend.Handle{Type: backend.SnapshotFile, Name: names(t, be, backend.SnapshotFile)[0]}, flipByte(-1))
			return []string{packHandle(data[0]).String(), "snapshots/" + names(t, be, backend.SnapshotFile)[0]}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, be, data, trees := checkRepo(t, false)
			want := tt.damage(t, r, be, data, trees)
			markDamaged(r)
			before := listObjects(t, be)
			fs, res := checkFindings(t, r, CheckOptions{ReadData: tt.readData})
			for _, obj := range want {
				if len(errorsAbout(fs, obj)) == 0 {
					t.Errorf("no error about %s; findings: %+v", obj, fs)
				}
			}
			if res.Errors != len(bySeverity(fs, Error)) || res.Notes != len(bySeverity(fs, Note)) {
				t.Errorf("result counts %d errors, %d notes; %d and %d reported", res.Errors, res.Notes, len(bySeverity(fs, Error)), len(bySeverity(fs, Note)))
			}
			for _, f := range fs {
				if f.Level != f.Severity.String() || f.Kind == "" || f.Object == "" || f.Message == "" {
					t.Errorf("incomplete finding %+v", f)
				}
			}
			// Check is read-only.
			after := listObjects(t, be)
			if len(after) != len(before) {
				t.Errorf("check changed the backend: %d objects, then %d", len(before), len(after))
			}
			for i := range min(len(before), len(after)) {
				if before[i].h != after[i].h || !bytes.Equal(before[i].data, after[i].data) {
					t.Errorf("check changed %v", before[i].h)
				}
			}
		})
	}
}

// Damage to data packs is reported once per pack, and nothing else is: the
// packs are the only damage.
func TestCheckReportsEveryDamageInOneRun(t *testing.T) {
	r, be, data, _ := checkRepo(t, true)
	removeObject(t, be, packHandle(data[0]))
	rewrite(t, be, packHandle(data[1]), func(b []byte) []byte { return b[:len(b)-3] })
	markDamaged(r)
	fs, res := checkFindings(t, r, CheckOptions{})
	errs := bySeverity(fs, Error)
	if len(errs) != 2 || res.Errors != 2 {
		t.Fatalf("%d errors, want 2: %+v", len(errs), fs)
	}
	missing := errorsAbout(fs, packHandle(data[0]).String())
	short := errorsAbout(fs, packHandle(data[1]).String())
	if len(missing) != 1 || len(short) != 1 {
		t.Fatalf("errors %+v: want one about each pack", errs)
	}
	if !strings.Contains(short[0].Message, "size") {
		t.Errorf("truncated pack: %q does not mention its size", short[0].Message)
	}
	for _, f := range errs {
		if f.Kind != "pack" {
			t.Errorf("finding kind %q, want pack", f.Kind)
		}
	}
}

// Damage inside a blob is invisible without reading the data.
func TestCheckBlobDamageNeedsReadData(t *testing.T) {
	r, be, data, _ := checkRepo(t, false)
	blobs := blobsOfPack(t, r, data[0])
	b := blobs[len(blobs)-1]
	rewrite(t, be, packHandle(data[0]), flipByte(int(b.Offset)))
	markDamaged(r)
	if fs, _ := checkFindings(t, r, CheckOptions{}); len(fs) != 0 {
		t.Errorf("without read data: %+v", fs)
	}
	fs, _ := checkFindings(t, r, CheckOptions{ReadData: true})
	if len(errorsAbout(fs, packHandle(data[0]).String())) == 0 {
		t.Errorf("with read data: %+v", fs)
	}
}

func TestCheckUnindexedPack(t *testing.T) {
	for _, encrypted := range []bool{true, false} {
		t.Run(modeName(encrypted), func(t *testing.T) {
			r, be, _, _ := checkRepo(t, encrypted)
			// A valid pack no index lists, as an interrupted backup leaves.
			w := pack.NewWriter(r.sealer, 0)
			raw := []byte("orphan blob")
			stored, comp := r.codec.Encode(nil, raw)
			w.Add(index.Blob{Type: index.DataBlob, ID: r.HashBlob(raw), RawLength: uint32(len(raw)), Compression: comp}, stored)
			buf, id, _ := w.Finalize()
			if err := be.Save(t.Context(), packHandle(id), backend.NewByteReader(buf)); err != nil {
				t.Fatal(err)
			}
			for _, readData := range []bool{false, true} {
				fs, res := checkFindings(t, r, CheckOptions{ReadData: readData})
				notes := bySeverity(fs, Note)
				if res.Errors != 0 || len(notes) != 1 || len(fs) != 1 {
					t.Fatalf("read data %v: findings %+v, want one note", readData, fs)
				}
				if notes[0].Object != packHandle(id).String() || notes[0].Kind != "pack" {
					t.Errorf("note %+v does not name pack %s", notes[0], id.Short())
				}
			}
		})
	}
}

// An index file that a newer one supersedes is ignored (a note), but only
// while the newer one can be read.
func TestCheckSupersededIndex(t *testing.T) {
	for _, damageNew := range []bool{false, true} {
		t.Run(fmt.Sprintf("new damaged=%v", damageNew), func(t *testing.T) {
			r, be, _, _ := checkRepo(t, false)
			old := names(t, be, backend.IndexFile)
			var merged index.File
			for _, name := range old {
				id, _ := chunk.ParseID(name)
				f, err := r.LoadIndexFile(t.Context(), id)
				if err != nil {
					t.Fatal(err)
				}
				merged.Supersedes = append(merged.Supersedes, id)
				merged.Packs = append(merged.Packs, f.Packs...)
			}
			newID, err := r.SaveUnpacked(t.Context(), backend.IndexFile, merged.Encode())
			if err != nil {
				t.Fatal(err)
			}
			newObj := "index/" + newID.String()
			if damageNew {
				rewrite(t, be, backend.Handle{Type: backend.IndexFile, Name: newID.String()}, flipByte(7))
				markDamaged(r)
			}
			fs, res := checkFindings(t, r, CheckOptions{ReadData: true})
			errs, notes := bySeverity(fs, Error), bySeverity(fs, Note)
			if damageNew {
				// The old files describe every pack: the damaged new one is
				// the only error, and nothing is superseded.
				if len(errs) != 1 || errs[0].Object != newObj || len(notes) != 0 {
					t.Errorf("findings %+v, want one error about %s", fs, newObj)
				}
				return
			}
			if len(errs) != 0 || len(notes) != len(old) {
				t.Errorf("findings %+v, want %d notes", fs, len(old))
			}
			for _, n := range notes {
				if n.Kind != "index" || !slices.Contains(old, strings.TrimPrefix(n.Object, "index/")) {
					t.Errorf("note %+v is not about a superseded index file", n)
				}
			}
			if res.IndexFiles != 1 {
				t.Errorf("%d index files used, want 1", res.IndexFiles)
			}
		})
	}
}
