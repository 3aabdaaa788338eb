package main

// End-to-end tests of check --repair, list-broken-files and
// purge-broken-files: a repository with several snapshots is damaged by
// hand on the local backend, and the commands must find the damage, name
// exactly the files it costs, keep everything else, and leave a
// repository that check --read-data accepts and whose surviving files
// restore exactly.
//
// What was lost is worked out independently of the code under test: before
// the damage the test reads every index file and every tree through the Go
// API (as openTestRepo in e2e_lock_test.go does), so it knows which blobs
// each pack holds, at which offsets, and which files and directories of
// which snapshots reference them.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"repo/backend"
	"repo/backend/local"
	"repo/chunk"
	"repo/index"
	"repo/internal/gentree"
	"repo/repo"
	"repo/repo/crypto"
)

// --- the fixture ---

// blobRef names a blob.
type blobRef struct {
	t  index.BlobType
	id chunk.ID
}

// fixtureSnap is one snapshot of the fixture and what it was made from.
type fixtureSnap struct {
	id string
	// state is scanTree of the source when it was backed up; nil for the
	// stdin snapshot, whose content is stream.
	state  map[string]entry
	stream []byte
}

// streamName is the file name of the stdin snapshot.
const streamName = "stream.sql"

// repairFixture is a repository with three snapshots of a generated tree
// that changes between them and one --stdin snapshot, in 1 MiB packs, and
// a model of it read before any damage.
type repairFixture struct {
	r     *testRepo
	src   string
	snaps []fixtureSnap // oldest first

	// indexFiles maps each index file to the packs it lists; packs maps
	// each pack to its blobs (index order, which is offset order); where
	// maps each blob to the packs holding it.
	indexFiles map[chunk.ID][]chunk.ID
	packs      map[chunk.ID][]index.Blob
	where      map[blobRef][]chunk.ID
	// roots are the snapshots' root trees, trees every tree they
	// reference.
	roots map[string]chunk.ID
	trees map[chunk.ID]*repo.Tree
}

func newRepairFixture(t *testing.T) *repairFixture {
	t.Helper()
	r := newCheapRepo(t)
	f := &repairFixture{r: r, src: filepath.Join(t.TempDir(), "src")}
	generate(t, f.src, gentree.Spec{
		Seed: 90, TextFiles: 40, TextMax: 24 << 10, BinFiles: 3, BinMax: 1536 << 10,
		RandFiles: 2, RandSize: 700 << 10,
	})
	writeFile(t, filepath.Join(f.src, "empty"), nil, 0o644, gentree.Epoch)
	if err := os.Symlink("d00", filepath.Join(f.src, "link")); err != nil {
		t.Fatal(err)
	}
	// Trees record atimes, and the first read of a generated file (atime =
	// mtime) moves its atime under relatime: read everything once so that
	// unchanged directories give the same trees in every snapshot.
	readAll(t, f.src)
	f.backupFiles(t)

	// Second backup: a file rewritten, one removed, one added.
	later := gentree.Epoch.Add(time.Hour)
	writeFile(t, filepath.Join(f.src, "d03", "e3", "t00003.txt"), gentree.Text(newRand(91), 20000), 0o644, later)
	if err := os.Remove(filepath.Join(f.src, "d07", "e2", "t00007.txt")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(f.src, "rand", "new2.dat"), randomBytes(92, 600<<10), 0o600, later)
	f.backupFiles(t)

	// Third: a large file grows, a new directory.
	b0 := filepath.Join(f.src, "bin", "b000.bin")
	writeFile(t, b0, append(mustRead(t, b0), randomBytes(93, 300<<10)...), 0o644, later.Add(time.Hour))
	writeFile(t, filepath.Join(f.src, "extra", "notes.txt"), gentree.Text(newRand(94), 5000), 0o644, later.Add(time.Hour))
	f.backupFiles(t)

	// A stream: text and random runs, cut into small stream chunks.
	rng := newRand(95)
	var stream []byte
	for len(stream) < 1200<<10 {
		stream = append(stream, gentree.Text(rng, 200<<10)...)
		stream = append(stream, gentree.Random(rng, 100<<10)...)
	}
	out := mustRunBin(t, r.env, bytes.NewReader(stream), "backup", "--json", "--stdin", "--stdin-filename", streamName)
	f.snaps = append(f.snaps, fixtureSnap{id: lastSummary[backupSummary](t, out).SnapshotID, stream: stream})

	f.loadModel(t)
	return f
}

// readAll reads every regular file below root.
func readAll(t *testing.T, root string) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			_, err = os.ReadFile(p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// newCheapRepo is newRepo for these tests, which run a few hundred
// commands: the repository is made through the Go API, with 1 MiB packs
// (so that data spreads over several) and a cheap argon2id for its key
// (every command derives it, and DefaultKDF costs about 0.3 s of CPU per
// command). Everything else goes through the binary, with a short lock
// settle time (see fastLocks). The tests damage the repository and check
// it themselves after repairing it, so there is no final check.
func newCheapRepo(t *testing.T) *testRepo {
	t.Helper()
	r := &testRepo{t: t, dir: filepath.Join(t.TempDir(), "repo"), damaged: true}
	r.env = append(baseEnv(t), "REPO_REPOSITORY="+r.dir, "REPO_PASSWORD="+testPassword)
	fastLocks(r)
	be, err := local.Create(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	_, err = repo.Init(context.Background(), be, repo.InitOptions{
		Password: testPassword,
		KDF:      crypto.KDFParams{Time: 1, MemoryKiB: 1024, Threads: 1},
		PackSize: 1 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// backupFiles backs up the source and records its state.
func (f *repairFixture) backupFiles(t *testing.T) {
	t.Helper()
	sum := f.r.backup(f.src)
	f.snaps = append(f.snaps, fixtureSnap{id: sum.SnapshotID, state: scanTree(t, f.src)})
}

// loadModel reads every index file, snapshot and tree through the Go API.
func (f *repairFixture) loadModel(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	rp := openTestRepo(t, f.r)
	if _, err := rp.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	f.indexFiles = map[chunk.ID][]chunk.ID{}
	f.packs = map[chunk.ID][]index.Blob{}
	f.where = map[blobRef][]chunk.ID{}
	f.roots = map[string]chunk.ID{}
	f.trees = map[chunk.ID]*repo.Tree{}
	for _, name := range dirNames(t, filepath.Join(f.r.dir, "index")) {
		id, err := chunk.ParseID(name)
		if err != nil {
			t.Fatal(err)
		}
		file, err := rp.LoadIndexFile(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(file.Supersedes) > 0 {
			t.Fatalf("index file %s supersedes others: the fixture expects none", id.Short())
		}
		for _, p := range file.Packs {
			f.indexFiles[id] = append(f.indexFiles[id], p.ID)
			if _, dup := f.packs[p.ID]; dup {
				continue
			}
			f.packs[p.ID] = p.Blobs
			for _, b := range p.Blobs {
				k := blobRef{b.Type, b.ID}
				f.where[k] = append(f.where[k], p.ID)
			}
		}
	}
	var walk func(id chunk.ID)
	walk = func(id chunk.ID) {
		if f.trees[id] != nil {
			return
		}
		tr, err := rp.LoadTree(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		f.trees[id] = tr
		for _, n := range tr.Nodes {
			if n.Type == repo.NodeDir {
				walk(*n.Subtree)
			}
		}
	}
	for _, s := range f.snaps {
		id, err := chunk.ParseID(s.id)
		if err != nil {
			t.Fatal(err)
		}
		sn, err := rp.LoadSnapshot(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		f.roots[s.id] = sn.Tree
		walk(sn.Tree)
	}
	if got := len(packFiles(t, f.r.dir)); got != len(f.packs) {
		t.Fatalf("%d pack files, the index lists %d", got, len(f.packs))
	}
	t.Logf("fixture: %d snapshots, %d packs, %d blobs, %d index files", len(f.snaps), len(f.packs), len(f.where), len(f.indexFiles))
}

// dirNames lists the names in dir, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// packPath is where the local backend keeps pack id of repository dir.
func packPath(dir string, id chunk.ID) string {
	s := id.String()
	return filepath.Join(dir, "data", s[:2], s)
}

// packsWith returns the packs holding only blobs of type typ, sorted.
func (f *repairFixture) packsWith(typ index.BlobType) []chunk.ID {
	var out []chunk.ID
	for id, blobs := range f.packs {
		if !slices.ContainsFunc(blobs, func(b index.Blob) bool { return b.Type != typ }) {
			out = append(out, id)
		}
	}
	slices.SortFunc(out, chunk.ID.Compare)
	return out
}

// lostWith returns the blobs lost when the packs gone are gone and, in
// addition, the blobs extra are unreadable where they are: those with no
// copy elsewhere.
func (f *repairFixture) lostWith(gone []chunk.ID, extra ...blobRef) map[blobRef]bool {
	lost := map[blobRef]bool{}
	for k, packs := range f.where {
		survives := false
		for _, p := range packs {
			if !slices.Contains(gone, p) {
				survives = true
			}
		}
		if !survives {
			lost[k] = true
		}
	}
	for _, k := range extra {
		if len(f.where[k]) == 1 {
			lost[k] = true
		}
	}
	return lost
}

// expectBroken lists the broken entries of every snapshot given the lost
// blobs, as "snapshot path kind", the way list-broken-files reports them: a
// directory whose tree is lost is one entry of kind dir (path "/" for the
// root), and nothing below it is listed.
func (f *repairFixture) expectBroken(lost map[blobRef]bool) []string {
	var out []string
	var walk func(snap, p string, id chunk.ID)
	walk = func(snap, p string, id chunk.ID) {
		if lost[blobRef{index.TreeBlob, id}] {
			out = append(out, snap+" "+p+" dir")
			return
		}
		for _, n := range f.trees[id].Nodes {
			np := path.Join(p, n.Name)
			switch n.Type {
			case repo.NodeDir:
				walk(snap, np, *n.Subtree)
			case repo.NodeFile:
				if slices.ContainsFunc(n.Content, func(c chunk.ID) bool { return lost[blobRef{index.DataBlob, c}] }) {
					out = append(out, snap+" "+np+" file")
				}
			}
		}
	}
	for _, s := range f.snaps {
		walk(s.id, "/", f.roots[s.id])
	}
	sort.Strings(out)
	return out
}

// snapsIn counts the snapshots named in broken entries.
func snapsIn(broken []string) int {
	seen := map[string]bool{}
	for _, b := range broken {
		seen[strings.Fields(b)[0]] = true
	}
	return len(seen)
}

// pickDataPack returns the data pack whose loss breaks the most entries
// (in at least two snapshots) among those ok accepts, and those entries.
func (f *repairFixture) pickDataPack(t *testing.T, ok func(id chunk.ID, blobs []index.Blob) bool) (chunk.ID, []string) {
	t.Helper()
	var best chunk.ID
	var bestBroken []string
	for _, id := range f.packsWith(index.DataBlob) {
		if ok != nil && !ok(id, f.packs[id]) {
			continue
		}
		broken := f.expectBroken(f.lostWith([]chunk.ID{id}))
		if snapsIn(broken) >= 2 && len(broken) > len(bestBroken) {
			best, bestBroken = id, broken
		}
	}
	if bestBroken == nil {
		t.Fatalf("no data pack whose loss breaks files of two snapshots: the fixture needs rethinking")
	}
	return best, bestBroken
}

// latestBlobs are the data blobs of the newest file snapshot, which the
// source still holds.
func (f *repairFixture) latestBlobs() map[chunk.ID]bool {
	out := map[chunk.ID]bool{}
	var walk func(id chunk.ID)
	walk = func(id chunk.ID) {
		for _, n := range f.trees[id].Nodes {
			switch n.Type {
			case repo.NodeDir:
				walk(*n.Subtree)
			case repo.NodeFile:
				for _, c := range n.Content {
					out[c] = true
				}
			}
		}
	}
	walk(f.roots[f.snaps[2].id])
	return out
}

// --- damage ---

// writable makes the read-only file p writable.
func writable(t *testing.T, p string) {
	t.Helper()
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
}

func removeFile(t *testing.T, p string) {
	t.Helper()
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
}

// flipByte inverts the byte at off in file p (off < 0: from the end).
func flipByte(t *testing.T, p string, off int64) {
	t.Helper()
	writable(t, p)
	b := mustRead(t, p)
	if off < 0 {
		off += int64(len(b))
	}
	b[off] ^= 0xff
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// truncateFile cuts p to size bytes.
func truncateFile(t *testing.T, p string, size int64) {
	t.Helper()
	writable(t, p)
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
}

// packSize is the size of pack file id (before any damage: as the index
// describes it).
func (f *repairFixture) packSize(id chunk.ID) int64 {
	return mustStat(f.r.t, packPath(f.r.dir, id)).Size()
}

func mustStat(t *testing.T, p string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// --- running the commands ---

// checkFinding is one finding of check --json.
type checkFinding struct {
	Severity string `json:"severity"`
	Kind     string `json:"kind"`
	Object   string `json:"object"`
	Message  string `json:"message"`
}

func (c checkFinding) String() string {
	return fmt.Sprintf("%s %s %s: %s", c.Severity, c.Kind, c.Object, c.Message)
}

// repairCheckSummary is the summary of check --json (with notes).
type repairCheckSummary struct {
	Snapshots int `json:"snapshots"`
	Errors    int `json:"errors"`
	Notes     int `json:"notes"`
}

// runCheckJSON runs check --json with args and returns its findings, summary
// and exit code.
func runCheckJSON(t *testing.T, env []string, args ...string) ([]checkFinding, repairCheckSummary, int) {
	t.Helper()
	args = append([]string{"check", "--json"}, args...)
	stdout, stderr, code := runBin(t, env, nil, args...)
	var fs []checkFinding
	var sum repairCheckSummary
	seen := false
	for _, l := range jsonLines(t, stdout) {
		switch l["message_type"] {
		case "finding":
			var f checkFinding
			decodeLine(t, l, &f)
			fs = append(fs, f)
		case "summary":
			decodeLine(t, l, &sum)
			seen = true
		}
	}
	if !seen {
		t.Errorf("repo %s: no summary (exit %d)\nstdout:\n%s\nstderr:\n%s", quoteArgs(args), code, stdout, stderr)
	}
	return fs, sum, code
}

// wantFindings fails the test unless check with args exits want and
// reports, for each kind in kinds, a finding of that kind and severity
// whose object or message contains the text given ("" matches any).
func wantFindings(t *testing.T, env []string, args []string, want int, kinds ...[3]string) []checkFinding {
	t.Helper()
	fs, sum, code := runCheckJSON(t, env, args...)
	if code != want {
		t.Errorf("check %s: exit %d, want %d; findings:\n%s", strings.Join(args, " "), code, want, findingLines(fs))
	}
	if sum.Errors != countSeverity(fs, "error") {
		t.Errorf("check %s: summary counts %d errors, %d reported", strings.Join(args, " "), sum.Errors, countSeverity(fs, "error"))
	}
	for _, k := range kinds {
		if !slices.ContainsFunc(fs, func(f checkFinding) bool {
			return f.Severity == k[0] && f.Kind == k[1] && strings.Contains(f.Object+" "+f.Message, k[2])
		}) {
			t.Errorf("check %s: no %s finding of kind %s naming %q; findings:\n%s", strings.Join(args, " "), k[0], k[1], k[2], findingLines(fs))
		}
	}
	return fs
}

func countSeverity(fs []checkFinding, sev string) int {
	n := 0
	for _, f := range fs {
		if f.Severity == sev {
			n++
		}
	}
	return n
}

func findingLines(fs []checkFinding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "\t%v\n", f)
	}
	return b.String()
}

// brokenFileJSON is a broken_file line of list-broken-files --json and an
// entry of files_purged.
type brokenFileJSON struct {
	Snapshot     string `json:"snapshot"`
	Path         string `json:"path"`
	Kind         string `json:"kind"`
	MissingBlobs int    `json:"missing_blobs"`
	TotalBlobs   int    `json:"total_blobs"`
	BytesLost    int64  `json:"bytes_lost"`
	Size         uint64 `json:"size"`
}

func (b brokenFileJSON) key() string { return b.Snapshot + " " + b.Path + " " + b.Kind }

func brokenKeys(bfs []brokenFileJSON) []string {
	var out []string
	for _, b := range bfs {
		out = append(out, b.key())
	}
	sort.Strings(out)
	return out
}

// listBroken runs list-broken-files --json with args.
func listBroken(t *testing.T, env []string, args ...string) ([]brokenFileJSON, int, string) {
	t.Helper()
	args = append([]string{"list-broken-files", "--json"}, args...)
	stdout, stderr, code := runBin(t, env, nil, args...)
	var out []brokenFileJSON
	for _, l := range jsonLines(t, stdout) {
		if l["message_type"] == "broken_file" {
			var b brokenFileJSON
			decodeLine(t, l, &b)
			out = append(out, b)
		}
	}
	return out, code, stdout + stderr
}

// wantBroken fails the test unless list-broken-files with args lists
// exactly want (exit 1), or nothing (exit 0) when want is empty.
func wantBroken(t *testing.T, env []string, want []string, args ...string) []brokenFileJSON {
	t.Helper()
	got, code, out := listBroken(t, env, args...)
	wantCode := 0
	if len(want) > 0 {
		wantCode = exitError
	}
	if code != wantCode {
		t.Errorf("list-broken-files %s: exit %d, want %d\n%s", strings.Join(args, " "), code, wantCode, truncate(out, 4000))
	}
	if d := setDiff(brokenKeys(got), want); len(d) > 0 {
		t.Errorf("list-broken-files %s lists %d entries, want %d:\n\t%s", strings.Join(args, " "), len(got), len(want), strings.Join(d, "\n\t"))
	}
	for _, b := range got {
		if b.MissingBlobs < 1 || b.MissingBlobs > b.TotalBlobs {
			t.Errorf("list-broken-files: %s: %d of %d blobs missing", b.key(), b.MissingBlobs, b.TotalBlobs)
		}
	}
	return got
}

// repairSummary is the summary of check --repair --json.
type repairSummary struct {
	DryRun             bool             `json:"dry_run"`
	PacksReindexed     int              `json:"packs_reindexed"`
	PacksMissing       int              `json:"packs_missing"`
	PacksDamaged       int              `json:"packs_damaged"`
	BlobsSalvaged      int              `json:"blobs_salvaged"`
	IndexFilesReplaced int              `json:"index_files_replaced"`
	BlobsHealed        int              `json:"blobs_healed"`
	FilesHealed        []string         `json:"files_healed"`
	FilesPurged        []brokenFileJSON `json:"files_purged"`
	SnapshotsRewritten int              `json:"snapshots_rewritten"`
	SnapshotsRemoved   int              `json:"snapshots_removed"`
	BytesLost          int64            `json:"bytes_lost"`
}

// counts is the summary without its lists, for messages.
func (s repairSummary) counts() string {
	return fmt.Sprintf("reindexed=%d missing=%d damaged=%d salvaged=%d index_replaced=%d healed=%d/%d files purged=%d rewritten=%d removed=%d lost=%d",
		s.PacksReindexed, s.PacksMissing, s.PacksDamaged, s.BlobsSalvaged, s.IndexFilesReplaced, s.BlobsHealed,
		len(s.FilesHealed), len(s.FilesPurged), s.SnapshotsRewritten, s.SnapshotsRemoved, s.BytesLost)
}

// runRepairJSON runs the command args with --json (check --repair ... or
// purge-broken-files ...) and fails the test unless it exits 0 with a
// summary last. It returns the summary and the repair messages.
func runRepairJSON(t *testing.T, env []string, args ...string) (repairSummary, []string) {
	t.Helper()
	args = append(slices.Clone(args), "--json")
	stdout, stderr, code := runBin(t, env, nil, args...)
	if code != 0 {
		t.Fatalf("repo %s: exit %d\nstdout:\n%s\nstderr:\n%s", quoteArgs(args), code, truncate(stdout, 8000), stderr)
	}
	var msgs []string
	for _, l := range jsonLines(t, stdout) {
		if l["message_type"] == "repair" {
			msgs = append(msgs, l["message"].(string))
		}
	}
	sum := lastSummary[repairSummary](t, stdout)
	t.Logf("repo %s: %s\n\t%s", quoteArgs(args), sum.counts(), strings.Join(msgs, "\n\t"))
	return sum, msgs
}

// --- after the repair ---

// repairedSnap is a line of snapshots --json with the repair fields.
type repairedSnap struct {
	ID       string   `json:"id"`
	Original string   `json:"original"`
	Tags     []string `json:"tags"`
	Purged   []string `json:"purged"`
	Source   struct {
		Kind string `json:"kind"`
	} `json:"source"`
}

func listSnaps(t *testing.T, env []string) []repairedSnap {
	t.Helper()
	out := mustRunBin(t, env, nil, "snapshots", "--json")
	var sns []repairedSnap
	for _, line := range jsonLines(t, out) {
		if line["message_type"] == "snapshot" {
			var sn repairedSnap
			decodeLine(t, line, &sn)
			sns = append(sns, sn)
		}
	}
	return sns
}

// origin is the snapshot a (possibly rewritten) snapshot stands for.
func (s repairedSnap) origin() string {
	if s.Original != "" {
		return s.Original
	}
	return s.ID
}

// verifyRepaired checks the repository at env after a repair that purged
// purged: check --read-data passes with no notes; the snapshots whose root
// was purged are gone; the others are there once each, unchanged if
// nothing of theirs was purged, else rewritten (tagged "repaired", naming
// the original and the purged paths); and each restores exactly to the
// state it was backed up from, less the purged entries.
func (f *repairFixture) verifyRepaired(t *testing.T, env []string, purged []brokenFileJSON) {
	t.Helper()
	fs, sum, code := runCheckJSON(t, env, "--read-data")
	if code != 0 || sum.Notes != 0 || len(fs) != 0 {
		t.Errorf("check --read-data after the repair: exit %d, %d errors, %d notes:\n%s", code, sum.Errors, sum.Notes, findingLines(fs))
	}
	if names := dirNames(t, filepath.Join(envValue(env, "REPO_REPOSITORY"), "locks")); len(names) != 0 {
		t.Errorf("locks/ after the commands: %q, want it empty", names)
	}
	byOrigin := map[string][]brokenFileJSON{}
	for _, b := range purged {
		byOrigin[b.Snapshot] = append(byOrigin[b.Snapshot], b)
	}
	present := map[string][]repairedSnap{}
	for _, sn := range listSnaps(t, env) {
		present[sn.origin()] = append(present[sn.origin()], sn)
	}
	for _, fsn := range f.snaps {
		lost := byOrigin[fsn.id]
		rootLost := slices.ContainsFunc(lost, func(b brokenFileJSON) bool { return b.Path == "/" })
		sns := present[fsn.id]
		delete(present, fsn.id)
		switch {
		case rootLost:
			if len(sns) != 0 {
				t.Errorf("snapshot %.8s lost its root tree but is still there as %v", fsn.id, sns)
			}
			continue
		case len(sns) != 1:
			t.Errorf("snapshot %.8s: %d snapshots stand for it (%+v), want 1", fsn.id, len(sns), sns)
			if len(sns) == 0 {
				continue
			}
		}
		sn := sns[0]
		if len(lost) == 0 {
			if sn.ID != fsn.id {
				t.Errorf("snapshot %.8s lost nothing but was rewritten as %.8s", fsn.id, sn.ID)
			}
		} else {
			var paths []string
			for _, b := range lost {
				paths = append(paths, b.Path)
			}
			if sn.ID == fsn.id || !slices.Contains(sn.Tags, "repaired") || len(setDiff(sn.Purged, paths)) > 0 {
				t.Errorf("snapshot %.8s lost %q: now %.8s tags %q purged %q; want a new snapshot tagged repaired naming them", fsn.id, paths, sn.ID, sn.Tags, sn.Purged)
			}
		}
		f.checkRestore(t, env, sn.ID, fsn, lost)
	}
	for orig, sns := range present {
		t.Errorf("unexpected snapshots standing for %.8s: %+v", orig, sns)
	}
}

// checkRestore restores snapshot id, which stands for fsn, and compares it
// with fsn's source state less the lost entries.
func (f *repairFixture) checkRestore(t *testing.T, env []string, id string, fsn fixtureSnap, lost []brokenFileJSON) {
	t.Helper()
	target := filepath.Join(t.TempDir(), "target")
	mustRunBin(t, env, nil, "restore", id, "--target", target)
	if fsn.state == nil {
		got := scanTree(t, target)
		if len(lost) > 0 {
			if len(got) != 1 {
				t.Errorf("snapshot %.8s: the purged stream was restored: %v", id, got)
			}
			return
		}
		if b, err := os.ReadFile(filepath.Join(target, streamName)); err != nil || !bytes.Equal(b, fsn.stream) {
			t.Errorf("snapshot %.8s: restored stream differs from the one backed up (%v)", id, err)
		}
		return
	}
	want := maps.Clone(fsn.state)
	for _, b := range lost {
		rel, ok := strings.CutPrefix(b.Path, f.src+"/")
		if !ok {
			t.Errorf("snapshot %.8s: purged %q is not below the source %s", id, b.Path, f.src)
			continue
		}
		for k := range want {
			if k == rel || strings.HasPrefix(k, rel+"/") {
				delete(want, k)
			}
		}
	}
	compareTrees(t, want, scanTree(t, restoredPath(target, f.src)), false)
}

// wantPurged fails the test unless the summary purged exactly want.
func wantPurged(t *testing.T, sum repairSummary, want []string) {
	t.Helper()
	if d := setDiff(brokenKeys(sum.FilesPurged), want); len(d) > 0 {
		t.Errorf("repair purged %d entries, want %d:\n\t%s", len(sum.FilesPurged), len(want), strings.Join(d, "\n\t"))
	}
	var lost int64
	for _, b := range sum.FilesPurged {
		lost += b.BytesLost
	}
	if lost != sum.BytesLost {
		t.Errorf("repair: bytes_lost %d, the purged entries add up to %d", sum.BytesLost, lost)
	}
}

// wantQuarantined fails the test unless quarantine/ of dir holds exactly
// the objects ids (hex), and the packs among them are gone from data/.
func wantQuarantined(t *testing.T, dir string, ids ...string) {
	t.Helper()
	got := dirNames(t, filepath.Join(dir, "quarantine"))
	if d := setDiff(got, ids); len(d) > 0 {
		t.Errorf("quarantine/ holds %q:\n\t%s", got, strings.Join(d, "\n\t"))
	}
	for _, id := range ids {
		p := filepath.Join(dir, "data", id[:2], id)
		if _, err := os.Stat(p); err == nil {
			t.Errorf("quarantined %s is still in data/", id[:8])
		}
	}
}

// expectedSnapCounts says how many snapshots a purge of broken must
// rewrite and remove.
func expectedSnapCounts(broken []string) (rewritten, removed int) {
	roots := map[string]bool{}
	snaps := map[string]bool{}
	for _, b := range broken {
		fs := strings.Fields(b)
		snaps[fs[0]] = true
		if fs[1] == "/" {
			roots[fs[0]] = true
		}
	}
	return len(snaps) - len(roots), len(roots)
}

func wantSnapCounts(t *testing.T, sum repairSummary, broken []string) {
	t.Helper()
	rw, rm := expectedSnapCounts(broken)
	if sum.SnapshotsRewritten != rw || sum.SnapshotsRemoved != rm {
		t.Errorf("repair rewrote %d snapshots and removed %d, want %d and %d", sum.SnapshotsRewritten, sum.SnapshotsRemoved, rw, rm)
	}
}

// --- the cases ---

// TestE2ERepairDeletedDataPack: a data pack is deleted. check names it,
// list-broken-files lists exactly the files with blobs in it, in every
// snapshot, and check --repair --no-heal rewrites those snapshots without
// them.
func TestE2ERepairDeletedDataPack(t *testing.T) {
	t.Parallel()
	f := newRepairFixture(t)
	env := f.r.env
	id, broken := f.pickDataPack(t, nil)
	t.Logf("deleting data pack %s: %d broken entries in %d snapshots", id.Short(), len(broken), snapsIn(broken))
	removeFile(t, packPath(f.r.dir, id))

	wantFindings(t, env, nil, exitError, [3]string{"error", "pack", id.String()})
	wantFindings(t, env, []string{"--read-data"}, exitError, [3]string{"error", "pack", id.String()})
	listed := wantBroken(t, env, broken)
	for _, b := range listed {
		if b.Kind != "file" || b.BytesLost <= 0 {
			t.Errorf("list-broken-files: %s lost %d bytes, want a file that lost some", b.key(), b.BytesLost)
		}
	}
	wantBroken(t, env, broken, "--read-data")

	// The text output of a dry run: what it would do, each purged entry,
	// and the counts.
	before := repoListing(t, f.r.dir)
	out := mustRunBin(t, env, nil, "check", "--repair", "--no-heal", "--dry-run")
	purgedLines := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "purged: snapshot ") {
			purgedLines++
		}
	}
	if !strings.Contains(out, "would drop pack "+id.Short()) || purgedLines != len(broken) ||
		!strings.Contains(out, fmt.Sprintf("repair (dry run, nothing changed): 0 packs re-indexed, 1 missing, 0 damaged (0 blobs salvaged), %d index files replaced, 0 blobs healed (0 files), %d files purged", len(f.indexFiles), len(broken))) {
		t.Errorf("check --repair --no-heal --dry-run: %d purged lines, want %d; output:\n%s", purgedLines, len(broken), truncate(out, 4000))
	}
	if d := diffListings(before, repoListing(t, f.r.dir)); len(d) > 0 {
		t.Errorf("check --repair --dry-run changed the repository:\n\t%s", strings.Join(d, "\n\t"))
	}

	sum, _ := runRepairJSON(t, env, "check", "--repair", "--no-heal")
	wantPurged(t, sum, broken)
	wantSnapCounts(t, sum, broken)
	if sum.PacksMissing != 1 || sum.PacksDamaged != 0 || sum.BlobsHealed != 0 || sum.IndexFilesReplaced != len(f.indexFiles) {
		t.Errorf("repair: %s; want 1 pack missing, none damaged, nothing healed, %d index files replaced", sum.counts(), len(f.indexFiles))
	}
	f.verifyRepaired(t, env, sum.FilesPurged)
	wantBroken(t, env, nil)
	// A second repair finds nothing to do.
	again, _ := runRepairJSON(t, env, "check", "--repair", "--no-heal")
	if again.counts() != (repairSummary{}).counts() {
		t.Errorf("second repair did something: %s", again.counts())
	}
}

// TestE2ERepairDeletedTreePack: a pack of tree blobs is deleted. The
// directories whose trees it held are listed as kind dir (a snapshot whose
// root tree it held as "/"), nothing below them; repair removes the
// snapshots without a root and rewrites the others without those
// directories.
//
// The tree pack is found through the model (the index files read before
// the damage): of the packs holding only tree blobs, the one whose loss
// breaks the most snapshots, then the most entries. With 1 MiB packs the
// few KiB of trees a backup writes fill one pack of their own; the later
// snapshots share the trees of unchanged directories with the first.
func TestE2ERepairDeletedTreePack(t *testing.T) {
	t.Parallel()
	f := newRepairFixture(t)
	env := f.r.env
	var id chunk.ID
	var broken []string
	for _, p := range f.packsWith(index.TreeBlob) {
		br := f.expectBroken(f.lostWith([]chunk.ID{p}))
		if n, m := snapsIn(br), snapsIn(broken); n > m || n == m && len(br) > len(broken) {
			id, broken = p, br
		}
	}
	if snapsIn(broken) < 2 {
		t.Fatalf("no tree pack whose loss breaks two snapshots: %s breaks %q; the fixture needs rethinking", id.Short(), broken)
	}
	rw, rm := expectedSnapCounts(broken)
	if rw == 0 {
		t.Fatalf("deleting tree pack %s breaks %q: want a snapshot that loses directories but keeps its root", id.Short(), broken)
	}
	t.Logf("deleting tree pack %s (%d trees): %d broken entries", id.Short(), len(f.packs[id]), len(broken))
	removeFile(t, packPath(f.r.dir, id))

	wantFindings(t, env, nil, exitError, [3]string{"error", "pack", id.String()})
	for _, b := range broken {
		if fs := strings.Fields(b); fs[1] == "/" {
			if _, _, code := runBin(t, env, nil, "ls", fs[0]); code == 0 {
				t.Errorf("ls of snapshot %.8s, whose root tree is gone, exited 0", fs[0])
			}
		}
	}
	listed := wantBroken(t, env, broken)
	for _, b := range listed {
		if b.Kind != "dir" {
			t.Errorf("list-broken-files: %s: want kind dir (no data blob is lost)", b.key())
		}
	}

	sum, _ := runRepairJSON(t, env, "check", "--repair", "--no-heal")
	wantPurged(t, sum, broken)
	wantSnapCounts(t, sum, broken)
	t.Logf("%d snapshots to rewrite, %d to remove", rw, rm)
	f.verifyRepaired(t, env, sum.FilesPurged)
}

// TestE2ERepairTruncatedPack: a data pack is cut to half its bytes. The
// blobs that lie wholly before the cut are salvaged into new packs, the
// pack is moved to quarantine/, and only the files with blobs past the cut
// are purged.
func TestE2ERepairTruncatedPack(t *testing.T) {
	t.Parallel()
	f := newRepairFixture(t)
	env := f.r.env
	cutOf := func(id chunk.ID) int64 { return f.packSize(id) / 2 }
	split := func(id chunk.ID, blobs []index.Blob) (before, after []blobRef) {
		for _, b := range blobs {
			if int64(b.Offset)+int64(b.Length) <= cutOf(id) {
				before = append(before, blobRef{b.Type, b.ID})
			} else {
				after = append(after, blobRef{b.Type, b.ID})
			}
		}
		return before, after
	}
	id, _ := f.pickDataPack(t, func(id chunk.ID, blobs []index.Blob) bool {
		before, _ := split(id, blobs)
		return len(before) > 0
	})
	before, after := split(id, f.packs[id])
	broken := f.expectBroken(f.lostWith(nil, after...))
	t.Logf("truncating pack %s to %d bytes: %d blobs before the cut, %d after; %d broken entries", id.Short(), cutOf(id), len(before), len(after), len(broken))
	truncateFile(t, packPath(f.r.dir, id), cutOf(id))

	wantFindings(t, env, nil, exitError, [3]string{"error", "pack", id.String()})
	wantBroken(t, env, broken)

	sum, _ := runRepairJSON(t, env, "check", "--repair", "--no-heal")
	if sum.BlobsSalvaged != len(before) || sum.PacksDamaged != 1 {
		t.Errorf("repair: %s; want 1 damaged pack, %d blobs salvaged", sum.counts(), len(before))
	}
	wantPurged(t, sum, broken)
	wantSnapCounts(t, sum, broken)
	wantQuarantined(t, f.r.dir, id.String())
	f.verifyRepaired(t, env, sum.FilesPurged)
}

// TestE2ERepairFlippedByte: one byte inside a blob of a data pack is
// flipped. Only reading the data finds it; list-broken-files --read-data
// lists the files with that blob, and check --repair --read-data --no-heal
// salvages the pack's other blobs and purges them.
func TestE2ERepairFlippedByte(t *testing.T) {
	t.Parallel()
	f := newRepairFixture(t)
	env := f.r.env
	// The blob (in a pack of several) referenced by the most entries.
	var bad index.Blob
	var badPack chunk.ID
	var broken []string
	for _, id := range f.packsWith(index.DataBlob) {
		if len(f.packs[id]) < 2 {
			continue
		}
		for _, b := range f.packs[id] {
			br := f.expectBroken(f.lostWith(nil, blobRef{b.Type, b.ID}))
			if len(br) > len(broken) {
				bad, badPack, broken = b, id, br
			}
		}
	}
	if snapsIn(broken) < 2 {
		t.Fatalf("no blob referenced by two snapshots: the fixture needs rethinking")
	}
	t.Logf("flipping a byte of blob %s in pack %s: %d broken entries", bad.ID.Short(), badPack.Short(), len(broken))
	flipByte(t, packPath(f.r.dir, badPack), int64(bad.Offset)+int64(bad.Length)/2)

	if fs, _, code := runCheckJSON(t, env); code != 0 {
		t.Errorf("check without --read-data: exit %d, want 0 (the sizes are right)\n%s", code, findingLines(fs))
	}
	wantFindings(t, env, []string{"--read-data"}, exitError, [3]string{"error", "pack", badPack.String()})
	wantBroken(t, env, nil) // without reading the data nothing is seen
	wantBroken(t, env, broken, "--read-data")

	sum, _ := runRepairJSON(t, env, "check", "--repair", "--read-data", "--no-heal")
	if sum.BlobsSalvaged != len(f.packs[badPack])-1 || sum.PacksDamaged != 1 {
		t.Errorf("repair: %s; want 1 damaged pack, %d blobs salvaged", sum.counts(), len(f.packs[badPack])-1)
	}
	wantPurged(t, sum, broken)
	wantSnapCounts(t, sum, broken)
	wantQuarantined(t, f.r.dir, badPack.String())
	f.verifyRepaired(t, env, sum.FilesPurged)
}

// TestE2ERepairCorruptPackHeader: the sealed header at the end of a data
// pack is damaged. The index still says where every blob is, so repair
// salvages all of them and nothing is lost.
func TestE2ERepairCorruptPackHeader(t *testing.T) {
	t.Parallel()
	f := newRepairFixture(t)
	env := f.r.env
	id, _ := f.pickDataPack(t, func(id chunk.ID, blobs []index.Blob) bool { return len(blobs) >= 2 })
	// The last 4 bytes are the header's length; the byte before them is
	// the end of the sealed header (its authentication tag).
	flipByte(t, packPath(f.r.dir, id), -5)

	if fs, _, code := runCheckJSON(t, env); code != 0 {
		t.Errorf("check without --read-data: exit %d, want 0 (the sizes are right)\n%s", code, findingLines(fs))
	}
	wantFindings(t, env, []string{"--read-data"}, exitError, [3]string{"error", "pack", "header"})
	wantBroken(t, env, nil, "--read-data")

	sum, _ := runRepairJSON(t, env, "check", "--repair", "--read-data")
	if sum.BlobsSalvaged != len(f.packs[id]) || sum.PacksDamaged != 1 || len(sum.FilesPurged) != 0 || sum.BytesLost != 0 {
		t.Errorf("repair: %s; want 1 damaged pack, all %d blobs salvaged, nothing purged", sum.counts(), len(f.packs[id]))
	}
	wantQuarantined(t, f.r.dir, id.String())
	f.verifyRepaired(t, env, nil)
}

// biggestIndexFile is the index file listing the most packs.
func (f *repairFixture) biggestIndexFile() chunk.ID {
	var best chunk.ID
	for id, packs := range f.indexFiles {
		if len(packs) > len(f.indexFiles[best]) || len(packs) == len(f.indexFiles[best]) && id.Compare(best) < 0 {
			best = id
		}
	}
	return best
}

// TestE2ERepairIndexFile: an index file is deleted, or overwritten with
// garbage, while its packs are intact. Nothing is lost: check reports the
// packs as unindexed and their blobs as missing from the index,
// list-broken-files lists nothing (a repair keeps those blobs), and repair
// re-indexes the packs from their headers.
func TestE2ERepairIndexFile(t *testing.T) {
	t.Parallel()
	for _, garbage := range []bool{false, true} {
		name := "deleted"
		if garbage {
			name = "garbage"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newRepairFixture(t)
			env := f.r.env
			id := f.biggestIndexFile()
			p := filepath.Join(f.r.dir, "index", id.String())
			kinds := [][3]string{
				{"note", "pack", f.indexFiles[id][0].String()},
				{"error", "file", "not in the index"},
			}
			if garbage {
				writable(t, p)
				if err := os.WriteFile(p, randomBytes(96, int(mustStat(t, p).Size())), 0o600); err != nil {
					t.Fatal(err)
				}
				kinds = append(kinds, [3]string{"error", "index", id.String()})
			} else {
				removeFile(t, p)
			}
			t.Logf("index file %s (%d packs) %s", id.Short(), len(f.indexFiles[id]), name)

			wantFindings(t, env, nil, exitError, kinds...)
			wantBroken(t, env, nil)

			sum, _ := runRepairJSON(t, env, "check", "--repair", "--no-heal")
			replaced := len(f.indexFiles)
			if !garbage {
				replaced--
			}
			if sum.PacksReindexed != len(f.indexFiles[id]) || sum.IndexFilesReplaced != replaced ||
				len(sum.FilesPurged) != 0 || sum.PacksMissing != 0 || sum.PacksDamaged != 0 || sum.SnapshotsRewritten != 0 {
				t.Errorf("repair: %s; want %d packs re-indexed, %d index files replaced, nothing else", sum.counts(), len(f.indexFiles[id]), replaced)
			}
			if n := len(dirNames(t, filepath.Join(f.r.dir, "index"))); n != 1 {
				t.Errorf("index/ holds %d files after the repair, want the one replacement", n)
			}
			f.verifyRepaired(t, env, nil)
		})
	}
}

// TestE2ERepairCorruptSnapshot: a snapshot file is damaged. check reports
// it, repair moves it to quarantine/, and the other snapshots are intact.
func TestE2ERepairCorruptSnapshot(t *testing.T) {
	t.Parallel()
	f := newRepairFixture(t)
	env := f.r.env
	bad := f.snaps[1].id
	flipByte(t, filepath.Join(f.r.dir, "snapshots", bad), 40)

	wantFindings(t, env, nil, exitError, [3]string{"error", "snapshot", bad})
	// Everything in the snapshot is out of reach: an error, like the
	// error exit of snapshots for an unreadable one.
	_, code, out := listBroken(t, env)
	if !strings.Contains(out, bad) || code != exitError {
		t.Errorf("list-broken-files with an unreadable snapshot: exit %d, want %d naming %.8s:\n%s", code, exitError, bad, out)
	}

	sum, _ := runRepairJSON(t, env, "check", "--repair", "--no-heal")
	if sum.SnapshotsRemoved != 1 || sum.SnapshotsRewritten != 0 || len(sum.FilesPurged) != 0 || sum.IndexFilesReplaced != 0 {
		t.Errorf("repair: %s; want just 1 snapshot removed", sum.counts())
	}
	wantQuarantined(t, f.r.dir, bad)
	// The snapshot is gone as if its root were lost.
	f.verifyRepaired(t, env, []brokenFileJSON{{Snapshot: bad, Path: "/", Kind: "dir"}})
}

// TestE2ERepairUnindexedPack: a backup killed after it wrote packs leaves
// packs that no index lists. check notes them and passes; repair
// re-indexes them; then check has nothing to say.
func TestE2ERepairUnindexedPack(t *testing.T) {
	t.Parallel()
	f := newRepairFixture(t)
	env := f.r.env
	big := filepath.Join(t.TempDir(), "big")
	generate(t, big, gentree.Spec{Seed: 97, RandFiles: 12, RandSize: 2 << 20})
	before := packFiles(t, f.r.dir)
	signalBackupMidway(t, f.r, big, syscall.SIGKILL)
	var added []string
	for p := range packFiles(t, f.r.dir) {
		if _, ok := before[p]; !ok {
			added = append(added, packID(p))
		}
	}
	t.Logf("the killed backup left %d packs", len(added))
	if len(added) == 0 {
		t.Fatal("the killed backup left no pack")
	}
	// The kill may also have left an index file for some of them (the
	// saver writes index files as it goes): those packs are indexed.
	var unindexed []string
	f2 := &repairFixture{r: f.r}
	f2.loadIndexOnly(t)
	for _, p := range added {
		id, _ := chunk.ParseID(p)
		if _, ok := f2.packs[id]; !ok {
			unindexed = append(unindexed, p)
		}
	}
	if len(unindexed) == 0 {
		t.Skip("every pack of the killed backup was indexed")
	}
	var kinds [][3]string
	for _, p := range unindexed {
		kinds = append(kinds, [3]string{"note", "pack", p})
	}
	fs := wantFindings(t, env, nil, 0, kinds...)
	if countSeverity(fs, "note") != len(unindexed) {
		t.Errorf("check: %d notes, want one per unindexed pack (%d):\n%s", countSeverity(fs, "note"), len(unindexed), findingLines(fs))
	}
	wantBroken(t, env, nil)

	sum, _ := runRepairJSON(t, env, "check", "--repair", "--no-heal")
	if sum.PacksReindexed != len(unindexed) || len(sum.FilesPurged) != 0 || sum.PacksDamaged != 0 {
		t.Errorf("repair: %s; want %d packs re-indexed and nothing lost", sum.counts(), len(unindexed))
	}
	f.verifyRepaired(t, env, nil)
}

// loadIndexOnly reads just the index files of f.r through the Go API.
func (f *repairFixture) loadIndexOnly(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	rp := openTestRepo(t, f.r)
	f.packs = map[chunk.ID][]index.Blob{}
	for _, name := range dirNames(t, filepath.Join(f.r.dir, "index")) {
		id, err := chunk.ParseID(name)
		if err != nil {
			t.Fatal(err)
		}
		file, err := rp.LoadIndexFile(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range file.Packs {
			f.packs[p.ID] = p.Blobs
		}
	}
}

// TestE2ERepairHeal: a data pack is deleted while the source still holds
// the same content. check --repair reads the snapshot paths and uploads
// the missing blobs again: nothing is purged, no snapshot is rewritten, and
// every snapshot restores exactly.
func TestE2ERepairHeal(t *testing.T) {
	t.Parallel()
	f := newRepairFixture(t)
	env := f.r.env
	current := f.latestBlobs()
	id, broken := f.pickDataPack(t, func(id chunk.ID, blobs []index.Blob) bool {
		return !slices.ContainsFunc(blobs, func(b index.Blob) bool { return !current[b.ID] })
	})
	t.Logf("deleting data pack %s (%d blobs, all in the source): %d broken entries", id.Short(), len(f.packs[id]), len(broken))
	removeFile(t, packPath(f.r.dir, id))
	wantBroken(t, env, broken)

	sum, _ := runRepairJSON(t, env, "check", "--repair")
	if sum.BlobsHealed != len(f.packs[id]) || len(sum.FilesPurged) != 0 || sum.SnapshotsRewritten != 0 || sum.SnapshotsRemoved != 0 {
		t.Errorf("repair: %s; want all %d blobs healed, nothing purged or rewritten", sum.counts(), len(f.packs[id]))
	}
	if d := setDiff(sum.FilesHealed, healedNames(broken)); len(d) > 0 {
		t.Errorf("repair healed %q:\n\t%s", sum.FilesHealed, strings.Join(d, "\n\t"))
	}
	f.verifyRepaired(t, env, nil)
}

// healedNames renders broken entries as files_healed does.
func healedNames(broken []string) []string {
	var out []string
	for _, b := range broken {
		fs := strings.Fields(b)
		out = append(out, fmt.Sprintf("snapshot %s %s", fs[0][:8], fs[1]))
	}
	return out
}

// TestE2EPurgeBrokenFiles: purge-broken-files does not heal, even when
// the source is there: it purges exactly what list-broken-files lists.
func TestE2EPurgeBrokenFiles(t *testing.T) {
	t.Parallel()
	f := newRepairFixture(t)
	env := f.r.env
	current := f.latestBlobs()
	id, broken := f.pickDataPack(t, func(id chunk.ID, blobs []index.Blob) bool {
		return !slices.ContainsFunc(blobs, func(b index.Blob) bool { return !current[b.ID] })
	})
	removeFile(t, packPath(f.r.dir, id))
	listed := wantBroken(t, env, broken)

	before := repoListing(t, f.r.dir)
	dry, _ := runRepairJSON(t, env, "purge-broken-files", "--dry-run")
	if d := diffListings(before, repoListing(t, f.r.dir)); len(d) > 0 {
		t.Errorf("purge-broken-files --dry-run changed the repository:\n\t%s", strings.Join(d, "\n\t"))
	}
	sum, _ := runRepairJSON(t, env, "purge-broken-files")
	if sum.BlobsHealed != 0 || len(sum.FilesHealed) != 0 {
		t.Errorf("purge-broken-files healed: %s", sum.counts())
	}
	if !dry.DryRun || sum.DryRun {
		t.Errorf("dry_run is %v for the dry run and %v for the real one", dry.DryRun, sum.DryRun)
	}
	dry.DryRun = false
	if dry.counts() != sum.counts() || !slices.Equal(brokenKeys(dry.FilesPurged), brokenKeys(sum.FilesPurged)) {
		t.Errorf("purge-broken-files --dry-run said %s, the real run did %s", dry.counts(), sum.counts())
	}
	wantPurged(t, sum, brokenKeys(listed))
	f.verifyRepaired(t, env, sum.FilesPurged)
}

// repoListing describes every file and directory under dir: path, mode,
// and for files size and SHA-256.
func repoListing(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		line := fmt.Sprintf("%s %v", rel, fi.Mode())
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %d %x", fi.Size(), sha256.Sum256(b))
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffListings(before, after []string) []string {
	return setDiff(after, before)
}

// damageSeveral deletes one data pack (the one pickDataPack picks) and
// cuts another in half (one with blobs before the cut), and returns the
// broken entries without healing and the two packs.
func (f *repairFixture) damageSeveral(t *testing.T) (broken []string, deleted, cut chunk.ID) {
	t.Helper()
	deleted, _ = f.pickDataPack(t, nil)
	var after []blobRef
	for _, id := range f.packsWith(index.DataBlob) {
		if id == deleted {
			continue
		}
		half := f.packSize(id) / 2
		var before, aft []blobRef
		for _, b := range f.packs[id] {
			if int64(b.Offset)+int64(b.Length) <= half {
				before = append(before, blobRef{b.Type, b.ID})
			} else {
				aft = append(aft, blobRef{b.Type, b.ID})
			}
		}
		if len(before) > 0 && len(aft) > 0 {
			cut, after = id, aft
			break
		}
	}
	if cut.IsNull() {
		t.Fatal("no pack with blobs on both sides of its middle: the fixture needs rethinking")
	}
	broken = f.expectBroken(f.lostWith([]chunk.ID{deleted}, after...))
	removeFile(t, packPath(f.r.dir, deleted))
	truncateFile(t, packPath(f.r.dir, cut), f.packSize(cut)/2)
	t.Logf("deleted pack %s, cut pack %s: %d broken entries", deleted.Short(), cut.Short(), len(broken))
	return broken, deleted, cut
}

// TestE2ERepairCheckDoesNotModify: check, check --read-data and
// list-broken-files leave a damaged repository exactly as it was, and no
// lock behind.
func TestE2ERepairCheckDoesNotModify(t *testing.T) {
	t.Parallel()
	f := newRepairFixture(t)
	env := f.r.env
	f.damageSeveral(t)
	removeFile(t, filepath.Join(f.r.dir, "index", f.biggestIndexFile().String()))
	flipByte(t, filepath.Join(f.r.dir, "snapshots", f.snaps[1].id), 40)

	before := repoListing(t, f.r.dir)
	for _, args := range [][]string{{"check"}, {"check", "--read-data"}, {"list-broken-files"}, {"list-broken-files", "--read-data"}} {
		stdout, stderr, code := runBin(t, env, nil, args...)
		if code != exitError {
			t.Errorf("repo %s on a damaged repository: exit %d, want %d\n%s%s", quoteArgs(args), code, exitError, truncate(stdout, 2000), stderr)
		}
		if d := diffListings(before, repoListing(t, f.r.dir)); len(d) > 0 {
			t.Errorf("repo %s changed the repository:\n\t%s", quoteArgs(args), strings.Join(d, "\n\t"))
		}
	}
	if names := dirNames(t, filepath.Join(f.r.dir, "locks")); len(names) != 0 {
		t.Errorf("locks/ after the checks: %q", names)
	}
}

// TestE2ERepairDryRun: check --repair --dry-run changes nothing and says
// what a real run then does: the same summary, the same actions.
func TestE2ERepairDryRun(t *testing.T) {
	t.Parallel()
	f := newRepairFixture(t)
	env := f.r.env
	broken, _, _ := f.damageSeveral(t)
	// Healing too: the source holds the latest state, so files of the
	// newest snapshot heal and older versions are purged.
	before := repoListing(t, f.r.dir)
	dry, dryMsgs := runRepairJSON(t, env, "check", "--repair", "--dry-run")
	if d := diffListings(before, repoListing(t, f.r.dir)); len(d) > 0 {
		t.Errorf("check --repair --dry-run changed the repository:\n\t%s", strings.Join(d, "\n\t"))
	}
	wantBroken(t, env, broken)

	sum, msgs := runRepairJSON(t, env, "check", "--repair")
	if !dry.DryRun || sum.DryRun {
		t.Errorf("dry_run is %v for the dry run and %v for the real one", dry.DryRun, sum.DryRun)
	}
	if dry.counts() != sum.counts() {
		t.Errorf("the dry run said\n\t%s\nthe real run did\n\t%s", dry.counts(), sum.counts())
	}
	if d := setDiff(brokenKeys(dry.FilesPurged), brokenKeys(sum.FilesPurged)); len(d) > 0 {
		t.Errorf("the dry run would purge other entries than the real run did:\n\t%s", strings.Join(d, "\n\t"))
	}
	if d := setDiff(dry.FilesHealed, sum.FilesHealed); len(d) > 0 {
		t.Errorf("the dry run would heal other files than the real run did:\n\t%s", strings.Join(d, "\n\t"))
	}
	var stripped []string
	for _, m := range dryMsgs {
		stripped = append(stripped, strings.TrimPrefix(m, "would "))
	}
	if d := setDiff(stripped, msgs); len(d) > 0 {
		t.Errorf("the dry run's actions differ from the real run's:\n\t%s", strings.Join(d, "\n\t"))
	}
	if sum.BlobsHealed == 0 || len(sum.FilesPurged) == 0 {
		t.Errorf("repair: %s; want some blobs healed and some files purged", sum.counts())
	}
	// What was purged is what is still broken after healing: a subset of
	// what list-broken-files listed, and the rest healed.
	if d := setDiff(append(brokenKeys(sum.FilesPurged), healedKeys(t, sum.FilesHealed, broken)...), broken); len(d) > 0 {
		t.Errorf("purged and healed entries are not what list-broken-files listed:\n\t%s", strings.Join(d, "\n\t"))
	}
	f.verifyRepaired(t, env, sum.FilesPurged)
}

// healedKeys maps files_healed entries back to the broken entries they
// name.
func healedKeys(t *testing.T, healed, broken []string) []string {
	t.Helper()
	var out []string
	for _, h := range healed {
		i := slices.IndexFunc(broken, func(b string) bool { return healedNames([]string{b})[0] == h })
		if i < 0 {
			t.Errorf("healed %q was not broken", h)
			continue
		}
		out = append(out, broken[i])
	}
	return out
}

// repoCopy is a copy of a repository directory with its own cache.
func repoCopy(t *testing.T, env []string, from string) (dir string, cenv []string) {
	t.Helper()
	base := t.TempDir()
	dir = filepath.Join(base, "repo")
	copyDir(t, from, dir)
	cenv = envWith(envWith(env, "REPO_REPOSITORY", dir), "REPO_CACHE_DIR", filepath.Join(base, "cache"))
	return dir, cenv
}

// repoState is what a repository's snapshots restore to, keyed by the
// snapshot each stands for (its original when rewritten); dups lists the
// originals that more than one snapshot stands for.
type repoState struct {
	snaps map[string]map[string]entry
	dups  []string
}

func describeRepo(t *testing.T, env []string) repoState {
	t.Helper()
	st := repoState{snaps: map[string]map[string]entry{}}
	for _, sn := range listSnaps(t, env) {
		target := filepath.Join(t.TempDir(), "target")
		mustRunBin(t, env, nil, "restore", sn.ID, "--target", target)
		m := scanTree(t, target)
		delete(m, ".")
		if _, dup := st.snaps[sn.origin()]; dup {
			st.dups = append(st.dups, sn.origin())
		}
		st.snaps[sn.origin()] = m
	}
	return st
}

// compareStates fails the test unless got has the snapshots of want, once
// each, restoring to the same trees.
func compareStates(t *testing.T, want, got repoState) {
	t.Helper()
	if len(got.dups) > 0 {
		t.Errorf("several snapshots stand for %q", got.dups)
	}
	if d := setDiff(sortedKeys(got.snaps), sortedKeys(want.snaps)); len(d) > 0 {
		t.Errorf("the snapshots differ from those of an uninterrupted repair:\n\t%s", strings.Join(d, "\n\t"))
	}
	for id, w := range want.snaps {
		if g, ok := got.snaps[id]; ok {
			compareTrees(t, w, g, false)
		}
	}
}

// TestE2ERepairInterrupted: check --repair killed at random moments and
// run again ends where an uninterrupted repair of the same damage ends,
// and is never blocked by the lock the killed run left. The moments
// between the steps that write are also made by hand through the Go API,
// so that each is tested whatever the timing: after the salvage, after the
// index replacement (before the quarantine), and between saving a
// rewritten snapshot and removing its original.
func TestE2ERepairInterrupted(t *testing.T) {
	t.Parallel()
	f := newRepairFixture(t)
	broken, deleted, cut := f.damageSeveral(t)
	damaged := filepath.Join(t.TempDir(), "damaged")
	copyDir(t, f.r.dir, damaged)

	// The uninterrupted repair.
	refDir, refEnv := repoCopy(t, f.r.env, damaged)
	start := time.Now()
	refSum, _ := runRepairJSON(t, refEnv, "check", "--repair", "--no-heal")
	took := time.Since(start)
	wantPurged(t, refSum, broken)
	f.verifyRepaired(t, refEnv, refSum.FilesPurged)
	ref := describeRepo(t, refEnv)

	// Kills spread over the time an uninterrupted repair takes (at most
	// 300 ms), so that most land while it runs.
	span := min(max(took, 20*time.Millisecond), 300*time.Millisecond)
	t.Logf("the uninterrupted repair took %v; killing within %v", took, span)
	kills := 0
	t.Cleanup(func() {
		if kills == 0 && !t.Failed() {
			t.Errorf("no repair was killed before it ended")
		}
	})
	for seed := uint64(1); seed <= 10; seed++ {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			dir, env := repoCopy(t, f.r.env, damaged)
			delay := time.Duration(newRand(seed).Int64N(int64(span)))
			killed := killRepairAfter(t, env, delay)
			t.Logf("killed after %v: %v", delay.Round(time.Millisecond), killed)
			if killed {
				kills++
			}
			f.finishRepair(t, env)
			compareStates(t, ref, describeRepo(t, env))
			// The killed run's lock is gone. A temporary file the backend
			// was writing when the kill came may be left (in any
			// directory; nothing lists or removes those).
			for _, name := range dirNames(t, filepath.Join(dir, "locks")) {
				if strings.HasPrefix(name, ".tmp-") {
					t.Logf("locks/ at the end holds the killed run's temporary file %s", name)
				} else {
					t.Errorf("locks/ at the end holds %s", name)
				}
			}
		})
	}

	// salvage does by hand what the salvage step does: the blobs of the
	// cut pack that lie before the cut are stored again, with their own
	// index file.
	salvage := func(t *testing.T, rp *repo.Repository) {
		ctx := context.Background()
		if _, err := rp.LoadIndex(ctx); err != nil {
			t.Fatal(err)
		}
		s := rp.NewSaver(ctx)
		half := mustStat(t, packPath(damaged, cut)).Size()
		n := 0
		for _, b := range f.packs[cut] {
			if int64(b.Offset)+int64(b.Length) > half {
				continue
			}
			plain, err := rp.LoadBlobAt(ctx, index.PackedBlob{Blob: b, Pack: cut}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.SaveBlobAgain(b.Type, plain); err != nil {
				t.Fatal(err)
			}
			n++
		}
		if _, err := s.Finish(); err != nil {
			t.Fatal(err)
		}
		if n != refSum.BlobsSalvaged {
			t.Fatalf("salvaged %d blobs by hand, the repair %d", n, refSum.BlobsSalvaged)
		}
	}
	// replaceIndex does by hand what the index step does: one index file
	// lists the intact packs of the old ones and supersedes them, and they
	// are removed. An index file written since (the salvage's) stays.
	replaceIndex := func(t *testing.T, rp *repo.Repository, dir string) {
		nf := &index.File{}
		for id := range f.indexFiles {
			nf.Supersedes = append(nf.Supersedes, id)
		}
		slices.SortFunc(nf.Supersedes, chunk.ID.Compare)
		for id, blobs := range f.packs {
			if id != deleted && id != cut {
				nf.Packs = append(nf.Packs, index.Pack{ID: id, Blobs: blobs})
			}
		}
		slices.SortFunc(nf.Packs, func(a, b index.Pack) int { return a.ID.Compare(b.ID) })
		if _, err := rp.SaveUnpacked(context.Background(), backend.IndexFile, nf.Encode()); err != nil {
			t.Fatal(err)
		}
		for id := range f.indexFiles {
			removeFile(t, filepath.Join(dir, "index", id.String()))
		}
	}
	t.Run("killed after the salvage", func(t *testing.T) {
		dir, env := repoCopy(t, f.r.env, damaged)
		salvage(t, openTestRepo(t, &testRepo{t: t, dir: dir, env: env}))
		f.finishRepair(t, env)
		compareStates(t, ref, describeRepo(t, env))
		wantQuarantined(t, dir, cut.String())
	})
	t.Run("killed before the quarantine", func(t *testing.T) {
		dir, env := repoCopy(t, f.r.env, damaged)
		rp := openTestRepo(t, &testRepo{t: t, dir: dir, env: env})
		salvage(t, rp)
		replaceIndex(t, rp, dir)
		f.finishRepair(t, env)
		compareStates(t, ref, describeRepo(t, env))
		wantQuarantined(t, dir, cut.String())
	})

	t.Run("killed between new snapshot and removal", func(t *testing.T) {
		// The repaired repository with one original back.
		var orig string
		for _, b := range refSum.FilesPurged {
			if b.Path != "/" {
				orig = b.Snapshot
				break
			}
		}
		if orig == "" {
			t.Skip("no snapshot was rewritten")
		}
		dir, env := repoCopy(t, f.r.env, refDir)
		from := filepath.Join(damaged, "snapshots", orig)
		if err := os.WriteFile(filepath.Join(dir, "snapshots", orig), mustRead(t, from), 0o400); err != nil {
			t.Fatal(err)
		}
		sum, _ := runRepairJSON(t, env, "check", "--repair", "--no-heal")
		if sum.SnapshotsRemoved+sum.SnapshotsRewritten != 1 {
			t.Errorf("repair: %s; want the original dealt with", sum.counts())
		}
		if names := dirNames(t, filepath.Join(dir, "snapshots")); slices.Contains(names, orig) {
			t.Errorf("the original %.8s is still there", orig)
		}
		f.finishRepair(t, env)
		compareStates(t, ref, describeRepo(t, env))
	})
}

// finishRepair runs check --repair --no-heal until it exits 0 (a few
// times at most; never refused for a lock), then check --read-data, which
// must pass.
func (f *repairFixture) finishRepair(t *testing.T, env []string) {
	t.Helper()
	for i := 1; ; i++ {
		stdout, stderr, code := runBin(t, env, nil, "check", "--repair", "--no-heal")
		if code == 0 {
			break
		}
		if code == exitLocked || i == 3 {
			t.Fatalf("check --repair, run %d: exit %d\n%s%s", i, code, stdout, stderr)
		}
		t.Logf("check --repair, run %d: exit %d\n%s%s", i, code, stdout, stderr)
	}
	if fs, sum, code := runCheckJSON(t, env, "--read-data"); code != 0 || sum.Notes != 0 {
		t.Errorf("check --read-data after the repair: exit %d, %d notes\n%s", code, sum.Notes, findingLines(fs))
	}
}

// killRepairAfter starts check --repair --no-heal and sends it SIGKILL
// after delay; it reports whether the signal came before the repair ended.
func killRepairAfter(t *testing.T, env []string, delay time.Duration) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := repoCommand(t, ctx, env, nil, "check", "--repair", "--no-heal")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("check --repair ended before the kill: %v\n%s", err, out.String())
		}
		return false
	case <-time.After(delay):
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatal(err)
	}
	err := <-done
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL {
		return true
	}
	if err != nil {
		t.Fatalf("check --repair: %v\n%s", err, out.String())
	}
	return false
}
