package repo

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"repo/backend"
	"repo/chunk"
	"repo/source"
)

// Source kinds recorded in a snapshot.
const (
	SourceFiles = "files"
	SourceStdin = "stdin"
	// SourceSQLite: only database images (backup --sqlite without paths).
	SourceSQLite = "sqlite"
	// SourceCommand: the stdout of a dump command (--stdin-from-command).
	SourceCommand = "command"
)

// Snapshot is one backup: what was saved, from where, and a summary. Its
// JSON form is part of the repository format.
type Snapshot struct {
	Time  time.Time `json:"time"`
	Tree  chunk.ID  `json:"tree"`
	Paths []string  `json:"paths"`
	// PathsRaw holds Paths byte-exact when one is not valid UTF-8 (JSON
	// strings cannot carry such bytes; Paths then holds a lossy copy).
	PathsRaw [][]byte   `json:"paths_raw,omitempty"`
	Hostname string     `json:"hostname"`
	Username string     `json:"username,omitempty"`
	UID      uint32     `json:"uid"`
	GID      uint32     `json:"gid"`
	Tags     []string   `json:"tags,omitempty"`
	Parent   *chunk.ID  `json:"parent,omitempty"`
	Source   SourceInfo `json:"source"`
	Summary  *Summary   `json:"summary,omitempty"`
	// ProgramVersion is the version of repo that wrote the snapshot.
	ProgramVersion string `json:"program_version,omitempty"`
	// Original is set in a snapshot that check --repair rewrote: the id of
	// the snapshot it replaced; Purged lists the paths it left out because
	// their content was lost.
	Original *chunk.ID `json:"original,omitempty"`
	Purged   []string  `json:"purged,omitempty"`

	// ID is the snapshot's object id; set when loaded or saved, not stored.
	ID chunk.ID `json:"-"`
}

// SourceInfo says what kind of source a snapshot holds; later source kinds
// (databases, commands) add their metadata here.
type SourceInfo struct {
	Kind string `json:"kind"` // SourceFiles, SourceStdin, SourceSQLite, SourceCommand
	// Command is the argv of the dump command whose output is the
	// snapshot's only file (SourceCommand); the snapshot exists only if it
	// exited with status 0.
	Command []string `json:"command,omitempty"`
	// Freeze and Thaw record the hooks run around the backup.
	Freeze *source.HookResult `json:"freeze,omitempty"`
	Thaw   *source.HookResult `json:"thaw,omitempty"`
}

// Summary is what a backup did.
type Summary struct {
	Start           time.Time `json:"start"`
	End             time.Time `json:"end"`
	FilesNew        int       `json:"files_new"`
	FilesChanged    int       `json:"files_changed"`
	FilesUnmodified int       `json:"files_unmodified"`
	DirsNew         int       `json:"dirs_new"`
	DirsChanged     int       `json:"dirs_changed"`
	DirsUnmodified  int       `json:"dirs_unmodified"`
	// FilesRead counts files whose content was read; unchanged files are
	// taken from the parent snapshot without reading.
	FilesRead int   `json:"files_read"`
	BytesRead int64 `json:"bytes_read"`
	// BytesSkipped counts bytes read whose blobs the repository held
	// already (from earlier snapshots, an interrupted earlier backup, or
	// earlier in this one), so they were not stored again.
	BytesSkipped int64 `json:"bytes_skipped"`
	// TotalFiles and TotalBytes describe everything in the snapshot.
	TotalFiles int   `json:"total_files"`
	TotalBytes int64 `json:"total_bytes"`
	// BlobsAdded, BytesAdded (plaintext) and BytesStored (in packs) count
	// what this backup added to the repository.
	BlobsAdded  int   `json:"blobs_added"`
	BytesAdded  int64 `json:"bytes_added"`
	BytesStored int64 `json:"bytes_stored"`
	PacksAdded  int   `json:"packs_added"`
	// PacksResumed counts packs an interrupted earlier backup on this host
	// had uploaded, indexed by this one instead of uploaded again.
	PacksResumed int `json:"packs_resumed,omitempty"`
	// Databases counts the database images saved.
	Databases int `json:"databases,omitempty"`
	// Errors counts entries that could not be read and were left out.
	Errors int `json:"errors"`
}

// SaveSnapshot stores sn and sets sn.ID. Call it only after the Saver that
// stored the snapshot's blobs finished, so every index file it needs exists.
func (r *Repository) SaveSnapshot(ctx context.Context, sn *Snapshot) error {
	if err := r.checkLock(ctx); err != nil {
		return err
	}
	sn.PathsRaw = nil
	for _, p := range sn.Paths {
		if !utf8.ValidString(p) {
			for _, p := range sn.Paths {
				sn.PathsRaw = append(sn.PathsRaw, []byte(p))
			}
			break
		}
	}
	buf, err := json.Marshal(sn)
	if err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	id, err := r.SaveUnpacked(ctx, backend.SnapshotFile, buf)
	if err != nil {
		return err
	}
	sn.ID = id
	return nil
}

// RemoveSnapshot removes snapshot id. The data it references stays until a
// prune; the caller holds the exclusive lock.
func (r *Repository) RemoveSnapshot(ctx context.Context, id chunk.ID) error {
	if err := r.checkLock(ctx); err != nil {
		return err
	}
	h := backend.Handle{Type: backend.SnapshotFile, Name: id.String()}
	if err := r.be.Remove(ctx, h); err != nil {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	return nil
}

// LoadSnapshot loads snapshot id.
func (r *Repository) LoadSnapshot(ctx context.Context, id chunk.ID) (*Snapshot, error) {
	buf, err := r.LoadUnpacked(ctx, backend.SnapshotFile, id)
	if err != nil {
		return nil, err
	}
	var sn Snapshot
	if err := json.Unmarshal(buf, &sn); err != nil {
		return nil, fmt.Errorf("decode snapshot %s: %w", id.Short(), err)
	}
	if sn.PathsRaw != nil {
		sn.Paths = sn.Paths[:0]
		for _, p := range sn.PathsRaw {
			sn.Paths = append(sn.Paths, string(p))
		}
	}
	sn.ID = id
	return &sn, nil
}

// Snapshots loads all snapshots, oldest first. A snapshot that cannot be
// loaded is reported to onError (when not nil) and skipped; without
// onError it is an error.
func (r *Repository) Snapshots(ctx context.Context, onError func(id chunk.ID, err error)) ([]*Snapshot, error) {
	var ids []chunk.ID
	if err := r.listIDs(ctx, backend.SnapshotFile, func(id chunk.ID) error {
		ids = append(ids, id)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	var out []*Snapshot
	for _, id := range ids {
		sn, err := r.LoadSnapshot(ctx, id)
		if err != nil {
			if onError == nil {
				return nil, err
			}
			onError(id, err)
			continue
		}
		out = append(out, sn)
	}
	SortSnapshots(out)
	return out, nil
}

// SortSnapshots orders by time, then id, so the order is total.
func SortSnapshots(sns []*Snapshot) {
	slices.SortFunc(sns, func(a, b *Snapshot) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return strings.Compare(a.ID.String(), b.ID.String())
	})
}

// SnapshotFilter selects snapshots; zero fields match everything.
type SnapshotFilter struct {
	Host  string
	Paths []string // all of them, in any order
	Tags  []string // snapshots having every tag
}

// Match reports whether sn passes f.
func (f SnapshotFilter) Match(sn *Snapshot) bool {
	if f.Host != "" && sn.Hostname != f.Host {
		return false
	}
	if len(f.Paths) > 0 {
		a, b := slices.Clone(f.Paths), slices.Clone(sn.Paths)
		slices.Sort(a)
		slices.Sort(b)
		if !slices.Equal(a, b) {
			return false
		}
	}
	for _, t := range f.Tags {
		if !slices.Contains(sn.Tags, t) {
			return false
		}
	}
	return true
}

// FindSnapshot resolves a snapshot reference: "latest" (the newest one that
// f matches) or a unique prefix of an id.
func (r *Repository) FindSnapshot(ctx context.Context, ref string, f SnapshotFilter) (*Snapshot, error) {
	if ref == "latest" {
		sns, err := r.Snapshots(ctx, func(chunk.ID, error) {})
		if err != nil {
			return nil, err
		}
		for i := len(sns) - 1; i >= 0; i-- {
			if f.Match(sns[i]) {
				return sns[i], nil
			}
		}
		return nil, fmt.Errorf("latest: %w", ErrSnapshotNotFound)
	}
	ref = strings.ToLower(ref)
	var match []chunk.ID
	if err := r.listIDs(ctx, backend.SnapshotFile, func(id chunk.ID) error {
		if strings.HasPrefix(id.String(), ref) {
			match = append(match, id)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	switch {
	case len(match) == 0 || ref == "":
		return nil, fmt.Errorf("%s: %w", ref, ErrSnapshotNotFound)
	case len(match) > 1:
		return nil, &AmbiguousSnapshotError{Prefix: ref, Matches: len(match)}
	}
	return r.LoadSnapshot(ctx, match[0])
}
