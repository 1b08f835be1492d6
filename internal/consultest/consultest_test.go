package consultest

import (
	"net/http"
	"testing"
	"time"
)

func TestStartStopRestart(t *testing.T) {
	a := Start(t)
	client := &http.Client{Timeout: 2 * time.Second}
	leader := a.URL() + "/v1/status/leader"
	if !leaderKnown(client, leader) {
		t.Fatalf("no leader at %s after Start", a.URL())
	}

	a.Stop()
	a.Stop() // idempotent
	if _, err := client.Get(leader); err == nil {
		t.Fatalf("agent still answering at %s after Stop", a.URL())
	}

	a.Restart(t)
	if !leaderKnown(client, leader) {
		t.Fatalf("no leader at %s after Restart", a.URL())
	}
}

func TestAgentsAreIndependent(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.URL() == b.URL() {
		t.Fatalf("two agents share %s", a.URL())
	}
}

func TestFreePortsDistinct(t *testing.T) {
	p, err := freePorts()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, n := range []int{p.HTTP, p.SerfLAN, p.SerfWAN, p.Server} {
		if n == 0 || seen[n] {
			t.Fatalf("bad port set %+v", p)
		}
		seen[n] = true
	}
}
