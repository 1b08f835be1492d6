package capture

import (
	"github.com/replfs/litefs/ltx"
	"github.com/replfs/litefs/store"
	sltx "github.com/superfly/ltx"
)

// verify recomputes the checksum of the whole database as of the commit and
// logs loudly if the rolling checksum disagrees. Only used in tests.
func (d *DB) verify(pos sltx.Pos, tx store.Tx) {
	buf := make([]byte, tx.PageSize)
	got := ltx.EmptyChecksum
	lock := ltx.LockPgno(tx.PageSize)
	for pgno := uint32(1); pgno <= tx.Commit; pgno++ {
		if pgno == lock {
			continue
		}
		if err := tx.Read(pgno, buf); err != nil {
			d.reg.log.Error("verify: read", "db", d.name, "pgno", pgno, "err", err)
			return
		}
		got ^= ltx.PageChecksum(pgno, buf)
	}
	got |= sltx.ChecksumFlag
	if got != pos.PostApplyChecksum {
		d.reg.log.Error("verify: CHECKSUM MISMATCH", "db", d.name, "pos", pos, "computed", got)
	}
}
