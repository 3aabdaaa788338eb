package repo

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"path"
	"strconv"
	"strings"

	"repo/backend"
	"repo/chunk"
	"repo/index"
	"repo/repo/pack"
)

// Severity of a check finding.
type Severity int

// Severities: a Note is worth knowing but harms nothing (an unindexed pack
// left by an interrupted backup); an Error means data is missing or damaged.
const (
	Note Severity = iota
	Error
)

func (s Severity) String() string {
	if s == Error {
		return "error"
	}
	return "note"
}

// Finding is one problem check found.
type Finding struct {
	Severity Severity `json:"-"`
	Level    string   `json:"severity"`
	// Kind is what was checked: "config", "index", "pack", "snapshot",
	// "tree", "file", "database", "plan".
	Kind string `json:"kind"`
	// Object names it: a repository path, or a snapshot id and a path.
	Object  string `json:"object"`
	Message string `json:"message"`
}

// CheckOptions configure Check.
type CheckOptions struct {
	// ReadData also reads every pack, verifies its id, and decrypts,
	// decompresses and re-hashes every blob.
	ReadData bool
	// Subset, when set, reads only the packs it contains, as ReadData
	// does; it implies ReadData and takes precedence over it.
	Subset *ReadDataSubset
	// Progress, when set, is updated in phases PhaseIndex,
	// PhaseSnapshots and (reading packs) PhaseReadData; its error count
	// is the number of error findings.
	Progress *Progress
}

// ReadDataSubset is a deterministic selection of packs for check
// --read-data-subset, by the first four bytes of the pack id read as a
// big-endian uint32 (p):
//
//   - "K/M" selects the packs with p mod M == K-1, so that the M runs
//     1/M … M/M together read every pack exactly once;
//   - "N%" (0 < N ≤ 100, decimals allowed) selects the packs with
//     p < N/100 × 2^32, about N percent of them, always the same ones.
//
// Make one with ParseReadDataSubset.
type ReadDataSubset struct {
	text string
	// For K/M: of = M > 0 and part = K-1. For N%: of = 0 and a pack is
	// selected when p < below (at most 2^32, which selects all).
	part, of uint32
	below    uint64
}

// ParseReadDataSubset parses "N%" (0 < N ≤ 100, e.g. "10%" or "2.5%") or
// "K/M" (1 ≤ K ≤ M < 2^32, e.g. "3/7").
func ParseReadDataSubset(s string) (*ReadDataSubset, error) {
	bad := func(format string, args ...any) (*ReadDataSubset, error) {
		return nil, fmt.Errorf("invalid read-data subset %q: %s", s, fmt.Sprintf(format, args...))
	}
	if num, ok := strings.CutSuffix(s, "%"); ok {
		if !isDecimal(num) {
			return bad("want N%% with N a number such as 10 or 2.5")
		}
		n, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return bad("%v", err)
		}
		if n <= 0 || n > 100 {
			return bad("percentage must be more than 0 and at most 100")
		}
		// p < x holds for an integer p exactly when p < ceil(x).
		below := uint64(math.Ceil(n / 100 * (1 << 32)))
		return &ReadDataSubset{text: s, below: min(below, 1<<32)}, nil
	}
	ks, ms, ok := strings.Cut(s, "/")
	if !ok {
		return bad("want N%% (e.g. 10%%) or K/M (e.g. 1/5)")
	}
	if !isDigits(ks) || !isDigits(ms) {
		return bad("want K/M with whole numbers, e.g. 1/5")
	}
	k, kerr := strconv.ParseUint(ks, 10, 32)
	m, merr := strconv.ParseUint(ms, 10, 32)
	switch {
	case kerr != nil || merr != nil:
		return bad("K and M must be below %d", uint64(1)<<32)
	case m == 0:
		return bad("M must be at least 1")
	case k == 0 || k > m:
		return bad("K must be between 1 and M (%d)", m)
	}
	return &ReadDataSubset{text: s, part: uint32(k - 1), of: uint32(m)}, nil
}

// isDecimal reports whether s is digits with at most one '.', and at least
// one digit: what a user types, not ParseFloat's exponents, hex, infinities
// or underscores.
func isDecimal(s string) bool {
	digits, dots := 0, 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			dots++
		default:
			return false
		}
	}
	return digits > 0 && dots <= 1
}

// isDigits reports whether s is one or more ASCII digits.
func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// Contains reports whether the subset selects pack id. A nil subset
// selects every pack.
func (s *ReadDataSubset) Contains(id chunk.ID) bool {
	if s == nil {
		return true
	}
	p := binary.BigEndian.Uint32(id[:4])
	if s.of > 0 {
		return p%s.of == s.part
	}
	return uint64(p) < s.below
}

// String returns the subset as it was given.
func (s *ReadDataSubset) String() string {
	if s == nil {
		return ""
	}
	return s.text
}

// CheckResult counts what Check looked at and found.
type CheckResult struct {
	IndexFiles int `json:"index_files"`
	Packs      int `json:"packs"`
	Blobs      int `json:"blobs"`
	Snapshots  int `json:"snapshots"`
	Trees      int `json:"trees"`
	PacksRead  int `json:"packs_read"`
	Errors     int `json:"errors"`
	Notes      int `json:"notes"`

	// ReadDataSubset is CheckOptions.Subset as given, when set: PacksRead
	// then counts only the packs it selected.
	ReadDataSubset string `json:"read_data_subset,omitempty"`
}

// checkPack is what the index says about one pack.
type checkPack struct {
	blobs []index.Blob
	size  int64 // expected file size, derived from the entries
	index chunk.ID
}

// Check verifies the repository without writing to it, and reports every
// problem it finds to report (not just the first). The returned error is
// for failures that stop the check itself (cancellation, a backend that
// cannot list).
func (r *Repository) Check(ctx context.Context, opts CheckOptions, report func(Finding)) (CheckResult, error) {
	c := &checker{r: r, report: report, progress: opts.Progress, packs: map[chunk.ID]*checkPack{}, blobs: map[blobKey]index.PackedBlob{}, trees: map[chunk.ID]bool{}, present: map[chunk.ID]int64{}}
	c.res.ReadDataSubset = opts.Subset.String()
	err := c.run(ctx, opts)
	return c.res, err
}

type checker struct {
	r        *Repository
	report   func(Finding)
	progress *Progress
	res      CheckResult
	packs    map[chunk.ID]*checkPack
	blobs    map[blobKey]index.PackedBlob
	trees    map[chunk.ID]bool // tree id -> checked
	// present maps the packs the backend lists to their sizes.
	present map[chunk.ID]int64
}

func (c *checker) find(sev Severity, kind, object, format string, args ...any) {
	if sev == Error {
		c.res.Errors++
		c.progress.AddError()
	} else {
		c.res.Notes++
	}
	c.report(Finding{Severity: sev, Level: sev.String(), Kind: kind, Object: object, Message: fmt.Sprintf(format, args...)})
}

func (c *checker) run(ctx context.Context, opts CheckOptions) error {
	// 1. Index files.
	var ids []chunk.ID
	if err := c.r.listIDs(ctx, backend.IndexFile, func(id chunk.ID) error {
		ids = append(ids, id)
		return nil
	}); err != nil {
		return fmt.Errorf("list index files: %w", err)
	}
	files := map[chunk.ID]*index.File{}
	c.progress.StartCounted(PhaseIndex, int64(len(ids)), 0)
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := c.r.LoadIndexFile(ctx, id)
		c.progress.AddItem(0)
		if err != nil {
			c.find(Error, "index", "index/"+id.String(), "%v", err)
			continue
		}
		files[id] = f
	}
	// A file that another one supersedes is left from an interrupted
	// prune or repair: the newer file describes those packs.
	superseded := map[chunk.ID]bool{}
	for _, f := range files {
		for _, old := range f.Supersedes {
			superseded[old] = true
		}
	}
	for _, id := range ids {
		f := files[id]
		if f == nil {
			continue
		}
		if superseded[id] {
			c.find(Note, "index", "index/"+id.String(), "superseded by a newer index file; ignored")
			continue
		}
		c.res.IndexFiles++
		for _, p := range f.Packs {
			if old, ok := c.packs[p.ID]; ok {
				c.find(Note, "pack", packHandle(p.ID).String(), "listed in index files %s and %s", old.index.Short(), id.Short())
				continue
			}
			cp := &checkPack{blobs: p.Blobs, index: id}
			var end int64
			for _, b := range p.Blobs {
				end = max(end, int64(b.Offset)+int64(b.Length))
				k := blobKey{b.Type, b.ID}
				if _, ok := c.blobs[k]; !ok {
					c.blobs[k] = index.PackedBlob{Blob: b, Pack: p.ID}
				}
			}
			cp.size = end + pack.HeaderSize(c.r.sealer, len(p.Blobs))
			c.packs[p.ID] = cp
		}
	}
	c.res.Blobs = len(c.blobs)

	// 2. Pack files against the index.
	present := c.present
	if err := c.r.be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		id, err := chunk.ParseID(fi.Name)
		if err != nil {
			c.find(Note, "pack", "data/"+fi.Name, "not a pack name")
			return nil
		}
		present[id] = fi.Size
		return nil
	}); err != nil {
		return fmt.Errorf("list packs: %w", err)
	}
	c.res.Packs = len(present)
	for id, cp := range c.packs {
		size, ok := present[id]
		switch {
		case !ok:
			c.find(Error, "pack", packHandle(id).String(), "missing: %d blobs listed in index %s are lost", len(cp.blobs), cp.index.Short())
		case size != cp.size:
			c.find(Error, "pack", packHandle(id).String(), "size %d, the index expects %d", size, cp.size)
		}
	}
	for id := range present {
		if _, ok := c.packs[id]; !ok {
			c.find(Note, "pack", packHandle(id).String(), "not in any index (left by an interrupted backup?)")
		}
	}

	// 3. Snapshots and everything they reference.
	var snIDs []chunk.ID
	if err := c.r.listIDs(ctx, backend.SnapshotFile, func(id chunk.ID) error {
		snIDs = append(snIDs, id)
		return nil
	}); err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	c.progress.StartCounted(PhaseSnapshots, int64(len(snIDs)), 0)
	for _, id := range snIDs {
		c.progress.SetCurrent("snapshot " + id.Short())
		sn, err := c.r.LoadSnapshot(ctx, id)
		if err != nil {
			c.progress.AddItem(0)
			c.find(Error, "snapshot", "snapshots/"+id.String(), "%v", err)
			continue
		}
		c.res.Snapshots++
		if err := c.checkTree(ctx, sn, "/", sn.Tree); err != nil {
			return err
		}
		c.progress.AddItem(0)
	}

	// 4. Plans of interrupted maintenance: worth knowing, never damage
	// (a plan records intent only; the repository is consistent without
	// it).
	if err := c.checkPlans(ctx); err != nil {
		return err
	}

	// 5. Every byte (or every byte of the subset), when asked.
	if opts.ReadData || opts.Subset != nil {
		var toRead []chunk.ID
		var bytes int64
		for id := range c.packs {
			if _, ok := present[id]; ok && opts.Subset.Contains(id) {
				toRead = append(toRead, id)
				bytes += present[id]
			}
		}
		c.progress.StartCounted(PhaseReadData, int64(len(toRead)), bytes)
		for _, id := range toRead {
			if err := ctx.Err(); err != nil {
				return err
			}
			c.progress.SetCurrent("pack " + id.Short())
			c.readPack(ctx, id, c.packs[id])
			c.progress.AddItem(present[id])
		}
	}
	return ctx.Err()
}

// checkPlans notes every plan left by an interrupted operation, and every
// object in plans/ that cannot be read.
func (c *checker) checkPlans(ctx context.Context) error {
	plans, err := c.r.Plans(ctx, func(id chunk.ID, err error) {
		c.find(Note, "plan", "plans/"+id.String(), "unreadable plan of an interrupted operation (prune removes it): %v", err)
	})
	if err != nil {
		return err
	}
	for _, p := range plans {
		c.find(Note, "plan", "plans/"+p.ID.String(), "interrupted %s started %s on %s: run '%s' to finish it; the repository is consistent",
			p.Op, planTime(p.Created), p.Host, PlanCommand(p.Op))
	}
	return nil
}

// checkTree checks tree id (at path p of snapshot sn) and below, each tree
// once.
func (c *checker) checkTree(ctx context.Context, sn *Snapshot, p string, id chunk.ID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.trees[id] {
		return nil
	}
	c.trees[id] = true
	c.res.Trees++
	obj := fmt.Sprintf("snapshot %s %s", sn.ID.Short(), p)
	pb, ok := c.blobs[blobKey{index.TreeBlob, id}]
	if !ok {
		c.find(Error, "tree", obj, "tree %s is not in the index", id.Short())
		return nil
	}
	if _, ok := c.present[pb.Pack]; !ok {
		// Reported with the missing pack already.
		return nil
	}
	buf, err := c.r.LoadBlobAt(ctx, pb, nil)
	if err != nil {
		c.find(Error, "tree", obj, "%v", err)
		return nil
	}
	t, err := decodeTree(id, buf)
	if err != nil {
		c.find(Error, "tree", obj, "%v", err)
		return nil
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		np := path.Join(p, n.Name)
		switch n.Type {
		case NodeDir:
			if err := c.checkTree(ctx, sn, np, *n.Subtree); err != nil {
				return err
			}
		case NodeFile:
			obj := fmt.Sprintf("snapshot %s %s", sn.ID.Short(), np)
			ids := n.Content
			if n.Database != nil {
				var err error
				if ids, err = c.pageMap(ctx, n); err != nil {
					c.find(Error, "database", obj, "%v", err)
					continue
				}
			}
			missing := 0
			for _, b := range ids {
				if _, ok := c.blobs[blobKey{index.DataBlob, b}]; !ok {
					missing++
				}
			}
			if missing > 0 {
				c.find(Error, "file", obj, "%d of %d data blobs are not in the index", missing, len(ids))
			}
		}
	}
	return nil
}

// readPack downloads one pack and verifies its id, its header against the
// index, and every blob.
func (c *checker) readPack(ctx context.Context, id chunk.ID, cp *checkPack) {
	h := packHandle(id)
	c.res.PacksRead++
	data, err := backend.LoadAll(ctx, c.r.be, h, nil)
	if err != nil {
		c.find(Error, "pack", h.String(), "read: %v", err)
		return
	}
	if got := chunk.Hash(data); got != id {
		c.find(Error, "pack", h.String(), "content hashes to %s: the pack is damaged", got.Short())
	}
	hdr, err := pack.ParseHeader(c.r.sealer, data, int64(len(data)))
	if err != nil {
		c.find(Error, "pack", h.String(), "header: %v", err)
	} else if len(hdr) != len(cp.blobs) {
		c.find(Error, "pack", h.String(), "header lists %d blobs, the index %d", len(hdr), len(cp.blobs))
	} else {
		for i := range hdr {
			if hdr[i] != cp.blobs[i] {
				c.find(Error, "pack", h.String(), "header entry %d differs from the index", i)
				break
			}
		}
	}
	var buf []byte
	bad := 0
	for _, b := range cp.blobs {
		end := int64(b.Offset) + int64(b.Length)
		if end > int64(len(data)) {
			bad++
			continue
		}
		if buf, err = c.r.openBlob(data[b.Offset:end], index.PackedBlob{Blob: b, Pack: id}, buf); err != nil {
			bad++
		}
	}
	if bad > 0 {
		c.find(Error, "pack", h.String(), "%d of %d blobs are damaged", bad, len(cp.blobs))
	}
}

// pageMap returns the page ids of database node n, checking that the blobs
// of its page map are indexed and readable.
func (c *checker) pageMap(ctx context.Context, n *Node) ([]chunk.ID, error) {
	head := n.Database.PageMap
	if _, ok := c.blobs[blobKey{index.TreeBlob, head}]; !ok {
		return nil, fmt.Errorf("page map %s is not in the index", head.Short())
	}
	// The map's blobs are found through the index files check read
	// itself, like trees: check does not bring the local index cache
	// (what LoadBlob consults) up to date, so that may be empty
	// (--no-cache, another host) or stale (another process rewrote the
	// index since), and would fail sound databases.
	load := func(id chunk.ID) ([]byte, error) {
		pb, ok := c.blobs[blobKey{index.TreeBlob, id}]
		if !ok {
			return nil, fmt.Errorf("blob %s is not in the index", id.Short())
		}
		return c.r.LoadBlobAt(ctx, pb, nil)
	}
	return pageIDsWith(n, load)
}
