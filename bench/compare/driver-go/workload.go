package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// writeFn performs one durable write (as the system defines it) and returns
// once the system has acknowledged it. worker and seq make the key unique.
type writeFn func(ctx context.Context, worker int, seq uint64, payload []byte) error

// result is one JSON line of the comparison's results file.
type result struct {
	System        string  `json:"system"`
	Version       string  `json:"version"`
	Durability    string  `json:"durability"`
	Client        string  `json:"client"`
	PayloadBytes  int     `json:"payload_bytes"`
	InFlight      int     `json:"in_flight"`
	DurationS     float64 `json:"duration_s"`
	Ops           int64   `json:"ops"`
	ThroughputOps float64 `json:"throughput_ops"`
	P50Ms         float64 `json:"p50_ms"`
	P99Ms         float64 `json:"p99_ms"`
	P999Ms        float64 `json:"p999_ms"`
	Errors        int64   `json:"errors"`
}

type benchSpec struct {
	system, version, durability, client string
	payloadBytes, inFlight              int
	warmup, duration                    time.Duration
	requestTimeout                      time.Duration
}

// runBench keeps exactly spec.inFlight writes outstanding (one goroutine per
// slot, each issuing its next write as soon as the previous one is acknowledged)
// for warm-up plus duration, and records the latency of every write that starts
// after the warm-up and completes before the end.
func runBench(spec benchSpec, write writeFn) result {
	payload := make([]byte, spec.payloadBytes)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	start := time.Now()
	measureFrom := start.Add(spec.warmup)
	end := measureFrom.Add(spec.duration)
	samples := make([][]int64, spec.inFlight)
	var errors int64
	var wg sync.WaitGroup
	for w := 0; w < spec.inFlight; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var seq uint64
			local := make([]int64, 0, 1<<14)
			for {
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				ctx, cancel := context.WithTimeout(context.Background(), spec.requestTimeout)
				err := write(ctx, w, seq, payload)
				cancel()
				seq++
				t1 := time.Now()
				if t0.Before(measureFrom) || t1.After(end) {
					continue
				}
				if err != nil {
					atomic.AddInt64(&errors, 1)
					continue
				}
				local = append(local, int64(t1.Sub(t0)))
			}
			samples[w] = local
		}(w)
	}
	wg.Wait()
	var all []int64
	for _, s := range samples {
		all = append(all, s...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	r := result{
		System: spec.system, Version: spec.version, Durability: spec.durability, Client: spec.client,
		PayloadBytes: spec.payloadBytes, InFlight: spec.inFlight,
		DurationS: spec.duration.Seconds(), Ops: int64(len(all)), Errors: errors,
	}
	r.ThroughputOps = float64(len(all)) / spec.duration.Seconds()
	r.P50Ms = percentileMs(all, 0.50)
	r.P99Ms = percentileMs(all, 0.99)
	r.P999Ms = percentileMs(all, 0.999)
	return r
}

// percentileMs is the nearest-rank percentile of sorted nanosecond samples.
func percentileMs(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q*float64(len(sorted)))) - 1
	if rank < 0 {
		rank = 0
	}
	return math.Round(float64(sorted[rank])/1e3) / 1e3
}

// failoverSpec drives the kill loop: hook is a command run as `hook kill <i>`
// and `hook start <i>` to kill -9 and restart member i.
type failoverSpec struct {
	system, version, durability string
	kills                       int
	interval                    time.Duration
	hook                        []string
	rejoinTimeout               time.Duration
}

type failoverOps struct {
	write    writeFn
	leader   func(ctx context.Context) (int, error) // member index 0..2
	rejoined func(ctx context.Context, member int) bool
}

type failoverLine struct {
	System     string  `json:"system"`
	Version    string  `json:"version"`
	Durability string  `json:"durability"`
	Kill       int     `json:"kill"`
	Member     int     `json:"member"`
	GapMs      float64 `json:"gap_ms"`
}

func runHook(hook []string, args ...string) error {
	cmd := exec.Command(hook[0], append(append([]string{}, hook[1:]...), args...)...)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	return cmd.Run()
}

// runFailover kills the leader spec.kills times under one writer issuing one
// write per interval, and reports the time from each kill until the first
// write that was issued after the kill and succeeded.
func runFailover(spec failoverSpec, ops failoverOps, emit func(any)) error {
	payload := make([]byte, 128)
	var seq uint64
	for k := 1; k <= spec.kills; k++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		leader, err := waitLeader(ctx, ops.leader)
		cancel()
		if err != nil {
			return fmt.Errorf("kill %d: no leader: %w", k, err)
		}
		// Light load for a moment before the kill, so the kill lands under traffic.
		for i := 0; i < 50; i++ {
			wctx, c := context.WithTimeout(context.Background(), 2*time.Second)
			_ = ops.write(wctx, 0, seq, payload)
			c()
			seq++
			time.Sleep(spec.interval)
		}
		// The clock starts before the hook, which sends SIGKILL within a few
		// milliseconds (a shell's start-up): the gap errs long, never short.
		killedAt := time.Now()
		if err := runHook(spec.hook, "kill", fmt.Sprint(leader)); err != nil {
			return fmt.Errorf("kill %d: hook kill %d: %w", k, leader, err)
		}
		var gap time.Duration
		for {
			if time.Since(killedAt) > 120*time.Second {
				return fmt.Errorf("kill %d: no successful write within 120 s", k)
			}
			wctx, c := context.WithTimeout(context.Background(), 1*time.Second)
			err := ops.write(wctx, 0, seq, payload)
			c()
			seq++
			if err == nil {
				gap = time.Since(killedAt)
				break
			}
			time.Sleep(spec.interval)
		}
		emit(failoverLine{System: spec.system, Version: spec.version, Durability: spec.durability,
			Kill: k, Member: leader, GapMs: math.Round(float64(gap)/1e3) / 1e3})
		if err := runHook(spec.hook, "start", fmt.Sprint(leader)); err != nil {
			return fmt.Errorf("kill %d: hook start %d: %w", k, leader, err)
		}
		deadline := time.Now().Add(spec.rejoinTimeout)
		for {
			rctx, c := context.WithTimeout(context.Background(), 2*time.Second)
			ok := ops.rejoined(rctx, leader)
			c()
			if ok {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("kill %d: member %d did not rejoin within %s", k, leader, spec.rejoinTimeout)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

func waitLeader(ctx context.Context, leader func(ctx context.Context) (int, error)) (int, error) {
	var last error
	for {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		l, err := leader(c)
		cancel()
		if err == nil && l >= 0 {
			return l, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("%v (last: %v)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func emitJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("marshal result: %v", err))
	}
	fmt.Println(string(b))
}
