package main

import (
	"path/filepath"

	"github.com/spf13/pflag"

	"repo/repo"
)

// filterFlags select snapshots: which ones are listed, or which one
// "latest" means.
type filterFlags struct {
	host  string
	tags  []string
	paths []string
}

// addFlags adds --host, --tag and --path; prefix starts their help text
// (e.g. "for latest: ").
func (f *filterFlags) addFlags(fs *pflag.FlagSet, prefix string) {
	fs.StringVar(&f.host, "host", "", prefix+"only snapshots of `host`")
	fs.StringArrayVar(&f.tags, "tag", nil, prefix+"only snapshots with `tag` (repeatable: all of them)")
	fs.StringArrayVar(&f.paths, "path", nil, prefix+"only snapshots of exactly these `paths` (repeatable)")
}

// filter returns the snapshot filter; paths are made absolute as backup
// records them.
func (f *filterFlags) filter() repo.SnapshotFilter {
	sf := repo.SnapshotFilter{Host: f.host, Tags: f.tags}
	for _, p := range f.paths {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		sf.Paths = append(sf.Paths, p)
	}
	return sf
}
