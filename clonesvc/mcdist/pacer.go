package mcdist

import (
	"context"
	"sync"
	"time"
)

// Pacing defaults (bytes per second of UDP payload).
const (
	DefaultMaxRate = 125 << 20 // ~1 Gbit/s
	DefaultMinRate = 1 << 20
	// DefaultLossThreshold is the loss a receiver may report before it
	// holds the rate down.
	DefaultLossThreshold = 0.02
	// pacerBurst is the token bucket's depth: a burst of about 16 pages
	// goes out unpaced.
	pacerBurst = 64 << 10
	// reportTTL: a receiver whose last report is older than this many
	// report intervals no longer holds the rate down.
	reportTTL = 3
)

// pacer is a token bucket whose rate follows the slowest active receiver:
// a receiver that reports loss above the threshold caps the rate at a
// little over what it received; with no such receiver the rate grows by a
// quarter per report back to the maximum.
type pacer struct {
	mu        sync.Mutex
	rate      float64 // bytes per second
	tokens    float64
	last      time.Time
	min, max  float64
	threshold float64
	ttl       time.Duration
	receivers map[uint64]receiverRate
}

// receiverRate is a receiver's last report.
type receiverRate struct {
	at   time.Time
	rate float64 // bytes per second received
	loss float64 // fraction of multicast packets missed
}

func newPacer(minRate, maxRate float64, threshold float64, ttl time.Duration) *pacer {
	return &pacer{rate: maxRate, tokens: pacerBurst, last: time.Now(), min: minRate, max: maxRate,
		threshold: threshold, ttl: ttl, receivers: map[uint64]receiverRate{}}
}

// limit returns the current rate in bytes per second.
func (p *pacer) limit() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rate
}

// report records a receiver's report and adjusts the rate.
func (p *pacer) report(sender uint64, r Report, now time.Time) {
	secs := float64(r.IntervalMillis) / 1000
	rr := receiverRate{at: now, rate: float64(r.Bytes) / secs}
	if r.Expected > 0 && r.Packets < r.Expected {
		rr.loss = 1 - float64(r.Packets)/float64(r.Expected)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.receivers[sender] = rr
	target := p.max
	for id, rr := range p.receivers {
		switch {
		case now.Sub(rr.at) > p.ttl:
			delete(p.receivers, id)
		case rr.loss > p.threshold:
			target = min(target, max(p.min, rr.rate*1.1))
		}
	}
	if target < p.rate {
		p.rate = target
	} else {
		p.rate = min(target, p.rate*1.25)
	}
}

// wait blocks until n bytes may be sent.
func (p *pacer) wait(ctx context.Context, n int) error {
	p.mu.Lock()
	now := time.Now()
	p.tokens = min(pacerBurst, p.tokens+now.Sub(p.last).Seconds()*p.rate)
	p.last = now
	p.tokens -= float64(n)
	deficit, rate := -p.tokens, p.rate
	p.mu.Unlock()
	if deficit <= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(deficit / rate * float64(time.Second)))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
