// etcd-load drives an etcd cluster with concurrent puts for a fixed time through the official Go
// client (go.etcd.io/etcd/client/v3) and prints one JSON line: the reference figures of
// `scripts/bench.sh compare`. Requests are spread over `-conns` client connections.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "comma-separated client URLs")
	clients := flag.Int("clients", 32, "requests in flight")
	conns := flag.Int("conns", 32, "client connections")
	duration := flag.Duration("duration", 10*time.Second, "how long to run")
	size := flag.Int("value-size", 100, "value bytes")
	keys := flag.Int("keys", 100000, "distinct keys")
	flag.Parse()

	cs := make([]*clientv3.Client, *conns)
	for i := range cs {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   strings.Split(*endpoints, ","),
			DialTimeout: 5 * time.Second,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "etcd-load:", err)
			os.Exit(1)
		}
		defer c.Close()
		cs[i] = c
	}
	value := strings.Repeat("x", *size)
	start := time.Now()
	deadline := start.Add(*duration)
	var mu sync.Mutex
	var all []time.Duration
	errors := 0
	var wg sync.WaitGroup
	for w := 0; w < *clients; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := cs[w%len(cs)]
			var mine []time.Duration
			failed := 0
			for i := w; time.Now().Before(deadline); i += *clients {
				key := fmt.Sprintf("k%08d", i%*keys)
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := c.Put(ctx, key, value)
				cancel()
				if err != nil {
					failed++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			all = append(all, mine...)
			errors += failed
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(float64(len(all)-1)*p)].Microseconds()) / 1000
	}
	out, _ := json.Marshal(map[string]any{
		"requests": len(all), "errors": errors, "rate": float64(len(all)) / elapsed,
		"p50_ms": pct(0.50), "p99_ms": pct(0.99),
	})
	fmt.Println(string(out))
}
