package repo

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"

	"repo/chunk"
	"repo/index"
	"repo/source"
	"repo/source/sqlite"
)

// Database kinds in DatabaseInfo.Kind.
const DatabaseSQLite = "sqlite"

// DatabaseInfo marks a file node whose content is a database image taken
// inside one read transaction, and records that transaction's state. The
// content is not in Node.Content but in the page map PageMap (one data blob
// per page; see pagemap.go). Its JSON form is part of the repository
// format.
type DatabaseInfo struct {
	Kind          string `json:"kind"`
	PageSize      int    `json:"page_size"`
	PageCount     uint32 `json:"page_count"`
	JournalMode   string `json:"journal_mode"`
	SQLiteVersion string `json:"sqlite_version"`
	// SchemaVersion, ChangeCounter, UserVersion, ApplicationID and
	// FreelistCount are SQLite's own markers as of the transaction; the
	// page map's id identifies the captured image exactly.
	SchemaVersion uint32   `json:"schema_version"`
	ChangeCounter uint32   `json:"change_counter"`
	UserVersion   uint32   `json:"user_version,omitempty"`
	ApplicationID uint32   `json:"application_id,omitempty"`
	FreelistCount uint32   `json:"freelist_count"`
	PageMap       chunk.ID `json:"page_map"`
	// PagesNew is how many pages this backup found not yet stored, and
	// PagesChanged how many differ from the parent snapshot's image (all,
	// without one).
	PagesNew     uint32 `json:"pages_new"`
	PagesChanged uint32 `json:"pages_changed"`
}

// isDatabase reports whether path is one of the databases to snapshot.
func (a *archiver) isDatabase(p string) bool { return a.databases[p] }

// fileID names a file by its file system and inode.
type fileID struct{ dev, ino uint64 }

// databaseFiles returns the databases and their -wal, -shm and -journal
// files that exist, by fileID.
func databaseFiles(databases []string) map[fileID]string {
	ids := map[fileID]string{}
	for _, d := range databases {
		for _, suf := range []string{"", "-wal", "-shm", "-journal"} {
			if info, err := source.Lstat(d + suf); err == nil && info.Type == source.File {
				ids[fileID{info.DeviceID, info.Inode}] = d
			}
		}
	}
	return ids
}

// databaseAlias returns an error when p, not itself a database path, is
// one of the databases or their -wal, -shm or -journal files under another
// name (a hard link, or a path through a symbolic link to a directory):
// reading it as a file would copy a database as it is being written, and
// closing it would drop the POSIX locks SQLite holds on that file for the
// snapshot's read transaction (closing any descriptor of a file does).
func (a *archiver) databaseAlias(p string, info *source.Info) error {
	if info.Type != source.File || len(a.dbFiles) == 0 {
		return nil
	}
	db, ok := a.dbFiles[fileID{info.DeviceID, info.Inode}]
	if !ok || a.isDatabase(p) {
		return nil
	}
	return fmt.Errorf("not read: the same file as database %s or its -wal, -shm or -journal, which is saved as a page image under its own path (another name for it, such as a hard link, would be a copy taken while it is written)", db)
}

// isDatabaseSidecar reports whether p is the -wal, -shm or -journal file of
// a database being snapshotted: the image already holds what they hold as of
// the transaction, and a copy of them taken later would not belong to it.
func (a *archiver) isDatabaseSidecar(p string) bool {
	for _, suf := range []string{"-wal", "-shm", "-journal"} {
		if len(p) > len(suf) && p[len(p)-len(suf):] == suf && a.databases[p[:len(p)-len(suf)]] {
			return true
		}
	}
	return false
}

// saveDatabase stores a consistent image of the SQLite database at p: one
// read transaction, its pages streamed into the saver, no copy on disk. A
// database that cannot be opened is reported like an unreadable file.
func (a *archiver) saveDatabase(ctx context.Context, p string, info *source.Info, pn *Node) (pendingNode, error) {
	node := nodeFromInfo(info)
	a.progress.SetCurrent(p)
	snap, err := sqlite.Open(ctx, p)
	if err != nil {
		a.fileDone(info.Size, 0)
		a.report(p, err)
		return pendingNode{skip: true}, nil
	}
	defer snap.Close()
	di := snap.Info()
	a.onDatabase(p, di)
	// The scanner counted the file's size on disk; what is read is the
	// image as of the transaction, page count times page size (a WAL
	// database's file lags behind its committed pages).
	imageSize := int64(di.PageSize) * int64(di.PageCount)
	a.progress.AddTotals(0, imageSize-info.Size)
	var pagesRead int64

	var parentMap *PageMap
	if pn != nil && pn.Database != nil && pn.Database.Kind == DatabaseSQLite {
		// Without the parent's map the image is still stored (pages
		// dedup by id); only its map is written in full.
		if m, err := a.r.LoadPageMap(ctx, pn.Database.PageMap); err == nil {
			parentMap = m
		}
	}
	w, err := newPageMapWriter(ctx, a.r, a.saveMeta, di.PageSize, di.PageCount, parentMap)
	if err != nil {
		return pendingNode{}, err
	}
	var pagesNew uint32
	known := make([]bool, pageBatchPages)
	store := make([]bool, pageBatchPages)
	process := func(batch []byte, ids []chunk.ID) error {
		ps := di.PageSize
		// One cache transaction answers for the batch, and one lock
		// reserves the new pages among the rest.
		if err := a.s.KnownMany(index.DataBlob, ids, known[:len(ids)]); err != nil {
			return err
		}
		a.s.ReserveMany(index.DataBlob, ids, known[:len(ids)], store[:len(ids)])
		for i, id := range ids {
			page := batch[i*ps : (i+1)*ps]
			if store[i] {
				pagesNew++
				bp := a.buf(len(page))
				copy(*bp, page)
				if err := a.s.StoreAsync(index.DataBlob, id, *bp, func() { a.bufs.Put(bp) }); err != nil {
					return err
				}
			} else {
				a.bytesKnown.Add(int64(len(page)))
			}
			if err := w.add(id); err != nil {
				return err
			}
		}
		return nil
	}
	err = a.pipePages(ctx, snap, di.PageSize, func(page []byte) {
		a.bytesRead.Add(int64(len(page)))
		a.progress.AddBytes(int64(len(page)))
		pagesRead += int64(len(page))
	}, a.r.hasher.Sum, process)
	if err != nil {
		if serr := a.s.Err(); serr != nil {
			return pendingNode{}, serr
		}
		if ctx.Err() != nil {
			return pendingNode{}, ctx.Err()
		}
		a.fileDone(imageSize, pagesRead)
		a.report(p, err)
		return pendingNode{skip: true}, nil
	}
	head, err := w.finish()
	if err != nil {
		return pendingNode{}, err
	}
	if err := snap.Close(); err != nil {
		a.report(p, fmt.Errorf("end read transaction: %w", err))
	}
	a.filesRead.Add(1)
	node.Size = uint64(di.PageSize) * uint64(di.PageCount)
	node.Database = &DatabaseInfo{
		Kind:          DatabaseSQLite,
		PageSize:      di.PageSize,
		PageCount:     di.PageCount,
		JournalMode:   di.JournalMode,
		SQLiteVersion: di.SQLiteVersion,
		SchemaVersion: di.SchemaVersion,
		ChangeCounter: di.ChangeCounter,
		UserVersion:   di.UserVersion,
		ApplicationID: di.ApplicationID,
		FreelistCount: di.FreelistCount,
		PageMap:       head,
		PagesNew:      pagesNew,
		PagesChanged:  w.Changed,
	}
	a.fileDone(imageSize, pagesRead)
	action := ItemChanged
	a.mu.Lock()
	a.sum.TotalFiles++
	a.sum.TotalBytes += int64(node.Size)
	a.sum.Databases++
	if pn == nil {
		a.sum.FilesNew++
		action = ItemNew
	} else if parentMap != nil && w.Changed == 0 && parentMap.PageCount == di.PageCount {
		a.sum.FilesUnmodified++
		action = ItemUnchanged
	} else {
		a.sum.FilesChanged++
	}
	a.mu.Unlock()
	a.item(action, p, int64(node.Size))
	return pendingNode{node: node}, nil
}

// cleanDatabases makes the database paths absolute and clean and checks
// that each is a regular file.
func cleanDatabases(paths []string) ([]string, error) {
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		info, err := source.Lstat(abs)
		if err != nil {
			return nil, fmt.Errorf("database %s: %w", p, err)
		}
		if info.Type != source.File {
			return nil, fmt.Errorf("database %s: not a regular file", p)
		}
		out = append(out, abs)
	}
	return out, nil
}

// saveMeta stores a page map blob.
func (a *archiver) saveMeta(b []byte) (chunk.ID, error) {
	id, _, err := a.s.SaveBlob(index.TreeBlob, b)
	return id, err
}

// FileContent returns the ids of the data blobs of file node n in order:
// its Content, or for a database image the pages of its page map.
func (r *Repository) FileContent(ctx context.Context, n *Node) ([]chunk.ID, error) {
	if n.Database == nil {
		return n.Content, nil
	}
	return pageIDsWith(n, func(id chunk.ID) ([]byte, error) { return r.LoadBlob(ctx, index.TreeBlob, id, nil) })
}

// pageBatchPages is how many pages pipePages hands over at a time, and
// pageBatches how many batches are in flight: enough that neither side
// waits on the other's jitter, little memory (8 × 256 pages of at most
// 64 KiB: 128 MiB at the largest page size, 8 MiB at 4 KiB).
const (
	pageBatchPages = 256
	pageBatches    = 8
)

// pipePages streams the pages of snap in order to process, in batches of
// whole pages (at most pageBatchPages), with each page's id from hash.
// Three kinds of goroutine overlap: the reader (the read transaction's
// connection, and the only caller of read, which sees every page first),
// hash workers (one per CPU, a batch each at a time), and process (the
// caller's, in page order: the page map is written in that order). On a
// day-after backup, where few pages are new, hashing is most of the work
// once the pages come from the file (see sqlite.Snapshot.Pages), and one
// goroutine for it left a core idle. An error of process stops the stream
// and is returned; so is one of the stream.
func (a *archiver) pipePages(ctx context.Context, snap *sqlite.Snapshot, pageSize int, read func([]byte),
	hash func([]byte) chunk.ID, process func(batch []byte, ids []chunk.ID) error) error {
	// A batch goes to a hash worker and, in stream order, to process,
	// which waits for its hashed channel.
	type batch struct {
		data   []byte
		ids    []chunk.ID
		hashed chan struct{}
	}
	free := make(chan *batch, pageBatches)
	for range pageBatches {
		free <- &batch{data: make([]byte, 0, pageBatchPages*pageSize), ids: make([]chunk.ID, 0, pageBatchPages)}
	}
	work := make(chan *batch, pageBatches)
	ordered := make(chan *batch, pageBatches)
	var hashers sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		hashers.Go(func() {
			for b := range work {
				b.ids = b.ids[:0]
				for off := 0; off < len(b.data); off += pageSize {
					b.ids = append(b.ids, hash(b.data[off:off+pageSize]))
				}
				close(b.hashed)
			}
		})
	}
	failed := make(chan struct{}) // closed when process failed
	var perr error                // process's error; read after failed or done
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := range ordered {
			<-b.hashed
			if perr == nil {
				if perr = process(b.data, b.ids); perr != nil {
					close(failed)
				}
			}
			// After an error, batches are only drained, so that the
			// reader never blocks.
			b.data = b.data[:0]
			free <- b
		}
	}()
	send := func(b *batch) {
		b.hashed = make(chan struct{})
		work <- b
		ordered <- b
	}
	stopped := errors.New("page processing stopped")
	cur := <-free
	serr := snap.Pages(ctx, func(_ uint32, page []byte) error {
		read(page)
		cur.data = append(cur.data, page...)
		if len(cur.data) < cap(cur.data) {
			return nil
		}
		send(cur)
		select {
		case cur = <-free:
			return nil
		case <-failed:
			return stopped
		}
	})
	if serr == nil && len(cur.data) > 0 {
		send(cur)
	}
	close(work)
	close(ordered)
	<-done
	hashers.Wait()
	if perr != nil {
		return perr
	}
	return serr
}
