package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strconv"

	"github.com/spf13/cobra"
)

// mainDependencies are the modules whose version changes what repo stores
// or how it talks to storage, with the role each plays; 'version -v' lists
// them. TestVersionDependencies fails when one is no longer linked in.
var mainDependencies = []struct{ path, role string }{
	{"github.com/restic/chunker", "content-defined chunking"},
	{"github.com/zeebo/blake3", "blob ids (BLAKE3)"},
	{"github.com/klauspost/compress", "zstd compression"},
	{"golang.org/x/crypto", "argon2id, XChaCha20-Poly1305, SSH"},
	{"go.etcd.io/bbolt", "index cache"},
	{"modernc.org/sqlite", "SQLite images and integrity checks"},
	{"github.com/pkg/sftp", "SFTP backend"},
	{"github.com/minio/minio-go/v7", "S3 backend"},
	{"github.com/spf13/cobra", "command line"},
}

// versionInfo describes this binary; it is the summary object of
// 'repo version --json'. Fields the build did not record are empty and
// left out.
type versionInfo struct {
	MessageType string `json:"message_type"` // "summary"
	// Version is the release or 'git describe' output the Makefile sets
	// (-X main.version), "dev" for a plain go build.
	Version string `json:"version"`
	// Commit, CommitTime and Modified come from the VCS stamp of go build
	// (vcs.revision, vcs.time, vcs.modified); absent with -buildvcs=false
	// or outside a git checkout. Modified is true when the tree had
	// uncommitted changes.
	Commit     string `json:"commit,omitempty"`
	CommitTime string `json:"commit_time,omitempty"`
	Modified   *bool  `json:"modified,omitempty"`
	GoVersion  string `json:"go_version"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	// Dependencies are the versions of mainDependencies, with --verbose.
	Dependencies []dependencyVersion `json:"dependencies,omitempty"`
}

// dependencyVersion is one linked module; Version is "(devel)" or a
// replacement's when the module was replaced.
type dependencyVersion struct {
	Path    string `json:"path"`
	Version string `json:"version"`
	Role    string `json:"role"`
}

// readVersionInfo collects versionInfo from the build information; with
// deps it includes the versions of mainDependencies that are linked in.
func readVersionInfo(deps bool) versionInfo {
	v := versionInfo{MessageType: "summary", Version: version, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.CommitTime = s.Value
		case "vcs.modified":
			if m, err := strconv.ParseBool(s.Value); err == nil {
				v.Modified = &m
			}
		}
	}
	if !deps {
		return v
	}
	linked := map[string]string{}
	for _, d := range bi.Deps {
		ver := d.Version
		if d.Replace != nil {
			ver = d.Replace.Path + " " + d.Replace.Version
		}
		linked[d.Path] = ver
	}
	for _, m := range mainDependencies {
		if ver, ok := linked[m.path]; ok {
			v.Dependencies = append(v.Dependencies, dependencyVersion{m.path, ver, m.role})
		}
	}
	return v
}

// writeText writes v for people: the version line, then one line per field
// that the build recorded.
func (v versionInfo) writeText(w io.Writer) {
	fmt.Fprintf(w, "repo %s\n", v.Version)
	if v.Commit != "" {
		state := ""
		if v.Modified != nil && *v.Modified {
			state = " (modified: built from a tree with uncommitted changes)"
		}
		fmt.Fprintf(w, "  commit:      %s%s\n", v.Commit, state)
	}
	if v.CommitTime != "" {
		fmt.Fprintf(w, "  commit time: %s\n", v.CommitTime)
	}
	fmt.Fprintf(w, "  go:          %s\n", v.GoVersion)
	fmt.Fprintf(w, "  platform:    %s/%s\n", v.OS, v.Arch)
	if len(v.Dependencies) > 0 {
		fmt.Fprintln(w, "  dependencies:")
		for _, d := range v.Dependencies {
			fmt.Fprintf(w, "    %-32s %-12s %s\n", d.Path, d.Version, d.Role)
		}
	}
}

func newVersionCmd(g *globalOptions) *cobra.Command {
	return withLock(&cobra.Command{
		Use:   "version",
		Short: "Print the version and build information",
		Long: `Print the version of repo and what the build recorded: the commit it was
built from and whether the tree had uncommitted changes, the commit's time,
the Go version, and the operating system and architecture. With -v
(--verbose) also the versions of the main libraries: chunking, hashing,
compression, encryption, the index cache, SQLite and the SFTP and S3
clients. Include this in bug reports. It does not open a repository.

Examples:
  repo version
  repo version -v
  repo version --json | jq -r .commit

Exit codes: 0 ok, 2 usage.`,
		Args: argsRange(0, 0),
		RunE: func(c *cobra.Command, _ []string) error {
			v := readVersionInfo(verboseFlag(c))
			if g.json {
				printJSON(g.out, v)
				return nil
			}
			v.writeText(g.out)
			return nil
		},
	}, lockNone)
}

// verboseFlag reports whether the global -v/--verbose is set. It is read
// through the flag set rather than globalOptions, where the progress
// display keeps it, so that version depends only on the flag's name; a
// count (-vv) or a bool both work.
func verboseFlag(c *cobra.Command) bool {
	f := c.Flags().Lookup("verbose")
	if f == nil || !f.Changed {
		return false
	}
	switch f.Value.String() {
	case "", "0", "false":
		return false
	}
	return true
}
