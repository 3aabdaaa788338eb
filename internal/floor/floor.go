// Package floor measures what this machine allows a backup tool at best,
// as the floor beside which `make bench` reads the tools' times:
//
//   - Stages times the irreducible steps of a first backup of a tree with
//     one worker per core, with repo's own code and settings: read the
//     files, cut them (FileClass), hash every chunk (BLAKE3), compress it
//     as the default codec does (zstd fastest, random-looking chunks
//     skipped) and seal it (XChaCha20-Poly1305). Its wall time is that of
//     a pipeline that writes nothing, builds no trees or index and derives
//     no key.
//   - CopyTree copies a tree with a number of workers, one read and one
//     write per file: the floor of any restore of that tree into the same
//     file system, which must create the same files and write the same
//     bytes, before decrypting or decompressing anything.
//
// Neither is asserted anywhere: they are printed for the reader of a bench
// run.
package floor

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"repo/chunk"
	"repo/repo/crypto"
	"repo/repo/pack"
)

// pol is a fixed irreducible polynomial: the cost of the rolling hash does
// not depend on which one a repository drew.
const pol chunk.Pol = 0x3DA3358B4DC173

// StageTimes is what Stages measured: the time per stage summed over the
// workers, the elapsed time, and the sizes seen.
type StageTimes struct {
	Files  int
	Chunks int
	// Bytes is the data read; Stored what compression left of it.
	Bytes, Stored                     int64
	Read, Chunk, Hash, Compress, Seal time.Duration
	// Wall is the elapsed time of all workers together.
	Wall time.Duration
}

// Total is the time of all stages, summed over the workers.
func (s StageTimes) Total() time.Duration {
	return s.Read + s.Chunk + s.Hash + s.Compress + s.Seal
}

// copySealer stands in for the codec's sealer, so that its Encode times
// compression alone and sealing is timed as a step of its own.
type copySealer struct{}

func (copySealer) Seal(dst, p []byte) []byte { return append(dst, p...) }
func (copySealer) Open(dst, s []byte) ([]byte, error) {
	return append(dst, s...), nil
}
func (copySealer) Overhead() int { return 0 }

// Stages times the first-backup stages over the regular files below dir
// on workers goroutines, each taking every workers-th file, file by file
// and chunk by chunk, with buffers reused as a backup reuses them (fresh
// memory for each file would be timed as page faults). The stage times are
// summed over the workers; Wall is the elapsed time of the whole, which
// tells how well the cores scale on this machine.
func Stages(dir string, workers int) (StageTimes, error) {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return StageTimes{}, err
	}
	key, err := crypto.NewRandomKey()
	if err != nil {
		return StageTimes{}, err
	}
	sealer := crypto.NewAEAD(key)
	// The codec keeps one zstd encoder per core and blocks callers beyond
	// that, so it is shared like a backup shares it.
	codec := pack.NewCodec(copySealer{}, zstd.SpeedFastest)
	res := make([]StageTimes, workers)
	errs := make([]error, workers)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		var share []string
		for i := w; i < len(paths); i += workers {
			share = append(share, paths[i])
		}
		wg.Go(func() { res[w], errs[w] = stages(share, codec, sealer) })
	}
	wg.Wait()
	st := StageTimes{Wall: time.Since(start)}
	for w := range workers {
		if errs[w] != nil {
			return st, errs[w]
		}
		r := res[w]
		st.Files += r.Files
		st.Chunks += r.Chunks
		st.Bytes += r.Bytes
		st.Stored += r.Stored
		st.Read += r.Read
		st.Chunk += r.Chunk
		st.Hash += r.Hash
		st.Compress += r.Compress
		st.Seal += r.Seal
	}
	return st, nil
}

// stages runs the stages over paths on the calling goroutine.
func stages(paths []string, codec *pack.Codec, sealer crypto.Sealer) (StageTimes, error) {
	var st StageTimes
	class := chunk.FileClass
	c := chunk.NewChunker(pol, class)
	scratch := make([]byte, class.MaxSize)
	file := make([]byte, 0, class.MinSize)
	var stored, sealed []byte
	// chunkDone hashes, compresses and seals one chunk.
	chunkDone := func(ch []byte) {
		st.Chunks++
		t := time.Now()
		_ = chunk.Hash(ch)
		t1 := time.Now()
		stored, _ = codec.Encode(stored[:0], ch)
		t2 := time.Now()
		sealed = sealer.Seal(sealed[:0], stored)
		t3 := time.Now()
		st.Hash += t1.Sub(t)
		st.Compress += t2.Sub(t1)
		st.Seal += t3.Sub(t2)
		st.Stored += int64(len(stored))
	}
	for _, p := range paths {
		st.Files++
		// As in a backup, a file of at least the class's minimum is read
		// by the chunker through its own buffer, a smaller one whole: it
		// is one chunk, which the chunker would not cut anyway.
		t := time.Now()
		f, err := openFile(p)
		if err != nil {
			return st, err
		}
		var size int64
		if fi, err := f.Stat(); err == nil {
			size = fi.Size()
		}
		st.Read += time.Since(t)
		if size < int64(class.MinSize) {
			t := time.Now()
			file, err = readAll(file[:0], f)
			f.Close()
			st.Read += time.Since(t)
			if err != nil {
				return st, fmt.Errorf("read %s: %w", p, err)
			}
			st.Bytes += int64(len(file))
			chunkDone(file)
			continue
		}
		tr := &timedReader{f: f}
		c.Reset(tr)
		for {
			t := time.Now()
			ch, err := c.Next(scratch)
			st.Chunk += time.Since(t)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				f.Close()
				return st, fmt.Errorf("read %s: %w", p, err)
			}
			st.Bytes += int64(len(ch))
			chunkDone(ch)
		}
		f.Close()
		// The chunker's time includes its reads.
		st.Chunk -= tr.d
		st.Read += tr.d
	}
	return st, nil
}

// openFile opens p for reading with the fewest system calls: the floor
// leaves out what a backup adds to each open (no O_NOATIME try, no mode
// check).
func openFile(p string) (*os.File, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// readAll appends what is left of f to buf.
func readAll(buf []byte, f *os.File) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// timedReader adds up the time spent in its reads.
type timedReader struct {
	f *os.File
	d time.Duration
}

func (r *timedReader) Read(b []byte) (int, error) {
	t := time.Now()
	n, err := r.f.Read(b)
	r.d += time.Since(t)
	return n, err
}

// CopyTree copies the directories and regular files below src into dst
// (which must not exist) with workers goroutines writing files, each file
// read whole into a reused buffer and written with one write, and returns
// the time it took. A worker takes all files of a directory at once, as a
// restore does: two workers creating files in one directory wait for each
// other on its lock.
func CopyTree(src, dst string, workers int) (time.Duration, error) {
	if _, err := os.Lstat(dst); err == nil {
		return 0, fmt.Errorf("copy tree: %s exists", dst)
	}
	start := time.Now()
	type job struct{ from, to string }
	jobs := make(chan []job, 64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range workers {
		wg.Go(func() {
			var buf []byte
			for dir := range jobs {
				for _, j := range dir {
					f, err := openFile(j.from)
					if err == nil {
						buf, err = readAll(buf[:0], f)
						f.Close()
					}
					if err == nil {
						err = writeNew(j.to, buf)
					}
					if err != nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
					}
				}
			}
		})
	}
	// copyDir makes dir's copy, queues its files and recurses into its
	// subdirectories.
	var copyDir func(from, to string) error
	copyDir = func(from, to string) error {
		if err := os.Mkdir(to, 0o755); err != nil {
			return err
		}
		entries, err := os.ReadDir(from)
		if err != nil {
			return err
		}
		var files []job
		for _, e := range entries {
			if e.Type().IsRegular() {
				files = append(files, job{filepath.Join(from, e.Name()), filepath.Join(to, e.Name())})
			}
		}
		if len(files) > 0 {
			jobs <- files
		}
		for _, e := range entries {
			if e.IsDir() {
				if err := copyDir(filepath.Join(from, e.Name()), filepath.Join(to, e.Name())); err != nil {
					return err
				}
			}
		}
		return nil
	}
	werr := copyDir(src, dst)
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	if werr != nil {
		return 0, fmt.Errorf("copy tree: %w", werr)
	}
	if firstErr != nil {
		return 0, fmt.Errorf("copy tree: %w", firstErr)
	}
	return elapsed, nil
}

// writeNew creates file p, which must not exist, holding b.
func writeNew(p string, b []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
