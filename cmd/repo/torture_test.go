package main

// TestTorture is the crash-torture harness (make torture): it runs the
// real binary, built with -tags faults, against one local repository and
// kills it with SIGKILL at random moments, or makes the disk fail under it
// (REPO_FAULTS, see backend/local/faults.go), round after round, checking
// after every round that the repository is sound and that no committed
// snapshot went missing, and every few rounds that every snapshot restores
// to exactly what was backed up.
//
//	REPO_TORTURE_KILLS  kills to reach (default 30: the run in make test)
//	REPO_TORTURE_SEED   seed of every random choice (default fixed)
//
// The choices (operation, data, kill delay, fault) repeat with the seed;
// where a kill lands in the command's work depends on timing, so a
// failing run keeps its repository (the path is logged) for inspection.
//
// The rules it enforces:
//
//   - A snapshot is committed when its backup exited 0, and then it must be
//     listed until a forget of it exits 0. A killed or failed backup may
//     leave a snapshot; once listed, it too must stay, and restore to
//     exactly what that backup read.
//   - A forget that exits 0 removes its snapshot; after a killed or failed
//     one either state is fine. Prune never adds or removes snapshots.
//   - check --repair (after a pack was deleted, truncated or had a byte
//     flipped) may replace snapshot X by one whose "original" is X's
//     original; that one must restore to X's content less the entries its
//     "purged" list names (a purged directory takes what is below it). The
//     newly purged paths must be among what list-broken-files reported
//     before the repair, unless the repair was interrupted (the documented
//     weaker window of docs/repair.md). X may disappear without a
//     replacement only if list-broken-files reported its root lost: that
//     is counted as lost to damage, not as a lost snapshot.
//   - After every round check exits 0 (notes are fine) and no command
//     meets a lock it cannot clear by itself (exit 11): a killed process's
//     lock is removed by the next command that it is in the way of.
//   - Every tortureVerifyEvery rounds and at the end, check --read-data
//     exits 0 and every snapshot restores byte for byte: file trees as
//     compareTrees sees them, streams by their SHA-256, database images
//     by integrity_check, the balances and a gap-free log whose length
//     lies between the commits before the backup started and after it
//     ended.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"repo/internal/gentree"
)

// --- the binary with fault hooks ---

var (
	faultsBuildOnce sync.Once
	faultsBin       string
	faultsBuildErr  error
)

// repoFaultsBinary returns the path of the repo binary built with the
// faults tag (REPO_FAULTS drives the local backend's fault hooks), building
// it on first use.
func repoFaultsBinary(t *testing.T) string {
	t.Helper()
	faultsBuildOnce.Do(func() {
		bin := filepath.Join(e2eBinDir, "repo-faults")
		out, err := exec.Command("go", "build", "-tags", "faults", "-o", bin, ".").CombinedOutput()
		if err != nil {
			faultsBuildErr = fmt.Errorf("go build -tags faults: %v\n%s", err, out)
			return
		}
		faultsBin = bin
	})
	if faultsBuildErr != nil {
		t.Fatal(faultsBuildErr)
	}
	return faultsBin
}

// cmdResult is how one run of a binary ended.
type cmdResult struct {
	stdout, stderr string
	code           int  // exit code; -1 when a signal ended it
	killed         bool // our SIGKILL ended it while it ran
	late           bool // a SIGKILL was due, but the command had ended
	took           time.Duration
}

// runBinary runs bin like runBin runs the repo binary.
func runBinary(t *testing.T, bin string, env []string, stdin []byte, args ...string) cmdResult {
	t.Helper()
	return runKilled(t, bin, env, stdin, -1, args...)
}

// runKilled runs bin with args in a session of its own and, when
// killAfter >= 0, sends SIGKILL to the session's process group that long
// after the start unless it has ended by then.
func runKilled(t *testing.T, bin string, env []string, stdin []byte, killAfter time.Duration, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start repo %s: %v", quoteArgs(args), err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var res cmdResult
	var err error
	if killAfter < 0 {
		err = <-done
	} else {
		timer := time.NewTimer(killAfter)
		select {
		case err = <-done:
			timer.Stop()
			res.late = true
		case <-timer.C:
			// Setsid: the process group id is the pid.
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			err = <-done
		}
	}
	res.took = time.Since(start)
	res.stdout, res.stderr = out.String(), errb.String()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL && !res.late {
			res.killed = true
		}
	default:
		t.Fatalf("run repo %s: %v", quoteArgs(args), err)
	}
	if killAfter >= 0 && !res.killed {
		res.late = true // ended between the timer and the signal
	}
	return res
}

// --- the harness ---

const (
	tortureDefaultKills = 30
	tortureDefaultSeed  = 20240229
	// tortureVerifyEvery is how often (in rounds) every snapshot is
	// restored and compared.
	tortureVerifyEvery = 10
	// tortureMaxSnapshots: above it forget is picked more often, which
	// keeps the full verifications short.
	tortureMaxSnapshots = 10
	// tortureMaxTree bounds the files source; the oldest part goes first.
	tortureMaxTree = 24 << 20
)

// The operations of a round.
const (
	opFiles  = "backup-files"
	opSQLite = "backup-sqlite"
	opStdin  = "backup-stdin"
	opForget = "forget"
	opPrune  = "prune"
	opRepair = "check-repair"
)

var tortureOps = []string{opFiles, opSQLite, opStdin, opForget, opPrune, opRepair}

// expect is what a snapshot must restore to.
type expect struct {
	id     string
	kind   string // opFiles, opStdin or opSQLite
	round  int
	origin string // the snapshot it stands for: its own id unless check --repair rewrote it
	// committed: its backup exited 0. Otherwise it was found after a
	// killed or failed backup.
	committed bool
	// purged is the snapshot's purged list (set by check --repair).
	purged []string

	tree map[string]entry // files: the source as scanned before the backup

	name string   // stdin: file name in the snapshot
	size int      // stdin: length of the stream
	sum  [32]byte // stdin: its SHA-256

	minSeq, maxSeq int64 // sqlite: the log's length must be in this range
}

// opStats counts what happened to one kind of operation.
type opStats struct {
	runs, killed, late, faulted, failed int
	typical                             time.Duration // moving average of runs neither killed nor faulted
	clean                               int           // such runs
}

type torture struct {
	t     *testing.T
	seed  uint64
	rng   *rand.Rand
	bin   string
	work  string
	dir   string // the repository
	env   []string
	round int
	cmdNo int

	src      string   // the files source
	subtrees []string // its parts (directories below src), oldest first
	dbPath   string
	dbRows   int64 // log rows committed so far (initial rows and every writer's commits)
	pruneOK  bool

	snaps map[string]*expect // the listed snapshots

	stats                              map[string]*opStats
	kills, late, faultsFired, faultRds int
	corrupted, lost, mismatches        int
	lostToDamage, lockFailures, errs   int
	verifications                      int
}

// snapJSON is a line of snapshots --json.
type snapJSON struct {
	ID       string   `json:"id"`
	Original string   `json:"original"`
	Purged   []string `json:"purged"`
	Paths    []string `json:"paths"`
	Tags     []string `json:"tags"`
	Source   struct {
		Kind string `json:"kind"`
	} `json:"source"`
}

func TestTorture(t *testing.T) {
	kills := tortureEnvInt(t, "REPO_TORTURE_KILLS", tortureDefaultKills)
	seed := uint64(tortureEnvInt(t, "REPO_TORTURE_SEED", tortureDefaultSeed))
	start := time.Now()
	tt := newTorture(t, seed)
	for tt.kills < kills {
		tt.doRound()
		if tt.round%tortureVerifyEvery == 0 {
			tt.verifyAll()
		}
	}
	tt.verifyAll()
	// The harness's own bookkeeping: the live database holds every
	// commit it counted.
	if seq, err := verifyBankImage(tt.dbPath); err != nil || seq != tt.dbRows {
		t.Errorf("live database: log up to %d (%v), the writers committed up to %d", seq, err, tt.dbRows)
	}
	tt.report(time.Since(start))
}

func tortureEnvInt(t *testing.T, key string, def int) int {
	t.Helper()
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a number >= 0", key, v)
	}
	return n
}

func newTorture(t *testing.T, seed uint64) *torture {
	t.Helper()
	work := t.TempDir()
	tt := &torture{
		t: t, seed: seed, rng: newRand(seed), bin: repoFaultsBinary(t), work: work,
		dir: filepath.Join(work, "repo"), src: filepath.Join(work, "src"), dbPath: filepath.Join(work, "db", "bank.db"),
		snaps: map[string]*expect{}, stats: map[string]*opStats{},
	}
	for _, op := range tortureOps {
		tt.stats[op] = &opStats{}
	}
	tt.env = append(baseEnv(t), "REPO_REPOSITORY="+tt.dir, "REPO_PASSWORD="+testPassword)
	// Small packs: a backup writes several, so kills land between them.
	tt.mustRun("init", "--kdf-memory", "1", "--kdf-time", "1", "--pack-size", "1")

	if err := os.MkdirAll(tt.src, 0o755); err != nil {
		t.Fatal(err)
	}
	tt.addSubtree(gentree.Spec{Seed: tt.rng.Uint64(), TextFiles: 200, TextMax: 32 << 10, BinFiles: 3, BinMax: 1 << 20, RandFiles: 2, RandSize: 2 << 20, Odd: true})
	if err := os.MkdirAll(filepath.Dir(tt.dbPath), 0o755); err != nil {
		t.Fatal(err)
	}
	const initialRows = 2000
	createBank(t, tt.dbPath, "wal", tt.rng.Uint64(), initialRows, 1000)
	tt.dbRows = initialRows

	res := runBinary(t, tt.bin, tt.env, nil, "prune", "--help")
	tt.pruneOK = res.code == 0 && strings.Contains(res.stdout, "repo prune")
	if !tt.pruneOK {
		t.Logf("torture: prune is not available yet ('repo prune --help' shows no prune command); left out of the mix")
	}
	t.Logf("torture: seed %d, repository %s", seed, tt.dir)
	return tt
}

// mustRun runs the binary without faults or kills and fails the test
// unless it exits 0.
func (tt *torture) mustRun(args ...string) cmdResult {
	tt.t.Helper()
	res := runBinary(tt.t, tt.bin, tt.env, nil, args...)
	if res.code != 0 {
		tt.t.Fatalf("repo %s: exit %d\n%s%s", quoteArgs(args), res.code, truncate(res.stdout, 4000), res.stderr)
	}
	return res
}

// plain runs the binary without faults or kills; exit 11 (locked) counts
// as a lock failure: no command may need a manual unlock.
func (tt *torture) plain(args ...string) cmdResult {
	tt.t.Helper()
	res := runBinary(tt.t, tt.bin, tt.env, nil, args...)
	tt.noteLocked(args, res)
	return res
}

func (tt *torture) noteLocked(args []string, res cmdResult) {
	tt.t.Helper()
	if res.code != exitLocked {
		return
	}
	tt.lockFailures++
	tt.t.Errorf("round %d: repo %s met a lock it could not clear (exit 11): %s", tt.round, quoteArgs(args), strings.TrimSpace(res.stderr))
	// Clear it so that the run can go on and find more.
	runBinary(tt.t, tt.bin, tt.env, nil, "unlock")
}

// pickOp chooses the round's operation.
func (tt *torture) pickOp() string {
	weights := map[string]int{opFiles: 30, opSQLite: 15, opStdin: 15, opForget: 0, opPrune: 0, opRepair: 8}
	switch n := len(tt.snaps); {
	case n > tortureMaxSnapshots:
		weights[opForget] = 45
	case n > 2:
		weights[opForget] = 10
	}
	if tt.pruneOK {
		weights[opPrune] = 10
	}
	total := 0
	for _, op := range tortureOps {
		total += weights[op]
	}
	x := tt.rng.IntN(total)
	for _, op := range tortureOps {
		if x < weights[op] {
			return op
		}
		x -= weights[op]
	}
	panic("unreachable")
}

// pickFault returns a REPO_FAULTS value.
func (tt *torture) pickFault() string {
	rng := tt.rng
	types := []string{"pack", "index", "snapshot", "lock"}
	typ := types[rng.IntN(len(types))]
	a, b := rng.IntN(3), rng.IntN(4<<20)
	switch rng.IntN(8) {
	case 0:
		return fmt.Sprintf("write:type=pack:skip=%d:after=%d", a, b%(1<<20))
	case 1:
		return "write:type=" + typ
	case 2:
		return fmt.Sprintf("rename:type=%s:skip=%d", typ, a%2)
	case 3:
		return fmt.Sprintf("fsync:skip=%d", a)
	case 4:
		return "dirsync:type=" + typ
	case 5:
		return "remove:type=" + typ
	}
	return fmt.Sprintf("enospc:after=%d", b)
}

// plan is how a round runs its operation.
type plan struct {
	killAfter time.Duration // < 0: no kill
	faults    string        // REPO_FAULTS, "" for none
}

// doRound runs one round: an operation, maybe killed, maybe under a fault,
// then the checks every round ends with.
func (tt *torture) doRound() {
	tt.round++
	op := tt.pickOp()
	st := tt.stats[op]
	roundSeed := tt.rng.Uint64()
	killRoll, killFrac, faultRoll := tt.rng.IntN(100), tt.rng.Float64(), tt.rng.IntN(100)
	fault := tt.pickFault()
	var p plan
	p.killAfter = -1
	// The first two clean runs of each kind measure how long it takes.
	if st.clean >= 2 && killRoll < 75 {
		p.killAfter = time.Duration(killFrac * 1.2 * float64(st.typical))
	}
	if st.clean >= 2 && faultRoll < 25 {
		p.faults = fault
	}
	switch op {
	case opFiles:
		tt.backupFiles(roundSeed, p)
	case opStdin:
		tt.backupStdin(roundSeed, p)
	case opSQLite:
		tt.backupSQLite(roundSeed, p)
	case opForget:
		tt.forget(roundSeed, p)
	case opPrune:
		tt.prune(roundSeed, p)
	case opRepair:
		tt.repair(roundSeed, p)
	}
	tt.checkRound()
}

// exec runs the round's command as p says and accounts for it.
func (tt *torture) exec(op string, p plan, stdin []byte, args ...string) cmdResult {
	t := tt.t
	t.Helper()
	st := tt.stats[op]
	env := tt.env
	var log string
	if p.faults != "" {
		tt.cmdNo++
		log = filepath.Join(tt.work, fmt.Sprintf("faults-%d.log", tt.cmdNo))
		env = envWith(envWith(env, "REPO_FAULTS", p.faults), "REPO_FAULTS_LOG", log)
	}
	res := runKilled(t, tt.bin, env, stdin, p.killAfter, args...)
	var fired []string
	if log != "" {
		if b, err := os.ReadFile(log); err == nil {
			fired = strings.Split(strings.TrimSpace(string(b)), "\n")
		}
		os.Remove(log)
	}
	st.runs++
	if p.faults != "" {
		tt.faultRds++
	}
	if len(fired) > 0 {
		st.faulted++
		tt.faultsFired += len(fired)
	}
	switch {
	case res.killed:
		st.killed++
		tt.kills++
	case p.killAfter >= 0:
		st.late++
		tt.late++
	}
	if !res.killed && len(fired) == 0 {
		// A clean run: it tells how long this kind of command takes.
		if st.clean == 0 {
			st.typical = res.took
		} else {
			st.typical = (3*st.typical + res.took) / 4
		}
		st.clean++
	}
	what := "ran"
	switch {
	case res.killed:
		what = fmt.Sprintf("killed after %v", p.killAfter.Round(time.Millisecond))
	case p.killAfter >= 0:
		what = fmt.Sprintf("ended before the kill due at %v", p.killAfter.Round(time.Millisecond))
	}
	msg := fmt.Sprintf("round %d: %s %s (took %v, typical %v), exit %d", tt.round, op, what,
		res.took.Round(time.Millisecond), st.typical.Round(time.Millisecond), res.code)
	if p.faults != "" {
		msg += fmt.Sprintf("; REPO_FAULTS=%s fired %d times", p.faults, len(fired))
	}
	if res.code != 0 && !res.killed {
		msg += ": " + strings.TrimSpace(res.stderr)
	}
	t.Log(msg)

	tt.noteLocked(args, res)
	if res.killed || res.code == exitLocked {
		return res
	}
	switch {
	case strings.Contains(res.stderr, "panic:") || strings.Contains(res.stderr, "goroutine "):
		tt.errs++
		t.Errorf("round %d: repo %s panicked:\n%s", tt.round, quoteArgs(args), res.stderr)
	case res.code == 0:
	case res.code != exitError:
		tt.errs++
		t.Errorf("round %d: repo %s: exit %d, want 0 or 1\n%s", tt.round, quoteArgs(args), res.code, res.stderr)
	case len(fired) == 0:
		tt.errs++
		t.Errorf("round %d: repo %s failed without an injected fault:\n%s", tt.round, quoteArgs(args), res.stderr)
	case strings.HasPrefix(p.faults, "enospc") && !strings.Contains(res.stderr, "disk is full"):
		tt.errs++
		t.Errorf("round %d: repo %s on a full disk: the error does not say the disk is full:\n%s", tt.round, quoteArgs(args), res.stderr)
	case !strings.Contains(res.stderr, "repo: "):
		tt.errs++
		t.Errorf("round %d: repo %s failed without an error line:\n%s", tt.round, quoteArgs(args), res.stderr)
	}
	if res.code != 0 {
		st.failed++
	}
	return res
}

// --- the operations ---

func (tt *torture) backupFiles(seed uint64, p plan) {
	tt.mutateTree(seed)
	want := scanTree(tt.t, tt.src)
	res := tt.exec(opFiles, p, nil, "backup", "--json", tt.src)
	tt.afterBackup(res, &expect{kind: opFiles, tree: want})
}

func (tt *torture) backupStdin(seed uint64, p plan) {
	data := tortureStream(seed)
	name := fmt.Sprintf("stream-%04d.bin", tt.round)
	res := tt.exec(opStdin, p, data, "backup", "--json", "--stdin", "--stdin-filename", name)
	tt.afterBackup(res, &expect{kind: opStdin, name: name, size: len(data), sum: sha256.Sum256(data)})
}

// tortureStream is a dump-like stream of 256 KiB to 6 MiB: runs of text
// and of random bytes.
func tortureStream(seed uint64) []byte {
	rng := newRand(seed)
	n := 256<<10 + rng.IntN(6<<20)
	b := make([]byte, 0, n)
	for len(b) < n {
		k := min(n-len(b), 1+rng.IntN(256<<10))
		if rng.IntN(3) == 0 {
			b = append(b, gentree.Random(rng, k)...)
		} else {
			b = append(b, gentree.Text(rng, k)...)
		}
	}
	return b
}

func (tt *torture) backupSQLite(seed uint64, p plan) {
	t := tt.t
	w := startBankWriters(t, tt.dbPath, 1, 10000, seed)
	for deadline := time.Now().Add(10 * time.Second); w.commits.Load() < 3 && time.Now().Before(deadline); {
		time.Sleep(2 * time.Millisecond)
	}
	lo := tt.dbRows + w.commits.Load()
	res := tt.exec(opSQLite, p, nil, "backup", "--json", "--sqlite", tt.dbPath)
	// One more: a commit in flight may be in the image before the
	// writer counts it.
	hi := tt.dbRows + w.commits.Load() + 1
	errs := w.finish()
	tt.dbRows += w.commits.Load()
	checkWriterErrors(t, errs)
	tt.afterBackup(res, &expect{kind: opSQLite, minSeq: lo, maxSeq: hi})
}

// afterBackup reconciles the listing with a backup's outcome: exit 0 adds
// exactly the snapshot it reported; a killed or failed backup adds at most
// one, which is verified at once.
func (tt *torture) afterBackup(res cmdResult, e *expect) {
	t := tt.t
	listed := tt.list()
	tt.noneGone(listed, "")
	var added []string
	for _, id := range sortedKeys(listed) {
		if tt.snaps[id] == nil {
			added = append(added, id)
		}
	}
	e.round = tt.round
	if res.code == 0 && !res.killed {
		sum := lastSummary[backupSummary](t, res.stdout)
		if len(added) != 1 || added[0] != sum.SnapshotID {
			tt.errs++
			t.Errorf("round %d: backup exited 0 reporting snapshot %.8s, but the new snapshots are %q", tt.round, sum.SnapshotID, added)
		}
		e.committed = true
	} else if len(added) > 1 {
		tt.errs++
		t.Errorf("round %d: an interrupted backup added %d snapshots: %q", tt.round, len(added), added)
	}
	for _, id := range added {
		ne := *e
		ne.id, ne.origin = id, id
		if kind := listed[id].Source.Kind; kind != map[string]string{opFiles: "files", opStdin: "stdin", opSQLite: "sqlite"}[e.kind] {
			tt.errs++
			t.Errorf("round %d: new snapshot %.8s has source kind %q after a %s", tt.round, id, kind, e.kind)
		}
		tt.snaps[id] = &ne
		if !ne.committed {
			t.Logf("round %d: the interrupted backup left snapshot %.8s; verifying it now", tt.round, id)
			tt.verifySnap(&ne)
		}
	}
}

// noneGone counts every snapshot of the model that is not listed (except
// allowed) as lost, and drops it from the model.
func (tt *torture) noneGone(listed map[string]snapJSON, allowed string) {
	for _, id := range sortedKeys(tt.snaps) {
		if _, ok := listed[id]; ok || id == allowed {
			continue
		}
		e := tt.snaps[id]
		tt.lost++
		tt.t.Errorf("round %d: snapshot %.8s (from round %d, committed %v) is gone", tt.round, id, e.round, e.committed)
		delete(tt.snaps, id)
	}
}

func (tt *torture) forget(_ uint64, p plan) {
	t := tt.t
	ids := sortedKeys(tt.snaps)
	target := ids[tt.rng.IntN(len(ids))]
	res := tt.exec(opForget, p, nil, "forget", target)
	listed := tt.list()
	tt.noneGone(listed, target)
	tt.noneAdded(listed)
	_, still := listed[target]
	if res.code == 0 && !res.killed && still {
		tt.errs++
		t.Errorf("round %d: forget %.8s exited 0, but the snapshot is still listed", tt.round, target)
	}
	if !still {
		delete(tt.snaps, target)
	}
}

// noneAdded reports every listed snapshot the model does not know.
func (tt *torture) noneAdded(listed map[string]snapJSON) {
	for _, id := range sortedKeys(listed) {
		if tt.snaps[id] == nil {
			tt.errs++
			tt.t.Errorf("round %d: unexpected snapshot %.8s %+v", tt.round, id, listed[id])
		}
	}
}

func (tt *torture) prune(_ uint64, p plan) {
	args := []string{"prune"}
	if limit := []string{"", "", "0%", "20%", "unlimited"}[tt.rng.IntN(5)]; limit != "" {
		args = append(args, "--max-unused", limit)
	}
	tt.exec(opPrune, p, nil, args...)
	listed := tt.list()
	tt.noneGone(listed, "")
	tt.noneAdded(listed)
}

// repair damages a pack (deletes it, truncates it or flips a byte),
// asks list-broken-files what that costs, runs check --repair --read-data
// as planned, finishes it with uninterrupted runs if needed, and
// reconciles the snapshots (see the rules at the top).
func (tt *torture) repair(seed uint64, p plan) {
	t := tt.t
	rng := newRand(seed)
	damage := tt.damage(rng)
	if damage == "" {
		t.Logf("round %d: no pack to damage", tt.round)
		return
	}
	// What the damage costs, by the snapshot each broken entry's snapshot
	// stands for.
	res := tt.plain("list-broken-files", "--read-data", "--json")
	if res.code != 0 && res.code != exitError {
		tt.errs++
		t.Errorf("round %d: list-broken-files: exit %d\n%s", tt.round, res.code, res.stderr)
	}
	predicted := map[string][]string{} // origin -> broken paths
	rootLost := map[string]bool{}      // snapshot ids whose root is lost
	nBroken := 0
	for _, l := range jsonLines(t, res.stdout) {
		if l["message_type"] != "broken_file" {
			continue
		}
		var b brokenFileJSON
		decodeLine(t, l, &b)
		nBroken++
		origin := b.Snapshot
		if e := tt.snaps[b.Snapshot]; e != nil {
			origin = e.origin
		}
		predicted[origin] = append(predicted[origin], b.Path)
		if b.Path == "/" {
			rootLost[b.Snapshot] = true
		}
	}
	t.Logf("round %d: %s; list-broken-files: %d broken entries in %d snapshots", tt.round, damage, nBroken, len(predicted))

	args := []string{"check", "--repair", "--read-data", "--json"}
	res = tt.exec(opRepair, p, nil, args...)
	interrupted := res.code != 0
	for i := 0; res.code != 0 && i < 3; i++ {
		res = tt.plain(args...)
		if res.code != 0 {
			t.Logf("round %d: finishing check --repair: exit %d: %s", tt.round, res.code, strings.TrimSpace(res.stderr))
		}
	}
	if res.code != 0 {
		tt.errs++
		t.Errorf("round %d: check --repair does not finish after %s: exit %d\n%s\n%s", tt.round, damage, res.code, truncate(res.stdout, 4000), res.stderr)
	}

	listed := tt.list()
	before := tt.snaps
	tt.snaps = map[string]*expect{}
	standsFor := map[string]bool{} // origins with a listed snapshot
	for _, id := range sortedKeys(listed) {
		sn := listed[id]
		if e := before[id]; e != nil {
			tt.snaps[id] = e
			standsFor[e.origin] = true
			continue
		}
		// New: a rewrite of a snapshot the model knows.
		var base *expect
		for _, bid := range sortedKeys(before) {
			if before[bid].origin == sn.Original {
				base = before[bid]
				break
			}
		}
		if sn.Original == "" || base == nil {
			tt.errs++
			t.Errorf("round %d: check --repair left an unexpected snapshot %.8s %+v", tt.round, id, sn)
			continue
		}
		ne := *base
		ne.id, ne.purged, ne.round = id, sn.Purged, tt.round
		tt.snaps[id] = &ne
		standsFor[ne.origin] = true
		var extra []string
		for _, path := range sn.Purged {
			if !slices.Contains(base.purged, path) && !slices.Contains(predicted[ne.origin], path) {
				extra = append(extra, path)
			}
		}
		t.Logf("round %d: snapshot %.8s (standing for %.8s) rewritten as %.8s without %d entries: %s", tt.round, base.id, ne.origin, id, len(sn.Purged), quoteSome(sn.Purged, 5))
		if len(extra) > 0 {
			if interrupted {
				t.Logf("round %d: after an interrupted repair %.8s also lost %q (the documented window of docs/repair.md)", tt.round, id, extra)
			} else {
				tt.mismatches++
				t.Errorf("round %d: check --repair purged %q from %.8s, which list-broken-files did not report broken", tt.round, extra, id)
			}
		}
	}
	for _, id := range sortedKeys(before) {
		e := before[id]
		if _, ok := listed[id]; ok || standsFor[e.origin] {
			continue
		}
		switch {
		case rootLost[id]:
			tt.lostToDamage++
			t.Logf("round %d: snapshot %.8s lost its root tree to the damage; check --repair removed it", tt.round, id)
		case interrupted && len(predicted[e.origin]) > 0:
			tt.lostToDamage++
			t.Logf("round %d: snapshot %.8s, broken (%q) but with its root reported intact, was removed by an interrupted check --repair (the documented window of docs/repair.md)",
				tt.round, id, predicted[e.origin])
		default:
			tt.lost++
			t.Errorf("round %d: snapshot %.8s (round %d) is gone after check --repair, though its root was not reported lost", tt.round, id, e.round)
		}
	}
}

// damage breaks one pack: one of the three newest (they hold the latest
// snapshot's trees and new data) seven times in ten, else any. It returns
// what it did, or "" when there is no pack.
func (tt *torture) damage(rng *rand.Rand) string {
	t := tt.t
	packs := sortedKeys(packFiles(t, tt.dir))
	if len(packs) == 0 {
		return ""
	}
	mtime := func(p string) time.Time { return mustStat(t, p).ModTime() }
	slices.SortStableFunc(packs, func(a, b string) int { return mtime(b).Compare(mtime(a)) })
	pick := rng.IntN(len(packs))
	if rng.IntN(10) < 7 {
		pick = rng.IntN(min(3, len(packs)))
	}
	p := packs[pick]
	size := mustStat(t, p).Size()
	name := "pack " + filepath.Base(p)[:8]
	switch rng.IntN(3) {
	case 0:
		removeFile(t, p)
		return "deleted " + name
	case 1:
		n := rng.Int64N(size)
		truncateFile(t, p, n)
		return fmt.Sprintf("truncated %s from %d to %d bytes", name, size, n)
	}
	off := rng.Int64N(size)
	flipByte(t, p, off)
	return fmt.Sprintf("flipped byte %d of %s", off, name)
}

// --- the files source ---

// mutateTree changes the files source for a new backup: some of adding a
// generated part, removing the oldest, rewriting or appending to files,
// and touching files (all mtimes new and distinct).
func (tt *torture) mutateTree(seed uint64) {
	t := tt.t
	rng := newRand(seed)
	mtime := gentree.Epoch.Add(time.Duration(tt.round) * time.Hour)
	var size int64
	var files []string // regular files, relative to src, in lexical order
	err := filepath.WalkDir(tt.src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(tt.src, p)
		files = append(files, rel)
		size += fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1 + rng.IntN(4) {
		switch rng.IntN(5) {
		case 0, 1:
			if size > tortureMaxTree && len(tt.subtrees) > 1 {
				tt.removeSubtree()
			}
			rand := 0
			if rng.IntN(2) == 0 {
				rand = 1 + rng.IntN(3)
			}
			tt.addSubtree(gentree.Spec{
				Seed: rng.Uint64(), TextFiles: 10 + rng.IntN(80), TextMax: 16 << 10,
				BinFiles: rng.IntN(3), BinMax: 1 << 20, RandFiles: rand, RandSize: 64<<10 + rng.IntN(2<<20), Odd: rng.IntN(4) == 0,
			})
		case 2:
			if len(tt.subtrees) > 1 && rng.IntN(2) == 0 {
				tt.removeSubtree()
			}
		case 3, 4:
			if len(files) == 0 {
				continue
			}
			p := filepath.Join(tt.src, files[rng.IntN(len(files))])
			fi, err := os.Lstat(p)
			if err != nil {
				continue // in a part removed above
			}
			var data []byte
			switch rng.IntN(3) {
			case 0: // rewrite
				data = gentree.Text(rng, 1+rng.IntN(64<<10))
			case 1: // append
				data = append(mustRead(t, p), gentree.Random(rng, 1+rng.IntN(32<<10))...)
			case 2: // touch
				data = mustRead(t, p)
			}
			writeFile(t, p, data, uint32(fi.Mode().Perm()), mtime.Add(time.Duration(i)*time.Second))
		}
	}
}

// addSubtree generates a new part of the files source.
func (tt *torture) addSubtree(spec gentree.Spec) {
	name := fmt.Sprintf("part%04d", tt.round)
	for slices.Contains(tt.subtrees, name) {
		name += "x"
	}
	generate(tt.t, filepath.Join(tt.src, name), spec)
	tt.subtrees = append(tt.subtrees, name)
}

// removeSubtree removes the oldest part of the files source.
func (tt *torture) removeSubtree() {
	p := filepath.Join(tt.src, tt.subtrees[0])
	// Generated trees have read-only directories in odd/; make all
	// writable first.
	filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(q, 0o755)
		}
		return nil
	})
	if err := os.RemoveAll(p); err != nil {
		tt.t.Fatal(err)
	}
	tt.subtrees = tt.subtrees[1:]
}

// --- checks ---

// list returns the listed snapshots by id.
func (tt *torture) list() map[string]snapJSON {
	t := tt.t
	t.Helper()
	res := tt.plain("snapshots", "--json")
	if res.code != 0 {
		tt.corrupt(fmt.Sprintf("snapshots: exit %d\n%s", res.code, res.stderr))
	}
	out := map[string]snapJSON{}
	for _, l := range jsonLines(t, res.stdout) {
		if l["message_type"] != "snapshot" {
			continue
		}
		var sn snapJSON
		decodeLine(t, l, &sn)
		out[sn.ID] = sn
	}
	return out
}

// checkRound is the end of every round: check must pass.
func (tt *torture) checkRound() {
	res := tt.plain("check")
	if res.code != 0 {
		tt.corrupt(fmt.Sprintf("check: exit %d\n%s%s", res.code, truncate(res.stdout, 8000), res.stderr))
	}
}

// corrupt counts a corrupted repository, keeps a copy of it, prints the
// final line and stops the test: every later round would fail the same
// way.
func (tt *torture) corrupt(msg string) {
	t := tt.t
	t.Helper()
	tt.corrupted++
	keep := filepath.Join(os.TempDir(), fmt.Sprintf("repo-torture-%d-round%d", tt.seed, tt.round))
	os.RemoveAll(keep)
	if out, err := exec.Command("cp", "-a", tt.dir, keep).CombinedOutput(); err != nil {
		t.Logf("keep a copy of the repository: %v\n%s", err, out)
	} else {
		t.Logf("the repository is kept at %s (cache: %s)", keep, envValue(tt.env, "REPO_CACHE_DIR"))
	}
	t.Errorf("round %d: the repository is corrupted: %s", tt.round, msg)
	tt.report(0)
	t.FailNow()
}

// verifyAll runs check --read-data and restores every snapshot.
func (tt *torture) verifyAll() {
	t := tt.t
	tt.verifications++
	start := time.Now()
	res := tt.plain("check", "--read-data")
	if res.code != 0 {
		tt.corrupt(fmt.Sprintf("check --read-data: exit %d\n%s%s", res.code, truncate(res.stdout, 8000), res.stderr))
	}
	listed := tt.list()
	tt.noneGone(listed, "")
	tt.noneAdded(listed)
	for _, id := range sortedKeys(tt.snaps) {
		tt.verifySnap(tt.snaps[id])
	}
	t.Logf("round %d: check --read-data and %d snapshots restored and compared in %v", tt.round, len(tt.snaps), time.Since(start).Round(time.Millisecond))
}

// verifySnap restores e's snapshot and compares it with what it must hold.
func (tt *torture) verifySnap(e *expect) {
	t := tt.t
	target := filepath.Join(tt.work, "restore")
	defer os.RemoveAll(target)
	os.RemoveAll(target)
	fail := func(format string, args ...any) {
		tt.mismatches++
		t.Errorf("round %d: snapshot %.8s (%s, round %d): %s", tt.round, e.id, e.kind, e.round, fmt.Sprintf(format, args...))
	}
	res := tt.plain("restore", e.id, "--target", target)
	if res.code != 0 {
		fail("restore: exit %d\n%s", res.code, res.stderr)
		return
	}
	switch e.kind {
	case opFiles:
		want := withoutPurged(e.tree, tt.src, e.purged)
		at := restoredPath(target, tt.src)
		if len(want) == 0 {
			if _, err := os.Lstat(at); !errors.Is(err, fs.ErrNotExist) {
				fail("everything was purged, but restore made %s (%v)", at, err)
			}
			return
		}
		if d := diffTrees(want, scanTree(t, at)); len(d) > 0 {
			fail("restored tree differs from the source in %d places:\n\t%s", len(d), strings.Join(d[:min(len(d), 20)], "\n\t"))
		}
	case opStdin:
		at := filepath.Join(target, e.name)
		b, err := os.ReadFile(at)
		switch {
		case isPurged(e.purged, "/"+e.name):
			if err == nil {
				fail("%s was purged, but restore made it", e.name)
			}
		case err != nil:
			fail("read the restored stream: %v", err)
		case len(b) != e.size || sha256.Sum256(b) != e.sum:
			fail("restored stream has %d bytes with SHA-256 %x, want %d bytes %x", len(b), sha256.Sum256(b), e.size, e.sum)
		}
	case opSQLite:
		at := restoredPath(target, tt.dbPath)
		// A flipped byte in the pack of the database directory's tree
		// takes the directory, and the database with it.
		if isPurged(e.purged, jsonLossy(tt.dbPath)) {
			if _, err := os.Lstat(at); err == nil {
				fail("the database was purged, but restore made it")
			}
			return
		}
		seq, err := verifyBankImage(at)
		switch {
		case err != nil:
			fail("%v", err)
		case seq < e.minSeq || seq > e.maxSeq:
			fail("the image's log ends at %d, want %d..%d (the commits before and after the backup)", seq, e.minSeq, e.maxSeq)
		}
	}
}

// quoteSome quotes the first n of list, and says how many more there are.
func quoteSome(list []string, n int) string {
	if len(list) <= n {
		return fmt.Sprintf("%q", list)
	}
	return fmt.Sprintf("%q and %d more", list[:n], len(list)-n)
}

// withoutPurged returns tree (scanned at src) less the entries that the
// purged paths name, and what is below them. A purged path is compared
// as the snapshot's JSON carries it: with each byte that is not UTF-8
// replaced by U+FFFD (purged has no raw form, unlike paths).
func withoutPurged(tree map[string]entry, src string, purged []string) map[string]entry {
	if len(purged) == 0 {
		return tree
	}
	out := make(map[string]entry, len(tree))
	for rel, e := range tree {
		abs := src
		if rel != "." {
			abs = src + "/" + rel
		}
		if !isPurged(purged, jsonLossy(abs)) {
			out[rel] = e
		}
	}
	return out
}

// isPurged reports whether check --repair's purged list takes away abs:
// the path itself, or a directory above it whose tree was lost.
func isPurged(purged []string, abs string) bool {
	for _, p := range purged {
		if abs == p || strings.HasPrefix(abs, p+"/") || p == "/" {
			return true
		}
	}
	return false
}

// jsonLossy is s as encoding/json writes it: every byte that is not part
// of valid UTF-8 becomes U+FFFD.
func jsonLossy(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[:n])
		}
		s = s[n:]
	}
	return b.String()
}

// diffTrees lists the differences between two scanTree results, as
// compareTrees reports them.
func diffTrees(want, got map[string]entry) []string {
	var diffs []string
	for _, p := range sortedKeys(want) {
		g, ok := got[p]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("missing %q (%v)", p, want[p]))
		case g != want[p]:
			diffs = append(diffs, fmt.Sprintf("%q differs:\n\t\twant %v\n\t\tgot  %v", p, want[p], g))
		}
	}
	for _, p := range sortedKeys(got) {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("extra %q (%v)", p, got[p]))
		}
	}
	return diffs
}

// verifyBankImage checks a restored bank database as checkBank does, but
// returns the problem instead of failing the test, and the log's length.
func verifyBankImage(path string) (int64, error) {
	db, err := sql.Open("sqlite", sqliteDSN(path, "busy_timeout(10000)"))
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var verdict string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&verdict); err != nil {
		return 0, fmt.Errorf("integrity_check: %w", err)
	}
	if verdict != "ok" {
		return 0, fmt.Errorf("integrity_check: %s", verdict)
	}
	var b1, b2 int64
	if err := db.QueryRow("SELECT (SELECT balance FROM accounts WHERE id = 1), (SELECT balance FROM accounts WHERE id = 2)").Scan(&b1, &b2); err != nil {
		return 0, fmt.Errorf("accounts: %w", err)
	}
	var count, minSeq, maxSeq, amounts int64
	err = db.QueryRow("SELECT COUNT(*), COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0), COALESCE(SUM(amount), 0) FROM log").
		Scan(&count, &minSeq, &maxSeq, &amounts)
	if err != nil {
		return 0, fmt.Errorf("log: %w", err)
	}
	switch {
	case b1+b2 != bankTotal:
		return maxSeq, fmt.Errorf("balances %d and %d sum to %d, want %d", b1, b2, b1+b2, bankTotal)
	case count != maxSeq || (count > 0 && minSeq != 1):
		return maxSeq, fmt.Errorf("log has %d rows with seq %d..%d: a gap", count, minSeq, maxSeq)
	case b1 != bankInitial-amounts || b2 != bankInitial+amounts:
		return maxSeq, fmt.Errorf("balances %d and %d, but the log's amounts (%d) say %d and %d: a torn transfer", b1, b2, amounts, bankInitial-amounts, bankInitial+amounts)
	}
	return maxSeq, nil
}

// report prints the final line (stdout and the test log) and the counts per
// operation, and fails the test if anything went wrong.
func (tt *torture) report(took time.Duration) {
	t := tt.t
	for _, op := range tortureOps {
		st := tt.stats[op]
		t.Logf("torture: %-13s %4d runs, %4d killed, %4d too late, %4d with a fault that fired, %4d failed; typical %v",
			op, st.runs, st.killed, st.late, st.faulted, st.failed, st.typical.Round(time.Millisecond))
	}
	t.Logf("torture: %d rounds with a fault, %d full verifications, %d snapshots lost to deliberate damage, %d lock failures, %d other errors; %d snapshots now, took %v",
		tt.faultRds, tt.verifications, tt.lostToDamage, tt.lockFailures, tt.errs, len(tt.snaps), took.Round(time.Second))
	line := fmt.Sprintf("torture: seed %d, %d kills (%d too late), %d faults, %d rounds; corrupted repositories: %d, lost snapshots: %d, restore mismatches: %d",
		tt.seed, tt.kills, tt.late, tt.faultsFired, tt.round, tt.corrupted, tt.lost, tt.mismatches)
	fmt.Println(line)
	t.Log(line)
	if tt.corrupted+tt.lost+tt.mismatches > 0 {
		t.Errorf("torture found problems: %s", line)
	}
}
