package descriptor

import (
	"encoding/binary"
	"hash/crc64"
	"math/rand/v2"
	"testing"
	"time"
)

// testKey is recognisable in any output that might leak it.
var testKey = Key{0xa5, 0x5a, 0xc3, 0x3c, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
	13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28}

// small returns a valid descriptor of a few KB: quick to corrupt byte by
// byte.
func small() *Descriptor {
	rng := rand.New(rand.NewPCG(1, 2))
	state := make([]byte, 3000)
	for i := range state {
		state[i] = byte(rng.IntN(7)) // compressible, not trivially
	}
	ram := Region{Name: "pc.ram", Size: 8 << 20, PageSize: 4096}
	ram.Zero = runBitmap(rng, ram.Pages(), 30, 10)
	huge := Region{Name: "huge", Size: 8 << 20, PageSize: 2 << 20}
	huge.Zero = []byte{0b1010}
	return &Descriptor{
		FamilyID:     "fam-1",
		FamilyKey:    testKey,
		ParentVM:     "vm-parent",
		CheckpointID: "cp-7",
		Created:      time.Date(2026, 8, 1, 12, 30, 0, 123456789, time.UTC),
		Backend:      "kvm",
		Machine:      []byte(`{"machine":"q35","cpus":2,"memory_mib":16}`),
		DeviceState:  state,
		Regions:      []Region{ram, huge},
	}
}

// tiny returns a valid descriptor of a few hundred bytes: a fuzzing seed
// whose descendants minimise quickly.
func tiny() *Descriptor {
	d := small()
	d.Machine = d.Machine[:8]
	d.DeviceState = d.DeviceState[:64]
	d.Regions = []Region{{Name: "m", Size: 12 * 4096, PageSize: 4096, Zero: []byte{0x0f, 0x08}}}
	return d
}

// q35 returns a descriptor shaped like a 1 GiB q35 guest's: 290 KB of
// device state of which 210 KB is low-entropy (the firmware ROM: SeaBIOS's
// bios-256k.bin deflates to 43%) and 80 KB random, and a zero-page bitmap
// of 262144 pages in runs (a booted guest: a busy first 64 MiB, then long
// untouched stretches with scattered page-cache and slab pages).
func q35() *Descriptor {
	rng := rand.New(rand.NewPCG(3, 4))
	state := make([]byte, 0, 290_000)
	for len(state) < 80_000 {
		state = append(state, byte(rng.Uint32()))
	}
	state = append(state, firmwareLike(rng, 210_000)...)
	ram := Region{Name: "pc.ram", Size: 1 << 30, PageSize: 4096}
	busy := uint64(64 << 20 / 4096)
	ram.Zero = runBitmap(rng, ram.Pages(), 200, 24)
	copy(ram.Zero, runBitmap(rng, busy, 4, 12)) // busy is a multiple of 8
	d := small()
	d.DeviceState = state
	d.Regions = []Region{ram}
	d.Machine = make([]byte, 2000) // a JSON machine configuration's size
	for i := range d.Machine {
		d.Machine[i] = "abcdefghij{}\":,0123456789"[rng.IntN(25)]
	}
	return d
}

// firmwareLike returns n bytes that deflate to about 45%, like a firmware
// ROM: padding runs, skewed instruction-like bytes, repeated snippets.
func firmwareLike(rng *rand.Rand, n int) []byte {
	b := make([]byte, 0, n)
	for len(b) < n {
		switch x := rng.IntN(10); {
		case x == 0:
			b = append(b, make([]byte, 16+rng.IntN(256))...)
		case x < 5 && len(b) > 1024:
			at := rng.IntN(len(b) - 512)
			b = append(b, b[at:at+8+rng.IntN(64)]...)
		default:
			for range 64 {
				v := rng.ExpFloat64() * 12
				b = append(b, byte(min(v, 255))^0x80*byte(rng.IntN(2)))
			}
		}
	}
	return b[:n]
}

// runBitmap returns a bitmap of pages bits in alternating runs of set
// (mean zeroMean) and clear (mean dataMean) bits.
func runBitmap(rng *rand.Rand, pages uint64, zeroMean, dataMean float64) []byte {
	bm := make([]byte, bitmapLen(pages))
	set := false
	for p := uint64(0); p < pages; {
		mean := dataMean
		if set {
			mean = zeroMean
		}
		n := uint64(rng.ExpFloat64()*mean) + 1
		for i := p; i < min(p+n, pages); i++ {
			if set {
				bm[i/8] |= 1 << (i % 8)
			}
		}
		p += n
		set = !set
	}
	return bm
}

// seal wraps a payload in an envelope with a correct checksum, so a test
// can reach the checks behind the checksum.
func seal(major, minor uint16, payload []byte) []byte {
	b := []byte(Magic)
	b = binary.LittleEndian.AppendUint16(b, major)
	b = binary.LittleEndian.AppendUint16(b, minor)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, payload...)
	return binary.LittleEndian.AppendUint64(b, crc64.Checksum(b, crcTable))
}

// payloadOf returns the payload inside an envelope.
func payloadOf(b []byte) []byte { return b[headerSize : len(b)-checksumSize] }

func mustMarshal(tb testing.TB, d *Descriptor) []byte {
	tb.Helper()
	b, err := d.MarshalBinary()
	if err != nil {
		tb.Fatalf("MarshalBinary: %v", err)
	}
	return b
}
