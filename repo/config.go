package repo

import (
	"encoding/json"
	"fmt"
	"strings"

	"repo/chunk"
)

// FormatVersion is the repository format this code reads and writes.
const FormatVersion = 1

// DefaultPackSize is the target size of a pack file: large enough that a
// backend holds few objects, small enough that a damaged pack loses little.
const DefaultPackSize = 16 << 20

// Chunk class names in Config.ChunkClasses.
const (
	ClassFiles = "files"
	// ClassStreams is for dump streams (--stdin, --stdin-from-command).
	// Configs written before it existed lack it; streams then use
	// ClassFiles.
	ClassStreams = "streams"
)

// Blob id modes in Config.BlobIDs.
const (
	BlobIDKeyed   = "blake3-keyed" // BLAKE3-256 keyed with Key.BlobID
	BlobIDUnkeyed = "blake3"       // plain BLAKE3-256 (unencrypted repositories)
)

// Config is the repository's fixed parameters, stored sealed as "config".
// It is written once by init and never changed: every field decides how
// stored data is named or cut, so changing one would break dedup or reads.
type Config struct {
	Version   int    `json:"version"`
	ID        string `json:"id"` // 64 random hex digits; names the local cache
	Encrypted bool   `json:"encrypted"`
	// BlobIDs says how blob ids are computed (BlobIDKeyed or BlobIDUnkeyed).
	BlobIDs string `json:"blob_ids"`
	// Polynomial of the rolling hash, random per repository.
	Polynomial chunk.Pol `json:"chunker_polynomial"`
	// ChunkClasses holds the size classes by name (ClassFiles, …).
	ChunkClasses map[string]chunk.Class `json:"chunk_classes"`
	// PackSize is the target pack size in bytes.
	PackSize int `json:"pack_size"`
	// Compression is the default level: "auto", "fastest", "better", "off".
	Compression string `json:"compression"`
}

// validate rejects configs this code cannot use safely.
func (c *Config) validate() error {
	if c.Version != FormatVersion {
		return fmt.Errorf("unsupported repository format version %d (this program reads %d)", c.Version, FormatVersion)
	}
	// The id names the local cache directory: only hex digits may reach a
	// file path.
	if len(c.ID) != 64 || strings.Trim(c.ID, "0123456789abcdef") != "" {
		return fmt.Errorf("invalid repository id %q", c.ID)
	}
	if c.BlobIDs != BlobIDKeyed && c.BlobIDs != BlobIDUnkeyed {
		return fmt.Errorf("unknown blob id mode %q", c.BlobIDs)
	}
	if c.Polynomial.Deg() != 53 || !c.Polynomial.Irreducible() {
		return fmt.Errorf("chunker polynomial %v is not irreducible of degree 53", c.Polynomial)
	}
	fc, ok := c.ChunkClasses[ClassFiles]
	if !ok {
		return fmt.Errorf("config lacks the %q chunk class", ClassFiles)
	}
	if err := fc.Validate(); err != nil {
		return fmt.Errorf("chunk class %q: %w", ClassFiles, err)
	}
	if fc.MaxSize > 64<<20 {
		return fmt.Errorf("chunk class %q: max size %d above 64 MiB", ClassFiles, fc.MaxSize)
	}
	if sc, ok := c.ChunkClasses[ClassStreams]; ok {
		if err := sc.Validate(); err != nil {
			return fmt.Errorf("chunk class %q: %w", ClassStreams, err)
		}
		if sc.MaxSize > 64<<20 {
			return fmt.Errorf("chunk class %q: max size %d above 64 MiB", ClassStreams, sc.MaxSize)
		}
	}
	if c.PackSize < 1<<20 || c.PackSize > 1<<30 {
		return fmt.Errorf("invalid pack size %d", c.PackSize)
	}
	if _, err := compressionLevel(c.Compression); err != nil {
		return err
	}
	return nil
}

func parseConfig(b []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return &c, nil
}
