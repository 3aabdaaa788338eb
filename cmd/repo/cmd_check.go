package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"repo/repo"
)

type checkOptions struct {
	readData bool
}

func newCheckCmd(g *globalOptions) *cobra.Command {
	var o checkOptions
	c := &cobra.Command{
		Use:   "check",
		Short: "Verify the repository's structure, and optionally all data",
		Long: `Check the repository without changing it: the config and keys open,
every index file parses, every indexed pack exists with the size the index
says, every snapshot's trees are readable and every block they reference is
indexed. Packs that no index lists are reported as notes. With --read-data
every pack is also downloaded and every block decrypted, decompressed and
verified against its hash. Every problem found is reported, not just the
first.

Examples:
  repo check
  repo check --read-data
  repo check --json | jq 'select(.message_type=="finding")'

Exit codes: 0 no errors (notes may be printed), 1 errors found,
10 no repository, 12 wrong password.`,
		Args: argsRange(0, 0),
		RunE: func(c *cobra.Command, _ []string) error { return runCheck(c, g, o) },
	}
	c.Flags().BoolVar(&o.readData, "read-data", false, "also read and verify every pack")
	return withLock(c, lockShared)
}

func runCheck(c *cobra.Command, g *globalOptions, o checkOptions) error {
	ctx := c.Context()
	r, ctx, closeRepo, err := g.openRepository(ctx, false)
	if err != nil {
		return err
	}
	defer closeRepo()
	res, err := r.Check(ctx, repo.CheckOptions{ReadData: o.readData}, func(f repo.Finding) {
		if g.json {
			printJSON(g.out, struct {
				MessageType string `json:"message_type"`
				repo.Finding
			}{"finding", f})
			return
		}
		fmt.Fprintf(g.out, "%s: %s %s: %s\n", f.Level, f.Kind, f.Object, f.Message)
	})
	if err != nil {
		return err
	}
	if g.json {
		printJSON(g.out, struct {
			MessageType string `json:"message_type"`
			repo.CheckResult
		}{"summary", res})
	} else {
		read := ""
		if o.readData {
			read = fmt.Sprintf(", read %d packs", res.PacksRead)
		}
		fmt.Fprintf(g.out, "checked %d snapshots, %d trees, %d index files, %d packs, %d blobs%s: %d errors, %d notes\n",
			res.Snapshots, res.Trees, res.IndexFiles, res.Packs, res.Blobs, read, res.Errors, res.Notes)
	}
	if res.Errors > 0 {
		return fmt.Errorf("check found %d errors", res.Errors)
	}
	return nil
}
