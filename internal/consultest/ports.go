package consultest

import (
	"fmt"
	"net"
	"strconv"
)

// ports are the loopback ports one agent listens on.
type ports struct {
	HTTP, SerfLAN, SerfWAN, Server int
}

// freePorts picks four distinct ports that are free right now for TCP and,
// because serf also gossips over UDP, for UDP on the same number. The
// listeners are held until all four are chosen so none is picked twice.
// Another process may still grab one before the agent binds it; Start
// retries with fresh ports when that happens.
func freePorts() (ports, error) {
	var held []interface{ Close() error }
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	var got []int
	for len(got) < 4 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return ports{}, fmt.Errorf("pick free port: %w", err)
		}
		held = append(held, ln)
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // TCP free but UDP taken: keep the TCP one held and try again
		}
		held = append(held, pc)
		got = append(got, port)
	}
	return ports{HTTP: got[0], SerfLAN: got[1], SerfWAN: got[2], Server: got[3]}, nil
}
