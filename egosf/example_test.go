package egosf_test

import (
	"context"
	"log"
	"time"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/egosf"
	"github.com/snowflock/snowflock/egosf/config"
)

// The README's example: request slots, hold them while working, release.
func ExampleClient_Hold() {
	ctx := context.Background()
	cfg, err := egosf.LoadConfig(config.Options{}) // the same search order as sfalloc
	if err != nil {
		log.Fatal(err)
	}
	c, err := egosf.Open(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	t, err := c.RequestTicket(ctx, allocator.Request{Min: 2, Max: 8, Lease: time.Minute})
	if err != nil {
		log.Fatal(err)
	}
	h := c.Hold(ctx, t, time.Minute) // renew in the background
	defer func() { h.Stop(); c.Release(context.Background(), t.ID) }()
	select {
	case <-h.Lost(): // expired or released elsewhere
		log.Print(h.Err())
	default:
		log.Printf("working on %s", t.HostsString())
	}
}
