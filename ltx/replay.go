package ltx

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	sltx "github.com/superfly/ltx"
)

// Replay applies every LTX file in dir, in TXID order, to the database file
// at dbPath (created if missing), verifying each file's checksums. It is how
// tests prove that a history reproduces a database exactly.
func Replay(dir, dbPath string) (sltx.Pos, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return sltx.Pos{}, err
	}
	var txids []sltx.TXID
	for _, e := range ents {
		if minTXID, maxTXID, err := sltx.ParseFilename(e.Name()); err == nil && minTXID == maxTXID {
			txids = append(txids, minTXID)
		}
	}
	sort.Slice(txids, func(i, j int) bool { return txids[i] < txids[j] })
	f, err := os.OpenFile(dbPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return sltx.Pos{}, err
	}
	defer f.Close()
	var pos sltx.Pos
	for i, txid := range txids {
		if i > 0 && txid != txids[i-1]+1 {
			return pos, fmt.Errorf("gap in history after txid %s", txids[i-1])
		}
		hdr, trailer, err := ApplyFile(filepath.Join(dir, sltx.FormatFilename(txid, txid)), f, i > 0)
		if err != nil {
			return pos, err
		}
		if i > 0 && hdr.PreApplyChecksum != pos.PostApplyChecksum {
			return pos, fmt.Errorf("txid %s: pre-apply checksum %s does not follow %s", txid, hdr.PreApplyChecksum, pos)
		}
		pos = sltx.NewPos(hdr.MaxTXID, trailer.PostApplyChecksum)
	}
	return pos, nil
}
