// Command egosim is a SIMULATOR of Platform EGO's allocation interface (see
// package contrib/egosim/sim): not EGO, for trying SnowFlock's EGO backend
// without an EGO cluster. It serves EGO's REST API shapes as SnowFlock's
// EGO backend speaks them (allocator/ego/wire) plus a control API to add
// hosts and issue reclaims.
//
//	egosim --listen 127.0.0.1:8780                 # the default cluster (sim.Default)
//	egosim --listen 127.0.0.1:8780 --config c.json # a cluster of your own (sim.Config as JSON)
//
// It prints the URL it serves on and the settings that point sfalloc at it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/snowflock/snowflock/contrib/egosim/sim"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "egosim:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:8780", "address to serve on (loopback by default)")
	cfgFile := flag.String("config", "", "cluster definition (JSON: users, tokens, consumers, resourcegroups); default: "+
		"user Admin/Admin, consumer /SnowFlock, resource group ComputeHosts of 2 hosts x 4 slots, token egosim-token")
	flag.Parse()
	cfg := sim.Default()
	if *cfgFile != "" {
		b, err := os.ReadFile(*cfgFile)
		if err != nil {
			return err
		}
		cfg = sim.Config{}
		if err := json.Unmarshal(b, &cfg); err != nil {
			return fmt.Errorf("%s: %w", *cfgFile, err)
		}
	}
	s, err := sim.New(cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	url := "http://" + ln.Addr().String()
	fmt.Printf("egosim: EGO SIMULATOR (not EGO) serving on %s\n", url)
	fmt.Printf("egosim: point sfalloc at it with:\n  export SNOWFLOCK_ALLOCATOR_EGO_URL=%s SNOWFLOCK_ALLOCATOR_EGO_USER=Admin SNOWFLOCK_ALLOCATOR_EGO_PASSWORD=Admin\n", url)
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
