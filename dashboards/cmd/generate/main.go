// Command generate writes chainwatch's dashboards as JSON into the
// dashboards folder (`make dashboards`).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/chainwatch/chainwatch/dashboards"
)

func main() {
	dir := "."
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	for name, b := range dashboards.All() {
		out, err := dashboards.Render(b)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			os.Exit(1)
		}
		if err := os.WriteFile(filepath.Join(dir, name), out, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
