package main

import (
	"path/filepath"

	"github.com/spf13/pflag"

	"repo/repo"
)

// filterFlags select which snapshot "latest" means.
type filterFlags struct {
	host  string
	tags  []string
	paths []string
}

func (f *filterFlags) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&f.host, "host", "", "for latest: only snapshots of `host`")
	fs.StringArrayVar(&f.tags, "tag", nil, "for latest: only snapshots with `tag` (repeatable)")
	fs.StringArrayVar(&f.paths, "path", nil, "for latest: only snapshots of exactly these `paths` (repeatable)")
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
