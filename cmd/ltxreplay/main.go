// Command ltxreplay rebuilds a database from a directory of LTX files and
// reports the resulting position; a debugging aid for the history format.
package main

import (
	"fmt"
	"os"

	"github.com/replfs/litefs/ltx"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: ltxreplay LTX_DIR OUT_DB")
		os.Exit(2)
	}
	pos, err := ltx.Replay(os.Args[1], os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "ltxreplay:", err)
		os.Exit(1)
	}
	fmt.Println(pos)
}
