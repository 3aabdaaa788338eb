package main

import (
	"github.com/spf13/cobra"

	"repo/repo"
	"repo/repo/crypto"
)

type initOptions struct {
	insecureNoPassword bool
	compression        string
	packSizeMiB        int
	kdfMemoryMiB       int
	kdfTime            int
}

func newInitCmd(g *globalOptions) *cobra.Command {
	var o initOptions
	c := &cobra.Command{
		Use:   "init",
		Short: "Create a new repository",
		Long: `Create a new repository at -r. The password (REPO_PASSWORD,
REPO_PASSWORD_FILE, --password-file, or a prompt) wraps a random master key;
without it nothing in the repository can be read. A location that already
holds a repository is refused and left unchanged.

Examples:
  repo init -r /srv/backup
  REPO_PASSWORD_FILE=~/.repo-pw repo init -r /mnt/usb/repo
  repo init -r ./test-repo --insecure-no-password
  repo init -r /srv/backup --kdf-memory 256 --kdf-time 4   # a costlier key

The password is stretched with argon2id (default 64 MiB and 3 passes,
about 0.2 s here); --kdf-memory and --kdf-time change that for this key,
e.g. less memory for a small device, or more for more protection against
guessing. Every command that opens the repository pays this cost once.

Exit codes: 0 created, 1 error (including: a repository exists there), 2 usage.`,
		Args: argsRange(0, 0),
		RunE: func(c *cobra.Command, _ []string) error { return runInit(c, g, o) },
	}
	c.Flags().BoolVar(&o.insecureNoPassword, "insecure-no-password", false, "create an unencrypted repository (anyone with access to the storage can read it)")
	c.Flags().StringVar(&o.compression, "compression", "auto", "default compression: auto (= fastest today), fastest, better (zstd default level), off")
	c.Flags().IntVar(&o.packSizeMiB, "pack-size", 16, "target pack size in `MiB`")
	c.Flags().IntVar(&o.kdfMemoryMiB, "kdf-memory", 64, "argon2id memory in `MiB` for the password (1 to 4096)")
	c.Flags().IntVar(&o.kdfTime, "kdf-time", 3, "argon2id passes for the password (1 to 100)")
	return withLock(c, lockNone)
}

// initSummary is the summary line of init --json.
type initSummary struct {
	MessageType string `json:"message_type"`
	// ID is the repository's id (64 hex digits), which names its cache.
	ID          string `json:"id"`
	Location    string `json:"location"`
	Encrypted   bool   `json:"encrypted"`
	Compression string `json:"compression"`
	PackSize    int    `json:"pack_size"` // target size of a pack, in bytes
}

func runInit(c *cobra.Command, g *globalOptions, o initOptions) error {
	ctx := c.Context()
	if o.packSizeMiB < 1 || o.packSizeMiB > 1024 {
		return usageError("--pack-size must be between 1 and 1024 MiB")
	}
	if err := repo.ValidCompression(o.compression); err != nil {
		return usageError("--compression: %v", err)
	}
	if o.kdfMemoryMiB < 1 || o.kdfMemoryMiB > 4096 || o.kdfTime < 1 || o.kdfTime > 100 {
		return usageError("--kdf-memory must be 1 to 4096 MiB and --kdf-time 1 to 100")
	}
	opts := repo.InitOptions{Insecure: o.insecureNoPassword, Compression: o.compression, PackSize: o.packSizeMiB << 20,
		KDF: crypto.KDFParams{Time: uint32(o.kdfTime), MemoryKiB: uint32(o.kdfMemoryMiB) << 10, Threads: crypto.DefaultKDF.Threads}}
	if !o.insecureNoPassword {
		pw, err := g.password("enter a password for the new repository: ", true)
		if err != nil {
			return err
		}
		if pw == "" {
			return usageError("empty password: give one, or use --insecure-no-password")
		}
		opts.Password = pw
	}
	be, err := g.backend(ctx, true)
	if err != nil {
		return err
	}
	defer be.Close()
	cfg, err := repo.Init(ctx, be, opts)
	if err != nil {
		return err
	}
	if g.json {
		printJSON(g.out, initSummary{"summary", cfg.ID, be.Location(), cfg.Encrypted, cfg.Compression, cfg.PackSize})
		return nil
	}
	enc := "encrypted"
	if !cfg.Encrypted {
		enc = "UNENCRYPTED"
	}
	g.verbosef("created %s repository %s at %s", enc, cfg.ID[:8], be.Location())
	return nil
}
