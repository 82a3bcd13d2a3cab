package main

import (
	"context"
	"fmt"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdTarget writes with Put of a fresh key per write (so the keyspace grows
// like a log) through one client connected to all three members.
type etcdTarget struct {
	cli       *clientv3.Client
	endpoints []string
	prefix    string
}

func newEtcd(endpoints []string) (*etcdTarget, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, err
	}
	return &etcdTarget{cli: cli, endpoints: endpoints, prefix: fmt.Sprintf("bench/%d/", time.Now().UnixNano())}, nil
}

func (e *etcdTarget) clientName() string { return "go.etcd.io/etcd/client/v3 (Put)" }

func (e *etcdTarget) write(ctx context.Context, worker int, seq uint64, payload []byte) error {
	_, err := e.cli.Put(ctx, fmt.Sprintf("%s%d/%d", e.prefix, worker, seq), string(payload))
	return err
}

// leader asks every endpoint for its status and returns the index of the one
// whose member id is the leader id it reports.
func (e *etcdTarget) leader(ctx context.Context) (int, error) {
	var lastErr error
	for i, ep := range e.endpoints {
		st, err := e.cli.Status(ctx, ep)
		if err != nil {
			lastErr = err
			continue
		}
		if os.Getenv("BENCH_DEBUG") != "" {
			fmt.Fprintf(os.Stderr, "etcd status %s: member %x leader %x term %d\n", ep, st.Header.MemberId, st.Leader, st.RaftTerm)
		}
		if st.Leader != 0 && st.Header.MemberId == st.Leader {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no endpoint reports itself leader (last error: %v)", lastErr)
}

func (e *etcdTarget) rejoined(ctx context.Context, member int) bool {
	st, err := e.cli.Status(ctx, e.endpoints[member])
	return err == nil && st.Leader != 0
}

func (e *etcdTarget) close() { _ = e.cli.Close() }
