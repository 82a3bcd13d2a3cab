package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const natsStream = "BENCH"

// natsTarget publishes to a file-backed stream of 3 replicas and waits for the
// PubAck, which the stream leader sends once a quorum has stored the message.
type natsTarget struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
}

func newNats(endpoints []string) (*natsTarget, error) {
	urls := make([]string, len(endpoints))
	for i, ep := range endpoints {
		urls[i] = "nats://" + strings.TrimPrefix(ep, "nats://")
	}
	nc, err := nats.Connect(strings.Join(urls, ","),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.RetryOnFailedConnect(true), nats.Timeout(2*time.Second))
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stream jetstream.Stream
	for {
		// Each attempt gets its own short timeout: a request sent before the
		// JetStream meta leader is elected may never be answered.
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		stream, err = js.CreateOrUpdateStream(actx, jetstream.StreamConfig{
			Name: natsStream, Subjects: []string{"bench.>"},
			Storage: jetstream.FileStorage, Replicas: 3,
		})
		acancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			nc.Close()
			return nil, fmt.Errorf("create stream: %w", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return &natsTarget{nc: nc, js: js, stream: stream}, nil
}

func (n *natsTarget) clientName() string {
	return "github.com/nats-io/nats.go/jetstream (Publish, waits for PubAck)"
}

func (n *natsTarget) write(ctx context.Context, worker int, seq uint64, payload []byte) error {
	_, err := n.js.Publish(ctx, fmt.Sprintf("bench.%d", worker), payload)
	return err
}

func serverIndex(name string) (int, error) {
	var i int
	if _, err := fmt.Sscanf(name, "n%d", &i); err != nil {
		return -1, fmt.Errorf("unexpected server name %q", name)
	}
	return i, nil
}

// leader reads the stream's cluster info ($JS.API.STREAM.INFO) and maps the
// stream leader's server name (n0, n1, n2) to its member index.
func (n *natsTarget) leader(ctx context.Context) (int, error) {
	info, err := n.stream.Info(ctx)
	if err != nil {
		return -1, err
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return -1, fmt.Errorf("stream has no leader")
	}
	return serverIndex(info.Cluster.Leader)
}

// rejoined holds once the stream has a leader and both other replicas are
// current, the restarted one included.
func (n *natsTarget) rejoined(ctx context.Context, member int) bool {
	info, err := n.stream.Info(ctx)
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
		return false
	}
	if l, err := serverIndex(info.Cluster.Leader); err == nil && l == member {
		return len(info.Cluster.Replicas) == 2 && allCurrent(info.Cluster.Replicas)
	}
	seen := false
	for _, p := range info.Cluster.Replicas {
		if i, err := serverIndex(p.Name); err == nil && i == member {
			seen = p.Current && !p.Offline
		}
	}
	return seen && len(info.Cluster.Replicas) == 2 && allCurrent(info.Cluster.Replicas)
}

func allCurrent(ps []*jetstream.PeerInfo) bool {
	for _, p := range ps {
		if !p.Current || p.Offline {
			return false
		}
	}
	return true
}

func (n *natsTarget) close() { n.nc.Close() }
