package main

import "testing"

func TestCountPrimesKnownValues(t *testing.T) {
	// π(x) from the literature.
	for x, want := range map[int]int{1: 0, 2: 1, 3: 2, 10: 4, 100: 25, 1000: 168, 1_000_000: 78498, 2_000_000: 148933} {
		if got := countPrimes(2, x); got != want {
			t.Errorf("π(%d) = %d, want %d", x, got, want)
		}
	}
	if got := countPrimes(1_000_000, 1_000_100); got != 6 {
		t.Errorf("primes in [10^6, 10^6+100] = %d, want 6", got)
	}
}

func TestSharesCoverTheRangeOnce(t *testing.T) {
	for _, upto := range []int{2, 3, 10, 2_000_000} {
		for m := 1; m <= 9; m++ {
			next, total := 2, 0
			for id := range m {
				lo, hi := share(id, m, upto)
				if lo != next {
					t.Fatalf("upto %d, m %d: share %d starts at %d, want %d", upto, m, id, lo, next)
				}
				next = hi + 1
				total += countPrimes(lo, hi)
			}
			if next != upto+1 || total != countPrimes(2, upto) {
				t.Fatalf("upto %d, m %d: shares end at %d and count %d, want %d and %d", upto, m, next-1, total, upto, countPrimes(2, upto))
			}
		}
	}
}
