package pack

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// BenchmarkCompressGrouping measures what compressing several small blobs
// as one zstd frame would gain over one frame per blob (what Codec does):
// the shared benchmark's SQLite database in groups of 1 to 256 pages of
// 4 KiB, and its 1-50 KiB text files alone or concatenated into groups of
// about 1 MiB. It reports the compressed share (ratio) beside the speed,
// on one core. The data comes from ../shared/bench/gen.sh; without it
// (BENCH_DATA, default /tmp/bench/data) the benchmark is skipped. It
// informs a format decision and asserts nothing.
func BenchmarkCompressGrouping(b *testing.B) {
	dir := os.Getenv("BENCH_DATA")
	if dir == "" {
		dir = "/tmp/bench/data"
	}
	db, err := os.ReadFile(filepath.Join(dir, "db-day0", "app.db"))
	if err != nil {
		b.Skipf("no benchmark data: %v", err)
	}
	var texts [][]byte
	err = filepath.WalkDir(filepath.Join(dir, "files", "text"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		t, err := os.ReadFile(p)
		texts = append(texts, t)
		return err
	})
	if err != nil {
		b.Skipf("no benchmark data: %v", err)
	}

	// Blob sets: the database cut into groups of n pages, the text files
	// one by one or concatenated up to 1 MiB.
	pages := func(n int) [][]byte {
		var out [][]byte
		for off := 0; off < len(db); off += n * 4096 {
			out = append(out, db[off:min(len(db), off+n*4096)])
		}
		return out
	}
	var grouped [][]byte
	var cur []byte
	for _, t := range texts {
		if cur = append(cur, t...); len(cur) >= 1<<20 {
			grouped, cur = append(grouped, cur), nil
		}
	}
	if len(cur) > 0 {
		grouped = append(grouped, cur)
	}
	sets := []struct {
		name  string
		blobs [][]byte
	}{
		{"db/page", pages(1)},
		{"db/4pages", pages(4)},
		{"db/16pages", pages(16)},
		{"db/64pages", pages(64)},
		{"db/256pages", pages(256)},
		{"text/file", texts},
		{"text/1MiB", grouped},
	}
	for _, level := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault} {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level),
			zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
		if err != nil {
			b.Fatal(err)
		}
		for _, set := range sets {
			var in int64
			for _, blob := range set.blobs {
				in += int64(len(blob))
			}
			b.Run(set.name+"/"+level.String(), func(b *testing.B) {
				b.SetBytes(in)
				dst := make([]byte, 0, 2<<20)
				var out int64
				for b.Loop() {
					out = 0
					for _, blob := range set.blobs {
						out += int64(len(enc.EncodeAll(blob, dst[:0])))
					}
				}
				b.ReportMetric(float64(out)/float64(in), "ratio")
			})
		}
	}
}
