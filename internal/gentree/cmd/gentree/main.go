// Command gentree writes a deterministic test tree (see package gentree);
// the demo uses it.
package main

import (
	"flag"
	"fmt"
	"os"

	"repo/internal/gentree"
)

func main() {
	var s gentree.Spec
	flag.Uint64Var(&s.Seed, "seed", 1, "seed")
	flag.IntVar(&s.TextFiles, "text", 2000, "number of text files")
	flag.IntVar(&s.TextMax, "text-max", 50<<10, "largest text file in bytes")
	flag.IntVar(&s.BinFiles, "bin", 10, "number of binary files")
	flag.IntVar(&s.BinMax, "bin-max", 8<<20, "largest binary file in bytes")
	flag.IntVar(&s.RandFiles, "rand", 2, "number of random files")
	flag.IntVar(&s.RandSize, "rand-size", 16<<20, "size of each random file")
	flag.BoolVar(&s.Odd, "odd", true, "add odd names, symlinks and modes")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: gentree [flags] DIR")
		os.Exit(2)
	}
	if err := gentree.Generate(flag.Arg(0), s); err != nil {
		fmt.Fprintln(os.Stderr, "gentree:", err)
		os.Exit(1)
	}
}
