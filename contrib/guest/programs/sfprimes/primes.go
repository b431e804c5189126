package main

import "math"

// share is clone id's part of [2, upto] when m VMs split it: contiguous
// ranges of (nearly) equal length.
func share(id, m, upto int) (lo, hi int) {
	n := upto - 1 // numbers in [2, upto]
	lo = 2 + n*id/m
	hi = 1 + n*(id+1)/m
	return lo, hi
}

// countPrimes counts the primes in [lo, hi] with a segmented sieve.
func countPrimes(lo, hi int) int {
	lo = max(lo, 2)
	if hi < lo {
		return 0
	}
	root := int(math.Sqrt(float64(hi)))
	for root*root > hi {
		root--
	}
	for (root+1)*(root+1) <= hi {
		root++
	}
	small := make([]bool, root+1) // small[i]: i is composite
	var base []int
	for i := 2; i <= root; i++ {
		if !small[i] {
			base = append(base, i)
			for j := i * i; j <= root; j += i {
				small[j] = true
			}
		}
	}
	const segment = 1 << 18
	composite := make([]bool, segment)
	count := 0
	for start := lo; start <= hi; start += segment {
		end := min(start+segment-1, hi)
		seg := composite[:end-start+1]
		clear(seg)
		for _, p := range base {
			first := max(p*p, (start+p-1)/p*p)
			for j := first; j <= end; j += p {
				seg[j-start] = true
			}
		}
		for _, c := range seg {
			if !c {
				count++
			}
		}
	}
	return count
}
