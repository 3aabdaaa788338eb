package index

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"reflect"
	"runtime"
	"testing"

	"repo/chunk"
)

// testID returns a deterministic id for n.
func testID(n uint64) chunk.ID {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], n)
	return chunk.Hash(b[:])
}

// makeFile returns a deterministic index file: packs packs of perPack
// blobs each, data and tree blobs in separate packs, ids derived from seed.
func makeFile(seed uint64, packs, perPack int) *File {
	r := rand.New(rand.NewPCG(seed, 0x696e6478))
	f := &File{}
	for p := range packs {
		pack := Pack{ID: testID(seed<<32 | uint64(p)<<20 | 0xfffff)}
		typ := DataBlob
		if p%4 == 3 {
			typ = TreeBlob
		}
		off := uint32(0)
		for range perPack {
			var id chunk.ID
			for i := 0; i < len(id); i += 8 {
				binary.LittleEndian.PutUint64(id[i:], r.Uint64())
			}
			raw := uint32(r.IntN(1<<20)) + 1
			b := Blob{Type: typ, ID: id, Offset: off, Length: raw/2 + 40, RawLength: raw, Compression: CompressionZstd}
			if r.IntN(3) == 0 {
				b.Length, b.Compression = raw+40, CompressionNone
			}
			off += b.Length
			pack.Blobs = append(pack.Blobs, b)
		}
		f.Packs = append(f.Packs, pack)
	}
	return f
}

func TestBlobTypeString(t *testing.T) {
	tests := []struct {
		t     BlobType
		want  string
		valid bool
	}{
		{DataBlob, "data", true},
		{TreeBlob, "tree", true},
		{0, "invalid(0)", false},
		{3, "invalid(3)", false},
	}
	for _, tt := range tests {
		if got := tt.t.String(); got != tt.want {
			t.Errorf("BlobType(%d).String() = %q, want %q", tt.t, got, tt.want)
		}
		if got := tt.t.Valid(); got != tt.valid {
			t.Errorf("BlobType(%d).Valid() = %v, want %v", tt.t, got, tt.valid)
		}
	}
}

// goldenBlob and its encoding pin the entry format (shared with pack
// headers).
var goldenBlob = Blob{
	Type:        TreeBlob,
	ID:          chunk.ID{0: 0xaa, 31: 0xbb},
	Offset:      0x01020304,
	Length:      0x0a0b0c0d,
	RawLength:   0xdeadbeef,
	Compression: CompressionZstd,
}

const goldenBlobHex = "02" + // type
	"aa000000000000000000000000000000000000000000000000000000000000bb" + // id
	"04030201" + "0d0c0b0a" + "efbeadde" + // offset, length, raw length (LE)
	"01" // compression

func TestBlobEncoding(t *testing.T) {
	enc := AppendBlob([]byte("prefix"), goldenBlob)
	if got := hex.EncodeToString(enc[6:]); got != goldenBlobHex {
		t.Fatalf("AppendBlob = %s\nwant         %s", got, goldenBlobHex)
	}
	if len(enc) != 6+BlobSize || string(enc[:6]) != "prefix" {
		t.Fatalf("AppendBlob did not append: %q", enc[:6])
	}
	b, err := ParseBlob(append(enc[6:], 0xff)) // extra bytes are not ParseBlob's business
	if err != nil || b != goldenBlob {
		t.Fatalf("ParseBlob = %+v, %v; want %+v", b, err, goldenBlob)
	}
}

func TestParseBlobErrors(t *testing.T) {
	valid, _ := hex.DecodeString(goldenBlobHex)
	with := func(i int, v byte) []byte {
		b := bytes.Clone(valid)
		b[i] = v
		return b
	}
	tests := map[string][]byte{
		"empty":         nil,
		"short":         valid[:BlobSize-1],
		"type 0":        with(0, 0),
		"type 3":        with(0, 3),
		"compression 2": with(BlobSize-1, 2),
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if b, err := ParseBlob(in); !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseBlob = %+v, %v; want an ErrMalformed error", b, err)
			}
		})
	}
}

// TestFileGolden pins the index file format byte for byte.
func TestFileGolden(t *testing.T) {
	f := &File{
		Supersedes: []chunk.ID{{0: 0x11}},
		Packs: []Pack{
			{ID: chunk.ID{0: 0x22}, Blobs: []Blob{goldenBlob}},
			{ID: chunk.ID{31: 0x33}},
		},
	}
	want := "52494458" + "01" + // "RIDX", version 1
		"01" + "11" + zeros(31) + // 1 superseded id
		"02" + // 2 packs
		"22" + zeros(31) + "01" + goldenBlobHex + // pack 1: 1 blob
		zeros(31) + "33" + "00" // pack 2: no blob
	got := f.Encode()
	if hex.EncodeToString(got) != want {
		t.Fatalf("Encode = %x\nwant     %s", got, want)
	}
	back, err := DecodeFile(got)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, f) {
		t.Fatalf("DecodeFile = %+v, want %+v", back, f)
	}
}

func zeros(n int) string { return hex.EncodeToString(make([]byte, n)) }

func TestFileRoundTrip(t *testing.T) {
	big := makeFile(1, 300, 200) // 2-byte uvarints for both counts
	big.Supersedes = []chunk.ID{testID(1), testID(2), testID(3)}
	tests := map[string]*File{
		"empty":            {},
		"supersedes only":  {Supersedes: []chunk.ID{testID(7)}},
		"one pack":         makeFile(2, 1, 1),
		"empty pack":       {Packs: []Pack{{ID: testID(9)}}},
		"many":             makeFile(3, 20, 50),
		"large counts":     big,
		"128 supersedes":   {Supersedes: make([]chunk.ID, 128)},
		"mixed empty pack": {Packs: []Pack{makeFile(4, 1, 3).Packs[0], {ID: testID(5)}, makeFile(5, 1, 2).Packs[0]}},
	}
	for name, f := range tests {
		t.Run(name, func(t *testing.T) {
			enc := f.Encode()
			back, err := DecodeFile(enc)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, f) {
				t.Fatalf("round trip changed the file")
			}
			if again := back.Encode(); !bytes.Equal(again, enc) {
				t.Fatal("re-encoding differs")
			}
			if cap(enc) != len(enc) {
				t.Errorf("Encode sized its buffer %d for %d bytes", cap(enc), len(enc))
			}
		})
	}
}

func TestDecodeFileErrors(t *testing.T) {
	valid := makeFile(6, 3, 4)
	valid.Supersedes = []chunk.ID{testID(1)}
	enc := valid.Encode()

	header := []byte("RIDX\x01")
	huge := binary.AppendUvarint(bytes.Clone(header), 1<<60)
	huge = append(huge, make([]byte, 100-len(huge))...)
	hugePacks := append(bytes.Clone(header), 0)
	hugePacks = binary.AppendUvarint(hugePacks, 1<<62)
	hugePacks = append(hugePacks, make([]byte, 100)...)
	hugeBlobs := append(bytes.Clone(header), 0, 1)
	hugeBlobs = append(hugeBlobs, make([]byte, 32)...)
	hugeBlobs = binary.AppendUvarint(hugeBlobs, 1<<40)
	hugeBlobs = append(hugeBlobs, make([]byte, 100)...)
	// A blob with type 0 in the middle of a valid file.
	badType := bytes.Clone(enc)
	firstBlob := len(header) + 1 + 32 + 1 + 32 + 1
	badType[firstBlob] = 0
	badCompression := bytes.Clone(enc)
	badCompression[firstBlob+BlobSize-1] = 7

	tests := map[string][]byte{
		"empty":                 nil,
		"magic only":            []byte("RIDX"),
		"bad magic":             append([]byte("RIDY\x01"), 0, 0),
		"version 0":             append([]byte("RIDX\x00"), 0, 0),
		"version 2":             append([]byte("RIDX\x02"), 0, 0),
		"no counts":             header,
		"no pack count":         append(bytes.Clone(header), 0),
		"trailing byte":         append(bytes.Clone(enc), 0),
		"non-minimal uvarint":   append(bytes.Clone(header), 0x80, 0x00, 0),
		"overlong uvarint":      append(append(bytes.Clone(header), bytes.Repeat([]byte{0xff}, 10)...), 1),
		"2^60 supersedes":       huge,
		"2^62 packs":            hugePacks,
		"2^40 blobs":            hugeBlobs,
		"blob type 0":           badType,
		"blob compression 7":    badCompression,
		"missing last blob":     enc[:len(enc)-BlobSize],
		"missing last blob pad": append(enc[:len(enc)-BlobSize], make([]byte, BlobSize-1)...),
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if f, err := DecodeFile(in); !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeFile = %+v, %v; want an ErrMalformed error", f, err)
			}
		})
	}

	t.Run("every truncation", func(t *testing.T) {
		for n := range len(enc) {
			if _, err := DecodeFile(enc[:n]); err == nil {
				t.Fatalf("DecodeFile accepted the first %d of %d bytes", n, len(enc))
			}
		}
	})
}

// TestDecodeFileBoundedAllocation checks that a count claiming far more
// entries than the input holds costs no large allocation.
func TestDecodeFileBoundedAllocation(t *testing.T) {
	in := binary.AppendUvarint([]byte("RIDX\x01"), 1<<60)
	in = append(in, make([]byte, 100)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		if _, err := DecodeFile(in); err == nil {
			t.Fatal("accepted")
		}
	}
	runtime.ReadMemStats(&after)
	if perCall := (after.TotalAlloc - before.TotalAlloc) / 100; perCall > 4096 {
		t.Errorf("DecodeFile of a %d-byte input allocated %d bytes per call", len(in), perCall)
	}
}

// FuzzDecodeFile checks that DecodeFile never panics, that what it accepts
// re-encodes to the same bytes (the encoding is unique), and that the
// decoded size is bounded by the input's.
func FuzzDecodeFile(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("RIDX\x01\x00\x00"))
	f.Add((&File{Supersedes: []chunk.ID{testID(1)}}).Encode())
	f.Add(makeFile(7, 2, 3).Encode())
	f.Add((&File{Packs: []Pack{{ID: testID(2)}}}).Encode())
	enc := makeFile(8, 1, 2).Encode()
	f.Add(enc[:len(enc)-1])
	f.Add(binary.AppendUvarint([]byte("RIDX\x01"), 1<<60))
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := DecodeFile(b)
		if err != nil {
			if file != nil {
				t.Fatal("file and error")
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if got := file.Encode(); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, got)
		}
		n := len(file.Supersedes)*32 + len(file.Packs)*33
		for _, p := range file.Packs {
			n += len(p.Blobs) * BlobSize
		}
		if n > len(b) {
			t.Fatalf("decoded %d bytes of entries from %d bytes", n, len(b))
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	f := makeFile(9, 100, 1000) // 100k blobs, 4.6 MB
	size := len(f.Encode())
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		f.Encode()
	}
}

func BenchmarkDecode(b *testing.B) {
	enc := makeFile(9, 100, 1000).Encode()
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeFile(enc); err != nil {
			b.Fatal(err)
		}
	}
}
