package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

func init() {
	register(&command{
		name:    "version",
		summary: "print the version and build information",
		usage:   "Usage: xdpsec version\n\nExample:\n  xdpsec version",
		run: func(args []string, stdout, stderr io.Writer) error {
			if len(args) > 0 {
				return usagef("version takes no arguments, got %q", args[0])
			}
			v := "(devel)"
			if bi, ok := debug.ReadBuildInfo(); ok {
				v = bi.Main.Version
				fmt.Fprintf(stdout, "xdpsec %s %s\n", v, bi.GoVersion)
				return nil
			}
			fmt.Fprintf(stdout, "xdpsec %s\n", v)
			return nil
		},
	})
}
