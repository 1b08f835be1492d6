package consul

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/consul/api"

	"github.com/replfs/litefs/lease"
)

// casAttempts bounds SetClusterID's retries when the key changes under it.
// Each retry means another node wrote meanwhile, so a couple is plenty.
const casAttempts = 5

func (l *Leaser) clusterIDKey() string { return l.cfg.Key + "-cluster-id" }

// ClusterID returns the cluster ID stored next to the lock, "" if none.
func (l *Leaser) ClusterID(ctx context.Context) (string, error) {
	p, _, err := l.client.KV().Get(l.clusterIDKey(), qopts(ctx))
	if err != nil {
		return "", fmt.Errorf("consul cluster id %s: %w", l.clusterIDKey(), err)
	}
	if p == nil {
		return "", nil
	}
	return string(p.Value), nil
}

// SetClusterID records id unless another ID is recorded. The write is a
// check-and-set so two nodes racing to initialise the cluster cannot both
// win with different IDs: the loser re-reads and sees the mismatch.
func (l *Leaser) SetClusterID(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("consul set cluster id: empty id")
	}
	kv := l.client.KV()
	key := l.clusterIDKey()
	for range casAttempts {
		p, _, err := kv.Get(key, qopts(ctx))
		if err != nil {
			return fmt.Errorf("consul set cluster id %s: %w", key, err)
		}
		// index 0 means "create only"; an existing empty value (written by
		// hand, say) may be replaced only if it has not changed since read.
		var index uint64
		if p != nil {
			switch string(p.Value) {
			case id:
				return nil
			case "":
				index = p.ModifyIndex
			default:
				return fmt.Errorf("%w: consul has %q, this node has %q", lease.ErrClusterIDMismatch, p.Value, id)
			}
		}
		ok, _, err := kv.CAS(&api.KVPair{Key: key, Value: []byte(id), ModifyIndex: index}, wopts(ctx))
		if err != nil {
			return fmt.Errorf("consul set cluster id %s: %w", key, err)
		}
		if ok {
			l.log.Info("cluster id recorded", "cluster_id", id)
			return nil
		}
	}
	return fmt.Errorf("consul set cluster id %s: key kept changing during %d attempts", key, casAttempts)
}
