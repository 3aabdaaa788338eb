package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

func newVersionCmd(g *globalOptions) *cobra.Command {
	return withLock(&cobra.Command{
		Use:   "version",
		Short: "Print the version and build information",
		Args:  argsRange(0, 0),
		RunE: func(c *cobra.Command, _ []string) error {
			if g.json {
				printJSON(g.out, map[string]any{"message_type": "version", "version": versionString(), "os": runtime.GOOS, "arch": runtime.GOARCH})
				return nil
			}
			fmt.Fprintf(g.out, "repo %s %s/%s\n", versionString(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}, lockNone)
}
