// Command driver-go is the load driver of the side-by-side comparison for the
// peers that have Go clients: etcd (go.etcd.io/etcd/client/v3, a Put of a fresh
// key per write) and NATS JetStream (github.com/nats-io/nats.go/jetstream, a
// Publish that waits for the stream's PubAck).
//
//	driver-go bench    -system etcd|nats -endpoints a,b,c -payload 1024 -inflight 64 ...
//	driver-go failover -system etcd|nats -endpoints a,b,c -kills 10 -hook "cmd args"
//	driver-go ping     -system etcd|nats -endpoints a,b,c   (one write, exit 0 if it succeeded)
//
// Results are JSON lines on stdout; diagnostics go to stderr.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: driver-go bench|failover|ping [flags]")
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	system := fs.String("system", "", "etcd or nats")
	endpoints := fs.String("endpoints", "", "comma-separated client endpoints of the three members, member 0 first")
	version := fs.String("version", "", "server version, copied into the results")
	durability := fs.String("durability", "", "durability label, copied into the results")
	payload := fs.Int("payload", 1024, "payload bytes per write")
	inflight := fs.Int("inflight", 1, "writes kept outstanding")
	warmupS := fs.Float64("warmup-s", 5, "warm-up seconds (not measured)")
	durationS := fs.Float64("duration-s", 10, "measured seconds")
	kills := fs.Int("kills", 10, "failover: number of leader kills")
	intervalMs := fs.Int("interval-ms", 10, "failover: pause between the writer's writes")
	hook := fs.String("hook", "", "failover: command run as `<hook> kill <i>` and `<hook> start <i>`")
	if err := fs.Parse(os.Args[2:]); err != nil {
		os.Exit(2)
	}
	eps := strings.Split(*endpoints, ",")
	if len(eps) != 3 {
		fail("need three endpoints, got %q", *endpoints)
	}
	var sys target
	var err error
	switch *system {
	case "etcd":
		sys, err = newEtcd(eps)
	case "nats":
		sys, err = newNats(eps)
	default:
		fail("unknown system %q (etcd or nats)", *system)
	}
	if err != nil {
		fail("%s: connect: %v", *system, err)
	}
	defer sys.close()
	switch mode {
	case "ping":
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var last error
		for ctx.Err() == nil {
			c, cl := context.WithTimeout(ctx, 2*time.Second)
			last = sys.write(c, 0, uint64(time.Now().UnixNano()), []byte("ping"))
			cl()
			if last == nil {
				fmt.Fprintf(os.Stderr, "%s: write ok\n", *system)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		fail("%s: no write succeeded within 20 s: %v", *system, last)
	case "bench":
		r := runBench(benchSpec{
			system: *system, version: *version, durability: *durability, client: sys.clientName(),
			payloadBytes: *payload, inFlight: *inflight,
			warmup:         time.Duration(*warmupS * float64(time.Second)),
			duration:       time.Duration(*durationS * float64(time.Second)),
			requestTimeout: 10 * time.Second,
		}, sys.write)
		emitJSON(r)
	case "failover":
		if *hook == "" {
			fail("failover needs -hook")
		}
		err := runFailover(failoverSpec{
			system: *system, version: *version, durability: *durability, kills: *kills,
			interval: time.Duration(*intervalMs) * time.Millisecond,
			hook:     strings.Fields(*hook), rejoinTimeout: 90 * time.Second,
		}, failoverOps{write: sys.write, leader: sys.leader, rejoined: sys.rejoined}, emitJSON)
		if err != nil {
			fail("%s: failover: %v", *system, err)
		}
	default:
		fail("unknown mode %q", mode)
	}
}

// target is one system under test, reached through its own client library.
type target interface {
	write(ctx context.Context, worker int, seq uint64, payload []byte) error
	leader(ctx context.Context) (int, error)
	rejoined(ctx context.Context, member int) bool
	clientName() string
	close()
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "driver-go: "+format+"\n", args...)
	os.Exit(1)
}
